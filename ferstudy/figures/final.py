"""The final model's figures: its confusion matrices on PublicTest and PrivateTest, its training
history and example predictions on PublicTest faces."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import CLASS_NAMES
from ..errors import UserError
from .plot import (
    FINAL_COLOR,
    RIGHT,
    WRONG,
    _confusion_panel,
    _headroom,
    _no_axes,
    _plt,
    batches_label,
    dataset_label,
    save,
)

if TYPE_CHECKING:
    import pandas as pd

    from ..data import FerData


def plot_confusion_final(final_metrics: dict, path: Path | str, dataset: str, arch: str) -> Path:
    """The final model's row-normalised confusion matrices on PublicTest and PrivateTest."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.6), layout="constrained")
    for ax, key, name in zip(
        axes, ("public", "private"), ("PublicTest (chose the checkpoint)", "PrivateTest (untouched test set)")
    ):
        m = final_metrics[key]
        im = _confusion_panel(
            ax,
            m["confusion_matrix"],
            f"{name}\nn = {m['n']}, accuracy {m['accuracy']:.3f}, macro F1 {m['macro_f1']:.3f}",
        )
    fig.colorbar(im, ax=axes, shrink=0.85, label="fraction of the true class")
    fig.get_layout_engine().set(wspace=0.08)
    fig.suptitle(f"Final model {arch}: confusion matrices, rows sum to 1 ({dataset_label(dataset)})", fontsize=12)
    return save(fig, path)


def plot_final_history(
    history: pd.DataFrame,
    path: Path | str,
    dataset: str,
    arch: str,
    best_epoch: int | None = None,
    augmented: bool | None = None,
) -> Path:
    """Final model: training and PublicTest accuracy and loss per epoch, the learning rate, best epoch.
    augmented: whether its training faces were augmented (for the legend; None: not said)."""
    from matplotlib.ticker import MaxNLocator

    plt = _plt()
    if best_epoch is None:
        best_epoch = int(history.loc[history["val_acc"].idxmax(), "epoch"])
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), gridspec_kw={"width_ratios": [1, 1, 0.7]})
    e = history["epoch"]
    for ax, what in zip(axes[:2], ("acc", "loss")):
        val = history[f"val_{what}"].notna()  # epochs without an evaluation (`eval_every`) are NaN
        ax.plot(e, history[f"train_{what}"], "o-", ms=3, color="C1", label=batches_label(augmented))
        ax.plot(e[val], history.loc[val, f"val_{what}"], "o-", ms=3, color="C0", label="PublicTest")
        ax.axvline(best_epoch, color=FINAL_COLOR, ls="--", lw=1.2, label=f"kept checkpoint: epoch {best_epoch}")
        ax.set_ylabel("accuracy" if what == "acc" else "cross-entropy loss")
    best_acc = float(history.loc[history["epoch"] == best_epoch, "val_acc"].iloc[0])
    axes[0].annotate(
        f"{best_acc:.3f}",
        (best_epoch, best_acc),
        xytext=(-5, 6),
        textcoords="offset points",
        ha="right",
        color=FINAL_COLOR,
        fontsize=9,
        fontweight="bold",
    )
    axes[0].margins(y=0.1)
    axes[0].legend(fontsize=8.5, loc="lower right")
    axes[2].plot(e, history["lr"], "o-", ms=3, color="0.3")
    axes[2].axvline(best_epoch, color=FINAL_COLOR, ls="--", lw=1.2)
    axes[2].set_ylabel("learning rate (start of epoch)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(
        f"Final model {arch} on all of Training; PublicTest picks the checkpoint ({dataset_label(dataset)})",
        fontsize=12,
    )
    fig.tight_layout()
    return save(fig, path)


def rows_to_indices(data: FerData, rows: np.ndarray, source: Path | str) -> np.ndarray:
    """HDF5 indices of the CSV `row` values (predictions files store rows)."""
    order = np.argsort(data.row, kind="stable")
    pos = np.clip(np.searchsorted(data.row[order], rows), 0, len(order) - 1)
    idx = order[pos]
    if not np.array_equal(data.row[idx], rows):
        raise UserError(f"{source}: rows that are not in the HDF5 (were they written for another dataset?)")
    return idx


def plot_examples(
    data: FerData,
    predictions_csv: Path | str,
    path: Path | str,
    dataset: str,
    arch: str,
    per_kind: int = 3,
    seed: int = 0,
) -> Path:
    """Per emotion, `per_kind` correctly and `per_kind` wrongly classified PublicTest faces with
    the predicted class and probabilities (from the final model's predictions_public.csv)."""
    from ..metrics import read_predictions

    plt = _plt()
    labels, probs, rows = read_predictions(predictions_csv)
    idx = rows_to_indices(data, rows, predictions_csv)
    if not np.all(data.split[idx] == 1):
        raise UserError(f"{predictions_csv}: the example faces must come from PublicTest, found other splits")
    pred = probs.argmax(1)
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(
        len(CLASS_NAMES),
        2 * per_kind + 1,
        figsize=((2 * per_kind) * 1.35 + 0.4, 7 * 1.6 + 1),
        squeeze=False,
        gridspec_kw={"width_ratios": [1] * per_kind + [0.2] + [1] * per_kind, "wspace": 0.1, "hspace": 0.55},
    )
    for c, name in enumerate(CLASS_NAMES):
        of_class = labels == c
        for k, ok in enumerate((True, False)):
            pool = np.flatnonzero(of_class & ((pred == c) == ok))
            chosen = np.sort(rng.choice(pool, size=min(per_kind, len(pool)), replace=False))
            cols = range(k * (per_kind + 1), k * (per_kind + 1) + per_kind)
            for j, col in enumerate(cols):
                ax = axes[c, col]
                _no_axes(ax)
                if j >= len(chosen):
                    if j == 0:
                        ax.text(
                            0.5, 0.5, "none", ha="center", va="center", fontsize=9, color="0.4", transform=ax.transAxes
                        )
                    continue
                i = chosen[j]
                ax.imshow(data.images[idx[i]], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
                p = pred[i]
                title = (
                    f"{CLASS_NAMES[p]} {probs[i, p]:.2f}"
                    if ok
                    else f"→ {CLASS_NAMES[p]} {probs[i, p]:.2f}\n({name} {probs[i, c]:.2f})"
                )
                ax.set_title(title, fontsize=7.5, color=RIGHT if ok else WRONG, pad=2)
        axes[c, per_kind].axis("off")
        n, right = int(of_class.sum()), int((of_class & (pred == c)).sum())
        axes[c, 0].set_ylabel(f"{name}\n{right}/{n}", rotation=0, ha="right", va="center", fontsize=10)
    _headroom(
        fig,
        f"Final model {arch} on PublicTest faces ({dataset_label(dataset)})\nrow: true emotion, "
        f"correct/total; title: predicted emotion and its probability (misclassified: and the true one's)",
        1.25,
        10,
    )
    for k, (text, color) in enumerate((("correct", RIGHT), ("misclassified", WRONG))):
        first = k * (per_kind + 1)
        left, right = axes[0, first].get_position(), axes[0, first + per_kind - 1].get_position()
        fig.text(
            (left.x0 + right.x1) / 2,
            left.y1 + 0.42 / fig.get_figheight(),
            text,
            ha="center",
            va="bottom",
            fontsize=11,
            fontweight="bold",
            color=color,
        )
    return save(fig, path)
