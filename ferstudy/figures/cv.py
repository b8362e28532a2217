"""The cross-validation figures: training curves per architecture, cross-validation accuracy,
accuracy against compute and the final architecture's confusion matrix over the folds. They read
the result files through `cli.make_all` (see docs/DESIGN.md)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .plot import BASELINE_COLOR, _arch_color, _confusion_panel, _plt, _role, batches_label, dataset_label, save

if TYPE_CHECKING:
    import pandas as pd


def mean_std_by_epoch(histories: Sequence[pd.DataFrame], column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(epochs, mean, std) of `column` over the folds' history DataFrames (std 0 for one fold)."""
    import pandas as pd

    # epochs without a held-out evaluation (`eval_every`) have NaN there and are left out
    stacked = pd.concat([h[["epoch", column]] for h in histories]).dropna().groupby("epoch")[column]
    std = stacked.std(ddof=1).fillna(0.0)
    return stacked.mean().index.to_numpy(), stacked.mean().to_numpy(), std.to_numpy()


def has_learning_curve(histories: Sequence[pd.DataFrame]) -> bool:
    """Whether the fold histories carry the learning curve (`training.curve_images`)."""
    return all("curve_val_acc" in h and h["curve_val_acc"].notna().any() for h in histories)


def curve_series(
    histories: Sequence[pd.DataFrame], augmented: bool | dict[str, bool] | None
) -> tuple[tuple[str, str, str], ...]:
    """(column, colour, legend label) of the lines of one training-curves panel. With a learning
    curve: the fixed held-out and trained-on subsets (both un-augmented, so their gap is the
    over-fitting gap) and the whole held-out fold as points; without: the held-out fold and the
    running accuracy of the training batches."""
    if has_learning_curve(histories):
        return (
            ("curve_val_acc", "C0", "held-out subset"),
            ("curve_train_acc", "C1", "trained-on subset (not augmented)"),
            ("val_acc", "C0", "whole held-out fold"),
        )
    return (("val_acc", "C0", "held-out fold"), ("train_acc", "C1", batches_label(augmented)))


def plot_training_curves(
    histories: dict[str, list[pd.DataFrame]],
    path: Path | str,
    dataset: str,
    baseline: str | None = None,
    final: str | None = None,
    ncols: int = 5,
    augmented: dict[str, bool] | None = None,
) -> Path:
    """Small multiples, one panel per architecture: held-out and training accuracy per epoch,
    mean over folds with a +-1 std band. histories: {arch: [history DataFrame per fold]};
    augmented: {arch: whether its training faces were augmented} (for the legend)."""
    plt = _plt()
    archs = list(histories)
    ncols = min(ncols, len(archs))
    nrows = math.ceil(len(archs) / ncols)
    height = 2.5 * nrows + 1.1
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.1 * ncols, height), sharey=True, squeeze=False)
    for ax, arch in zip(axes.flat, archs):
        _curve_panel(ax, arch, histories, augmented, baseline, final)
    for ax in axes.flat[len(archs) :]:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[: len(archs)]):
        if i + ncols >= len(archs):  # the lowest panel of its column
            ax.set_xlabel("epoch", fontsize=9)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy", fontsize=9)
    k = len(next(iter(histories.values())))
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(
        handles,
        [f"{lab} (mean ± std over {k} folds)" for lab in labels],
        loc="upper center",
        ncol=len(labels),
        fontsize=9,
        bbox_to_anchor=(0.5, 1.0 - 0.3 / height),
        frameon=False,
    )
    fig.suptitle(
        f"Training curves per architecture, {k}-fold cross-validation ({dataset_label(dataset)})",
        fontsize=12,
        y=1 - 0.08 / height,
        va="top",
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / height))
    return save(fig, path)


def _curve_panel(ax, arch, histories, augmented, baseline, final):
    """One architecture's panel of `plot_training_curves`."""
    from matplotlib.ticker import MaxNLocator

    for column, color, label in curve_series(histories[arch], augmented):
        epochs, mean, std = mean_std_by_epoch(histories[arch], column)
        if column == "val_acc" and has_learning_curve(histories[arch]):  # the full fold, last epoch only
            ax.errorbar(epochs, mean, yerr=std, color=color, marker="D", ms=4, lw=0, elinewidth=1, label=label)
            continue
        ax.plot(epochs, mean, color=color, lw=1.8, marker="o", ms=2.5, label=label)
        ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.25, lw=0)
    if (
        not has_learning_curve(histories[arch])
        and isinstance(augmented, dict)
        and len(set(augmented.values())) > 1
        and augmented.get(arch) is False
    ):
        ax.text(
            0.03,
            0.95,
            "training faces not augmented",
            transform=ax.transAxes,
            ha="left",
            va="top",
            fontsize=7.5,
            color="C1",
        )
    _, val, val_std = mean_std_by_epoch(histories[arch], "val_acc")
    ax.text(
        0.97,
        0.05,
        f"last {val[-1]:.3f} ± {val_std[-1]:.3f}",
        transform=ax.transAxes,
        ha="right",
        fontsize=8,
        color="C0",
    )
    role = _role(arch, baseline, final)
    ax.set_title(
        arch + (f"  ({role})" if role else ""),
        fontsize=10,
        color=_arch_color(arch, baseline, final) if role else "black",
        fontweight="bold" if role else "normal",
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    all_epochs = [e for h in histories[arch] for e in h["epoch"]]
    ax.set_xlim(min(all_epochs) - 0.5, max(all_epochs) + 0.5)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=8)


def plot_cv_accuracy(
    summary: pd.DataFrame,
    path: Path | str,
    dataset: str,
    baseline: str | None = None,
    final: str | None = None,
    fold_scores: dict[str, list[float]] | None = None,
) -> Path:
    """Mean +- std held-out accuracy per architecture, sorted (best on top), with fold values.

    summary: cv_summary.csv DataFrame; fold_scores: optional {arch: [accuracy per fold]}.
    """
    plt = _plt()
    s = summary.sort_values(["accuracy_mean", "architecture"], ascending=[True, False]).reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(8.5, 0.38 * len(s) + 1.8))
    y = np.arange(len(s))
    for i, row in s.iterrows():
        arch = row["architecture"]
        color = _arch_color(arch, baseline, final)
        ax.errorbar(
            row["accuracy_mean"], i, xerr=row["accuracy_std"], fmt="o", color=color, ms=7, capsize=4, lw=1.8, zorder=3
        )
        if fold_scores and arch in fold_scores:
            ax.plot(
                fold_scores[arch],
                [i - 0.25] * len(fold_scores[arch]),
                "o",
                mfc="none",
                mec="0.45",
                ms=4,
                mew=1,
                zorder=2,
            )
        ax.annotate(
            f"{row['accuracy_mean']:.3f} ± {row['accuracy_std']:.3f}",
            (row["accuracy_mean"] + row["accuracy_std"], i),
            xytext=(7, 0),
            textcoords="offset points",
            va="center",
            fontsize=8.5,
            color=color,
        )
    if baseline in set(s["architecture"]):
        ax.axvline(
            float(s.loc[s["architecture"] == baseline, "accuracy_mean"].iloc[0]),
            color=BASELINE_COLOR,
            ls="--",
            lw=1,
            alpha=0.6,
            zorder=1,
        )
    ax.set_yticks(y)
    ax.set_yticklabels(
        [a + (f"  ({_role(a, baseline, final)})" if _role(a, baseline, final) else "") for a in s["architecture"]],
        fontsize=9.5,
    )
    for label, arch in zip(ax.get_yticklabels(), s["architecture"]):
        if _role(arch, baseline, final):
            label.set_color(_arch_color(arch, baseline, final))
            label.set_fontweight("bold")
    lo = (s["accuracy_mean"] - s["accuracy_std"]).min()
    hi = (s["accuracy_mean"] + s["accuracy_std"]).max()
    if fold_scores:
        all_folds = np.concatenate([np.asarray(v, float) for v in fold_scores.values()])
        lo, hi = min(lo, all_folds.min()), max(hi, all_folds.max())
    pad = max(hi - lo, 0.02)
    ax.set_xlim(lo - 0.08 * pad, hi + 0.35 * pad)
    ax.set_ylim(-0.7, len(s) - 0.3)
    k = int(s["folds"].max()) if "folds" in s else None
    ax.set_xlabel(f"held-out accuracy (mean ± std over {k} folds; small circles: single folds)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(
        f"Cross-validation accuracy per architecture\n({dataset_label(dataset)}; dashed: baseline mean)", fontsize=11
    )
    fig.tight_layout()
    return save(fig, path)


def pareto_front(x: np.ndarray, y: np.ndarray) -> list[int]:
    """Indices of the points no other point beats (lower-or-equal x and higher y), by increasing x."""
    order = np.lexsort((-np.asarray(y), np.asarray(x)))
    front, best = [], -np.inf
    for i in order:
        if y[i] > best:
            front.append(i)
            best = y[i]
    return front


def _spread(targets, gap):
    """Positions as near `targets` (sorted ascending) as possible, each at least `gap` above the
    one before: least squares under that constraint (pool adjacent violators on targets - i * gap)."""
    blocks = []  # [sum, count] of pooled values
    for i, t in enumerate(targets):
        blocks.append([t - i * gap, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, n = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += n
    out = [b[0] / b[1] for b in blocks for _ in range(b[1])]
    return [v + i * gap for i, v in enumerate(out)]


def _overlap(a, b):
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _place_labels(ax, xs, ys, texts, yerr=None, ringed=(), fontsize=8.5, color="0.1"):
    """Labels that overlap no other label, point or error bar, placed the same way every time:
    points closer in x than a marker form a group whose labels stand in one column beside it,
    in the order of the points' heights, each as near its point's height as the others allow
    (`_spread`), with a leader line to its point where it had to move; each column goes on the
    first side and distance (nearest first) where it covers nothing already there. Call it
    after the layout is final (it measures in display pixels); `ringed`: indices of points drawn
    with a ring (a larger marker). Returns the labels' boxes (display pixels)."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    px = 72.0 / fig.dpi  # points per display pixel (annotation offsets are in points)
    pts = ax.transData.transform(np.column_stack([xs, ys]))
    radius = np.array([11.0 if i in ringed else 6.0 for i in range(len(pts))]) * fig.dpi / 100
    taken = [(p[0] - r, p[1] - r, p[0] + r, p[1] + r) for p, r in zip(pts, radius)]
    if yerr is not None:
        lo = ax.transData.transform(np.column_stack([xs, np.asarray(ys) - yerr]))
        hi = ax.transData.transform(np.column_stack([xs, np.asarray(ys) + yerr]))
        taken += [(a[0] - 4, a[1], b[0] + 4, b[1]) for a, b in zip(lo, hi)]
    sizes = _label_sizes(ax, texts, fontsize, renderer)
    gap = max([h for _, h in sizes] + [1.0]) + 2
    axbox = ax.get_window_extent(renderer)
    groups = _x_groups(pts)
    boxes = {}
    for group in sorted(groups, key=lambda g: (-len(g), pts[g[0], 0])):
        group = sorted(group, key=lambda i: (pts[i, 1], texts[i]))
        heights = _spread([pts[i, 1] for i in group], gap)
        shift = max(0.0, axbox.y0 + gap / 2 - heights[0]) - max(0.0, heights[-1] - (axbox.y1 - gap / 2))
        heights = [h + shift for h in heights]
        best = None
        for extra in (0, 16, 32, 56, 88, 128):
            for side in (1, -1):
                edge = (
                    (pts[group, 0] + radius[group]).max() + 4 + extra
                    if side > 0
                    else (pts[group, 0] - radius[group]).min() - 4 - extra
                )
                cand = {
                    i: (edge, y, edge + sizes[i][0], y) if side > 0 else (edge - sizes[i][0], y, edge, y)
                    for i, y in zip(group, heights)
                }
                cand = {i: (b[0], b[1] - sizes[i][1] / 2, b[2], b[3] + sizes[i][1] / 2) for i, b in cand.items()}
                cost = sum(_overlap(b, t) for b in cand.values() for t in taken)
                cost += 1e6 * sum(
                    b[0] < axbox.x0 or b[2] > axbox.x1 or b[1] < axbox.y0 or b[3] > axbox.y1 for b in cand.values()
                )
                if best is None or cost < best[0]:
                    best = (cost, side, extra, cand)
                if cost == 0:
                    break
            if best[0] == 0:
                break
        _, side, extra, cand = best
        for i, b in cand.items():
            x0 = b[0] if side > 0 else b[2]
            y0 = (b[1] + b[3]) / 2
            moved = extra > 0 or abs(y0 - pts[i, 1]) > gap / 2
            ax.annotate(
                texts[i],
                (xs[i], ys[i]),
                xytext=((x0 - pts[i, 0]) * px, (y0 - pts[i, 1]) * px),
                textcoords="offset points",
                ha="left" if side > 0 else "right",
                va="center",
                fontsize=fontsize,
                color=color,
                arrowprops={"arrowstyle": "-", "lw": 0.6, "color": "0.5", "shrinkA": 1, "shrinkB": 5}
                if moved
                else None,
            )
            boxes[i] = b
            taken.append(b)
    return [boxes[i] for i in range(len(texts))]


def _label_sizes(ax, texts, fontsize, renderer):
    """(width, height) in display pixels of each of `texts` drawn at `fontsize` (`_place_labels`)."""
    probe = ax.text(0, 0, "", fontsize=fontsize)
    sizes = []
    for text in texts:
        probe.set_text(text)
        bb = probe.get_window_extent(renderer)
        sizes.append((bb.width, bb.height))
    probe.remove()
    return sizes


def _x_groups(pts):
    """Indices of the points (display pixels) in groups closer in x than a marker, left to right
    (`_place_labels`)."""
    groups = []
    for i in np.argsort(pts[:, 0], kind="stable"):
        if groups and pts[i, 0] - pts[groups[-1][-1], 0] < 12:
            groups[-1].append(int(i))
        else:
            groups.append([int(i)])
    return groups


def plot_accuracy_vs_compute(
    cost: pd.DataFrame,
    path: Path | str,
    dataset: str,
    baseline: str | None = None,
    final: str | None = None,
    summary: pd.DataFrame | None = None,
) -> Path:
    """Mean held-out accuracy against forward MFLOPs per image (log x), one labelled point per
    architecture at its true compute, coloured by the factor it varies, with the Pareto front.
    Architectures of equal compute share an x: their labels stand in a column beside them."""
    from matplotlib.ticker import FuncFormatter

    plt = _plt()
    df = cost.copy()
    if summary is not None:
        df = df.merge(summary[["architecture", "factor", "accuracy_std"]], on="architecture", how="left")
    factors = list(dict.fromkeys(df["factor"].fillna("")) if "factor" in df else [""])
    cmap = plt.get_cmap("tab10" if len(factors) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(10, 6.5))
    y = df["accuracy_mean"].to_numpy(float)
    x = df["mflops"].to_numpy(float)
    front = pareto_front(x, y)
    ax.plot(x[front], y[front], "--", color="0.6", lw=1, zorder=1, label="Pareto front")
    for f_i, factor in enumerate(factors):
        sel = (df["factor"].fillna("") == factor).to_numpy() if "factor" in df else np.ones(len(df), bool)
        yerr = df.loc[sel, "accuracy_std"] if "accuracy_std" in df else None
        ax.errorbar(
            x[sel],
            y[sel],
            yerr=yerr,
            fmt="o",
            ms=7,
            capsize=3,
            color=cmap(f_i % cmap.N),
            label=factor or "architectures",
            zorder=3,
            alpha=0.85,
        )
    for i, arch in enumerate(df["architecture"]):
        if arch in (final, baseline):  # rings in black: the factor colours may include red and blue
            ax.plot(
                x[i], y[i], "o", ms=15, mfc="none", mec="black", mew=2 if arch == final else 1.2, ls="none", zorder=4
            )
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(f"{v:g}")[0] in "25" else ""))
    ax.tick_params(axis="x", which="minor", labelsize=8)
    ax.set_xlabel("forward MFLOPs per image (log scale)")
    ax.set_ylabel("held-out accuracy (mean ± std over folds)")
    ax.grid(alpha=0.3, which="both")
    span = max(x.max() / x.min(), 1.5) if len(x) else 2
    ax.set_xlim(x.min() / span**0.25, x.max() * span**0.25)  # room for a column of labels either side
    err = df["accuracy_std"].fillna(0).to_numpy(float) if "accuracy_std" in df else np.zeros_like(y)
    lo, hi = (y - err).min(), (y + err).max()
    yr = max(hi - lo, 0.02)
    ax.set_ylim(lo - 0.08 * yr, hi + 0.08 * yr)
    ax.legend(
        title="factor varied",
        fontsize=8,
        title_fontsize=9,
        loc="center left",
        bbox_to_anchor=(1.01, 0.5),
        frameon=False,
    )
    ax.set_title(
        f"Accuracy against compute (ringed: the final architecture and the baseline)\n({dataset_label(dataset)})",
        fontsize=11,
    )
    fig.tight_layout()
    labels = [a + (f" ({_role(a, baseline, final)})" if _role(a, baseline, final) else "") for a in df["architecture"]]
    ringed = [i for i, a in enumerate(df["architecture"]) if a in (final, baseline)]
    _place_labels(ax, x, y, labels, yerr=err, ringed=ringed)
    return save(fig, path)


def plot_confusion_cv(arch_metrics: dict, path: Path | str, dataset: str) -> Path:
    """Row-normalised confusion matrix summed over the folds (metrics.json of one architecture)."""
    plt = _plt()
    agg = arch_metrics["aggregate"]
    acc = agg["metrics"]["accuracy"]
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    im = _confusion_panel(
        ax,
        agg["confusion_matrix"],
        f"{agg['k']} held-out folds summed, n = {agg['n']}; accuracy {acc['mean']:.3f} ± {acc['std']:.3f}",
    )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    fig.suptitle(
        f"Cross-validation confusion matrix of {arch_metrics['architecture']} (rows sum to 1)\n"
        f"({dataset_label(dataset)})",
        fontsize=11,
    )
    fig.tight_layout()
    return save(fig, path)
