"""The budget-stability labels on made-up learning curves and rechecks (ferstudy/stability.py)."""

import math

import pytest

from ferstudy.stability import (
    MIN_OVERFIT_GAP_PP,
    curve_from_histories,
    gap_curve_pp,
    heuristic_stability,
    holm_adjusted,
    last_gap_pp,
    paired_curve_pp,
    recheck_label,
    regularization_amount,
)

stability = heuristic_stability

EPOCHS = list(range(1, 9))


def label(diffs, final=None, significant=True, **kw):
    final = diffs[-1] if final is None else final
    return stability(EPOCHS, diffs, final, significant, kw.pop("std_pp", 0.8), kw.pop("k", 3), **kw)[0]


def test_a_steady_significant_difference_holds():
    assert label([1.0, 2.0, 2.5, 3.0, 3.1, 2.9, 3.2, 3.0]) == "holds"
    assert label([-4.0, -5.0, -6.0, -6.5, -6.0, -6.4, -6.2, -6.3]) == "holds"


def test_a_difference_that_flips_sign_late_is_budget_dependent():
    # ahead early, behind late: the sign changes over the late curve
    assert label([5.0, 4.0, 3.0, 2.0, 1.5, -0.5, -1.5, -2.5]) == "budget-dependent"


def test_no_trend_is_extrapolated():
    """Shrinking fast, but of one sign over the late curve: the earlier rule carried the line on to
    twice the budget and called it budget-dependent; a straight line through a one-cycle tail is no
    model of a longer run (measured 2x: -1.9 pp where it projected -7.8), so only a recheck decides."""
    label_, reason, ev = stability(EPOCHS, [8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.5, 2.0], 2.0, True, 0.8, 3)
    assert (label_, ev["stability_rule"], ev["stability_basis"]) == ("holds", "heuristic", "heuristic")
    assert "heuristic" in reason and "projected_2x_pp" not in ev and "slope_pp_per_epoch" not in ev
    assert label([-3.0, -2.0, -1.0, -0.4, 0.2, 0.8, 0.9, 0.9], final=0.9, significant=False) == "undecided"


def test_no_difference_stays_undecided():
    assert label([0.3, -0.2, 0.4, 0.1, -0.3, 0.2, -0.1, 0.2], significant=False) == "undecided"


def test_a_regularizer_that_lost_before_over_fitting_is_budget_dependent():
    steady_win = [2.0, 3.0, 4.0, 4.5, 4.8, 4.9, 5.0, 5.0]  # e.g. no_augment ahead of the baseline
    # the variant (no augmentation) is the less regularized network (larger gap) and is not over-fitting
    kw = dict(factor="augmentation", variant_gap_pp=MIN_OVERFIT_GAP_PP - 2, baseline_gap_pp=0.5)
    assert label(steady_win, **kw) == "budget-dependent"
    # once it over-fits, the curve decides: a steady win holds
    assert label(steady_win, factor="augmentation", variant_gap_pp=15.0, baseline_gap_pp=3.0) == "holds"
    # the same numbers for a factor that is no regularizer: the curve decides
    assert label(steady_win, factor="depth", variant_gap_pp=1.0, baseline_gap_pp=0.5) == "holds"
    # dropout that hurt (variant more regularized: smaller gap) while the baseline does not over-fit
    assert (
        label(
            [-2.0, -3.0, -3.0, -3.5, -3.6, -3.4, -3.5, -3.6], factor="dropout", variant_gap_pp=-1.0, baseline_gap_pp=2.0
        )
        == "budget-dependent"
    )


def test_noise_band_follows_the_fold_spread():
    wiggle = [1.5, 1.2, 1.8, 1.6, -1.3, 1.9, 1.4, 1.7]  # one dip below zero
    assert label(wiggle, std_pp=0.3) == "budget-dependent"  # band 1 pp: the dip is a sign change
    assert label(wiggle, std_pp=2.0) == "holds"  # band 2.3 pp: the dip is noise


def test_holm_adjusted_p_values():
    adj = holm_adjusted([0.01, 0.04, 0.03, float("nan")])
    assert adj == pytest.approx([0.04, 0.09, 0.09, 1.0])  # 4 x 0.01; 3 x 0.03; max(2 x 0.04, 0.09); NaN as 1
    assert holm_adjusted([]) == []


def test_curves_from_fold_histories_and_the_gap():
    hist = [
        [
            {
                "epoch": e,
                "train_acc": 0.3 + 0.05 * e,
                "curve_train_acc": 0.3 + 0.06 * e,
                "curve_val_acc": 0.3 + 0.04 * e + 0.01 * f,
            }
            for e in range(1, 5)
        ]
        for f in range(3)
    ]
    curve = curve_from_histories(hist)
    assert curve["epochs"] == [1, 2, 3, 4] and len(curve["val_acc"]) == 3
    assert last_gap_pp(curve) == pytest.approx(100 * (0.54 - 0.46 - 0.01))
    other = curve_from_histories([[{**r, "curve_val_acc": r["curve_val_acc"] + 0.02} for r in h] for h in hist])
    epochs, diffs = paired_curve_pp(other, curve)
    assert epochs == [1, 2, 3, 4] and diffs == pytest.approx([2.0] * 4)
    no_curve = [[{"epoch": 1, "train_acc": 0.5, "curve_val_acc": float("nan")}]]
    assert curve_from_histories(no_curve) is None
    assert math.isnan(last_gap_pp(None))


def test_the_more_regularized_network_comes_from_the_configs():
    """Heavier augmentation that lost while the baseline was not over-fitting is budget-dependent,
    even when its own train-minus-held-out gap came out larger (the gap does not say which is which)."""
    lost = [-3.0, -2.5, -2.8, -3.1, -2.9, -3.0, -2.7, -2.9]
    kw = dict(factor="augmentation", variant_gap_pp=3.2, baseline_gap_pp=2.7)
    assert label(lost, **kw) == "holds"  # inferred from the gaps: the variant looks less regularized
    assert label(lost, variant_more_regularized=True, **kw) == "budget-dependent"
    crop_flip = {"model": {"layers": [{"dropout": 0.3}]}, "training": {"augment": {"crop": 44, "flip": True}}}
    full = {
        "model": crop_flip["model"],
        "training": {"augment": {"crop": 44, "flip": True, "rotate": 10, "erase": 0.25}},
    }
    none = {"model": crop_flip["model"], "training": {"augment": {"enabled": False, "crop": 44, "flip": True}}}
    assert regularization_amount(full) > regularization_amount(crop_flip) > regularization_amount(none)
    no_dropout = {"model": {"layers": []}, "training": crop_flip["training"]}
    assert regularization_amount(no_dropout) < regularization_amount(crop_flip)


def test_the_rule_that_decided_is_named():
    """`stability_rule` says which rule gave the label, so the report need not parse the reason."""
    epochs = [1, 2, 3, 4, 5, 6, 7, 8]
    _, _, ev = stability(epochs, [1, -3, 3, -3, 3, -3, 3, -3], -3.0, True, 0.5, 3)
    assert ev["stability_rule"] == "sign_change"
    _, _, ev = stability(epochs, [-4.0] * 8, -4.0, True, 0.5, 3)
    assert ev["stability_rule"] == "heuristic"
    _, _, ev = stability([1, 2], [-4.0, -4.0], -4.0, True, 0.5, 3)
    assert ev["stability_rule"] == "no_curve"
    label, _, ev = stability(epochs, [-4.0] * 8, -4.0, True, 0.5, 3, "dropout", 1.0, 2.0, True)
    assert (label, ev["stability_rule"]) == ("budget-dependent", "regularizer")


def gaps(values):
    return list(range(1, len(values) + 1)), list(values)


def test_the_regularizer_rule_works_both_ways():
    """A variant without the regularizer that does not lose while its train-minus-held-out gap keeps
    growing (no_augment on the cpu preset: 9 -> 22 pp, labelled undecided before) is budget-dependent
    by the heuristic; a regularizer that already won is not flagged, nor a gap that grows as the
    other's does."""
    flat = [0.3, -0.2, 0.4, 0.1, -0.3, 0.2, -0.1, -0.2]
    growing, steady = gaps([2, 4, 6, 9, 12, 16, 19, 22]), gaps([1, 2, 2, 3, 3, 3, 3, 3])
    kw = dict(factor="augmentation", variant_gap_pp=22.0, baseline_gap_pp=3.0, variant_more_regularized=False)
    label_, reason, ev = stability(EPOCHS, flat, -0.2, False, 0.5, 3, variant_gaps=growing, baseline_gaps=steady, **kw)
    assert (label_, ev["stability_rule"]) == ("budget-dependent", "overfit_growing")
    assert "grew from 12.0 to 22.0 pp over epochs 5-8" in reason and "heuristic" in reason
    assert ev["gap_growth_pp"] == pytest.approx(10.0) and ev["baseline_gap_growth_pp"] == pytest.approx(0.0)
    # the regularizer (the baseline's augmentation) already won: nothing points to a change
    won = [-3.0, -3.5, -4.0, -4.2, -4.5, -4.8, -5.0, -5.2]
    assert stability(EPOCHS, won, -5.2, True, 0.5, 3, variant_gaps=growing, baseline_gaps=steady, **kw)[0] == "holds"
    # both gaps grow alike: the regularizer prevents nothing more
    assert (
        stability(EPOCHS, flat, -0.2, False, 0.5, 3, variant_gaps=growing, baseline_gaps=growing, **kw)[0]
        == "undecided"
    )
    # not a regularizer factor: no such rule
    assert (
        stability(
            EPOCHS, flat, -0.2, False, 0.5, 3, variant_gaps=growing, baseline_gaps=steady, **{**kw, "factor": "depth"}
        )[0]
        == "undecided"
    )


def test_gap_curve_is_the_mean_over_folds():
    curve = {
        "epochs": [1, 2, 3],
        "train_acc": [[0.5, 0.6, 0.7], [0.5, 0.62, 0.74]],
        "val_acc": [[0.45, 0.5, 0.5], [0.45, float("nan"), 0.5]],
    }
    epochs, g = gap_curve_pp(curve)
    assert epochs == [1, 2, 3] and g == pytest.approx([5.0, 10.0, 22.0])
    assert gap_curve_pp(None) == ([], [])


def test_a_difference_that_halves_at_twice_the_budget_is_budget_dependent():
    """The measured label: a significant difference must keep its sign and more than half its size."""
    assert recheck_label("helped", 2.0, 2.0, 1.0, 0.45)[0] == "budget-dependent"  # halved
    label_, reason = recheck_label("helped", 2.0, 2.0, 0.9, 0.45)
    assert label_ == "budget-dependent" and "shrank to 0.45x" in reason and "(measured)" in reason
    assert recheck_label("helped", 2.0, 2.0, 1.1, 0.45)[0] == "holds"  # more than half kept
    assert recheck_label("hurt", -6.8, -7.1, -6.1, 0.45)[0] == "holds"  # dropout_blocks, measured at 2x
    assert recheck_label("hurt", -2.5, -2.8, 0.3, 0.45) == (
        "budget-dependent",
        "at 2x the epochs on fold 0 (measured) the difference went from -2.8 to +0.3 pp: it "
        "flipped its sign, so the verdict depends on the budget",
    )
    # that fold disagreed with the verdict at 1x: the verdict's own difference is the reference
    assert recheck_label("helped", 1.0, -0.2, 0.6, 0.45)[0] == "holds"
    assert recheck_label("helped", 1.0, -0.2, 0.4, 0.45)[0] == "budget-dependent"


def test_a_null_verdict_rechecked_is_budget_dependent_only_beyond_one_folds_noise():
    assert recheck_label("no measurable difference", -0.2, -0.3, -2.5, 0.45)[0] == "budget-dependent"
    assert recheck_label("no measurable difference", -0.2, -0.3, -0.8, 0.45)[0] == "undecided"  # within 1 pp
    assert recheck_label("no measurable difference", -0.2, 1.5, 1.2, 0.6)[0] == "undecided"  # did not grow
