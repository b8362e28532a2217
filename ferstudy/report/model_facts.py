"""Simple facts about the final model for section 8 (`sections/inside.py`): the shapes of its
first-layer kernels against random kernels, and which emotion each channel of its last feature map
prefers on PublicTest faces against the same faces with shuffled labels. Probed with
ferstudy/probe.py, the module the figures use, so the sentences describe the figures."""

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import CLASS_NAMES
from ..probe import (
    CHANNEL_FACES_PER_CLASS,
    PICK_SEED,
    channel_features,
    eta_squared,
    first_layer_filters,
    pick_faces,
    stage_taps,
)

if TYPE_CHECKING:
    from ..data import FerData


def kernel_shapes(kernels: np.ndarray) -> dict:
    """Classify k x k kernels (N, k, k) by two simple measures.

    dc: |sum w| / sum |w| (1: all weights one sign, a blob / smoothing filter; 0: they cancel).
    ramp: share of the kernel's variance (around its mean) explained by a plane a*x + b*y, i.e. by
    a linear intensity gradient in one direction (an oriented edge detector has a high share).
    edge-like: ramp >= 0.5 and dc < 0.5; blob-like: dc >= 0.5. The gradient direction gives the
    edge orientation: a gradient along y responds to horizontal edges.
    """
    kernels = np.asarray(kernels, dtype=np.float64)
    n, kh, kw = kernels.shape
    yy, xx = np.mgrid[0:kh, 0:kw]
    basis = np.stack([(xx - (kw - 1) / 2).ravel(), (yy - (kh - 1) / 2).ravel()], axis=1)  # orthogonal columns
    w = kernels.reshape(n, -1)
    dc = np.abs(w.sum(1)) / np.maximum(np.abs(w).sum(1), 1e-12)
    wc = w - w.mean(1, keepdims=True)
    coef = wc @ basis / (basis**2).sum(0)  # (n, 2): a, b
    fit = coef @ basis.T
    ramp = 1 - ((wc - fit) ** 2).sum(1) / np.maximum((wc**2).sum(1), 1e-24)
    edge = (ramp >= 0.5) & (dc < 0.5)
    blob = dc >= 0.5
    angle = np.degrees(np.arctan2(coef[:, 1], coef[:, 0])) % 180  # gradient direction
    horizontal = edge & (np.abs(angle - 90) <= 22.5)  # gradient along y: horizontal edges
    vertical = edge & ((angle <= 22.5) | (angle >= 157.5))
    return {
        "n": int(n),
        "size": int(kh),
        "edge": int(edge.sum()),
        "blob": int(blob.sum()),
        "other": int(n - edge.sum() - blob.sum()),
        "horizontal": int(horizontal.sum()),
        "vertical": int(vertical.sum()),
        "diagonal": int(edge.sum() - horizontal.sum() - vertical.sum()),
    }


def chance_kernel_shapes(size: int, n: int = 20000, seed: int = PICK_SEED) -> dict:
    """The same measures on random Gaussian kernels (what an untrained layer would give)."""
    rng = np.random.default_rng(seed)
    return kernel_shapes(rng.standard_normal((n, size, size)))


def inspect_model(
    model_path: str | Path,
    data: "FerData",
    threads: int = 1,
    per_class: int = CHANNEL_FACES_PER_CLASS,
    seed: int = PICK_SEED,
) -> dict:
    """Simple facts about the final model: the shapes of its first-layer kernels (against random
    kernels) and which emotion each channel of its last feature map prefers on PublicTest faces
    (against the same faces with shuffled labels). PrivateTest is not read."""
    import torch
    from scipy import stats

    from ..checkpoint import load_model

    torch.set_num_threads(max(1, int(threads)))
    model, payload = load_model(model_path)
    crop = int(payload["input_size"])
    out: dict = {"filters": None, "channels": None}

    name, kernels = first_layer_filters(model)
    if name is not None and kernels.shape[1] >= 2:
        shapes = kernel_shapes(kernels)
        chance = chance_kernel_shapes(shapes["size"])
        p_edge = chance["edge"] / chance["n"]
        shapes.update(
            layer=name,
            chance_edge=p_edge,
            chance_blob=chance["blob"] / chance["n"],
            p_edge=float(stats.binomtest(shapes["edge"], shapes["n"], p_edge, alternative="greater").pvalue),
        )
        out["filters"] = shapes

    taps = stage_taps(model, crop)
    if taps:
        tap_name, module, (c_all, h, w) = taps[-1]
        idx = np.concatenate(list(pick_faces(data, per_class, seed).values()))
        f = channel_features(model, data.images[idx], crop, module)
        labels = data.labels[idx]
        means, eta = eta_squared(f, labels)
        means_null, eta_null = eta_squared(f, np.random.default_rng(seed).permutation(labels))
        live = f.var(axis=0) > 0
        present = ~np.isnan(means[:, 0])
        prefer = np.nanargmax(np.where(present[:, None], means, -np.inf), axis=0)
        counts = np.bincount(prefer[live], minlength=len(CLASS_NAMES))
        prefer_null = np.nanargmax(np.where(present[:, None], means_null, -np.inf), axis=0)
        counts_null = np.bincount(prefer_null[live], minlength=len(CLASS_NAMES))
        threshold = float(np.quantile(eta_null[live], 0.95)) if live.any() else math.nan
        out["channels"] = {
            "layer": tap_name,
            "channels": int(c_all),
            "size": f"{h}x{w}",
            "faces": int(len(idx)),
            "dead": int((~live).sum()),
            "live": int(live.sum()),
            "prefer": {CLASS_NAMES[c]: int(counts[c]) for c in range(len(CLASS_NAMES))},
            "prefer_null": {CLASS_NAMES[c]: int(counts_null[c]) for c in range(len(CLASS_NAMES))},
            "eta_median": float(np.median(eta[live])) if live.any() else math.nan,
            "eta_null_median": float(np.median(eta_null[live])) if live.any() else math.nan,
            "null_threshold": threshold,
            "selective": int((eta[live] > threshold).sum()) if live.any() else 0,
        }
    return out
