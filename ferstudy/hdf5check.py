"""The checks of the prepared HDF5's contract (docs/DESIGN.md) that `data.load_h5`, its one reader,
runs: each dataset's kind, dtype, shape and size before a byte of it is read, then the values
and the attributes. Every problem is one UserError naming the file and the dataset or attribute."""

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import CLASS_NAMES, IMAGE_SIZE, SPLIT_NAMES
from .errors import UserError

MAX_H5_IMAGES = 1_000_000  # 28x FER2013, 2.3 GB of pixels: a file declaring more is refused before it is read
H5_ATTRS = ("class_names", "split_names", "dataset", "source_path", "source_sha256", "folds", "fold_seed")
H5_DATASETS = ("images", "labels", "split", "row", "fold")


def read_dataset(path: Path | str, f: h5py.File, name: str, redo: str) -> np.ndarray:
    """One dataset of the contract, checked for kind, dtype and shape before any byte is read."""
    where = f"{path}: dataset {name!r}"
    if name not in f:
        raise UserError(
            f"{path}: not a ferstudy HDF5 (missing datasets: {', '.join(k for k in H5_DATASETS if k not in f)}); {redo}"
        )
    node = f[name]
    if not isinstance(node, h5py.Dataset):
        raise UserError(f"{where}: a {type(node).__name__.lower()}, not an array; {redo}")
    images = name == "images"
    shape_ok = node.shape[1:] == (IMAGE_SIZE, IMAGE_SIZE) if images else len(node.shape) == 1
    if len(node.shape) < 1 or not shape_ok:
        want = f"(N, {IMAGE_SIZE}, {IMAGE_SIZE})" if images else "(N,)"
        raise UserError(f"{where}: shape {node.shape}, expected {want}; {redo}")
    n, first = node.shape[0], f[H5_DATASETS[0]]
    if n > MAX_H5_IMAGES:
        raise UserError(f"{where}: {n:,} rows declared, more than the {MAX_H5_IMAGES:,} a study reads; {redo}")
    if isinstance(first, h5py.Dataset) and first.shape and n != first.shape[0]:
        raise UserError(f"{where}: {n} rows, but 'images' has {first.shape[0]}; {redo}")
    kind_ok = node.dtype == np.uint8 if images else node.dtype.kind in "iu"
    if not kind_ok:
        raise UserError(f"{where}: dtype {node.dtype}, expected {'uint8 pixels' if images else 'integers'}; {redo}")
    return node[()]


def checked_attrs(path: Path | str, attrs: dict[str, Any], redo: str) -> dict[str, Any]:
    missing = [k for k in H5_ATTRS if k not in attrs]
    if missing:
        raise UserError(f"{path}: attributes missing: {', '.join(missing)}; {redo}")
    for key, want in (("class_names", CLASS_NAMES), ("split_names", SPLIT_NAMES)):
        try:
            attrs[key] = json.loads(attrs[key])
        except (TypeError, ValueError):
            attrs[key] = None
        if attrs[key] != want:
            raise UserError(f"{path}: attribute {key} is {attrs[key]!r}, expected the JSON list {want}; {redo}")
    folds = attrs["folds"]
    if not isinstance(folds, int) or isinstance(folds, bool) or not 2 <= folds <= 20:
        raise UserError(f"{path}: attribute folds is {folds!r}, expected an integer from 2 to 20; {redo}")
    return attrs


def check_values(path: Path | str, arrays: dict[str, np.ndarray], folds: int, redo: str) -> None:
    """Values in range, casts to the contract's dtypes (in place)."""
    for name, low, high in (
        ("labels", 0, len(CLASS_NAMES) - 1),
        ("split", 0, len(SPLIT_NAMES) - 1),
        ("fold", -1, folds - 1),
        ("row", 0, None),
    ):
        values = arrays[name]
        bad = np.flatnonzero((values < low) | ((values > high) if high is not None else False))
        if len(values) == 0:
            raise UserError(f"{path}: dataset {name!r} is empty; {redo}")
        if len(bad):
            raise UserError(
                f"{path}: dataset {name!r}: value {values[bad[0]]} at index {bad[0]} is outside "
                f"{low}-{high if high is not None else 'any'} ({len(bad)} such); {redo}"
            )
    for name, dtype in (("labels", np.uint8), ("split", np.uint8), ("row", np.int64), ("fold", np.int8)):
        arrays[name] = arrays[name].astype(dtype, copy=False)
    split, fold = arrays["split"], arrays["fold"]
    for code, name in enumerate(SPLIT_NAMES):
        if not (split == code).any():
            raise UserError(f"{path}: dataset 'split' has no {name} rows; {redo}")
    misplaced = np.flatnonzero((fold >= 0) != (split == 0))
    if len(misplaced):
        raise UserError(
            f"{path}: dataset 'fold': index {misplaced[0]} has fold {fold[misplaced[0]]} in split "
            f"{SPLIT_NAMES[split[misplaced[0]]]} (Training rows have a fold 0-{folds - 1}, the test "
            f"splits -1); {redo}"
        )
    empty = [k for k in range(folds) if not (fold == k).any()]
    if empty:
        raise UserError(
            f"{path}: dataset 'fold': fold {empty[0]} of the {folds} the attribute folds declares has no rows; {redo}"
        )
