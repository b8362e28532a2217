"""The study's figures (matplotlib, Agg backend, PNG), one function per figure, plus `make_all`.

Study figures read the result files (see docs/DESIGN.md): training curves, cross-validation
accuracy, accuracy against compute, confusion matrices, the final model's history.
Model figures look inside the final model: filters, activations per emotion, channel-emotion
preferences, Grad-CAM saliency and example predictions. They find layers generically
(`nn.Conv2d` modules, feature maps by their output shapes), so they work for the layer-list
`nn.Sequential` models and for the torchvision backbones alike.

Example faces are always PublicTest faces, picked with a seeded generator; PrivateTest appears
only as the final model's metrics (`confusion_final`). Every title names the dataset, so demo
figures cannot pass for FER2013 ones.
"""

import json
import logging
import math
import time
from pathlib import Path

import numpy as np

from . import CLASS_NAMES
from .errors import UserError
from .io import atomic_path

log = logging.getLogger("ferstudy.figures")

FIGURES = ("training_curves", "cv_accuracy", "accuracy_vs_compute", "confusion_cv", "confusion_final",
           "final_history", "filters_layer1", "filters_deeper", "activations", "channel_emotion",
           "saliency", "examples")
FINAL_COLOR, BASELINE_COLOR, OTHER_COLOR = "#d62728", "#1f77b4", "0.3"
RIGHT, WRONG = "#1a7f37", "#c62828"


# ---------------------------------------------------------------- plumbing

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def dataset_label(dataset):
    """What the titles say about the data: demo figures must not pass for FER2013 ones."""
    return {"demo": "DEMO data: synthetic faces, not FER2013", "fer2013": "FER2013"}.get(dataset, str(dataset))


def save(fig, path, dpi=110):
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


# ---------------------------------------------------------------- cross-validation figures

def mean_std_by_epoch(histories, column):
    """(epochs, mean, std) of `column` over the folds' history DataFrames (std 0 for one fold)."""
    import pandas as pd

    # epochs without a held-out evaluation (`eval_every`) have NaN there and are left out
    stacked = pd.concat([h[["epoch", column]] for h in histories]).dropna().groupby("epoch")[column]
    std = stacked.std(ddof=1).fillna(0.0)
    return stacked.mean().index.to_numpy(), stacked.mean().to_numpy(), std.to_numpy()


def batches_label(augmented):
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


def has_learning_curve(histories):
    """Whether the fold histories carry the learning curve (`training.curve_images`)."""
    return all("curve_val_acc" in h and h["curve_val_acc"].notna().any() for h in histories)


def curve_series(histories, augmented):
    """(column, colour, legend label) of the lines of one training-curves panel. With a learning
    curve: the fixed held-out and trained-on subsets (both un-augmented, so their gap is the
    over-fitting gap) and the whole held-out fold as points; without: the held-out fold and the
    running accuracy of the training batches."""
    if has_learning_curve(histories):
        return (("curve_val_acc", "C0", "held-out subset"),
                ("curve_train_acc", "C1", "trained-on subset (not augmented)"),
                ("val_acc", "C0", "whole held-out fold"))
    return (("val_acc", "C0", "held-out fold"), ("train_acc", "C1", batches_label(augmented)))


def plot_training_curves(histories, path, dataset, baseline=None, final=None, ncols=5, augmented=None):
    """Small multiples, one panel per architecture: held-out and training accuracy per epoch,
    mean over folds with a +-1 std band. histories: {arch: [history DataFrame per fold]};
    augmented: {arch: whether its training faces were augmented} (for the legend)."""
    from matplotlib.ticker import MaxNLocator

    plt = _plt()
    archs = list(histories)
    ncols = min(ncols, len(archs))
    nrows = math.ceil(len(archs) / ncols)
    height = 2.5 * nrows + 1.1
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.1 * ncols, height), sharey=True, squeeze=False)
    for ax, arch in zip(axes.flat, archs):
        for column, color, label in curve_series(histories[arch], augmented):
            epochs, mean, std = mean_std_by_epoch(histories[arch], column)
            if column == "val_acc" and has_learning_curve(histories[arch]):  # the full fold, last epoch only
                ax.errorbar(epochs, mean, yerr=std, color=color, marker="D", ms=4, lw=0, elinewidth=1, label=label)
                continue
            ax.plot(epochs, mean, color=color, lw=1.8, marker="o", ms=2.5, label=label)
            ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.25, lw=0)
        if (not has_learning_curve(histories[arch]) and isinstance(augmented, dict)
                and len(set(augmented.values())) > 1 and augmented.get(arch) is False):
            ax.text(0.03, 0.95, "training faces not augmented", transform=ax.transAxes, ha="left", va="top",
                    fontsize=7.5, color="C1")
        _, val, val_std = mean_std_by_epoch(histories[arch], "val_acc")
        ax.text(0.97, 0.05, f"last {val[-1]:.3f} ± {val_std[-1]:.3f}", transform=ax.transAxes, ha="right",
                fontsize=8, color="C0")
        role = _role(arch, baseline, final)
        ax.set_title(arch + (f"  ({role})" if role else ""), fontsize=10,
                     color=_arch_color(arch, baseline, final) if role else "black",
                     fontweight="bold" if role else "normal")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        all_epochs = [e for h in histories[arch] for e in h["epoch"]]
        ax.set_xlim(min(all_epochs) - 0.5, max(all_epochs) + 0.5)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    for ax in axes.flat[len(archs):]:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:len(archs)]):
        if i + ncols >= len(archs):  # the lowest panel of its column
            ax.set_xlabel("epoch", fontsize=9)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy", fontsize=9)
    k = len(next(iter(histories.values())))
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, [f"{lab} (mean ± std over {k} folds)" for lab in labels], loc="upper center",
               ncol=len(labels), fontsize=9, bbox_to_anchor=(0.5, 1.0 - 0.3 / height), frameon=False)
    fig.suptitle(f"Training curves per architecture, {k}-fold cross-validation ({dataset_label(dataset)})",
                 fontsize=12, y=1 - 0.08 / height, va="top")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / height))
    return save(fig, path)


def plot_cv_accuracy(summary, path, dataset, baseline=None, final=None, fold_scores=None):
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
        ax.errorbar(row["accuracy_mean"], i, xerr=row["accuracy_std"], fmt="o", color=color, ms=7, capsize=4,
                    lw=1.8, zorder=3)
        if fold_scores and arch in fold_scores:
            ax.plot(fold_scores[arch], [i - 0.25] * len(fold_scores[arch]), "o", mfc="none", mec="0.45", ms=4,
                    mew=1, zorder=2)
        ax.annotate(f"{row['accuracy_mean']:.3f} ± {row['accuracy_std']:.3f}",
                    (row["accuracy_mean"] + row["accuracy_std"], i), xytext=(7, 0), textcoords="offset points",
                    va="center", fontsize=8.5, color=color)
    if baseline in set(s["architecture"]):
        ax.axvline(float(s.loc[s["architecture"] == baseline, "accuracy_mean"].iloc[0]), color=BASELINE_COLOR,
                   ls="--", lw=1, alpha=0.6, zorder=1)
    ax.set_yticks(y)
    ax.set_yticklabels([a + (f"  ({_role(a, baseline, final)})" if _role(a, baseline, final) else "")
                        for a in s["architecture"]], fontsize=9.5)
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
    ax.set_title(f"Cross-validation accuracy per architecture\n({dataset_label(dataset)}; "
                 f"dashed: baseline mean)", fontsize=11)
    fig.tight_layout()
    return save(fig, path)


def pareto_front(x, y):
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
    probe = ax.text(0, 0, "", fontsize=fontsize)
    sizes = []
    for text in texts:
        probe.set_text(text)
        bb = probe.get_window_extent(renderer)
        sizes.append((bb.width, bb.height))
    probe.remove()
    gap = max([h for _, h in sizes] + [1.0]) + 2
    axbox = ax.get_window_extent(renderer)
    groups = []
    for i in np.argsort(pts[:, 0], kind="stable"):
        if groups and pts[i, 0] - pts[groups[-1][-1], 0] < 12:
            groups[-1].append(int(i))
        else:
            groups.append([int(i)])
    boxes = {}
    for group in sorted(groups, key=lambda g: (-len(g), pts[g[0], 0])):
        group = sorted(group, key=lambda i: (pts[i, 1], texts[i]))
        heights = _spread([pts[i, 1] for i in group], gap)
        shift = max(0.0, axbox.y0 + gap / 2 - heights[0]) - max(0.0, heights[-1] - (axbox.y1 - gap / 2))
        heights = [h + shift for h in heights]
        best = None
        for extra in (0, 16, 32, 56, 88, 128):
            for side in (1, -1):
                edge = ((pts[group, 0] + radius[group]).max() + 4 + extra if side > 0
                        else (pts[group, 0] - radius[group]).min() - 4 - extra)
                cand = {i: (edge, y, edge + sizes[i][0], y) if side > 0 else (edge - sizes[i][0], y, edge, y)
                        for i, y in zip(group, heights)}
                cand = {i: (b[0], b[1] - sizes[i][1] / 2, b[2], b[3] + sizes[i][1] / 2) for i, b in cand.items()}
                cost = sum(_overlap(b, t) for b in cand.values() for t in taken)
                cost += 1e6 * sum(b[0] < axbox.x0 or b[2] > axbox.x1 or b[1] < axbox.y0 or b[3] > axbox.y1
                                  for b in cand.values())
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
            ax.annotate(texts[i], (xs[i], ys[i]), xytext=((x0 - pts[i, 0]) * px, (y0 - pts[i, 1]) * px),
                        textcoords="offset points", ha="left" if side > 0 else "right", va="center",
                        fontsize=fontsize, color=color,
                        arrowprops={"arrowstyle": "-", "lw": 0.6, "color": "0.5", "shrinkA": 1, "shrinkB": 5}
                        if moved else None)
            boxes[i] = b
            taken.append(b)
    return [boxes[i] for i in range(len(texts))]


def plot_accuracy_vs_compute(cost, path, dataset, baseline=None, final=None, summary=None):
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
        ax.errorbar(x[sel], y[sel], yerr=yerr, fmt="o", ms=7, capsize=3, color=cmap(f_i % cmap.N),
                    label=factor or "architectures", zorder=3, alpha=0.85)
    for i, arch in enumerate(df["architecture"]):
        if arch in (final, baseline):  # rings in black: the factor colours may include red and blue
            ax.plot(x[i], y[i], "o", ms=15, mfc="none", mec="black", mew=2 if arch == final else 1.2,
                    ls="none", zorder=4)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(f"{v:g}")[0] in "25" else ""))
    ax.tick_params(axis="x", which="minor", labelsize=8)
    ax.set_xlabel("forward MFLOPs per image (log scale)")
    ax.set_ylabel("held-out accuracy (mean ± std over folds)")
    ax.grid(alpha=0.3, which="both")
    span = max(x.max() / x.min(), 1.5) if len(x) else 2
    ax.set_xlim(x.min() / span ** 0.25, x.max() * span ** 0.25)  # room for a column of labels either side
    err = df["accuracy_std"].fillna(0).to_numpy(float) if "accuracy_std" in df else np.zeros_like(y)
    lo, hi = (y - err).min(), (y + err).max()
    yr = max(hi - lo, 0.02)
    ax.set_ylim(lo - 0.08 * yr, hi + 0.08 * yr)
    ax.legend(title="factor varied", fontsize=8, title_fontsize=9, loc="center left", bbox_to_anchor=(1.01, 0.5),
              frameon=False)
    ax.set_title(f"Accuracy against compute (ringed: the final architecture and the baseline)\n"
                 f"({dataset_label(dataset)})", fontsize=11)
    fig.tight_layout()
    labels = [a + (f" ({_role(a, baseline, final)})" if _role(a, baseline, final) else "") for a in df["architecture"]]
    ringed = [i for i, a in enumerate(df["architecture"]) if a in (final, baseline)]
    _place_labels(ax, x, y, labels, yerr=err, ringed=ringed)
    return save(fig, path)


def _confusion_panel(ax, counts, title):
    counts = np.asarray(counts, dtype=float)
    sums = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, sums, out=np.zeros_like(counts), where=sums > 0)
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    for i in range(norm.shape[0]):
        for j in range(norm.shape[1]):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=8.5,
                    color="white" if norm[i, j] > 0.55 else "black", fontweight="bold" if i == j else "normal")
    n = len(CLASS_NAMES)
    ax.set_xticks(range(n))
    ax.set_xticklabels(CLASS_NAMES, rotation=40, ha="right", fontsize=9)
    ax.set_yticks(range(n))
    ax.set_yticklabels([f"{c} ({int(s)})" for c, s in zip(CLASS_NAMES, sums[:, 0])], fontsize=9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (images)")
    ax.set_title(title, fontsize=10)
    return im


def plot_confusion_cv(arch_metrics, path, dataset):
    """Row-normalised confusion matrix summed over the folds (metrics.json of one architecture)."""
    plt = _plt()
    agg = arch_metrics["aggregate"]
    acc = agg["metrics"]["accuracy"]
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    im = _confusion_panel(ax, agg["confusion_matrix"],
                          f"{agg['k']} held-out folds summed, n = {agg['n']}; "
                          f"accuracy {acc['mean']:.3f} ± {acc['std']:.3f}")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    fig.suptitle(f"Cross-validation confusion matrix of {arch_metrics['architecture']} (rows sum to 1)\n"
                 f"({dataset_label(dataset)})", fontsize=11)
    fig.tight_layout()
    return save(fig, path)


def plot_confusion_final(final_metrics, path, dataset, arch):
    """The final model's row-normalised confusion matrices on PublicTest and PrivateTest."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.6), layout="constrained")
    for ax, key, name in zip(axes, ("public", "private"),
                             ("PublicTest (chose the checkpoint)", "PrivateTest (untouched test set)")):
        m = final_metrics[key]
        im = _confusion_panel(ax, m["confusion_matrix"],
                              f"{name}\nn = {m['n']}, accuracy {m['accuracy']:.3f}, macro F1 {m['macro_f1']:.3f}")
    fig.colorbar(im, ax=axes, shrink=0.85, label="fraction of the true class")
    fig.get_layout_engine().set(wspace=0.08)
    fig.suptitle(f"Final model {arch}: confusion matrices, rows sum to 1 ({dataset_label(dataset)})", fontsize=12)
    return save(fig, path)


def plot_final_history(history, path, dataset, arch, best_epoch=None, augmented=None):
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
    axes[0].annotate(f"{best_acc:.3f}", (best_epoch, best_acc), xytext=(-5, 6), textcoords="offset points",
                     ha="right", color=FINAL_COLOR, fontsize=9, fontweight="bold")
    axes[0].margins(y=0.1)
    axes[0].legend(fontsize=8.5, loc="lower right")
    axes[2].plot(e, history["lr"], "o-", ms=3, color="0.3")
    axes[2].axvline(best_epoch, color=FINAL_COLOR, ls="--", lw=1.2)
    axes[2].set_ylabel("learning rate (start of epoch)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(f"Final model {arch} on all of Training; PublicTest picks the checkpoint "
                 f"({dataset_label(dataset)})", fontsize=12)
    fig.tight_layout()
    return save(fig, path)


# ---------------------------------------------------------------- looking inside a model

def conv_layers(model):
    """[(name, nn.Conv2d)] in module order (the first is the input layer)."""
    from torch import nn

    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def first_layer_filters(model):
    """(layer name, kernels (out_channels, k, k) as numpy), input channels averaged."""
    convs = conv_layers(model)
    if not convs:
        return None, np.zeros((0, 0, 0))
    name, conv = convs[0]
    return name, conv.weight.detach().cpu().float().mean(dim=1).numpy()


def kernel_mosaic(kernels, ncols, gap=1, gap_y=None):
    """Kernels (N, k, k) -> one image of `ncols` tiles per row, each scaled to [-1, 1] by its own
    max |w|, separated by NaN gaps; also the (x, y) top-centre of each tile in image coordinates."""
    n, kh, kw = kernels.shape
    gap_y = gap if gap_y is None else gap_y
    nrows = math.ceil(n / ncols)
    img = np.full((nrows * (kh + gap_y) - gap_y, ncols * (kw + gap) - gap), np.nan)
    tops = []
    for t, k in enumerate(kernels):
        r, c = divmod(t, ncols)
        y, x = r * (kh + gap_y), c * (kw + gap)
        img[y:y + kh, x:x + kw] = k / (float(np.abs(k).max()) or 1.0)
        tops.append((x + (kw - 1) / 2, y - 0.5))
    return img, tops


def _show_mosaic(ax, kernels, ncols, labels, fontsize=7):
    from matplotlib import colormaps

    kh = kernels.shape[1]
    img, tops = kernel_mosaic(kernels, ncols, gap=max(1, round(kh / 3)), gap_y=max(1, round(kh * 0.7)))
    cmap = colormaps["RdBu_r"].with_extremes(bad="white")
    ax.imshow(img, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    for (x, y), label in zip(tops, labels):
        ax.text(x, y - 0.05 * kh, label, ha="center", va="bottom", fontsize=fontsize)
    ax.set_ylim(img.shape[0] - 0.5, -0.5 - 0.6 * kh)
    _no_axes(ax)
    return img.shape


def plot_filters_layer1(model, path, dataset, arch):
    """Every kernel of the first conv layer as an image (red positive, blue negative weights),
    ordered by kernel norm. Returns the number of kernels drawn."""
    plt = _plt()
    name, w = first_layer_filters(model)
    if name is None:
        _placeholder(path, f"First-layer filters of {arch}", "This model has no convolution layer.")
        return 0
    n = len(w)
    ncols = min(16, max(8, math.ceil(math.sqrt(n))))
    nrows = math.ceil(n / ncols)
    kh = w.shape[1]
    gap, gap_y = max(1, round(kh / 3)), max(1, round(kh * 0.7))
    aspect = (nrows * (kh + gap_y) - gap_y + 0.6 * kh) / (ncols * (kh + gap) - gap)
    fig, ax = plt.subplots(figsize=(ncols * 0.8, ncols * 0.8 * 0.98 * aspect + 0.8))
    order = np.argsort(-np.sqrt((w ** 2).sum(axis=(1, 2))), kind="stable")
    _show_mosaic(ax, w[order], ncols, [f"#{c}" for c in order], fontsize=8)
    k = "×".join(map(str, w.shape[1:]))
    _headroom(fig, f"First conv layer of the final model {arch} ({name}: {n} kernels of {k}), strongest first\n"
                   f"red = positive, blue = negative weight, each kernel scaled to its own max |w|\n"
                   f"({dataset_label(dataset)})", 0.8, 10)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01)
    save(fig, path)
    return n


def plot_filters_deeper(model, path, dataset, arch, examples=6):
    """One row per deeper conv layer: distribution of the output filters' kernel norms, the mean
    |weight| at each kernel position, and the strongest 2-D kernel slices."""
    plt = _plt()
    convs = conv_layers(model)[1:]
    if not convs:
        return _placeholder(path, f"Deeper conv layers of {arch}", "This model has at most one convolution layer.")
    fig, axes = plt.subplots(len(convs), 3, figsize=(12, 1.2 * len(convs) + 1.2), squeeze=False,
                             gridspec_kw={"width_ratios": [3.2, 1.0, 6.4], "wspace": 0.12, "hspace": 0.45})
    for row, (name, conv) in zip(axes, convs):
        w = conv.weight.detach().cpu().float().numpy()  # (O, I, kh, kw)
        o, i, kh, kw = w.shape
        norms = np.sqrt((w ** 2).sum(axis=(1, 2, 3)))
        row[0].hist(norms, bins=min(30, max(5, o // 4)), color="C0")
        row[0].set_ylabel(f"{name}\n{o}×{i}×{kh}×{kw}\nmedian norm {np.median(norms):.2f}", fontsize=8.5,
                          rotation=0, ha="right", va="center")
        row[0].tick_params(labelsize=7)
        row[1].imshow(np.abs(w).mean(axis=(0, 1)), cmap="viridis", vmin=0, interpolation="nearest")
        _no_axes(row[1])
        strongest = np.argsort(-norms, kind="stable")[:examples]
        inputs = np.sqrt((w ** 2).sum(axis=(2, 3)))[strongest].argmax(axis=1)  # strongest input slice of each
        _show_mosaic(row[2], w[strongest, inputs], examples, [f"{oc}←{ic}" for oc, ic in zip(strongest, inputs)])
    axes[0, 0].set_title("norms of the output filters", fontsize=8.5)
    axes[0, 1].set_title("mean |w|\nper position", fontsize=8.5)
    axes[0, 2].set_title(f"the {examples} strongest output filters: their strongest input slice (out←in)",
                         fontsize=8.5)
    axes[-1, 0].set_xlabel("L2 norm of an output filter's kernel", fontsize=8)
    _headroom(fig, f"Deeper conv layers of the final model {arch}, one row per layer (name, out×in×k×k);\n"
                   f"kernels: red = positive, blue = negative weight, each scaled to its own max |w| "
                   f"({dataset_label(dataset)})", 0.95, 10)
    return save(fig, path)


def stage_taps(model, input_size, in_channels=1, min_size=2):
    """Feature-map taps, one per spatial resolution, shallow to deep: [(name, module, (C, H, W))].

    For each resolution that a convolution outputs, the tap is the module whose output is the
    last one at that resolution in execution order: the post-activation output of a block before
    it is pooled or strided (`relu<i>` in layer lists, `layer1`..`layer4` in resnet18, the ReLUs
    of vgg11_bn). The last tap is thus the last conv layer's activation (not the pooled map after
    it). Maps smaller than `min_size` are skipped (nothing to see in 1x1).
    """
    import torch
    from torch import nn

    events, conv_sizes = [], set()

    def hook(module, inputs, output, name=None):
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            events.append((name, module, tuple(output.shape[1:])))
            if isinstance(module, nn.Conv2d):
                conv_sizes.add(tuple(output.shape[2:]))

    handles = [m.register_forward_hook(lambda mod, i, o, name=name: hook(mod, i, o, name))
               for name, m in model.named_modules() if name]
    was_training = model.training
    try:
        model.eval()
        p = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(1, in_channels, input_size, input_size, device=p.device, dtype=p.dtype))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    taps = {}
    for name, module, shape in events:
        if min(shape[1:]) >= min_size and shape[1:] in conv_sizes:
            taps[shape[1:]] = (name, module, shape)
    return list(taps.values())


def capture(model, x, modules):
    """Outputs of `modules` for input x (no gradients): a list of tensors."""
    import torch

    out = [None] * len(modules)
    handles = [m.register_forward_hook(lambda mod, i, o, k=k: out.__setitem__(k, o.detach().clone()))
               for k, m in enumerate(modules)]
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        for h in handles:
            h.remove()
    return out, logits


def grad_cam(model, x, targets, module):
    """Grad-CAM (Selvaraju et al. 2017) of class `targets` at `module`'s output.

    x: float (B, C, H, W) model input; targets: int (B,). Returns (maps (B, H, W) numpy in [0, 1],
    each scaled to its own max (all zero where no location supports the class), softmax (B, 7)).
    """
    import torch
    import torch.nn.functional as F

    model.eval()
    store = {}
    handle = module.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    try:
        with torch.enable_grad():
            logits = model(x)
            a = store["a"]
            score = logits.gather(1, torch.as_tensor(targets, device=logits.device).long()[:, None]).sum()
            (g,) = torch.autograd.grad(score, a)
    finally:
        handle.remove()
    with torch.no_grad():
        cam = F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1, keepdim=True))
        cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        cam = cam / cam.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
        return cam.clamp_(0, 1).cpu().numpy(), logits.softmax(1).cpu().numpy()


def model_input(images, crop):
    """uint8 (B, 48, 48) numpy -> the normalised centre crop the model sees, float (B, 1, crop, crop)."""
    import torch

    from .augment import eval_views

    return eval_views(torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1), crop, "none")[0]


def pick_faces(data, per_class, seed=0):
    """Seeded PublicTest indices, per emotion: {class: sorted array of up to `per_class` indices}."""
    rng = np.random.default_rng(seed)
    public = data.split == 1
    picks = {}
    for c in range(len(CLASS_NAMES)):
        pool = np.flatnonzero(public & (data.labels == c))
        picks[c] = np.sort(rng.choice(pool, size=min(per_class, len(pool)), replace=False)) if len(pool) else pool
    return picks


def _face_axis(ax, img, ylabel=None):
    ax.imshow(img, cmap="gray", interpolation="nearest")
    _no_axes(ax)
    if ylabel:
        ax.set_ylabel(ylabel, rotation=0, ha="right", va="center", fontsize=10)


def plot_activations(model, data, crop, path, dataset, arch, seed=0, depths=3, top=4):
    """One PublicTest face per emotion and, at `depths` depths, its `top` most active feature maps."""
    plt = _plt()
    taps = stage_taps(model, crop)
    if not taps:
        return _placeholder(path, f"Activations of {arch}", "This model has no spatial feature maps.")
    chosen = [taps[i] for i in sorted(set(np.linspace(0, len(taps) - 1, depths).round().astype(int)))]
    faces = np.array([v[0] for v in pick_faces(data, 1, seed).values() if len(v)])
    x = model_input(data.images[faces], crop)
    maps, _ = capture(model, x, [t[1] for t in chosen])
    ncols = 1 + len(chosen) * (top + 1)
    widths = [1.15] + ([0.25] + [1] * top) * len(chosen)
    fig, axes = plt.subplots(len(faces), ncols, figsize=(sum(widths) * 1.05, len(faces) * 1.15 + 1.3),
                             squeeze=False, gridspec_kw={"width_ratios": widths, "wspace": 0.08, "hspace": 0.35})
    for r, idx in enumerate(faces):
        _face_axis(axes[r, 0], x[r, 0].numpy(), CLASS_NAMES[data.labels[idx]])
        for d, m in enumerate(maps):
            col0 = 1 + d * (top + 1)
            axes[r, col0].axis("off")
            fm = m[r].float().numpy()
            for j, ch in enumerate(np.argsort(-fm.mean(axis=(1, 2)), kind="stable")[:top]):
                ax = axes[r, col0 + 1 + j]
                ax.imshow(fm[ch], cmap="magma", interpolation="nearest")
                _no_axes(ax)
                ax.set_title(f"ch {ch}", fontsize=7, pad=1.5)
    axes[0, 0].set_title("input\n(centre crop)", fontsize=8)
    _headroom(fig, f"Feature maps of the final model {arch} for one PublicTest face per emotion "
                   f"({dataset_label(dataset)})\nat each depth the {top} channels most active on that face; "
                   f"each map scaled to its own range (bright = strong)", 1.25, 10)
    for d, (name, _, (c, h, w)) in enumerate(chosen):
        left = axes[0, 2 + d * (top + 1)].get_position()
        right = axes[0, (d + 1) * (top + 1)].get_position()
        fig.text((left.x0 + right.x1) / 2, left.y1 + 0.3 / fig.get_figheight(),
                 f"depth {d + 1}: {name} ({c}×{h}×{w})", ha="center", va="bottom", fontsize=9, fontweight="bold")
    return save(fig, path)


def channel_emotion_matrix(model, images, labels, crop, module, batch=256):
    """Mean activation per emotion of each channel of `module`'s output (spatial mean per image).

    Returns (means (7, C), selectivity (C,)): selectivity is the share of a channel's variance over
    images explained by the emotion (eta squared, 0-1). Emotions without images give NaN rows.
    """
    feats = []
    for s in range(0, len(images), batch):
        (a,), _ = capture(model, model_input(images[s:s + batch], crop), [module])
        feats.append(a.float().mean(dim=(2, 3)).cpu().numpy())
    f = np.concatenate(feats).astype(np.float64)
    labels = np.asarray(labels)
    means = np.full((len(CLASS_NAMES), f.shape[1]), np.nan)
    between = np.zeros(f.shape[1])
    grand = f.mean(axis=0)
    for c in range(len(CLASS_NAMES)):
        sel = labels == c
        if sel.any():
            means[c] = f[sel].mean(axis=0)
            between += sel.sum() * (means[c] - grand) ** 2
    total = ((f - grand) ** 2).sum(axis=0)
    selectivity = np.divide(between, total, out=np.zeros_like(total), where=total > 0)
    return means, selectivity


def plot_channel_emotion(model, data, crop, path, dataset, arch, per_class=150, seed=0, top=40):
    """Heatmap of the last feature map's most emotion-selective channels: mean activation per
    emotion, z-scored per channel, the preferred emotion marked; plus how many of all channels
    prefer each emotion. Returns (means (7, C), selectivity (C,))."""
    plt = _plt()
    taps = stage_taps(model, crop)
    if not taps:
        _placeholder(path, f"Channels and emotions of {arch}", "This model has no spatial feature maps.")
        return None, None
    name, module, (c_all, h, w) = taps[-1]
    idx = np.concatenate(list(pick_faces(data, per_class, seed).values()))
    means, sel = channel_emotion_matrix(model, data.images[idx], data.labels[idx], crop, module)
    sd = np.nanstd(means, axis=0)
    z = np.divide(means - np.nanmean(means, axis=0), sd, out=np.zeros_like(means), where=sd > 0)
    prefer = np.nanargmax(np.where(np.isnan(z), -np.inf, z), axis=0)
    chans = np.argsort(-sel, kind="stable")[:min(top, c_all)]
    chans = chans[np.lexsort((-sel[chans], prefer[chans]))]
    colors = [plt.get_cmap("tab10")(c) for c in range(len(CLASS_NAMES))]
    heat_w = 0.2 * max(len(chans), 16)
    fig, axes = plt.subplots(2, 3, figsize=(heat_w + 3.6, 6.2),
                             gridspec_kw={"height_ratios": [1, 3.2], "width_ratios": [heat_w, 0.15, 1.9],
                                          "hspace": 0.06, "wspace": 0.12})
    top_ax, ax, cax, count_ax = axes[0, 0], axes[1, 0], axes[1, 1], axes[1, 2]
    axes[0, 1].axis("off")
    axes[0, 2].axis("off")
    top_ax.bar(np.arange(len(chans)), sel[chans], color=[colors[p] for p in prefer[chans]], width=0.8)
    top_ax.set_xlim(-0.5, len(chans) - 0.5)
    top_ax.set_xticks([])
    top_ax.set_ylabel("η²", fontsize=9)
    top_ax.tick_params(labelsize=7)
    top_ax.set_title(f"the {len(chans)} most emotion-selective of {c_all} channels; η² = share of a channel's "
                     f"variance\nexplained by the emotion (bar colour: the emotion it prefers)",
                     fontsize=8.5, loc="left")
    im = ax.imshow(z[:, chans], cmap="RdBu_r", vmin=-2.3, vmax=2.3, aspect="auto", interpolation="nearest")
    ax.scatter(np.arange(len(chans)), prefer[chans], marker="s", s=40, facecolor="none", edgecolor="black", lw=1.2)
    ax.set_yticks(range(len(CLASS_NAMES)))
    ax.set_yticklabels(CLASS_NAMES, fontsize=9)
    ax.set_xticks(np.arange(len(chans)))
    ax.set_xticklabels([str(c) for c in chans], rotation=90, fontsize=7)
    ax.set_xlabel(f"channel of {name} (boxed: the emotion it responds to most)", fontsize=9)
    fig.colorbar(im, cax=cax)
    cax.tick_params(labelsize=7)
    cax.set_title("z", fontsize=8)
    counts = np.bincount(prefer, minlength=len(CLASS_NAMES))
    count_ax.barh(range(len(CLASS_NAMES)), counts, color=colors)
    count_ax.set_ylim(len(CLASS_NAMES) - 0.5, -0.5)
    count_ax.set_yticks([])
    count_ax.set_xlabel(f"channels preferring\neach emotion (all {c_all})", fontsize=8.5)
    count_ax.tick_params(labelsize=8)
    for k, v in enumerate(counts):
        count_ax.text(v, k, f" {v} {CLASS_NAMES[k]}", va="center", fontsize=8)
    count_ax.set_xlim(0, counts.max() * 2.2 + 1)
    for side in ("top", "right"):
        count_ax.spines[side].set_visible(False)
    _headroom(fig, f"Mean activation per emotion of the last feature map's channels ({name}, {c_all}×{h}×{w}) of "
                   f"{arch},\nz-scored per channel across emotions; {len(idx)} PublicTest faces "
                   f"({dataset_label(dataset)})", 1.1, 10.5)
    save(fig, path)
    return means, sel


def plot_saliency(model, data, crop, path, dataset, arch, per_class=3, seed=0):
    """Grad-CAM of the true class at the last feature map over `per_class` PublicTest faces per emotion."""
    import torch

    plt = _plt()
    taps = stage_taps(model, crop)
    if not taps:
        return _placeholder(path, f"Saliency of {arch}", "This model has no spatial feature maps.")
    name, module, _ = taps[-1]
    picks = pick_faces(data, per_class, seed + 1)
    fig, axes = plt.subplots(len(CLASS_NAMES), 2 * per_class, figsize=(2 * per_class * 1.3 + 1, 7 * 1.45 + 1.1),
                             squeeze=False, gridspec_kw={"wspace": 0.05, "hspace": 0.45})
    for c, idx in picks.items():
        for ax in axes[c]:
            _no_axes(ax)
        if not len(idx):
            continue
        x = model_input(data.images[idx], crop)
        cams, probs = grad_cam(model, x, torch.full((len(idx),), c), module)
        for j in range(len(idx)):
            face = x[j, 0].numpy()
            _face_axis(axes[c, 2 * j], face, CLASS_NAMES[c] if j == 0 else None)
            ax = axes[c, 2 * j + 1]
            ax.imshow(face, cmap="gray", interpolation="nearest")
            ax.imshow(cams[j], cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear")
            pred = int(probs[j].argmax())
            wrong = "" if pred == c else f"\npred {CLASS_NAMES[pred]}"
            ax.set_title(f"p({CLASS_NAMES[c]}) {probs[j, c]:.2f}{wrong}",
                         fontsize=7.5, color=RIGHT if pred == c else WRONG, pad=2)
    _headroom(fig, f"Grad-CAM of the true emotion at {name} of the final model {arch}\n({dataset_label(dataset)})\n"
                   f"{per_class} PublicTest faces per emotion, each beside its overlay: red = regions that raise the "
                   f"true emotion's score;\ntitle: its probability (centre crop), green when predicted correctly",
              1.35, 10)
    return save(fig, path)


def rows_to_indices(data, rows, source):
    """HDF5 indices of the CSV `row` values (predictions files store rows)."""
    order = np.argsort(data.row, kind="stable")
    pos = np.clip(np.searchsorted(data.row[order], rows), 0, len(order) - 1)
    idx = order[pos]
    if not np.array_equal(data.row[idx], rows):
        raise UserError(f"{source}: rows that are not in the HDF5 (were they written for another dataset?)")
    return idx


def plot_examples(data, predictions_csv, path, dataset, arch, per_kind=3, seed=0):
    """Per emotion, `per_kind` correctly and `per_kind` wrongly classified PublicTest faces with
    the predicted class and probabilities (from the final model's predictions_public.csv)."""
    from .metrics import read_predictions

    plt = _plt()
    labels, probs, rows = read_predictions(predictions_csv)
    idx = rows_to_indices(data, rows, predictions_csv)
    if not np.all(data.split[idx] == 1):
        raise UserError(f"{predictions_csv}: the example faces must come from PublicTest, found other splits")
    pred = probs.argmax(1)
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(CLASS_NAMES), 2 * per_kind + 1, figsize=((2 * per_kind) * 1.35 + 0.4, 7 * 1.6 + 1),
                             squeeze=False, gridspec_kw={"width_ratios": [1] * per_kind + [0.2] + [1] * per_kind,
                                                         "wspace": 0.1, "hspace": 0.55})
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
                        ax.text(0.5, 0.5, "none", ha="center", va="center", fontsize=9, color="0.4",
                                transform=ax.transAxes)
                    continue
                i = chosen[j]
                ax.imshow(data.images[idx[i]], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
                p = pred[i]
                title = (f"{CLASS_NAMES[p]} {probs[i, p]:.2f}" if ok else
                         f"→ {CLASS_NAMES[p]} {probs[i, p]:.2f}\n({name} {probs[i, c]:.2f})")
                ax.set_title(title, fontsize=7.5, color=RIGHT if ok else WRONG, pad=2)
        axes[c, per_kind].axis("off")
        n, right = int(of_class.sum()), int((of_class & (pred == c)).sum())
        axes[c, 0].set_ylabel(f"{name}\n{right}/{n}", rotation=0, ha="right", va="center", fontsize=10)
    _headroom(fig, f"Final model {arch} on PublicTest faces ({dataset_label(dataset)})\nrow: true emotion, "
                   f"correct/total; title: predicted emotion and its probability (misclassified: and the true one's)",
              1.25, 10)
    for k, (text, color) in enumerate((("correct", RIGHT), ("misclassified", WRONG))):
        first = k * (per_kind + 1)
        left, right = axes[0, first].get_position(), axes[0, first + per_kind - 1].get_position()
        fig.text((left.x0 + right.x1) / 2, left.y1 + 0.42 / fig.get_figheight(), text, ha="center", va="bottom",
                 fontsize=11, fontweight="bold", color=color)
    return save(fig, path)


# ---------------------------------------------------------------- everything, and the CLI

def make_all(h5, results, out_dir, archs=None, final_arch=None, baseline=None, threads=1, seed=0, only=None):
    """Every figure of FIGURES (or those in `only`) from the results under `results`. Returns paths."""
    import pandas as pd
    import torch
    import yaml

    from .data import load_h5
    from .train import load_model

    torch.set_num_threads(max(1, int(threads)))
    results, out_dir = Path(results), Path(out_dir)
    data = load_h5(h5)
    dataset = data.attrs.get("dataset", "unknown")
    summary = pd.read_csv(_need(results / "tables" / "cv_summary.csv"))
    archs = list(archs or summary["architecture"])
    if final_arch is None:
        final_arch = _read_json(results / "final" / "selection.json")["architecture"]
    folds = int(data.attrs.get("folds", summary["folds"].max()))
    final = results / "final"
    wanted = list(only or FIGURES)
    unknown = [w for w in wanted if w not in FIGURES]
    if unknown:
        raise UserError(f"unknown figure(s) {', '.join(unknown)} (expected some of {', '.join(FIGURES)})")

    def arch_metrics(arch):
        return _read_json(results / "cv" / arch / "metrics.json")

    model = crop = None
    if {"filters_layer1", "filters_deeper", "activations", "channel_emotion", "saliency"} & set(wanted):
        model, payload = load_model(_need(final / "model.pt"))
        crop = int(payload["input_size"])
    best_epoch, final_augmented = None, None
    if (final / "config.yaml").is_file():
        final_cfg = yaml.safe_load((final / "config.yaml").read_text()) or {}
        best_epoch = final_cfg.get("best_epoch")
        final_augmented = _augmented(final_cfg.get("run_config"))

    def cv_augmented():
        paths = {a: results / "cv" / a / "run_config.yaml" for a in archs}
        return {a: _augmented(yaml.safe_load(p.read_text())) for a, p in paths.items() if p.is_file()}

    makers = {
        "training_curves": lambda p: plot_training_curves(
            {a: [pd.read_csv(_need(results / "cv" / a / f"fold{k}" / "history.csv")) for k in range(folds)]
             for a in archs}, p, dataset, baseline, final_arch, augmented=cv_augmented()),
        "cv_accuracy": lambda p: plot_cv_accuracy(
            summary[summary["architecture"].isin(archs)], p, dataset, baseline, final_arch,
            {a: arch_metrics(a)["aggregate"]["metrics"]["accuracy"]["folds"] for a in archs}),
        "accuracy_vs_compute": lambda p: plot_accuracy_vs_compute(
            (lambda c: c[c["architecture"].isin(archs)])(pd.read_csv(_need(results / "tables" / "cost.csv"))),
            p, dataset, baseline, final_arch, summary),
        "confusion_cv": lambda p: plot_confusion_cv(arch_metrics(final_arch), p, dataset),
        "confusion_final": lambda p: plot_confusion_final(_read_json(final / "metrics.json"), p, dataset, final_arch),
        "final_history": lambda p: plot_final_history(pd.read_csv(_need(final / "history.csv")), p, dataset,
                                                      final_arch, best_epoch, final_augmented),
        "filters_layer1": lambda p: plot_filters_layer1(model, p, dataset, final_arch),
        "filters_deeper": lambda p: plot_filters_deeper(model, p, dataset, final_arch),
        "activations": lambda p: plot_activations(model, data, crop, p, dataset, final_arch, seed),
        "channel_emotion": lambda p: plot_channel_emotion(model, data, crop, p, dataset, final_arch, seed=seed),
        "saliency": lambda p: plot_saliency(model, data, crop, p, dataset, final_arch, seed=seed),
        "examples": lambda p: plot_examples(data, _need(final / "predictions_public.csv"), p, dataset,
                                            final_arch, seed=seed),
    }
    written = []
    for name in wanted:
        t0 = time.perf_counter()
        path = out_dir / f"{name}.png"
        makers[name](path)
        written.append(path)
        log.info("%s (%.1f s)", path, time.perf_counter() - t0)
    return written


def _augmented(run_cfg):
    """Whether a run config's training faces were augmented (None when it does not say)."""
    augment = ((run_cfg or {}).get("training") or {}).get("augment")
    return None if augment is None else bool(augment.get("enabled", True))


def cmd_figures(args):
    written = make_all(args.h5, args.results, args.out_dir, archs=args.archs, final_arch=args.final_arch,
                       baseline=args.baseline, threads=args.threads, seed=args.seed, only=args.only)
    log.info("wrote %d figures to %s", len(written), args.out_dir)


def register(sub):
    p = sub.add_parser("figures", help="all figures of the study (PNG) from its results")
    p.add_argument("--h5", required=True, help="prepared data (results/data/dataset.h5)")
    p.add_argument("--results", default="results", help="results directory (cv/, tables/, final/)")
    p.add_argument("--archs", nargs="*", help="architectures, in this order (default: all of cv_summary.csv)")
    p.add_argument("--baseline", help="architecture to highlight as the baseline")
    p.add_argument("--final-arch", help="final architecture (default: RESULTS/final/selection.json)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--only", nargs="*", metavar="NAME", help=f"only these figures ({', '.join(FIGURES)})")
    p.add_argument("--seed", type=int, default=0, help="seed of the example-face picks")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_figures)
