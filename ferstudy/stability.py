"""Is a verdict a property of the operation, or of the training budget? (No torch.)

Every fold job records a learning curve: after each epoch, the accuracy on a fixed stratified
subset of its held-out fold and of the faces it trained on (`training.curve_images`, see
`train.learning_curve_sets`), without augmentation. A variant and the baseline are predicted on
the same faces, so the paired difference along the curve shows where the comparison is heading.
`stability(...)` turns that evidence into one of three labels:

- `budget-dependent`: the verdict could flip with a longer budget. Any of
  (a) the late curve (last half of the epochs) has points of both signs beyond the noise band;
  (b) the late trend, carried on for as many epochs again (twice the budget), reverses the sign
      of the final difference or shrinks it into the noise band (for a significant verdict), or
      grows a difference that is not significant now out of the band (for a null verdict);
  (c) a regularizer (dropout, augmentation) lost, while the network with less regularization was
      not yet over-fitting (its train-minus-held-out gap under `MIN_OVERFIT_GAP_PP`): a
      regularizer can only pay off once there is over-fitting to prevent. Which network is the
      more regularized comes from the configs (`regularization_amount`: dropout rates and active
      augmentation operations), not from the results.
- `holds`: a significant verdict (p < alpha of the corrected t-test on the whole held-out folds)
  with none of the above: the sign was stable over the late curve and the trend keeps it.
- `undecided`: no significant difference and nothing pointing to one at twice the budget.

`stability_rule` in the evidence names what decided the label: `regularizer` (c), `sign_change` (a),
`trend` (the late-trend test (b), whichever label it gave) or `no_curve` (too few points to check).

The noise band is max(`MIN_BAND_PP`, 2 standard errors of the final paired difference over the
folds): curve points are single evaluations on a few hundred faces, so a small wiggle is not a
flip. A late trend counts only when its slope is at least twice its standard error (from the
residuals of the line fit); otherwise the projection at twice the budget is the final difference. The rule is deliberately simple and stated in the report; it flags risk from evidence the
study has, it does not prove stability (a second, longer run of the pair does: see docs).
"""

import math

import numpy as np

from .io import float_or_nan

REGULARIZER_FACTORS = ("dropout", "augmentation")
MIN_OVERFIT_GAP_PP = 5.0  # train-minus-held-out accuracy below this: the network is not over-fitting yet
MIN_BAND_PP = 1.0
LABELS = ("holds", "budget-dependent", "undecided")


def curve_from_histories(histories):
    """{epochs, val_acc, train_acc, train_acc_augmented}: per fold lists (fold order) from history
    rows (dicts or a DataFrame's records); None when no epoch has a curve point."""
    folds = [list(h) for h in histories]
    if not folds or not all(folds):
        return None
    epochs = [int(r["epoch"]) for r in folds[0]]
    out = {"epochs": epochs}
    for key, column in (("val_acc", "curve_val_acc"), ("train_acc", "curve_train_acc"),
                        ("train_acc_augmented", "train_acc")):
        out[key] = [[float_or_nan(r.get(column)) for r in rows] for rows in folds]
    if all(math.isnan(v) for fold in out["val_acc"] for v in fold):
        return None
    return out


def paired_curve_pp(variant, baseline):
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


def last_gap_pp(curve):
    """Train-minus-held-out accuracy (pp) at the last epoch, mean over folds (un-augmented faces)."""
    if not curve:
        return math.nan
    gaps = [100 * (t[-1] - v[-1]) for t, v in zip(curve["train_acc"], curve["val_acc"])
            if t and v and np.isfinite(t[-1]) and np.isfinite(v[-1])]
    return float(np.mean(gaps)) if gaps else math.nan


def stability(epochs, diffs_pp, final_diff_pp, significant, std_pp=math.nan, k=1, factor="",
              variant_gap_pp=math.nan, baseline_gap_pp=math.nan, variant_more_regularized=None):
    """(label, reason, evidence dict) for one variant-vs-baseline verdict; see the module docstring.

    epochs, diffs_pp: the paired curve (`paired_curve_pp`); final_diff_pp: the verdict's difference on
    the whole held-out folds; significant: p < alpha; std_pp, k: spread of the per-fold differences."""
    se = std_pp / math.sqrt(k) if k > 1 and np.isfinite(std_pp) else math.nan
    band = max(MIN_BAND_PP, 2 * se) if np.isfinite(se) else MIN_BAND_PP
    evidence = {"band_pp": band, "slope_pp_per_epoch": math.nan, "projected_2x_pp": math.nan,
                "late_min_pp": math.nan, "late_max_pp": math.nan}
    if regularizer_lost_too_early(factor, final_diff_pp, significant, variant_gap_pp, baseline_gap_pp,
                                  variant_more_regularized):
        gap = variant_gap_pp if final_diff_pp > 0 else baseline_gap_pp
        reason = (f"the regularizer lost while the less regularized network was not yet over-fitting "
                  f"(train-minus-held-out gap {gap:.1f} pp < {MIN_OVERFIT_GAP_PP:g} pp); regularization pays "
                  f"off only once there is over-fitting to prevent")
        return "budget-dependent", reason, {**evidence, "stability_rule": "regularizer"}
    epochs, diffs = np.asarray(epochs, dtype=float), np.asarray(diffs_pp, dtype=float)
    if len(diffs) < 3:
        label = "undecided" if not significant else "holds"
        return label, "no learning curve to check against (fewer than 3 points)", {**evidence, "stability_rule": "no_curve"}
    late = epochs >= epochs[-1] / 2 + 0.5 if epochs[-1] >= 4 else np.ones(len(epochs), bool)
    if late.sum() < 2:
        late[-2:] = True
    e_late, d_late = epochs[late], diffs[late]
    slope = _significant_slope(e_late, d_late)
    projected = final_diff_pp + slope * epochs[-1]
    evidence.update(slope_pp_per_epoch=slope, projected_2x_pp=projected, late_min_pp=float(d_late.min()),
                    late_max_pp=float(d_late.max()), stability_rule="trend")
    span = f"epochs {int(e_late[0])}-{int(e_late[-1])}"
    if d_late.max() > band and d_late.min() < -band:
        evidence["stability_rule"] = "sign_change"
        return ("budget-dependent", f"the curve's difference changed sign over {span} "
                f"({d_late.min():+.1f} to {d_late.max():+.1f} pp)", evidence)
    trend = f"its late trend ({slope:+.2f} pp per epoch over {span})"  # used only where slope != 0
    if significant:
        if slope and (math.copysign(1, projected) != math.copysign(1, final_diff_pp) or abs(projected) < band):
            return ("budget-dependent", f"{trend} would take the {final_diff_pp:+.1f} pp difference to "
                    f"{projected:+.1f} pp at twice the budget", evidence)
        keeps = f"{trend} keeps it" if slope else "no late trend beyond noise would change it"
        return ("holds", f"the sign held over {span} ({d_late.min():+.1f} to {d_late.max():+.1f} pp) and "
                f"{keeps} at twice the budget ({projected:+.1f} pp)", evidence)
    if abs(projected) > 2 * band and abs(projected) > abs(final_diff_pp):
        return ("budget-dependent", f"not significant now, but {trend} would widen it to {projected:+.1f} pp "
                f"at twice the budget", evidence)
    why = f"{trend} does not point to one" if slope else "no late trend beyond noise points to one"
    return ("undecided", f"no measurable difference, and {why} at twice the budget ({projected:+.1f} pp)", evidence)


def _significant_slope(x, y):
    """Least-squares slope of y on x, or 0 when it is under two standard errors (noise, not trend)."""
    slope, intercept = np.polyfit(x, y, 1)
    if len(x) < 3:
        return float(slope)
    residual = y - (slope * x + intercept)
    se = math.sqrt(float((residual ** 2).sum()) / (len(x) - 2) / float(((x - x.mean()) ** 2).sum()))
    return float(slope) if abs(slope) >= 2 * se else 0.0


def regularization_amount(run_config):
    """How much a run regularizes: the sum of its dropout rates plus one per active augmentation
    operation (crop, flip, rotation, zoom, shift, erasing, brightness, contrast). Only the order
    between a variant and its baseline is used."""
    layers = run_config.get("model", {}).get("layers") or []
    dropout = sum(float(layer["dropout"]) for layer in layers if isinstance(layer, dict) and "dropout" in layer)
    aug = run_config.get("training", {}).get("augment", {})
    ops = 0
    if aug.get("enabled", True):
        ops = (int(aug.get("crop", 48) < 48) + int(bool(aug.get("flip")))
               + sum(int(bool(aug.get(k))) for k in ("rotate", "scale", "translate", "erase", "brightness", "contrast")))
    return dropout + ops


def regularizer_lost_too_early(factor, final_diff_pp, significant, variant_gap_pp, baseline_gap_pp,
                               variant_more_regularized=None):
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


def holm_adjusted(pvalues):
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
