"""Inside the final model: its filters, feature maps per emotion, which emotion each channel of the
last feature map prefers, and Grad-CAM saliency. The model is probed with ferstudy/probe.py."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import CLASS_NAMES
from ..probe import (
    CHANNEL_FACES_PER_CLASS,
    PICK_SEED,
    capture,
    channel_emotion_matrix,
    conv_layers,
    first_layer_filters,
    grad_cam,
    model_input,
    pick_faces,
    stage_taps,
)
from .plot import RIGHT, WRONG, _face_axis, _headroom, _no_axes, _placeholder, _plt, dataset_label, save

if TYPE_CHECKING:
    from torch import nn

    from ..data import FerData


def kernel_mosaic(
    kernels: np.ndarray, ncols: int, gap: int = 1, gap_y: int | None = None
) -> tuple[np.ndarray, list[tuple[float, float]]]:
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
        img[y : y + kh, x : x + kw] = k / (float(np.abs(k).max()) or 1.0)
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


def plot_filters_layer1(model: nn.Module, path: Path | str, dataset: str, arch: str) -> int:
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
    order = np.argsort(-np.sqrt((w**2).sum(axis=(1, 2))), kind="stable")
    _show_mosaic(ax, w[order], ncols, [f"#{c}" for c in order], fontsize=8)
    k = "×".join(map(str, w.shape[1:]))
    _headroom(
        fig,
        f"First conv layer of the final model {arch} ({name}: {n} kernels of {k}), strongest first\n"
        f"red = positive, blue = negative weight, each kernel scaled to its own max |w|\n"
        f"({dataset_label(dataset)})",
        0.8,
        10,
    )
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01)
    save(fig, path)
    return n


def plot_filters_deeper(model: nn.Module, path: Path | str, dataset: str, arch: str, examples: int = 6) -> Path:
    """One row per deeper conv layer: distribution of the output filters' kernel norms, the mean
    |weight| at each kernel position, and the strongest 2-D kernel slices."""
    plt = _plt()
    convs = conv_layers(model)[1:]
    if not convs:
        return _placeholder(path, f"Deeper conv layers of {arch}", "This model has at most one convolution layer.")
    fig, axes = plt.subplots(
        len(convs),
        3,
        figsize=(12, 1.2 * len(convs) + 1.2),
        squeeze=False,
        gridspec_kw={"width_ratios": [3.2, 1.0, 6.4], "wspace": 0.12, "hspace": 0.45},
    )
    for row, (name, conv) in zip(axes, convs):
        w = conv.weight.detach().cpu().float().numpy()  # (O, I, kh, kw)
        o, i, kh, kw = w.shape
        norms = np.sqrt((w**2).sum(axis=(1, 2, 3)))
        row[0].hist(norms, bins=min(30, max(5, o // 4)), color="C0")
        row[0].set_ylabel(
            f"{name}\n{o}×{i}×{kh}×{kw}\nmedian norm {np.median(norms):.2f}",
            fontsize=8.5,
            rotation=0,
            ha="right",
            va="center",
        )
        row[0].tick_params(labelsize=7)
        row[1].imshow(np.abs(w).mean(axis=(0, 1)), cmap="viridis", vmin=0, interpolation="nearest")
        _no_axes(row[1])
        strongest = np.argsort(-norms, kind="stable")[:examples]
        inputs = np.sqrt((w**2).sum(axis=(2, 3)))[strongest].argmax(axis=1)  # strongest input slice of each
        _show_mosaic(row[2], w[strongest, inputs], examples, [f"{oc}←{ic}" for oc, ic in zip(strongest, inputs)])
    axes[0, 0].set_title("norms of the output filters", fontsize=8.5)
    axes[0, 1].set_title("mean |w|\nper position", fontsize=8.5)
    axes[0, 2].set_title(f"the {examples} strongest output filters: their strongest input slice (out←in)", fontsize=8.5)
    axes[-1, 0].set_xlabel("L2 norm of an output filter's kernel", fontsize=8)
    _headroom(
        fig,
        f"Deeper conv layers of the final model {arch}, one row per layer (name, out×in×k×k);\n"
        f"kernels: red = positive, blue = negative weight, each scaled to its own max |w| "
        f"({dataset_label(dataset)})",
        0.95,
        10,
    )
    return save(fig, path)


def plot_activations(
    model: nn.Module,
    data: FerData,
    crop: int,
    path: Path | str,
    dataset: str,
    arch: str,
    seed: int = 0,
    depths: int = 3,
    top: int = 4,
) -> Path:
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
    fig, axes = plt.subplots(
        len(faces),
        ncols,
        figsize=(sum(widths) * 1.05, len(faces) * 1.15 + 1.3),
        squeeze=False,
        gridspec_kw={"width_ratios": widths, "wspace": 0.08, "hspace": 0.35},
    )
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
    _headroom(
        fig,
        f"Feature maps of the final model {arch} for one PublicTest face per emotion "
        f"({dataset_label(dataset)})\nat each depth the {top} channels most active on that face; "
        f"each map scaled to its own range (bright = strong)",
        1.25,
        10,
    )
    for d, (name, _, (c, h, w)) in enumerate(chosen):
        left = axes[0, 2 + d * (top + 1)].get_position()
        right = axes[0, (d + 1) * (top + 1)].get_position()
        fig.text(
            (left.x0 + right.x1) / 2,
            left.y1 + 0.3 / fig.get_figheight(),
            f"depth {d + 1}: {name} ({c}×{h}×{w})",
            ha="center",
            va="bottom",
            fontsize=9,
            fontweight="bold",
        )
    return save(fig, path)


def plot_channel_emotion(
    model: nn.Module,
    data: FerData,
    crop: int,
    path: Path | str,
    dataset: str,
    arch: str,
    per_class: int = CHANNEL_FACES_PER_CLASS,
    seed: int = PICK_SEED,
    top: int = 40,
) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
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
    chans = np.argsort(-sel, kind="stable")[: min(top, c_all)]
    chans = chans[np.lexsort((-sel[chans], prefer[chans]))]
    colors = [plt.get_cmap("tab10")(c) for c in range(len(CLASS_NAMES))]
    heat_w = 0.2 * max(len(chans), 16)
    fig, axes = plt.subplots(
        2,
        3,
        figsize=(heat_w + 3.6, 6.2),
        gridspec_kw={"height_ratios": [1, 3.2], "width_ratios": [heat_w, 0.15, 1.9], "hspace": 0.06, "wspace": 0.12},
    )
    top_ax, ax, cax, count_ax = axes[0, 0], axes[1, 0], axes[1, 1], axes[1, 2]
    axes[0, 1].axis("off")
    axes[0, 2].axis("off")
    top_ax.bar(np.arange(len(chans)), sel[chans], color=[colors[p] for p in prefer[chans]], width=0.8)
    top_ax.set_xlim(-0.5, len(chans) - 0.5)
    top_ax.set_xticks([])
    top_ax.set_ylabel("η²", fontsize=9)
    top_ax.tick_params(labelsize=7)
    top_ax.set_title(
        f"the {len(chans)} most emotion-selective of {c_all} channels; η² = share of a channel's "
        f"variance\nexplained by the emotion (bar colour: the emotion it prefers)",
        fontsize=8.5,
        loc="left",
    )
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
    _headroom(
        fig,
        f"Mean activation per emotion of the last feature map's channels ({name}, {c_all}×{h}×{w}) of "
        f"{arch},\nz-scored per channel across emotions; {len(idx)} PublicTest faces "
        f"({dataset_label(dataset)})",
        1.1,
        10.5,
    )
    save(fig, path)
    return means, sel


def plot_saliency(
    model: nn.Module,
    data: FerData,
    crop: int,
    path: Path | str,
    dataset: str,
    arch: str,
    per_class: int = 3,
    seed: int = 0,
) -> Path:
    """Grad-CAM of the true class at the last feature map over `per_class` PublicTest faces per emotion."""
    import torch

    plt = _plt()
    taps = stage_taps(model, crop)
    if not taps:
        return _placeholder(path, f"Saliency of {arch}", "This model has no spatial feature maps.")
    name, module, _ = taps[-1]
    picks = pick_faces(data, per_class, seed + 1)
    fig, axes = plt.subplots(
        len(CLASS_NAMES),
        2 * per_class,
        figsize=(2 * per_class * 1.3 + 1, 7 * 1.45 + 1.1),
        squeeze=False,
        gridspec_kw={"wspace": 0.05, "hspace": 0.45},
    )
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
            ax.set_title(
                f"p({CLASS_NAMES[c]}) {probs[j, c]:.2f}{wrong}",
                fontsize=7.5,
                color=RIGHT if pred == c else WRONG,
                pad=2,
            )
    _headroom(
        fig,
        f"Grad-CAM of the true emotion at {name} of the final model {arch}\n({dataset_label(dataset)})\n"
        f"{per_class} PublicTest faces per emotion, each beside its overlay: red = regions that raise the "
        f"true emotion's score;\ntitle: its probability (centre crop), green when predicted correctly",
        1.35,
        10,
    )
    return save(fig, path)
