"""Section 9, critical reflections and lessons learnt, generated from the same numbers as the rest."""

import numpy as np

from ..text import and_join, code, pct, plural
from ..verdicts import _label, _significant, label_counts, min_detectable_pp


def means_reflection(ctx):
    abl, metric = ctx["ablation"], ctx["metric"]
    n = len(abl)
    if not n:
        return ""
    means = [r[f"{metric}_mean"] for r in ctx["archs"]]
    quiet = sum(not _significant(r) for r in abl)
    held = sum(_significant(r) and r["holm"] and _label(r) == "holds" for r in abl)
    spread = 100 * (max(means) - min(means))
    folds = plural(int(abl[0]["k"]), "fold")
    text = (f"A table of means invites over-reading: here the means span {spread:.1f} pp and look like a ranking, yet "
            f"{quiet} of the {n} differences from the baseline are not measurable with {folds}")
    if quiet == n:
        return text + ", so no single operation can be said to matter at this budget."
    one = held == 1 or not held
    held_text = "none of the others" if not held else f"only {held} of the other {n - quiet}"
    return text + (f", and {held_text} both {'survives' if one else 'survive'} the Holm correction and "
                   f"{'holds' if one else 'hold'} at twice the budget: the verdicts and their labels, not the order "
                   f"of the means, say which operations made a difference.")


REGULARIZER_REASON = "the regularizer lost"  # how stability.stability words its rule (c)


def decided_by_regularizer_rule(row):
    """Whether the regularizer rule gave the row its label (`stability_rule`; an ablation.csv from
    before that column: the wording of its reason)."""
    rule = row.get("stability_rule")
    if isinstance(rule, str) and rule:
        return rule == "regularizer"
    return str(row.get("stability_reason", "")).startswith(REGULARIZER_REASON)


def regularizer_reflection(ctx):
    """The verdicts that ablation.csv labelled budget-dependent by the regularizer rule."""
    from ...stability import MIN_OVERFIT_GAP_PP

    early = [r for r in ctx["ablation"] if _label(r) == "budget-dependent" and decided_by_regularizer_rule(r)]
    if not early:
        return ""
    kinds = list(dict.fromkeys(r["factor"] for r in early))
    factors = and_join(kinds)
    return (f"The regularizer lost in {and_join(code(r['arch']) for r in early)} ({_label(early[0])}) while the "
            f"less regularized network was not yet over-fitting (a train-minus-held-out gap under {MIN_OVERFIT_GAP_PP:g} pp): "
            f"{factors} can pay off only once there is over-fitting to prevent, so "
            f"{'this verdict describes' if len(early) == 1 else 'these verdicts describe'} the short budget, "
            f"not {factors} {'itself' if len(kinds) == 1 else 'themselves'}.")


def underfit_reflection(ctx):
    from ...stability import MIN_OVERFIT_GAP_PP

    fits = [r for r in ctx["archs"] if r["fit"] and np.isfinite(r["fit"]["gap_pp"])]
    under = [r for r in fits if r["fit"]["gap_pp"] < MIN_OVERFIT_GAP_PP]
    if not fits or 2 * len(under) < len(fits):
        return ""
    who = f"All {len(fits)}" if len(under) == len(fits) else f"{len(under)} of the {len(fits)}"
    return (f"{who} networks were still under-fitting at the last epoch, so the budget more "
            f"than the architecture limited what they learnt, and a short budget favours networks that learn fast.")


def final_gap_reflection(ctx):
    fin, chosen = ctx["final"], ctx["chosen"]
    gap = 100 * (fin["private"]["accuracy"] - chosen["accuracy_mean"])
    effects = [r for r in ctx["ablation"] if np.isfinite(r["diff_pp"])]
    if not effects or not fin["workload"]:
        return ""
    top = max(effects, key=lambda r: abs(r["diff_pp"]))
    if gap <= abs(top["diff_pp"]):
        return ""
    return (f"More faces and epochs mattered more than any single operation: the final model is {gap:.1f} pp above "
            f"its cross-validation mean, while the largest difference from the baseline was "
            f"{abs(top['diff_pp']):.1f} pp ({code(top['arch'])}).")


def literature_reflection(ctx):
    prv = ctx["final"]["private"]
    if ctx["demo"] or prv["accuracy"] >= 0.70:
        return ""
    return (f"At {pct(prv['accuracy'])} the model stays below the 73% reported for a VGG-style network trained for "
            f"hundreds of GPU epochs (Khaireddin and Chen, 2021); this study trained each fold for "
            f"{ctx['cv_training'].get('epochs')} epochs.")


def hindsight_reflection(ctx):
    abl = ctx["ablation"]
    counts = label_counts(abl)
    found = min_detectable_pp(ctx)
    ideas = []
    guessed = sum(_label(r) == "budget-dependent" and r.get("stability_basis") != "measured" for r in abl)
    if guessed:
        one = guessed == 1
        ideas.append(f"the {'' if one else str(guessed) + ' '}heuristically budget-dependent "
                     f"{'verdict deserves' if one else 'verdicts deserve'} a longer run of {'its pair' if one else 'their pairs'} "
                     f"(`study.recheck`)")
    if found and found[3] and 2 * counts.get("undecided", 0) >= len(abl):
        mdd = float(np.median(list(found[3].values())))
        ideas.append(f"with {found[0]} folds a difference needed about {mdd:.1f} pp to be seen, so more folds could "
                     f"settle some of the {counts['undecided']} undecided verdicts")
    good = [r for r in abl if r["verdict"] == "helped" and _label(r) == "holds"]
    if len(good) >= 2:
        ideas.append(f"a second round combining {and_join(code(r['arch']) for r in good)} could reveal interactions")
    return f"In hindsight, {'; '.join(ideas)}." if ideas else ""


def findings(ctx):
    refl = [means_reflection(ctx), regularizer_reflection(ctx), underfit_reflection(ctx), final_gap_reflection(ctx),
            literature_reflection(ctx), hindsight_reflection(ctx)]
    return {"reflections": " ".join(r for r in refl if r)}
