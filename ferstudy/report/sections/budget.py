"""Appendix A2, what this budget can and cannot show: the training budget in SGD steps, the
difference the study finds with 80% power, the stability labels with their rule, and how well
each network fits its training faces (train minus held-out accuracy, and how much its held-out
curve still rose: a small gap is no sign of under-fitting, a still-rising curve is one of a
budget that stopped the network)."""

import math

import numpy as np

from ..text import and_join, code, num, pct, plural, pp
from ..verdicts import counts_text, label_counts

BUDGET_RULE = (
    "a rechecked verdict holds when its difference at twice the epochs keeps its sign and more than "
    "half its size, and is budget-dependent otherwise (a null one when a difference beyond one fold's "
    "noise appears); a verdict not rechecked keeps a heuristic label: budget-dependent when the "
    "variant-minus-baseline curve changed sign beyond its noise band over the last half of the epochs, "
    "when a regularizer (dropout, augmentation) lost while the less regularized network was not yet "
    "over-fitting (a gap under {gap:g} pp), or did not win while that network's gap kept growing; else it "
    "holds when significant and is undecided otherwise"
)
OVERFIT_CLEAR_PP = 10.0  # a train-minus-held-out gap from which a network clearly over-fits


def budget_findings(ctx: dict) -> dict:
    from ...stability import MIN_OVERFIT_GAP_PP

    base = next(r for r in ctx["archs"] if r["architecture"] == ctx["baseline"])
    w, fw, tr = base["workload"], ctx["final"]["workload"], ctx["cv_training"]
    share = tr.get("subsample", 1.0)
    text = (
        f"Each fold model trained {w['epochs']} epochs on about {num(w['n_train'])} faces"
        + (f" ({pct(share, 0)} of its {num(ctx['data']['fold_train'])})" if share < 1 else "")
        + f" at batch {w['batch_size']}: {num(w['steps'])} SGD steps ({num(w['steps_per_epoch'])} per epoch)"
    )
    if fw:
        text += (
            f"; the final model {fw['epochs']} epochs on {num(fw['n_train'])} faces at batch {fw['batch_size']}, "
            f"{num(fw['steps'])} steps ({fw['steps'] / max(w['steps'], 1):.1f}x)"
        )
    power = [r["detectable_pp"] for r in ctx["ablation"] if np.isfinite(r.get("detectable_pp", math.nan))]
    text += (
        f". Such a budget can show which operations matter early in training, after each face was seen "
        f"{plural(w['epochs'], 'time')}; it cannot show which would win at convergence"
        + (
            f", and a true difference of {float(np.median(power)):.1f} pp is found with 80% power (a smaller one "
            f"passes only where its pair's folds happen to agree: A1)"
            if power
            else ""
        )
        + "."
    )
    abl = ctx["ablation"]
    if abl:
        text += (
            " "
            + recheck_text(abl)
            + " "
            + counts_text(label_counts(abl))
            + ". The rule: "
            + BUDGET_RULE.format(gap=MIN_OVERFIT_GAP_PP)
            + "."
        )
    return {"budget": text}


def recheck_text(abl: list[dict]) -> str:
    """Which verdicts the study retrained at twice the budget, and which at-risk ones it left."""
    done = [r for r in abl if r.get("stability_basis") == "measured"]
    left = [r for r in abl if str(r.get("recheck_status", "")).startswith("at risk")]
    text = (
        f"The study retrained {and_join(code(r['arch']) for r in done)} and the baseline at twice the epochs "
        f"on one fold, so {'its label is' if len(done) == 1 else 'their labels are'} measured"
        if done
        else "No verdict was retrained at a longer budget (`study.recheck`), so every label is a heuristic"
    )
    if left:
        text += f"; at risk but not rechecked: {and_join(code(r['arch']) for r in left)}"
    return text + ". Labels:"


def fit_reading(gap_pp: float) -> str:
    """'not over-fitting' | 'beginning to over-fit' | 'over-fitting' from a train-minus-held-out gap
    (pp). A small gap says nothing of under-fitting: a network can fit new faces as badly as old ones."""
    from ...stability import MIN_OVERFIT_GAP_PP

    if gap_pp < MIN_OVERFIT_GAP_PP:
        return "not over-fitting"
    return "beginning to over-fit" if gap_pp < OVERFIT_CLEAR_PP else "over-fitting"


def fit_findings(ctx: dict) -> dict:
    """Per network: the train-vs-held-out gap at the last epoch and the held-out curve's late gain."""
    fits = sorted(
        [r for r in ctx["archs"] if r["fit"] and np.isfinite(r["fit"]["gap_pp"])], key=lambda r: -r["fit"]["gap_pp"]
    )
    if not fits:
        return {
            "fit_rows": [],
            "fit": (
                "No learning curve was recorded (`training.curve_images` is 0), so how much better each network "
                "fits its training faces than new ones is not known."
            ),
        }

    def gain(r):
        g = r["fit"].get("late_gain_pp", math.nan)
        return pp(g) if np.isfinite(g) else "n/a"

    rows = [
        [
            code(r["architecture"]),
            pct(r["fit"]["val"]),
            pct(r["fit"]["train"]),
            pp(r["fit"]["gap_pp"]),
            gain(r),
            pct(r["fit"]["batches"]) + ("" if r["augmented"] else " (not augmented)"),
            fit_reading(r["fit"]["gap_pp"]),
        ]
        for r in fits
    ]
    faces = int(ctx["cv_training"].get("curve_images") or 0)
    text = (
        f"At the last epoch ({fits[0]['fit']['epoch']}), on {num(faces) + ' ' if faces else ''}trained-on "
        f"and as many held-out faces per fold without augmentation, {fit_groups_text(fits)}."
        + batches_note(next(r for r in ctx["archs"] if r["architecture"] == ctx["baseline"]))
    )
    return {"fit": text, "fit_rows": rows}


def fit_groups_text(fits: list[dict]) -> str:
    """'12 of the 15 networks fit ... not over-fitting; `a` (+7.0 pp) is beginning to over-fit ...'."""
    from ...stability import MIN_OVERFIT_GAP_PP

    groups: dict = {}
    for r in fits:
        groups.setdefault(fit_reading(r["fit"]["gap_pp"]), []).append(r)

    def names(rs):
        return (
            and_join(f"{code(r['architecture'])} ({pp(r['fit']['gap_pp'])})" for r in rs)
            if len(rs) <= 4
            else f"{len(rs)} networks"
        )

    parts = []
    calm, begin, over = (groups.get(g, []) for g in ("not over-fitting", "beginning to over-fit", "over-fitting"))
    if calm:
        who = f"all {len(fits)}" if len(calm) == len(fits) else f"{len(calm)} of the {len(fits)}"
        parts.append(
            f"{who} networks fit their training faces less than {MIN_OVERFIT_GAP_PP:g} pp better than new "
            f"ones"
            + (f" ({names(calm)})" if len(calm) <= 4 else "")
            + ": no sign of over-fitting (whether the budget stopped them, the late gain of the held-out "
            "curve says)"
        )
    if begin:
        parts.append(
            f"{names(begin)} {'is' if len(begin) == 1 else 'are'} beginning to over-fit "
            f"({MIN_OVERFIT_GAP_PP:g}-{OVERFIT_CLEAR_PP:g} pp)"
        )
    if over:
        parts.append(
            f"{names(over)} {'over-fits' if len(over) == 1 else 'over-fit'} (a gap of {OVERFIT_CLEAR_PP:g} "
            f"pp or more), where regularization can pay off"
        )
    return "; ".join(parts)


def batches_note(base: dict) -> str:
    """Why the accuracy on the augmented training batches is not the fit, with the baseline's numbers."""
    fit = base["fit"]
    if not (fit and base["augmented"] and np.isfinite(fit["batches"]) and np.isfinite(fit["train"])):
        return ""
    harder = "the harder task trained on" if fit["batches"] < fit["train"] else "the task trained on"
    return (
        f" Accuracy on the training batches during the epoch (augmented{', dropout on' if base['dropout'] else ''}) "
        f"measures {harder}, not the fit: {code(base['architecture'])} scored "
        f"{pct(fit['batches'])} on its batches against {pct(fit['train'])} on un-augmented trained-on faces."
    )


def findings(ctx: dict) -> dict:
    return {**budget_findings(ctx), **fit_findings(ctx)}
