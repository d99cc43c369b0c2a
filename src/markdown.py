"""Markdown for every table the project writes: README's model table, the benchmarks, the campaign, the report."""

import statistics
from collections.abc import Collection, Sequence


def markdown_table(header: Sequence[str], body: Sequence[Sequence[object]], numeric: Collection[int] = ()) -> str:
    """A GitHub table; columns whose index is in ``numeric`` are right-aligned. ``|`` in cells is escaped."""
    align = ["---:" if i in numeric else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in body]
    return "\n".join(lines)


def spread(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    """Several runs of one thing as ``mean ± sample std (min-max)``; one value as itself; none as ``–``."""
    if not values:
        return "–"
    if len(values) == 1:
        return fmt.format(values[0])
    mean, std = statistics.fmean(values), statistics.stdev(values)
    return f"{fmt.format(mean)} ± {fmt.format(std)} ({fmt.format(min(values))}-{fmt.format(max(values))})"
