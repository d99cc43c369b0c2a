"""The report's figure: top-1 error per variant, as the papers draw it (thin dashed train, bold validation)."""

import statistics
from pathlib import Path

from scripts.metrics import ERR_TRAIN, ERR_VAL, Run, seed_groups, variant_name


def seed_band(runs: list[Run], key: str, x: str) -> list[tuple[float, float, float, float]]:
    """(x, mean, min, max) of ``key`` over ``runs`` at the x every run logged it at."""
    series = [dict(run.series(key, x)) for run in runs]
    common = sorted(set.intersection(*(set(s) for s in series))) if series else []
    return [(at, statistics.fmean(v), min(v), max(v)) for at in common for v in [[s[at] for s in series]]]


def panel_of(run: Run, panels: str | None) -> str:
    """The panel a run is drawn in: the value of the fact ``panels`` (``plain`` vs ``residual`` for the
    shortcut, as the ResNet paper's Fig. 6 puts them side by side), or one panel for all."""
    if not panels:
        return ""
    value = run.facts.get(panels)
    if panels == "model/shortcut":
        return "plain" if value == "none" else "residual"
    if panels == "model/depth":
        return f"{value} layers"
    return f"{panels.rsplit('/', 1)[-1]} {value}"


def plot_errors(runs: list[Run], title: str, path: Path, x: str = "step", panels: str | None = None) -> Path:
    """Top-1 error (%) per variant, thin dashed = train, bold = validation, as in the papers' figures; the
    seeds of a variant as their mean with the min-max range shaded. With ``panels`` (a run fact) one
    panel per value, on a shared y axis. The final test error is in the table, not on these axes."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    by_panel: dict[str, list[Run]] = {}
    for run in runs:
        by_panel.setdefault(panel_of(run, panels), []).append(run)
    n = len(by_panel)
    fig, axes = plt.subplots(1, n, figsize=(6.5 * n if n > 1 else 8, 5), dpi=120, sharey=True, squeeze=False)
    colors = [plt.get_cmap("tab10")(i) for i in range(10)]
    for ax, (panel, members_of_panel) in zip(axes[0], by_panel.items(), strict=True):
        handles = []
        for i, members in enumerate(seed_groups(members_of_panel)):
            color = colors[i % len(colors)]
            for key, width, style in ((ERR_TRAIN, 1.0, "--"), (ERR_VAL, 2.6, "-")):
                points = seed_band(members, key, x)
                if points:
                    xs, mean, low, high = (list(c) for c in zip(*points, strict=True))
                    ax.plot(xs, mean, style, color=color, linewidth=width, marker="." if len(xs) < 20 else None)
                    if len(members) > 1:  # the seeds' range as a shaded band around their mean
                        alpha = 0.25 if key == ERR_VAL else 0.12
                        ax.fill_between(xs, low, high, color=color, alpha=alpha, linewidth=0)
            handles.append(Line2D([], [], color=color, linewidth=2.6, label=variant_name(members)))
        ax.add_artist(ax.legend(handles=handles, title="run", loc="upper right", fontsize=9))
        ax.set_xlabel("iterations (optimizer steps)" if x == "step" else "epochs")
        ax.set_title(panel or title)
        ax.grid(True, alpha=0.3)
    styles = [
        Line2D([], [], color="gray", linewidth=1.0, linestyle="--", label="train (thin, dashed)"),
        Line2D([], [], color="gray", linewidth=2.6, label="val (bold)"),
    ]
    axes[0][0].legend(handles=styles, loc="lower left", fontsize=9)
    axes[0][0].set_ylabel("top-1 error (%)")
    if n > 1:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
