"""Markdown tables: the one helper behind README's model table, the benchmark tables and scripts/report.py."""

from collections.abc import Collection, Sequence


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]], numeric: Collection[int] = ()) -> str:
    """A GitHub table; columns whose index is in ``numeric`` are right-aligned. ``|`` in cells is escaped."""
    align = ["---:" if i in numeric else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
    return "\n".join(lines)
