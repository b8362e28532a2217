"""FER2013 CSV -> validated HDF5, the one HDF5 reader, stratified folds and the data summary.

The CSV parse is vectorised over the whole file with numpy (the real 301 MB file has 83 million
pixel tokens: any per-token Python is far too slow). Every line is still validated: the fast pass
flags suspicious lines (wrong field count, stray characters, wrong token count, over-long tokens),
and only those lines go through `_diagnose_line`, which says precisely what is wrong.
"""

import gzip
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from . import CLASS_NAMES, IMAGE_SIZE, SPLIT_NAMES, __version__
from .errors import UserError
from .io import atomic_path, write_text

N_PIXELS = IMAGE_SIZE * IMAGE_SIZE
MAX_REPORTED_ERRORS = 5
_COLUMNS = ("emotion", "pixels", "usage")


@dataclass
class FerData:
    """Everything in the HDF5, as numpy arrays (images uint8 (N, 48, 48))."""

    images: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    row: np.ndarray
    fold: np.ndarray
    attrs: dict = field(default_factory=dict)

    def indices(self, split_name):
        return np.flatnonzero(self.split == SPLIT_NAMES.index(split_name))

    def fold_indices(self, k):
        """(train, held-out) indices of Training rows for cross-validation fold k."""
        train = np.flatnonzero((self.fold >= 0) & (self.fold != k))
        held_out = np.flatnonzero(self.fold == k)
        return train, held_out


# ---------------------------------------------------------------- reading the CSV

def read_csv_bytes(path):
    """Raw bytes of a plain or gzip CSV, without a UTF-8 BOM."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found (download FER2013 as described in the README, "
                        f"or leave `data: auto` to use the built-in demo)")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise UserError(f"{path}: not a readable gzip file ({err})") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    return raw


def parse_fer_csv(path):
    """Parse and validate a FER2013 CSV. Returns (images, labels, split, row).

    Raises UserError naming the file, line numbers and problems of the first few bad lines.
    """
    raw = read_csv_bytes(path)
    header_end = raw.find(b"\n")
    if not raw.strip():
        raise UserError(f"{path}: the file is empty (expected a header `emotion,pixels,Usage` and rows)")
    if header_end < 0:
        header_end = len(raw)
    order = _column_order(path, raw[:header_end])
    body = raw[header_end + 1:]
    a = np.frombuffer(body, dtype=np.uint8)
    newlines = np.flatnonzero(a == ord("\n"))
    line_starts = np.concatenate(([0], newlines + 1))
    line_ends = np.concatenate((newlines, [len(a)]))
    if line_starts[-1] == len(a):  # file ends with a newline: no last line
        line_starts, line_ends = line_starts[:-1], line_ends[:-1]
    if len(line_starts) == 0:
        raise UserError(f"{path}: no data rows after the header")

    fields, bad = _split_fields(body, a, line_starts, line_ends)
    labels, split, bad = _parse_label_and_usage(body, fields, order, bad)
    pix_start, pix_end = fields[:, order["pixels"]], fields[:, order["pixels"] + 1] - 1
    images, bad = _parse_pixels(a, pix_start, pix_end, bad)

    if bad.any():
        lines = np.flatnonzero(bad)
        messages = [f"line {i + 2}: {_diagnose_line(body[line_starts[i]:line_ends[i]], order)}"
                    for i in lines[:MAX_REPORTED_ERRORS]]
        more = f" (and {len(lines) - MAX_REPORTED_ERRORS} more bad lines)" if len(lines) > MAX_REPORTED_ERRORS else ""
        raise UserError(f"{path}: {len(lines)} malformed line(s){more}: " + "; ".join(messages))
    return images, labels, split, np.arange(len(labels), dtype=np.int64)


def _column_order(path, header_bytes):
    names = [n.strip().strip('"').lower() for n in header_bytes.decode("utf-8", "replace").strip("\r").split(",")]
    missing = [c for c in _COLUMNS if c not in names]
    if missing or len(names) != 3:
        raise UserError(f"{path}: line 1: header {names} must have exactly the columns emotion, pixels, Usage "
                        f"(missing: {', '.join(missing) or 'none'})")
    return {c: names.index(c) for c in _COLUMNS}


def _split_fields(body, a, line_starts, line_ends):
    """Field boundaries (n, 4): start of field 0, 1, 2 and end+1 of the line; flags lines without 2 commas."""
    commas = np.flatnonzero(a == ord(","))
    line_of_comma = np.searchsorted(line_starts, commas, side="right") - 1
    count = np.bincount(line_of_comma, minlength=len(line_starts))
    bad = count != 2
    fields = np.empty((len(line_starts), 4), dtype=np.int64)
    fields[:, 0] = line_starts
    fields[:, 3] = line_ends + 1
    fields[bad, 1:3] = line_ends[bad, None]  # placeholder: these lines are diagnosed later
    good = ~bad
    fields[good, 1:3] = commas[np.isin(line_of_comma, np.flatnonzero(good))].reshape(-1, 2) + 1
    # A trailing CR belongs to no field.
    has_cr = (line_ends > line_starts) & (a[np.maximum(line_ends - 1, 0)] == ord("\r"))
    fields[:, 3] -= has_cr
    return fields, bad


def _parse_label_and_usage(body, fields, order, bad):
    """Per-line Python for the two short fields (35k lines: cheap)."""
    n = len(fields)
    labels = np.zeros(n, dtype=np.uint8)
    split = np.zeros(n, dtype=np.uint8)
    usage_codes = {name.lower(): i for i, name in enumerate(SPLIT_NAMES)}
    e, u = order["emotion"], order["usage"]
    for i in np.flatnonzero(~bad):
        emotion = body[fields[i, e]:fields[i, e + 1] - 1].strip()
        usage = body[fields[i, u]:fields[i, u + 1] - 1].strip().strip(b'"').lower()
        code = usage_codes.get(usage.decode("ascii", "replace"))
        if not emotion.isdigit() or int(emotion) > 6 or code is None:
            bad[i] = True
            continue
        labels[i] = int(emotion)
        split[i] = code
    return labels, split, bad


def _parse_pixels(a, pix_start, pix_end, bad):
    """Vectorised parse of every pixel field into (n, 48, 48) uint8; flags lines that do not parse."""
    n = len(pix_start)
    is_digit = (a - ord("0")) < 10
    # Anything but digits and spaces inside a pixel field marks its line.
    odd = np.flatnonzero(~(is_digit | (a == ord(" ")) | (a == ord('"'))))
    line_of_odd = np.searchsorted(pix_start, odd, side="right") - 1
    inside = (line_of_odd >= 0) & (odd < pix_end[np.maximum(line_of_odd, 0)])
    bad[line_of_odd[inside]] = True

    # A token ends where a digit is followed by a non-digit; tokens are counted and valued by
    # their last three characters alone (longer runs of digits are caught separately).
    ends = np.flatnonzero(is_digit[:-1] & ~is_digit[1:]) + 1
    if is_digit[-1]:
        ends = np.concatenate((ends, [len(a)]))
    first = np.searchsorted(ends, pix_start, side="right")
    bad |= (np.searchsorted(ends, pix_end, side="right") - first) != N_PIXELS
    long_runs = np.flatnonzero(is_digit[:-3] & is_digit[1:-2] & is_digit[2:-1] & is_digit[3:])
    if len(long_runs):  # four or more digits in a row inside a pixel field: let the diagnosis judge
        line = np.searchsorted(pix_start, long_runs, side="right") - 1
        inside = (line >= 0) & (long_runs < pix_end[np.maximum(line, 0)])
        bad[line[inside]] = True
    good_lines = np.flatnonzero(~bad)
    e = ends[(first[good_lines, None] + np.arange(N_PIXELS)).ravel()]
    digit = np.where(is_digit, a - ord("0"), 0).astype(np.uint8)
    value = digit[e - 1] + digit[e - 2] * np.int16(10) + digit[e - 3] * is_digit[e - 2] * np.int16(100)
    row_bad = (value > 255).reshape(-1, N_PIXELS).any(axis=1)
    bad[good_lines[row_bad]] = True
    images = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    images[good_lines] = value.astype(np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    return images, bad


def _diagnose_line(line, order):
    """Say what is wrong with one line (only called for lines the fast pass flagged)."""
    text = line.decode("utf-8", "replace").rstrip("\r")
    if not text.strip():
        return "empty line"
    parts = text.split(",")
    if len(parts) != 3:
        return f"expected 3 comma-separated fields (emotion, pixels, Usage), found {len(parts)}"
    emotion = parts[order["emotion"]].strip()
    if not emotion.isdigit() or int(emotion) > 6:
        return f"emotion {emotion!r} is not a label 0-6"
    usage = parts[order["usage"]].strip().strip('"')
    if usage.lower() not in {s.lower() for s in SPLIT_NAMES}:
        return f"unknown Usage {usage!r} (expected one of {', '.join(SPLIT_NAMES)})"
    tokens = parts[order["pixels"]].strip().strip('"').split()
    for k, tok in enumerate(tokens):
        if not tok.isdigit():
            return f"pixel {k + 1} {tok!r} is not an integer"
        if int(tok) > 255:
            return f"pixel {k + 1} = {tok} is out of range 0-255"
    return f"expected {N_PIXELS} pixels, found {len(tokens)}"


# ---------------------------------------------------------------- folds, HDF5

def assign_folds(labels, split, k, seed):
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


def check_splits(path, labels, split, k):
    """The study needs all three splits, and every class k times in Training for stratified folds."""
    for code, name in enumerate(SPLIT_NAMES):
        if not (split == code).any():
            raise UserError(f"{path}: no {name} rows (the study needs Training for cross-validation, "
                            f"PublicTest to choose checkpoints and PrivateTest for the final numbers)")
    counts = np.bincount(labels[split == 0], minlength=len(CLASS_NAMES))
    for c, name in enumerate(CLASS_NAMES):
        if counts[c] < k:
            raise UserError(f"{path}: class {name!r} has {counts[c]} Training rows, fewer than folds={k}")


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def prepare(csv_path, h5_path, folds=5, fold_seed=0, dataset="fer2013"):
    """CSV -> HDF5 (atomic). Returns the FerData written."""
    images, labels, split, row = parse_fer_csv(csv_path)
    check_splits(csv_path, labels, split, folds)
    return write_h5(h5_path, images, labels, split, row, folds, fold_seed, dataset,
                    source_path=str(csv_path), source_sha256=sha256_of(csv_path))


def write_h5(h5_path, images, labels, split, row, folds, fold_seed, dataset, source_path, source_sha256):
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


def load_h5(path):
    """The one reader of the prepared HDF5."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: prepared data not found (run `snakemake` or `ferstudy prepare` first)")
    with h5py.File(path, "r") as f:
        missing = [k for k in ("images", "labels", "split", "row", "fold") if k not in f]
        if missing:
            raise UserError(f"{path}: not a ferstudy HDF5 (missing datasets: {', '.join(missing)})")
        arrays = {k: f[k][()] for k in ("images", "labels", "split", "row", "fold")}
        attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
    for key in ("class_names", "split_names"):
        if key in attrs:
            attrs[key] = json.loads(attrs[key])
    return FerData(attrs=attrs, **arrays)


# ---------------------------------------------------------------- summary for the report

def count_table(data):
    """Counts per split (rows) and class (columns), with totals, as a pandas DataFrame."""
    import pandas as pd

    table = pd.DataFrame(0, index=SPLIT_NAMES, columns=CLASS_NAMES, dtype=int)
    for s, name in enumerate(SPLIT_NAMES):
        table.loc[name] = np.bincount(data.labels[data.split == s], minlength=len(CLASS_NAMES))
    table["total"] = table.sum(axis=1)
    table.loc["total"] = table.sum(axis=0)
    table.index.name = "split"
    return table


def write_summary(data, csv_path, md_path, faces_path, per_class=8, seed=0):
    table = count_table(data)
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp)
    header = "| split | " + " | ".join(table.columns) + " |\n|---|" + "---:|" * len(table.columns) + "\n"
    rows = "".join(f"| {name} | " + " | ".join(f"{v:,}" for v in table.loc[name]) + " |\n" for name in table.index)
    write_text(md_path, f"Dataset: **{data.attrs.get('dataset')}** ({data.attrs.get('source_path')})\n\n" + header + rows)
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
