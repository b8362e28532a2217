"""FER2013 CSV -> validated HDF5, the one HDF5 reader, stratified folds and the data summary.

The CSV itself is read by `csvdata` (streamed, every line validated).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from . import CLASS_NAMES, SPLIT_NAMES, __version__
from .csvdata import _parse
from .errors import UserError
from .hdf5check import H5_DATASETS, check_values, checked_attrs, read_dataset
from .io import atomic_path, write_text

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class FerData:
    """Everything in the HDF5, as numpy arrays (images uint8 (N, 48, 48))."""

    images: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    row: np.ndarray
    fold: np.ndarray
    attrs: dict = field(default_factory=dict)

    def indices(self, split_name: str) -> np.ndarray:
        return np.flatnonzero(self.split == SPLIT_NAMES.index(split_name))

    def fold_indices(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(train, held-out) indices of Training rows for cross-validation fold k."""
        train = np.flatnonzero((self.fold >= 0) & (self.fold != k))
        held_out = np.flatnonzero(self.fold == k)
        return train, held_out


# ---------------------------------------------------------------- folds, HDF5


def assign_folds(labels: np.ndarray, split: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Stratified k-fold ids for Training rows (-1 for the test splits).

    Each class is shuffled (seeded) and dealt round-robin, continuing where the previous class
    stopped, so every fold gets each class within one image and the fold sizes differ by at most
    one. (Plain numpy: importing scikit-learn for this cost 2 s of every ingest.)
    """
    rng = np.random.default_rng(seed)
    fold = np.full(len(labels), -1, dtype=np.int8)
    train = np.flatnonzero(split == 0)
    dealt = 0
    for c in range(len(CLASS_NAMES)):
        members = rng.permutation(train[labels[train] == c])
        fold[members] = (dealt + np.arange(len(members))) % k
        dealt += len(members)
    return fold


def check_splits(path: Path | str, labels: np.ndarray, split: np.ndarray, k: int) -> None:
    """The study needs all three splits, and every class k times in Training for stratified folds."""
    for code, name in enumerate(SPLIT_NAMES):
        if not (split == code).any():
            raise UserError(
                f"{path}: no {name} rows (the study needs Training for cross-validation, "
                f"PublicTest to choose checkpoints and PrivateTest for the final numbers)"
            )
    counts = np.bincount(labels[split == 0], minlength=len(CLASS_NAMES))
    for c, name in enumerate(CLASS_NAMES):
        if counts[c] < k:
            raise UserError(f"{path}: class {name!r} has {counts[c]} Training rows, fewer than folds={k}")


def sha256_of(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def prepare(
    csv_path: Path | str, h5_path: Path | str, folds: int = 5, fold_seed: int = 0, dataset: str = "fer2013"
) -> FerData:
    """CSV -> HDF5 (atomic). Returns the FerData written."""
    images, labels, split, row, sha256 = _parse(csv_path)  # hashed as it is read
    check_splits(csv_path, labels, split, folds)
    return write_h5(
        h5_path, images, labels, split, row, folds, fold_seed, dataset, source_path=str(csv_path), source_sha256=sha256
    )


def write_h5(
    h5_path: Path | str,
    images: np.ndarray,
    labels: np.ndarray,
    split: np.ndarray,
    row: np.ndarray,
    folds: int,
    fold_seed: int,
    dataset: str,
    source_path: str,
    source_sha256: str,
) -> FerData:
    """Assign stratified folds and write the HDF5 contract of docs/DESIGN.md atomically."""
    fold = assign_folds(labels, split, folds, fold_seed)
    attrs = {
        "class_names": json.dumps(CLASS_NAMES),
        "split_names": json.dumps(SPLIT_NAMES),
        "dataset": dataset,
        "source_path": source_path,
        "source_sha256": source_sha256,
        "folds": int(folds),
        "fold_seed": int(fold_seed),
        "ferstudy_version": __version__,
    }
    with atomic_path(h5_path) as tmp:
        with h5py.File(tmp, "w") as f:
            # Uncompressed: gzip saves ~5% here and makes every read 10x slower.
            for name, array in (("images", images), ("labels", labels), ("split", split), ("row", row), ("fold", fold)):
                f.create_dataset(name, data=array)
            f.attrs.update(attrs)
    return FerData(images, labels, split, row, fold, {**attrs, "class_names": CLASS_NAMES, "split_names": SPLIT_NAMES})


def load_h5(path: Path | str) -> FerData:
    """The one reader of the prepared HDF5. Everything the contract of docs/DESIGN.md promises is
    checked before it is used: the datasets (kind, dtype, shape, size) before they are read, their
    values (labels 0-6, splits 0-2, folds) and the attributes after. Every problem is one UserError
    naming the file and the dataset or attribute."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: prepared data not found (run `snakemake` or `ferstudy prepare` first)")
    redo = "write it again with `ferstudy prepare` (or delete it and run snakemake)"
    try:
        with h5py.File(path, "r") as f:
            arrays = {name: read_dataset(path, f, name, redo) for name in H5_DATASETS}
            attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
    except OSError as err:
        raise UserError(f"{path}: not a readable HDF5 file ({str(err).splitlines()[0][:160]}); {redo}") from None
    attrs = checked_attrs(path, attrs, redo)
    check_values(path, arrays, attrs["folds"], redo)
    return FerData(attrs=attrs, **arrays)


# ---------------------------------------------------------------- summary for the report


def count_table(data: FerData) -> pd.DataFrame:
    """Counts per split (rows) and class (columns), with totals, as a pandas DataFrame."""
    import pandas as pd

    table = pd.DataFrame(0, index=SPLIT_NAMES, columns=CLASS_NAMES, dtype=int)
    for s, name in enumerate(SPLIT_NAMES):
        table.loc[name] = np.bincount(data.labels[data.split == s], minlength=len(CLASS_NAMES))
    table["total"] = table.sum(axis=1)
    table.loc["total"] = table.sum(axis=0)
    table.index.name = "split"
    return table


def write_summary(
    data: FerData,
    csv_path: Path | str | None,
    md_path: Path | str | None,
    faces_path: Path | str | None,
    per_class: int = 8,
    seed: int = 0,
) -> None:
    """The class counts per split (CSV, markdown) and a grid of sample faces; a None path is skipped."""
    table = count_table(data)
    if csv_path:
        with atomic_path(csv_path) as tmp:
            table.to_csv(tmp)
    if md_path:
        header = "| split | " + " | ".join(table.columns) + " |\n|---|" + "---:|" * len(table.columns) + "\n"
        rows = "".join(f"| {n} | " + " | ".join(f"{v:,}" for v in table.loc[n]) + " |\n" for n in table.index)
        write_text(
            md_path, f"Dataset: **{data.attrs.get('dataset')}** ({data.attrs.get('source_path')})\n\n" + header + rows
        )
    if faces_path:
        _plot_faces(data, faces_path, per_class, seed)


def _plot_faces(data, path, per_class, seed):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    train = data.split == 0
    fig, axes = plt.subplots(len(CLASS_NAMES), per_class, figsize=(per_class * 0.9, len(CLASS_NAMES) * 0.95))
    for c, name in enumerate(CLASS_NAMES):
        pool = np.flatnonzero(train & (data.labels == c))
        picks = rng.choice(pool, size=min(per_class, len(pool)), replace=False)
        for j, ax in enumerate(axes[c]):
            ax.set_xticks([]), ax.set_yticks([])
            if j < len(picks):
                ax.imshow(data.images[picks[j]], cmap="gray", vmin=0, vmax=255)
            if j == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center")
    fig.suptitle(f"Example Training faces per emotion ({data.attrs.get('dataset')})")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
