"""PNG figures of a report, drawn with matplotlib's Agg canvas (no display, no pyplot global state).

Figures are returned as PNG bytes: the files in the sweep directory and the images inside report.html are the
same bytes.
"""

from __future__ import annotations

import io

from orchestra.reporting.aggregate import METRICS
from orchestra.reporting.summary import Report

MAX_LEGEND = 24
CURVES = (("probe/top1", "linear probe top-1 (online)"), ("knn/top1", "kNN top-1 (online)"))


def _png(figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def learning_curves(report: Report) -> bytes:
    """Probe and kNN top-1 against the training step, one line per member (dashed while it has not completed)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.2))
    axes = figure.subplots(1, 2, sharey=True)
    configs = list(dict.fromkeys(m.config for m in report.rows.members))
    palette = [f"C{i}" for i in range(10)]
    for ax, (key, title) in zip(axes, CURVES, strict=True):
        for member in report.rows.members:
            points = [(h["step"], h["metrics"][key]) for h in member.history
                      if key in h.get("metrics", {}) and "step" in h]
            if points:
                steps, values = zip(*points, strict=True)
                # Seeds of one configuration share a colour, so a spread reads as a band, not as rivals.
                ax.plot(steps, values, marker="o", markersize=3, linestyle="-" if member.completed else "--",
                        color=palette[configs.index(member.config) % len(palette)],
                        label=f"{member.label}" + ("" if member.completed else f" ({member.state})"))
        if key == "knn/top1":
            for (label, value), style in zip(report.floors, (":", "-."), strict=False):
                ax.axhline(value, color="grey", linestyle=style, linewidth=1, label=f"floor: {label}")
        ax.set_title(title)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("top-1 on the validation split")
    handles, labels = axes[1].get_legend_handles_labels()
    if len(handles) > MAX_LEGEND:  # a hundred-member sweep would get a legend taller than the plot
        labels = [*labels[:MAX_LEGEND - 1], f"... {len(handles) - MAX_LEGEND + 1} more (see report.md)"]
        handles = handles[:MAX_LEGEND]
    if handles:
        figure.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=8,
                      frameon=False)
    return _png(figure)


def final_accuracy(report: Report) -> bytes:
    """Last-validation top-1 per configuration, mean with a ± std error bar where seeds repeat."""
    from matplotlib.figure import Figure

    done = [row for row in report.table if row.state == "COMPLETED"]
    metrics = [m for m in report.metrics if any(row.stats.get(m) for row in done)]
    figure = Figure(figsize=(max(6.0, 1.6 * len(done) + 2), 4.5))
    ax = figure.subplots()
    width = 0.8 / max(1, len(metrics))
    for offset, metric in enumerate(metrics):
        xs, means, errors = [], [], []
        for position, row in enumerate(done):
            stat = row.stats.get(metric)
            if stat is not None:
                xs.append(position + (offset - (len(metrics) - 1) / 2) * width)
                means.append(stat.mean)
                errors.append(stat.std or 0.0)
        bars = ax.bar(xs, means, width, yerr=errors, capsize=4, label=METRICS[metric])
        ax.bar_label(bars, labels=[f"{m:.3f}" for m in means], fontsize=7, padding=2)
    for (label, value), style in zip(report.floors, (":", "-."), strict=False):
        ax.axhline(value, color="grey", linestyle=style, linewidth=1, label=f"kNN floor: {label}")
    ax.set_xticks(range(len(done)), [row.label for row in done], rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("top-1 at the last validation")
    ax.set_title("final accuracy (error bars: std over seeds)" if not done else
                 f"final accuracy per configuration (error bars: std over seeds; n = {_n_text(done)})")
    if not done:
        ax.text(0.5, 0.5, "no member has completed yet", ha="center", va="center", transform=ax.transAxes)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _png(figure)


def _n_text(done: list) -> str:
    counts = sorted({row.n for row in done})
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"


FIGURES = {"learning_curves.png": learning_curves, "final_accuracy.png": final_accuracy}


def draw_all(report: Report) -> dict[str, bytes]:
    return {name: draw(report) for name, draw in FIGURES.items()}
