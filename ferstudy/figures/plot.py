"""What the figures share: matplotlib's Agg backend, atomic PNG output, titles that name the
dataset, placeholders, the colours of the final architecture and the baseline, and the two panels
that more than one figure draws (a confusion matrix, the legend of the training batches)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import CLASS_NAMES
from ..errors import UserError
from ..io import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FINAL_COLOR, BASELINE_COLOR, OTHER_COLOR = "#d62728", "#1f77b4", "0.3"
RIGHT, WRONG = "#1a7f37", "#c62828"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def dataset_label(dataset: str) -> str:
    """What the titles say about the data: demo figures must not pass for FER2013 ones."""
    return {"demo": "DEMO data: synthetic faces, not FER2013", "fer2013": "FER2013"}.get(dataset, str(dataset))


def save(fig: Figure, path: Path | str, dpi: int = 110) -> Path:
    """Write `fig` to `path` as PNG, atomically, and close it."""
    plt = _plt()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def _need(path):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: not found (the figures need the study's results: run `snakemake` first)")
    return path


def _read_json(path):
    return json.loads(_need(path).read_text())


def _headroom(fig, title, inches, fontsize=10.5):
    """Suptitle `title` at the very top, the axes starting `inches` below the top edge."""
    h = fig.get_figheight()
    fig.suptitle(title, fontsize=fontsize, y=1 - 0.08 / h, va="top")
    fig.subplots_adjust(top=1 - inches / h)


def _no_axes(ax):
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


def _placeholder(path, title, message):
    """A figure that says why there is nothing to show (the rule still gets its file)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11, wrap=True)
    fig.suptitle(title)
    return save(fig, path)


def _role(arch, baseline, final):
    return " + ".join(r for r, a in (("final", final), ("baseline", baseline)) if arch == a)


def _arch_color(arch, baseline, final):
    return FINAL_COLOR if arch == final else BASELINE_COLOR if arch == baseline else OTHER_COLOR


def batches_label(augmented: bool | dict[str, bool] | None) -> str:
    """Legend text of the training-batch accuracy: what those batches were. augmented: a bool, a
    {arch: bool} (panels whose network was not augmented say so themselves) or None (unknown)."""
    values = set(augmented.values()) if isinstance(augmented, dict) else {augmented}
    if values == {True}:
        return "training batches (augmented)"
    if values == {False}:
        return "training batches (not augmented)"
    if values == {True, False}:
        return "training batches (augmented unless the panel says not)"
    return "training batches, as trained"


def _confusion_panel(ax, counts, title):
    counts = np.asarray(counts, dtype=float)
    sums = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, sums, out=np.zeros_like(counts), where=sums > 0)
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    for i in range(norm.shape[0]):
        for j in range(norm.shape[1]):
            ax.text(
                j,
                i,
                f"{norm[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=8.5,
                color="white" if norm[i, j] > 0.55 else "black",
                fontweight="bold" if i == j else "normal",
            )
    n = len(CLASS_NAMES)
    ax.set_xticks(range(n))
    ax.set_xticklabels(CLASS_NAMES, rotation=40, ha="right", fontsize=9)
    ax.set_yticks(range(n))
    ax.set_yticklabels([f"{c} ({int(s)})" for c, s in zip(CLASS_NAMES, sums[:, 0])], fontsize=9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (images)")
    ax.set_title(title, fontsize=10)
    return im


def _face_axis(ax, img, ylabel=None):
    ax.imshow(img, cmap="gray", interpolation="nearest")
    _no_axes(ax)
    if ylabel:
        ax.set_ylabel(ylabel, rotation=0, ha="right", va="center", fontsize=10)
