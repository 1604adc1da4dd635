"""The bar chart of a slice: kept and total neurons per layer, under labels that tell the layers apart."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Characters of a layer label in the plot before it is shortened (from the left: the end tells layers apart).
LABEL_WIDTH = 32


def plot_layers(layers: list[dict], path: Path, suffix: str, title: str = "") -> None:
    """Write :func:`layers_figure` to ``path`` in the format of ``suffix``."""
    figure = layers_figure(layers, title)
    figure.savefig(path, format=suffix.lower().lstrip("."), bbox_inches="tight")


def layers_figure(layers: list[dict], title: str = "") -> Figure:
    """Horizontal bar chart, one row per layer (first layer on top) under its display name, shortened so that no
    two labels are alike: all neurons and the kept ones, the kept ratio at the end of each bar."""
    from matplotlib.figure import Figure

    labels = distinct_labels([row["display"] for row in layers])
    width = max([len(label) for label in labels] + [8])
    figure = Figure(figsize=(min(4.0 + 0.07 * width, 9.0) + 3.0, max(2.5, 0.28 * len(layers) + 1.4)))
    axes = figure.subplots()
    positions = list(range(len(layers)))
    axes.barh(positions, [row["size"] for row in layers], color="lightgray", label="neurons")
    axes.barh(positions, [row["kept"] for row in layers], color="tab:blue", label="kept")
    for y, row in zip(positions, layers, strict=True):
        axes.annotate(f" {row['ratio']:.0%}", (row["kept"], y), ha="left", va="center", fontsize=7)
    axes.set_yticks(positions, labels, fontsize=8)
    axes.set_ylim(len(layers) - 0.5, -0.5)  # the first layer on top
    axes.set_xlabel("neurons")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over one
    figure.tight_layout()
    return figure


def plot_title(result: dict, model_name: str) -> str:
    """The plot's title: the model (file name), strategy, metric and Θ or ratio (and the size budget, if any)."""
    setting = (f"Θ = {result['theta']:.4g}" if result["theta"] is not None
               else f"ratio = {result['ratio']:.4g}" if result["ratio"] is not None else None)
    target = result.get("target") or {}
    budget = (f"target {target.get('metric', 'size')} {target['fraction']:.4g}"
              if isinstance(target.get("fraction"), (int, float)) else None)
    parts = [part for part in (result["strategy"], result["metric"], setting, budget) if part]
    return f"{model_name}: {', '.join(map(str, parts))} (neurons kept {result['neuron_fraction']:.1%})"


def distinct_labels(names: list[str], width: int = LABEL_WIDTH) -> list[str]:
    """``names`` shortened to ``width`` characters, keeping their ends (where module paths differ); a name whose
    short form another shares is shown longer, and whole names alike are numbered."""
    def short(name: str, size: int) -> str:
        return name if len(name) <= size else "…" + name[-size + 1:]

    sizes = [width] * len(names)
    labels = [short(name, width) for name in names]
    while True:
        counts = Counter(labels)
        clashing = [i for i, label in enumerate(labels) if counts[label] > 1 and len(labels[i]) < len(names[i])]
        if not clashing:
            break
        for i in clashing:
            sizes[i] += 8
            labels[i] = short(names[i], sizes[i])
    counts = Counter(labels)
    return [f"{label} [{i}]" if counts[label] > 1 else label for i, label in enumerate(labels)]
