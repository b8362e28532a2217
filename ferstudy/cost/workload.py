"""Data sizes and workloads: per-class counts per split (from the HDF5, the demo generator's rule or
FER2013's row counts), the folds' held-out counts, and the images, steps and epochs of a
cross-validation job and of the final model (also for the report and ferstudy/resources.py)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..config import evaluation_epochs

log = logging.getLogger("ferstudy.cost")

N_CLASSES = 7
# Per-class row counts of the real FER2013 (angry, disgust, fear, happy, sad, surprise, neutral),
# counted from fer2013.csv.
FER2013_COUNTS = {
    "Training": [3995, 436, 4097, 7215, 4830, 3171, 4965],
    "PublicTest": [467, 56, 496, 895, 653, 415, 607],
    "PrivateTest": [491, 55, 528, 879, 594, 416, 626],
}


def demo_counts(n_images: int, class_weights: Sequence[float] | None = None) -> dict[str, list[int]]:
    """Per-class counts per split of `demo.make_demo_faces(n_images)` (its split rule, no images)."""
    from ..demo import DEFAULT_CLASS_WEIGHTS, SPLIT_FRACTIONS, _largest_remainder

    w = np.asarray(DEFAULT_CLASS_WEIGHTS if class_weights is None else class_weights, dtype=float)
    per_class = _largest_remainder(n_images, w / w.sum())
    out: dict[str, list[int]] = {"Training": [], "PublicTest": [], "PrivateTest": []}
    for n_cls in per_class:
        n_test = [max(1, round(n_cls * f)) for f in SPLIT_FRACTIONS[1:]]
        out["Training"].append(int(n_cls - sum(n_test)))
        out["PublicTest"].append(int(n_test[0]))
        out["PrivateTest"].append(int(n_test[1]))
    return out


def data_counts(cfg: dict, h5: Path | str | None = None) -> tuple[dict[str, list[int]], str]:
    """(per-class counts per split, source): from the HDF5 when it holds the dataset the config
    uses, else from the config. Returns (dict split -> list of 7 ints, description)."""
    from .. import SPLIT_NAMES

    dataset = cfg["dataset"]["name"]
    if h5 and Path(h5).is_file():
        from ..data import load_h5

        data = load_h5(h5)
        same = data.attrs.get("dataset") == dataset and (
            dataset != "demo" or len(data.labels) == cfg["data"]["demo_images"]
        )
        if same:
            counts = {
                name: np.bincount(data.labels[data.split == s], minlength=N_CLASSES).tolist()
                for s, name in enumerate(SPLIT_NAMES)
            }
            return counts, f"HDF5 {h5}"
        log.warning(
            "%s holds %s data (%d rows), not what the config uses (%s): sizes from the config",
            h5,
            data.attrs.get("dataset"),
            len(data.labels),
            dataset,
        )
    if dataset == "demo":
        return demo_counts(cfg["data"]["demo_images"]), f"config (demo_images {cfg['data']['demo_images']})"
    return {k: list(v) for k, v in FER2013_COUNTS.items()}, "config (FER2013 row counts)"


def fold_held_out_counts(train_counts: Sequence[int] | np.ndarray, folds: int) -> np.ndarray:
    """(K, 7) per-class held-out counts of scikit-learn's StratifiedKFold on Training."""
    y_sorted = np.repeat(np.arange(N_CLASSES), train_counts)
    return np.array([np.bincount(y_sorted[k::folds], minlength=N_CLASSES) for k in range(folds)])


def subsampled(class_counts: Sequence[int] | np.ndarray, fraction: float) -> int:
    """Images `train.subsample` keeps of a set with these per-class counts."""
    if fraction >= 1.0:
        return int(sum(class_counts))
    return int(sum(max(1, round(fraction * c)) for c in class_counts if c > 0))


def cv_workload(run_cfg: dict, counts: dict[str, list[int]], folds: int) -> dict:
    """Per fold job: training images (after subsample), held-out images, steps per epoch."""
    t = run_cfg["training"]
    train_counts = np.asarray(counts["Training"])
    held = fold_held_out_counts(train_counts, folds)
    jobs = []
    for k in range(folds):
        n = subsampled(train_counts - held[k], t.get("subsample", 1.0))
        bs = min(t["batch_size"], n)
        jobs.append({"fold": k, "n_train": n, "n_val": int(held[k].sum()), "steps": n // bs, "batch_size": bs})
    return {
        "epochs": t["epochs"],
        "evaluations": len(evaluation_epochs(t)),
        "tta": t.get("tta", "none"),
        "curve_images": 2 * int(t.get("curve_images", 0)),  # per epoch: held-out + trained-on subsets
        "jobs": jobs,
        "images_x_epochs": sum(j["n_train"] for j in jobs) * t["epochs"],
    }


def final_workload(final_cfg: dict, counts: dict[str, list[int]]) -> dict:
    t = final_cfg["training"]
    n = subsampled(counts["Training"], t.get("subsample", 1.0))
    bs = min(t["batch_size"], n)
    return {
        "epochs": t["epochs"],
        "evaluations": len(evaluation_epochs(t)),
        "tta": t.get("tta", "none"),
        "n_train": n,
        "steps": n // bs,
        "batch_size": bs,
        "n_public": int(sum(counts["PublicTest"])),
        "n_private": int(sum(counts["PrivateTest"])),
        "images_x_epochs": n * t["epochs"],
    }
