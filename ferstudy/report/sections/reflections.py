"""Section 8, critical reflections and lessons learnt, generated from the same numbers as the rest:
what the fold spread can carry, the table of means, compute behind the verdicts, whether the
budget stopped the networks (measured on their learning curves), the regularizers, label noise,
the final model's gap and the literature; then the lessons. Each part is kept only when its
numbers support it, most telling first, within `REFLECTION_WORDS` and `LESSON_WORDS` (the
report's word limit)."""

import numpy as np

from ..text import and_join, code, pct, plural, prose_words
from ..verdicts import _label, _significant, compute_note, seed_noise_sampled

REFLECTION_WORDS = 130
LESSON_WORDS = 65
STILL_GAINING_PP = 1.0  # held-out curve gain over the last half of the epochs that says "still learning"


def _detectable(ctx):
    values = [r["detectable_pp"] for r in ctx["ablation"] if np.isfinite(r.get("detectable_pp", float("nan")))]
    return float(np.median(values)) if values else float("nan")


def noise_reflection(ctx: dict) -> str:
    abl = ctx["ablation"]
    if not abl:
        return ""
    k, df = int(abl[0]["k"]), int(abl[0]["df"])
    fragile = [r for r in abl if r.get("fragile")]
    if seed_noise_sampled(ctx):
        check = (
            f"the pooled check disputes {plural(len(fragile), 'verdict')}"
            if fragile
            else "the pooled check agrees with every verdict"
        )
        return (
            f"The fold spread includes initialisation noise (fold k from seed s + k), but each pair's spread "
            f"rests on {k} folds ({df} degrees of freedom): {check}."
        )
    d = _detectable(ctx)
    small = [r for r in abl if _significant(r) and np.isfinite(d) and abs(r["diff_pp"]) < d]
    text = (
        "Every fold model started from the same initial weights, so the fold spread misses seed-to-seed noise "
        "and understates run-to-run differences"
    )
    if small:
        text += (
            f": the verdicts smaller than the {d:.1f} pp found with 80% power "
            f"({and_join(code(r['arch']) for r in small)}) deserve the least trust"
        )
    elif np.isfinite(d):
        text += f"; even the {d:.1f} pp a difference needs for 80% power is an optimistic bound"
    return text + (f", and the pooled check disputes {plural(len(fragile), 'verdict')}." if fragile else ".")


def means_reflection(ctx: dict) -> str:
    abl, metric = ctx["ablation"], ctx["metric"]
    if not abl:
        return ""
    means = [r[f"{metric}_mean"] for r in ctx["archs"]]
    quiet = sum(not _significant(r) for r in abl)
    held = sum(_significant(r) and r["holm"] and _label(r) == "holds" for r in abl)
    spread = 100 * (max(means) - min(means))
    if quiet == len(abl):
        return (
            f"The means span {spread:.1f} pp and read like a ranking, yet none of the {len(abl)} differences is "
            f"measurable: no single operation can be said to matter at this budget."
        )
    both = "survives Holm and holds" if held <= 1 else "survive Holm and hold"
    return (
        f"The means span {spread:.1f} pp, yet {quiet} of the {len(abl)} differences are not measurable and "
        f"{held or 'none'} of the others both {both}: the verdicts, not the order of the means, say what mattered."
    )


def compute_reflection(ctx: dict) -> str:
    mixed = [r for r in ctx["ablation"] if r.get("compute_mixed") and _significant(r)]
    if not mixed:
        return ""
    names = and_join(f"{code(r['arch'])} ({compute_note(r)})" for r in sorted(mixed, key=lambda r: r["compute_ratio"]))
    return (
        f"Compute stands behind {'a significant verdict' if len(mixed) == 1 else 'several significant verdicts'}, "
        f"{names}: a one-factor design attributes to the operation what compute did, which only comparisons "
        f"at equal compute separate."
    )


def budget_reflection(ctx: dict) -> str:
    """Whether the budget stopped the networks: how many still gained on their held-out learning curve
    over the last half of the epochs (not their train-minus-held-out gap, which says nothing of
    under-fitting)."""
    fits = [r for r in ctx["archs"] if r["fit"] and np.isfinite(r["fit"].get("late_gain_pp", float("nan")))]
    if not fits:
        return ""
    gaining = [r for r in fits if r["fit"]["late_gain_pp"] > STILL_GAINING_PP]
    epochs = ctx["cv_training"].get("epochs")
    if not gaining:
        return (
            f"No network gained more than {STILL_GAINING_PP:g} pp of held-out accuracy over the last half of its "
            f"{epochs} epochs: within this schedule the networks had levelled off."
        )
    who = f"All {len(fits)}" if len(gaining) == len(fits) else f"{len(gaining)} of the {len(fits)}"
    return (
        f"{who} networks still gained over {STILL_GAINING_PP:g} pp of held-out accuracy in the last half of their "
        f"{epochs} epochs: the budget stopped them, favouring networks that learn fast."
    )


def label_noise_reflection(ctx: dict) -> str:
    fp = ctx.get("ferplus")
    if not fp:
        return ""
    return (
        f"FER2013's own labels agree with the FER+ crowd on only {pct(fp['private']['label_agreement'])} of the "
        f"PrivateTest faces it labels, so part of every error count here is label noise."
    )


def final_gap_reflection(ctx: dict) -> str:
    gap = final_gain_pp(ctx)
    if not np.isfinite(gap):
        return ""
    top = max(abs(r["diff_pp"]) for r in ctx["ablation"] if np.isfinite(r["diff_pp"]))
    return (
        f"More faces and epochs mattered more than any single operation: the final model is {gap:.1f} pp above "
        f"its cross-validation mean, the largest single change {top:.1f} pp."
    )


def literature_reflection(ctx: dict) -> str:
    prv = ctx["final"]["private"]
    if ctx["demo"] or prv["accuracy"] >= 0.70:
        return ""
    return (
        f"At {pct(prv['accuracy'])} the model stays below the 73% reported for a VGG-style network trained for "
        f"hundreds of GPU epochs (Khaireddin and Chen, 2021)."
    )


def lessons(ctx: dict) -> list[str]:
    """The lessons the numbers support, most telling first."""
    from .final import equal_compute_lesson, similar_compute

    abl = ctx["ablation"]
    out = []
    similar = similar_compute(ctx)
    chosen = ctx["chosen"]
    if similar and equal_compute_lesson(ctx, similar[0]):
        out.append(f"compare operations at equal compute, as {chosen['factor']} against {similar[0]['factor']} here")
    d = _detectable(ctx)
    if abl and np.isfinite(d):
        out.append(
            f"with {int(abl[0]['k'])} folds a difference needs about {d:.1f} pp to be found reliably: more folds "
            f"or seeds would settle the small effects"
        )
    gap = final_gain_pp(ctx)
    if np.isfinite(gap):
        out.append(
            "compare architectures at a budget closer to the final model's, since more faces and epochs "
            "moved accuracy more than any operation"
        )
    guessed = sum(_label(r) == "budget-dependent" and r.get("stability_basis") != "measured" for r in abl)
    if guessed:
        out.append(
            f"the {plural(guessed, 'heuristically budget-dependent verdict')} need{'s' if guessed == 1 else ''} "
            f"the measured 2x recheck (`study.recheck`)"
        )
    if any(r["factor"] in ("dropout", "augmentation") and _significant(r) for r in abl):
        out.append("judge regularizers at a budget at which the baseline over-fits")
    good = [r for r in abl if r["verdict"] == "helped" and _label(r) == "holds"]
    if len(good) >= 2:
        out.append(f"combining {and_join(code(r['arch']) for r in good)} would show whether their gains add up")
    if ctx.get("ferplus"):
        out.append("score against cleaner labels as well (FER+): FER2013's own noise blurs small differences")
    if not abl:
        out.append("a study of one network says nothing about which operation matters: compare variants")
    return out


def final_gain_pp(ctx: dict) -> float:
    """How far the final model rose above its cross-validation mean when that is more than any single
    operation moved accuracy (NaN otherwise): the budget mattered more than the architecture."""
    fin, chosen = ctx["final"], ctx["chosen"]
    effects = [abs(r["diff_pp"]) for r in ctx["ablation"] if np.isfinite(r["diff_pp"])]
    gap = 100 * (fin["private"]["accuracy"] - chosen["accuracy_mean"])
    return gap if effects and fin["workload"] and gap > max(effects) else float("nan")


def within(parts: list[str], words: int) -> list[str]:
    """The leading parts that fit in `words` prose words (at least one)."""
    kept: list = []
    total = 0
    for part in parts:
        n = prose_words(part)
        if kept and total + n > words:
            continue
        kept.append(part)
        total += n
    return kept


def findings(ctx: dict) -> dict:
    taught = within(lessons(ctx), LESSON_WORDS)
    equal_compute = bool(taught) and taught[0].startswith("compare operations at equal compute")
    # the regularizers' lesson is section 4's (effects.regularizer_lesson) and the lessons': not a third time
    refl = [
        noise_reflection(ctx),
        means_reflection(ctx),
        "" if equal_compute else compute_reflection(ctx),
        budget_reflection(ctx),
        label_noise_reflection(ctx),
        final_gap_reflection(ctx),
        literature_reflection(ctx),
    ]
    text = " ".join(within([r for r in refl if r], REFLECTION_WORDS))
    lesson = ("**Lessons learnt.** " + "; ".join(taught)[:1].upper() + "; ".join(taught)[1:] + ".") if taught else ""
    return {"reflections": text, "lessons": lesson}
