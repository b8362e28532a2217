"""Is a verdict a property of the operation, or of the training budget? (No torch.)

Each verdict gets one of three labels, `holds`, `budget-dependent` or `undecided`, and says what
it rests on (`stability_basis`):

**measured** (`recheck_label`): the study retrains the pairs whose verdict is most at risk at
twice the fold budget on one fold (ferstudy/recheck.py, Snakemake rule `recheck`) and compares the
paired difference there with the same fold's difference at the study's budget (same faces, same
seed, only the epochs doubled):
- a significant verdict `holds` when the 2x difference keeps the verdict's sign and more than half
  its size; else it is `budget-dependent` (it shrank towards zero by half or more, or flipped);
- a null verdict is `budget-dependent` when the 2x difference grew beyond the noise of one fold's
  difference (twice the pooled standard deviation of the paired differences, at least `MIN_BAND_PP`);
  else `undecided`.

**heuristic** (`heuristic_stability`, the pairs not rechecked): evidence from the fold curves that
the study has anyway, stated as a heuristic, never as a measurement:
- `regularizer` (dropout, augmentation; which network regularizes more comes from the configs,
  `regularization_amount`), both ways:
  (a) the regularizer lost (significantly) while the less regularized network was not yet
      over-fitting (train-minus-held-out gap under `MIN_OVERFIT_GAP_PP`): a regularizer can only
      pay off once there is over-fitting to prevent;
  (b) `overfit_growing`: the regularizer did not win, while the less regularized network's gap
      grew over the last half of the epochs by at least `GAP_GROWTH_PP` more than the other's:
      growing over-fitting is what a regularizer prevents, so it may win at a longer budget;
- `sign_change`: the paired learning curve (variant minus baseline held-out accuracy on the same
  faces, after every epoch, `training.curve_images`) has points of both signs beyond the noise band
  over the last half of the epochs;
- otherwise a significant verdict `holds` and a null one is `undecided` (`heuristic`; `no_curve`
  when fewer than 3 curve points exist).

No trend is extrapolated: a straight line through a one-cycle schedule's tail is not a model of
a longer run (on the cpu preset it projected -7.8 pp at twice the budget for a pair whose measured
2x rerun gave -1.9 pp).

The noise band of a curve is max(`MIN_BAND_PP`, 2 standard errors of the final paired difference
over the folds): curve points are single evaluations on a few hundred faces, so a small wiggle is
not a flip.
"""

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .io import float_or_nan

REGULARIZER_FACTORS = ("dropout", "augmentation")
MIN_OVERFIT_GAP_PP = 5.0  # train-minus-held-out accuracy below this: the network is not over-fitting yet
GAP_GROWTH_PP = 3.0  # late growth of the less regularized network's gap beyond the other's that flags (b)
MIN_BAND_PP = 1.0
KEEPS_SHARE = 0.5  # a rechecked significant difference must keep more than this share of its size
LABELS = ("holds", "budget-dependent", "undecided")
SIGNIFICANT = ("helped", "hurt")
HEURISTIC = "; a heuristic, not rechecked at a longer budget"


def curve_from_histories(histories: Iterable[Iterable[Mapping[str, Any]]]) -> dict[str, Any] | None:
    """{epochs, val_acc, train_acc, train_acc_augmented}: per fold lists (fold order) from history
    rows (dicts or a DataFrame's records); None when no epoch has a curve point."""
    folds = [list(h) for h in histories]
    if not folds or not all(folds):
        return None
    epochs = [int(r["epoch"]) for r in folds[0]]
    out: dict[str, Any] = {"epochs": epochs}
    for key, column in (
        ("val_acc", "curve_val_acc"),
        ("train_acc", "curve_train_acc"),
        ("train_acc_augmented", "train_acc"),
    ):
        out[key] = [[float_or_nan(r.get(column)) for r in rows] for rows in folds]
    if all(math.isnan(v) for fold in out["val_acc"] for v in fold):
        return None
    return out


def paired_curve_pp(variant: dict | None, baseline: dict | None) -> tuple[list, list]:
    """Mean over folds of variant - baseline held-out curve accuracy, per epoch, in pp (NaN-free
    epochs only, both curves on the same epochs). Returns (epochs, diffs)."""
    if not variant or not baseline:
        return [], []
    n = min(len(variant["epochs"]), len(baseline["epochs"]))
    v = np.asarray([f[:n] for f in variant["val_acc"]], dtype=float)
    b = np.asarray([f[:n] for f in baseline["val_acc"]], dtype=float)
    k = min(len(v), len(b))
    d = 100 * np.nanmean(v[:k] - b[:k], axis=0) if k else np.full(n, np.nan)
    keep = np.isfinite(d)
    return [e for e, ok in zip(variant["epochs"][:n], keep) if ok], d[keep].tolist()


def gap_curve_pp(curve: dict | None) -> tuple[list, list]:
    """(epochs, train-minus-held-out gap per epoch in pp, mean over folds; NaN-free epochs only)."""
    if not curve:
        return [], []
    t = np.asarray(curve["train_acc"], dtype=float)
    v = np.asarray(curve["val_acc"], dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an epoch without curve points: dropped below
        gaps = 100 * np.nanmean(t - v, axis=0)
    keep = np.isfinite(gaps)
    return [e for e, ok in zip(curve["epochs"], keep) if ok], gaps[keep].tolist()


def last_gap_pp(curve: dict | None) -> float:
    """Train-minus-held-out accuracy (pp) at the last epoch, mean over folds (un-augmented faces)."""
    if not curve:
        return math.nan
    gaps = [
        100 * (t[-1] - v[-1])
        for t, v in zip(curve["train_acc"], curve["val_acc"])
        if t and v and np.isfinite(t[-1]) and np.isfinite(v[-1])
    ]
    return float(np.mean(gaps)) if gaps else math.nan


def late_mask(epochs: Sequence[float] | np.ndarray) -> np.ndarray:
    """The last half of the epochs (at least the last two points)."""
    epochs = np.asarray(epochs, dtype=float)
    late = epochs >= epochs[-1] / 2 + 0.5 if len(epochs) and epochs[-1] >= 4 else np.ones(len(epochs), bool)
    if late.sum() < 2:
        late[-2:] = True
    return late


def late_growth_pp(epochs: Sequence[float] | np.ndarray, gaps: Sequence[float] | np.ndarray) -> tuple:
    """(growth of a gap curve over its last half, first late epoch, last epoch, gap then, gap at the end)."""
    if len(gaps) < 2:
        return math.nan, None, None, math.nan, math.nan
    late = late_mask(epochs)
    first = int(np.flatnonzero(late)[0])
    return float(gaps[-1] - gaps[first]), int(epochs[first]), int(epochs[-1]), float(gaps[first]), float(gaps[-1])


def heuristic_stability(
    epochs: Sequence[float] | np.ndarray,
    diffs_pp: Sequence[float] | np.ndarray,
    final_diff_pp: float,
    significant: bool,
    std_pp: float = math.nan,
    k: int = 1,
    factor: str = "",
    variant_gap_pp: float = math.nan,
    baseline_gap_pp: float = math.nan,
    variant_more_regularized: bool | None = None,
    variant_gaps: tuple | None = None,
    baseline_gaps: tuple | None = None,
) -> tuple[str, str, dict]:
    """(label, reason, evidence dict) of a verdict that was not rechecked; see the module docstring.

    epochs, diffs_pp: the paired curve (`paired_curve_pp`); final_diff_pp: the verdict's difference on
    the whole held-out folds; significant: p < alpha; std_pp, k: spread of the per-fold differences;
    variant_gaps, baseline_gaps: (epochs, gaps) of `gap_curve_pp` for the over-fitting rule (b)."""
    se = std_pp / math.sqrt(k) if k > 1 and np.isfinite(std_pp) else math.nan
    band = max(MIN_BAND_PP, 2 * se) if np.isfinite(se) else MIN_BAND_PP
    evidence = {
        "band_pp": band,
        "late_min_pp": math.nan,
        "late_max_pp": math.nan,
        "gap_growth_pp": math.nan,
        "baseline_gap_growth_pp": math.nan,
        "stability_basis": "heuristic",
    }
    if regularizer_lost_too_early(
        factor, final_diff_pp, significant, variant_gap_pp, baseline_gap_pp, variant_more_regularized
    ):
        gap = variant_gap_pp if final_diff_pp > 0 else baseline_gap_pp
        reason = (
            f"the regularizer lost while the less regularized network was not yet over-fitting "
            f"(train-minus-held-out gap {gap:.1f} pp < {MIN_OVERFIT_GAP_PP:g} pp); regularization pays "
            f"off only once there is over-fitting to prevent{HEURISTIC}"
        )
        return "budget-dependent", reason, {**evidence, "stability_rule": "regularizer"}
    growing = overfitting_grows(
        factor,
        final_diff_pp,
        significant,
        variant_more_regularized,
        variant_gap_pp,
        baseline_gap_pp,
        variant_gaps,
        baseline_gaps,
    )
    if growing:
        evidence.update(gap_growth_pp=growing["variant"], baseline_gap_growth_pp=growing["baseline"])
        return "budget-dependent", growing["reason"], {**evidence, "stability_rule": "overfit_growing"}
    epochs, diffs = np.asarray(epochs, dtype=float), np.asarray(diffs_pp, dtype=float)
    if len(diffs) < 3:
        label = "holds" if significant else "undecided"
        return (
            label,
            f"no learning curve to check against (fewer than 3 points){HEURISTIC}",
            {**evidence, "stability_rule": "no_curve"},
        )
    late = late_mask(epochs)
    e_late, d_late = epochs[late], diffs[late]
    evidence.update(late_min_pp=float(d_late.min()), late_max_pp=float(d_late.max()), stability_rule="heuristic")
    span = f"epochs {int(e_late[0])}-{int(e_late[-1])}"
    if d_late.max() > band and d_late.min() < -band:
        evidence["stability_rule"] = "sign_change"
        return (
            "budget-dependent",
            f"the curve's difference changed sign over {span} "
            f"({d_late.min():+.1f} to {d_late.max():+.1f} pp){HEURISTIC}",
            evidence,
        )
    if significant:
        return (
            "holds",
            f"no sign change beyond noise over {span} ({d_late.min():+.1f} to {d_late.max():+.1f} pp){HEURISTIC}",
            evidence,
        )
    return ("undecided", f"no measurable difference and no sign of one over {span}{HEURISTIC}", evidence)


def overfitting_grows(
    factor: str,
    final_diff_pp: float,
    significant: bool,
    variant_more_regularized: bool | None,
    variant_gap_pp: float,
    baseline_gap_pp: float,
    variant_gaps: tuple | None,
    baseline_gaps: tuple | None,
) -> dict | None:
    """Rule (b): {variant, baseline (late gap growth, pp), reason} when the regularizer did not win
    while the less regularized network's gap grew `GAP_GROWTH_PP` more than the other's; else None."""
    if factor not in REGULARIZER_FACTORS or not variant_gaps or not baseline_gaps:
        return None
    if variant_more_regularized is None:
        if not (np.isfinite(variant_gap_pp) and np.isfinite(baseline_gap_pp)) or variant_gap_pp == baseline_gap_pp:
            return None
        variant_more_regularized = variant_gap_pp < baseline_gap_pp
    regularizer_won = significant and (final_diff_pp > 0) == variant_more_regularized
    if regularizer_won:
        return None
    v, b = late_growth_pp(*variant_gaps), late_growth_pp(*baseline_gaps)
    less, more = (b, v) if variant_more_regularized else (v, b)
    if not (np.isfinite(less[0]) and np.isfinite(more[0])) or less[0] - more[0] < GAP_GROWTH_PP:
        return None
    reason = (
        f"the less regularized network's train-minus-held-out gap grew from {less[3]:.1f} to "
        f"{less[4]:.1f} pp over epochs {less[1]}-{less[2]} (the other's from {more[3]:.1f} to {more[4]:.1f} pp); "
        f"growing over-fitting is what a regularizer prevents, so it may win at a longer budget{HEURISTIC}"
    )
    return {"variant": v[0], "baseline": b[0], "reason": reason}


def recheck_label(
    verdict: str,
    diff_pp: float,
    diff_1x_pp: float,
    diff_2x_pp: float,
    noise_pp: float,
    fold: int = 0,
    factor: float = 2.0,
) -> tuple[str, str]:
    """(label, reason) measured by a recheck: the pair retrained at `factor` x the epochs on `fold`.

    verdict, diff_pp: the cross-validation verdict and its difference; diff_1x_pp, diff_2x_pp: the
    paired difference on that fold at the study's budget and at the longer one; noise_pp: the spread
    of one fold's paired difference (pooled standard deviation). A significant verdict holds when the
    2x difference keeps its sign and more than `KEEPS_SHARE` of the 1x difference (of the verdict's
    difference when that fold disagreed with the verdict at 1x already)."""
    at = (
        f"at {factor:g}x the epochs on fold {fold} (measured) the difference went from {diff_1x_pp:+.1f} to "
        f"{diff_2x_pp:+.1f} pp"
    )
    noise = max(MIN_BAND_PP, 2 * noise_pp) if np.isfinite(noise_pp) else MIN_BAND_PP
    if verdict in SIGNIFICANT:
        sign = math.copysign(1.0, diff_pp)
        reference = diff_1x_pp if sign * diff_1x_pp > 0 else diff_pp
        share = sign * diff_2x_pp / abs(reference)
        if share > KEEPS_SHARE:
            return "holds", f"{at}: sign and more than half its size kept ({share:.2f}x)"
        what = "flipped its sign" if share <= 0 else f"shrank to {share:.2f}x"
        return "budget-dependent", f"{at}: it {what}, so the verdict depends on the budget"
    if abs(diff_2x_pp) > noise and abs(diff_2x_pp) > abs(diff_1x_pp):
        return (
            "budget-dependent",
            f"{at}: it grew beyond the noise of one fold ({noise:.1f} pp), so a "
            f"difference may appear at a longer budget",
        )
    return "undecided", f"{at}: no difference beyond the noise of one fold ({noise:.1f} pp) appeared"


def regularization_amount(run_config: dict) -> float:
    """How much a run regularizes: the sum of its dropout rates plus one per active augmentation
    operation (crop, flip, rotation, zoom, shift, erasing, brightness, contrast). Only the order
    between a variant and its baseline is used."""
    layers = run_config.get("model", {}).get("layers") or []
    dropout = sum(float(layer["dropout"]) for layer in layers if isinstance(layer, dict) and "dropout" in layer)
    aug = run_config.get("training", {}).get("augment", {})
    ops = 0
    if aug.get("enabled", True):
        ops = (
            int(aug.get("crop", 48) < 48)
            + int(bool(aug.get("flip")))
            + sum(int(bool(aug.get(k))) for k in ("rotate", "scale", "translate", "erase", "brightness", "contrast"))
        )
    return dropout + ops


def regularizer_lost_too_early(
    factor: str,
    final_diff_pp: float,
    significant: bool,
    variant_gap_pp: float,
    baseline_gap_pp: float,
    variant_more_regularized: bool | None = None,
) -> bool:
    """A dropout or augmentation verdict that favours the less regularized network while that network
    is not over-fitting; a verdict against the regularizer counts only when significant. Which one is
    more regularized: `variant_more_regularized` (from the configs); when unknown (None), the one with
    the smaller train-minus-held-out gap (that is what regularization does)."""
    if factor not in REGULARIZER_FACTORS or not significant:
        return False
    if not (np.isfinite(variant_gap_pp) and np.isfinite(baseline_gap_pp)):
        return False
    if variant_more_regularized is None:
        if variant_gap_pp == baseline_gap_pp:
            return False
        variant_more_regularized = variant_gap_pp < baseline_gap_pp
    regularizer_lost = (final_diff_pp < 0) == variant_more_regularized
    less_regularized_gap = baseline_gap_pp if variant_more_regularized else variant_gap_pp
    return regularizer_lost and less_regularized_gap < MIN_OVERFIT_GAP_PP


def holm_adjusted(pvalues: Iterable[float | None]) -> list[float]:
    """Holm step-down adjusted p-values (NaN counts as 1), in input order."""
    p = np.asarray([x if x is not None and np.isfinite(x) else 1.0 for x in pvalues], dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()
