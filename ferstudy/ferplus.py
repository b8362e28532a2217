"""FER+ as a second opinion: the final model scored against Microsoft's crowd relabels of FER2013.

FER+ (Barsoum et al., 2016; `fer2013new.csv`, MIT licence) has one line per line of `fer2013.csv`,
in the same order: `Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,
unknown,NF`, the votes of 10 annotators per face. It is read here only, after PrivateTest has been
predicted: nothing in the study trains on it or chooses anything by it.

The crowd's label of a face (`majority_labels`), decided in this order:
1. `dropped`: FER+ dropped the row (empty `Image name`);
2. `tie`: two or more of the 10 categories share the most votes (also a row without votes):
   the crowd did not decide, so the face is excluded and counted, never broken by column order;
3. `not_a_face`, `unknown`, `contempt`: the most-voted category is NF, unknown or contempt
   (FER2013 has no such class);
4. else the most-voted emotion, mapped to FER2013's class order (0 angry ... 6 neutral).
This is the plurality: FER+'s own training code also drops single votes and asks for more than
half of the votes; the plurality keeps more faces and is what "the crowd's majority" means here.

Rows are aligned by source row: a predictions CSV's `row` is the 0-based data row of the FER2013
CSV (the HDF5's `row`), which is the data row of `fer2013new.csv` too. The file is checked against
the study's HDF5 first: the same number of rows and the same Usage on every row.

`score(h5, public_csv, private_csv, ferplus_csv)` returns what `ferstudy ferplus` writes to
`results/final/ferplus.json`.
"""

from __future__ import annotations

import gzip
import io
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from . import CLASS_NAMES, SPLIT_NAMES
from .errors import UserError

if TYPE_CHECKING:
    import argparse

    from .data import FerData

log = logging.getLogger("ferstudy.ferplus")

VOTE_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF")
# FER+ vote column -> FER2013 class (0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral)
TO_FER2013 = {"neutral": 6, "happiness": 3, "surprise": 5, "sadness": 4, "anger": 0, "disgust": 1, "fear": 2}
NOT_AN_EMOTION = {"contempt": "contempt", "unknown": "unknown", "NF": "not_a_face"}
REASONS = ("dropped", "tie", "not_a_face", "unknown", "contempt")  # why a face has no crowd label, in order
RULE = (
    "the most-voted of the 10 FER+ categories; excluded: rows FER+ dropped (empty Image name), ties for the "
    "most votes, and a majority of not-a-face, unknown or contempt"
)
SPLITS = {"public": "PublicTest", "private": "PrivateTest"}


# ---------------------------------------------------------------- the crowd's label


def majority_labels(votes: npt.ArrayLike, dropped: npt.ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(labels, reasons) for vote rows (N, 10) in `VOTE_COLUMNS` order: labels in FER2013 codes, -1
    where excluded; reasons '' for a scored row, else one of `REASONS` (rules in the module docstring)."""
    votes = np.asarray(votes)
    if votes.ndim != 2 or votes.shape[1] != len(VOTE_COLUMNS):
        raise ValueError(f"expected votes (N, {len(VOTE_COLUMNS)}), got {votes.shape}")
    n = len(votes)
    dropped = np.zeros(n, bool) if dropped is None else np.asarray(dropped, bool)
    top = votes.max(axis=1)
    tie = (votes == top[:, None]).sum(axis=1) > 1
    winner = votes.argmax(axis=1)
    code = np.array([TO_FER2013.get(c, -1) for c in VOTE_COLUMNS])
    reason_of = np.array([""] * len(VOTE_COLUMNS), dtype=object)
    for c, why in NOT_AN_EMOTION.items():
        reason_of[VOTE_COLUMNS.index(c)] = why
    reasons = reason_of[winner]
    reasons[tie] = "tie"
    reasons[dropped] = "dropped"
    labels = np.where(reasons == "", code[winner], -1).astype(np.int64)
    return labels, reasons


# ---------------------------------------------------------------- reading fer2013new.csv


def read_ferplus(path: Path | str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(usage (N,) str, dropped (N,) bool, votes (N, 10) int64) of a FER+ CSV, plain or gzip (by
    its first bytes, whatever its name). Problems raise UserError naming the file and the line."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"config key data.ferplus: {path}: file not found (FER+ is Microsoft's fer2013new.csv, "
            f"row-aligned with fer2013.csv)"
        )
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise UserError(f"{path}: not a readable gzip file ({err})") from None
    if not raw.strip():
        raise UserError(
            f"{path}: the file is empty (expected the FER+ header `Usage,Image name,"
            f"{','.join(VOTE_COLUMNS)}` and one line per FER2013 row)"
        )
    try:
        table = pd.read_csv(
            io.BytesIO(raw), dtype=str, keep_default_na=False, skipinitialspace=True, encoding="utf-8-sig"
        )
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a readable CSV ({str(err).strip().splitlines()[-1]})") from None
    names = {c.strip().lower(): c for c in table.columns}
    want = ("usage", "image name", *(c.lower() for c in VOTE_COLUMNS))
    missing = [c for c in want if c not in names]
    if missing:
        raise UserError(
            f"{path}: line 1: not a FER+ header (missing column(s) {', '.join(missing)}; expected "
            f"Usage,Image name,{','.join(VOTE_COLUMNS)})"
        )
    votes = np.zeros((len(table), len(VOTE_COLUMNS)), dtype=np.int64)
    for j, c in enumerate(VOTE_COLUMNS):
        text = table[names[c.lower()]].str.strip()
        ok = text.str.fullmatch(r"\d{1,6}")
        if not ok.all():
            i = int(np.flatnonzero(~ok.to_numpy())[0])
            raise UserError(f"{path}: line {i + 2}: {c} votes {text.iloc[i]!r} is not a count (a whole number >= 0)")
        votes[:, j] = text.astype(np.int64).to_numpy()
    usage = table[names["usage"]].str.strip().to_numpy(dtype=str)
    dropped = (table[names["image name"]].str.strip() == "").to_numpy()
    return usage, dropped, votes


def check_aligned(path: Path | str, usage: np.ndarray, data: FerData) -> None:
    """FER+ must have one line per FER2013 row, with the same Usage, line by line."""
    source = data.attrs.get("source_path") or "the study's FER2013 CSV"
    n_source = int(data.row.max()) + 1 if len(data.row) else 0
    if len(usage) != n_source:
        raise UserError(
            f"{path}: {len(usage):,} data rows, but {source} has {n_source:,}: FER+ (fer2013new.csv) "
            f"must have one line per line of the FER2013 CSV, in the same order"
        )
    expected = np.full(n_source, "", dtype=object)
    expected[data.row] = np.asarray(SPLIT_NAMES, dtype=object)[data.split]
    bad = np.flatnonzero(usage.astype(object) != expected)
    if len(bad):
        i = int(bad[0])
        raise UserError(
            f"{path}: line {i + 2}: Usage {str(usage[i])!r}, but line {i + 2} of {source} is {expected[i]!r} "
            f"({len(bad):,} line(s) differ): FER+ must be row-aligned with the FER2013 CSV"
        )


# ---------------------------------------------------------------- scoring


def score_split(
    rows: np.ndarray, labels: np.ndarray, preds: np.ndarray, crowd: np.ndarray, reasons: np.ndarray
) -> dict[str, Any]:
    """Scores of one test split. rows: source rows of its faces; labels, preds: FER2013 label and the
    model's prediction per face; crowd, reasons: `majority_labels` of every source row."""
    c, why = crowd[rows], reasons[rows]
    scored = c >= 0
    wrong = scored & (preds != labels)
    out = {
        "faces": int(len(rows)),
        "scored": int(scored.sum()),
        "excluded": {r: int((why == r).sum()) for r in REASONS},
    }
    n = max(int(scored.sum()), 1)
    out.update(
        {
            "accuracy_ferplus": float((preds[scored] == c[scored]).sum() / n),  # against the crowd's label
            "accuracy_fer2013": float((preds[scored] == labels[scored]).sum() / n),  # the same faces, FER2013 labels
            "accuracy_fer2013_all": float((preds == labels).mean()) if len(rows) else float("nan"),
            "label_agreement": float((labels[scored] == c[scored]).sum() / n),  # FER2013 label == crowd's label
            "errors": int(wrong.sum()),
            "crowd_agrees": int((wrong & (c == preds)).sum()),  # the crowd says what the model said
            "crowd_keeps_label": int((wrong & (c == labels)).sum()),  # the crowd says what FER2013 says
            # right by FER2013, wrong by the crowd: the crowd overturns a label the model had matched
            "crowd_overturns_match": int((scored & (preds == labels) & (c != labels)).sum()),
        }
    )
    out["per_class"] = {
        name: {
            "faces": int((scored & (labels == k)).sum()),
            "errors": int((wrong & (labels == k)).sum()),
            "crowd_agrees": int((wrong & (labels == k) & (c == preds)).sum()),
            "crowd_keeps_label": int((wrong & (labels == k) & (c == labels)).sum()),
        }
        for k, name in enumerate(CLASS_NAMES)
    }
    return out


def score(
    h5_path: Path | str, public_csv: Path | str, private_csv: Path | str, ferplus_csv: Path | str
) -> dict[str, Any]:
    """ferplus.json: the final model's PublicTest and PrivateTest predictions against the FER+ crowd."""
    from .data import load_h5, sha256_of
    from .metrics import read_predictions

    data = load_h5(h5_path)
    if data.attrs.get("dataset") == "demo":
        raise UserError(
            f"config key data.ferplus: {ferplus_csv}: this study runs on the built-in demo data; "
            f"FER+ relabels FER2013 only"
        )
    usage, dropped, votes = read_ferplus(ferplus_csv)
    check_aligned(ferplus_csv, usage, data)
    crowd, reasons = majority_labels(votes, dropped)
    n_source = len(usage)
    label_of = np.full(n_source, -1, dtype=np.int64)
    split_of = np.full(n_source, -1, dtype=np.int64)
    label_of[data.row], split_of[data.row] = data.labels, data.split
    out = {
        "ferplus": str(ferplus_csv),
        "ferplus_sha256": sha256_of(ferplus_csv),
        "rule": RULE,
        "classes": {c: CLASS_NAMES[k] for c, k in TO_FER2013.items()},
        "use": "scoring only: read after PrivateTest was predicted; never used to train or choose",
        "dataset_rows": n_source,
        # the predictions scored: the report ignores a ferplus.json left from an earlier final model
        "predictions_sha256": {"public": sha256_of(public_csv), "private": sha256_of(private_csv)},
    }
    for key, path in (("public", public_csv), ("private", private_csv)):
        labels, probs, rows = read_predictions(path)
        preds = probs.argmax(axis=1)
        outside = (rows < 0) | (rows >= n_source)
        if outside.any():
            raise UserError(f"{path}: row {int(rows[outside][0])} is not a row of the study's data (0-{n_source - 1})")
        want = SPLIT_NAMES.index(SPLITS[key])
        off = (split_of[rows] != want) | (label_of[rows] != labels)
        if off.any():
            i = int(np.flatnonzero(off)[0])
            raise UserError(
                f"{path}: line {i + 2}: row {int(rows[i])} is not a {SPLITS[key]} face with label "
                f"{int(labels[i])} in the study's data ({h5_path}): predictions and data do not match"
            )
        out[key] = score_split(rows, labels, preds, crowd, reasons)
    return out


# ---------------------------------------------------------------- CLI


def cmd_ferplus(args: argparse.Namespace) -> None:
    from .io import write_json

    t0 = time.perf_counter()
    result = score(args.h5, args.public, args.private, args.ferplus)
    write_json(args.out, result)
    for key, name in SPLITS.items():
        s = result[key]
        log.info(
            "%s: %d of %d faces have a FER+ majority; accuracy %.4f against it (%.4f against FER2013 on the "
            "same faces); the crowd sides with the model on %d of its %d errors",
            name,
            s["scored"],
            s["faces"],
            s["accuracy_ferplus"],
            s["accuracy_fer2013"],
            s["crowd_agrees"],
            s["errors"],
        )
    log.info(
        "wrote %s in %.1f s (the report reads it: `snakemake` reruns the report when it is newer)",
        args.out,
        time.perf_counter() - t0,
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ferplus", help="score the final model against the FER+ crowd majority (data.ferplus)")
    p.add_argument("--h5", required=True, help="the study's prepared data (results/data/dataset.h5)")
    p.add_argument("--public", required=True, help="results/final/predictions_public.csv")
    p.add_argument("--private", required=True, help="results/final/predictions_private.csv")
    p.add_argument("--ferplus", required=True, help="FER+ fer2013new.csv (plain or gzip), row-aligned with fer2013.csv")
    p.add_argument("--out", required=True, help="JSON to write (results/final/ferplus.json)")
    p.set_defaults(func=cmd_ferplus)
