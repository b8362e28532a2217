"""Section 3, results: each variant's verdict, the family of tests against chance and the test's
power, how well each network fits its training faces, and accuracy against cost; also the
In-short verdicts at the top of the report."""

import math

import numpy as np

from ..text import and_join, code, mflops, num, pct, plural, pp, pval
from ..verdicts import (_label, _n_test, _n_train, _short_clause, _significant, _strength, counts_text, label_counts,
                        min_detectable_pp, variant_sentence)


OVERFIT_CLEAR_PP = 10.0  # a train-minus-held-out gap from which a network clearly over-fits


def verdict_findings(ctx):
    """Each variant's verdict sentence; the In-short verdicts, how many significant results chance
    would give and the smallest difference the test could see (none without comparisons)."""
    abl, alpha = ctx["ablation"], ctx["alpha"]
    f = {"variants": {row["arch"]: variant_sentence(row) for row in abl}}
    if abl:
        f.update(short_ablation=short_ablation(ctx), multiple=multiple_text(abl, alpha), power=power_text(ctx))
    return f


def short_ablation(ctx):
    """The In-short verdicts: those surviving Holm first (holding ones first), then the rest."""
    abl = ctx["ablation"]
    sig = sorted([r for r in abl if _significant(r)], key=_strength)
    lead, rest = [r for r in sig if r["holm"]], [r for r in sig if not r["holm"]]
    null = [r for r in abl if not _significant(r)]
    tests = plural(len(abl), "test")
    text = (f"Surviving the Holm correction for {tests}, {and_join(_short_clause(r) for r in lead)} against the "
            f"baseline." if lead else f"No difference from the baseline survives the Holm correction for {tests}.")
    if rest:
        text += f" Before the correction (p < {ctx['alpha']:g}), {and_join(_short_clause(r) for r in rest)}."
    if null:
        text += f" {plural(len(null), 'variant')} made no measurable difference."
    epochs = ctx["cv_training"].get("epochs")
    return text + f" Of all {len(abl)} verdicts at {epochs} epochs per fold, {counts_text(label_counts(abl))}."


def multiple_text(abl, alpha):
    from scipy import stats

    n = len(abl)
    sig = [r for r in abl if _significant(r)]
    survivors = sorted([r for r in sig if r["holm"]], key=_strength)
    chance_p = float(stats.binom.sf(len(sig) - 1, n, alpha)) if sig else 1.0
    text = (f"If no operation mattered, about {n * alpha:.1f} of these {n} uncorrected tests would come out "
            f"significant by chance; {len(sig)} did")
    if not sig:
        return text + ", so no operation showed a measurable effect at this budget."
    if chance_p < alpha:
        text += f", more than chance explains (binomial {pval(chance_p)})."
    else:
        text += (f", which chance could produce (binomial {pval(chance_p)}), so treat "
                 f"{'it' if len(sig) == 1 else 'them'} as tentative.")
    if survivors:
        return text + (f" After the Holm correction for the {n} tests, "
                       + and_join(f"{code(r['arch'])} ({r['verdict']}; {_label(r)})" for r in survivors)
                       + f" {'remains' if len(survivors) == 1 else 'remain'} significant.")
    return text + f" After the Holm correction for the {n} tests, none remains significant."


def power_text(ctx):
    found = min_detectable_pp(ctx)
    if not found or not found[3]:
        return ""
    k, df, t_crit, mdd = found
    abl = [r for r in ctx["ablation"] if r["arch"] in mdd]
    n_train = sorted({_n_train(r, ctx) for r in abl})
    n_test = _n_test(abl[0], ctx)
    factors = [1 / k + n_test / n for n in n_train]
    if len(n_train) == 1:
        ratio = f"1/{k} + {num(n_test)}/{num(n_train[0])} = {factors[0]:.2f}"
    else:
        ratio = f"{min(factors):.2f} to {max(factors):.2f} (n_train varies with the subsample)"
    median_std = float(np.median([r["std_pp"] for r in abl]))
    return (f"With k = {k} folds each corrected t-test has {df} degrees of freedom (critical t = {t_crit:.2f}). "
            f"The correction multiplies the variance of the mean difference by 1/k + n_test/n_train = {ratio} "
            f"(n_train: the faces each fold model of the pair trained on; n_test: its held-out faces), where a "
            f"naive paired test would use 1/k. With the median spread of the paired differences, {median_std:.1f} pp, a "
            f"difference needed about {float(np.median(list(mdd.values()))):.1f} pp to reach p < {ctx['alpha']:g}; "
            f"smaller real effects are invisible here, so \"no measurable difference\" is not evidence of no effect."
            + pooled_text(ctx))


def pooled_text(ctx: dict) -> str:
    """The smallest difference found with 80% power and the verdicts the pooled-variance test disputes."""
    abl = ctx["ablation"]
    power = [r["detectable_pp"] for r in abl if np.isfinite(r.get("detectable_pp", math.nan))]
    if not power:
        return ""
    fragile = [r for r in abl if r.get("fragile")]
    text = (f" At the spread pooled over all pairs the study finds a true difference of "
            f"{float(np.median(power)):.1f} pp with 80% power")
    if fragile:
        text += (f"; the same test with that pooled variance disagrees on "
                 f"{and_join(code(r['arch']) + ' (pooled ' + pval(r['p_pooled']) + ')' for r in fragile)}, so "
                 f"{'that verdict is' if len(fragile) == 1 else 'those verdicts are'} fragile")
    return text + "."


def fit_reading(gap_pp):
    """'under-fitting' | 'beginning to over-fit' | 'over-fitting' from a train-minus-held-out gap (pp)."""
    from ...stability import MIN_OVERFIT_GAP_PP

    if gap_pp < MIN_OVERFIT_GAP_PP:
        return "under-fitting"
    return "beginning to over-fit" if gap_pp < OVERFIT_CLEAR_PP else "over-fitting"


def fit_findings(ctx):
    """Per network: the train-vs-held-out gap at the last epoch on the learning-curve faces."""
    fits = sorted([r for r in ctx["archs"] if r["fit"] and np.isfinite(r["fit"]["gap_pp"])],
                  key=lambda r: -r["fit"]["gap_pp"])
    if not fits:
        return {"fit_rows": [], "fit": (
            "No learning curve was recorded (`training.curve_images` is 0), so how much better each network "
            "fits its training faces than new ones is not known.")}
    rows = [[code(r["architecture"]), pct(r["fit"]["val"]), pct(r["fit"]["train"]), pp(r["fit"]["gap_pp"]),
             pct(r["fit"]["batches"]) + ("" if r["augmented"] else " (not augmented)"), fit_reading(r["fit"]["gap_pp"])]
            for r in fits]
    faces = int(ctx["cv_training"].get("curve_images") or 0)
    text = (f"At the last epoch ({fits[0]['fit']['epoch']}), on {num(faces) + ' ' if faces else ''}trained-on "
            f"and as many held-out faces per fold without augmentation, {fit_groups_text(fits)}."
            + batches_note(next(r for r in ctx["archs"] if r["architecture"] == ctx["baseline"])))
    return {"fit": text, "fit_rows": rows}


def fit_groups_text(fits):
    """'12 of the 14 networks fit ... under-fitting; `a` (+7.0 pp) is beginning to over-fit ...'."""
    from ...stability import MIN_OVERFIT_GAP_PP

    groups = {}
    for r in fits:
        groups.setdefault(fit_reading(r["fit"]["gap_pp"]), []).append(r)

    def names(rs):
        return (and_join(f"{code(r['architecture'])} ({pp(r['fit']['gap_pp'])})" for r in rs) if len(rs) <= 4 else
                f"{len(rs)} networks")

    parts = []
    under, begin, over = (groups.get(g, []) for g in ("under-fitting", "beginning to over-fit", "over-fitting"))
    if under:
        who = f"all {len(fits)}" if len(under) == len(fits) else f"{len(under)} of the {len(fits)}"
        parts.append(f"{who} networks fit their training faces less than {MIN_OVERFIT_GAP_PP:g} pp better than new "
                     f"ones" + (f" ({names(under)})" if len(under) <= 4 else "")
                     + ": they are under-fitting, so more epochs or capacity should pay before more regularization")
    if begin:
        parts.append(f"{names(begin)} {'is' if len(begin) == 1 else 'are'} beginning to over-fit "
                     f"({MIN_OVERFIT_GAP_PP:g}-{OVERFIT_CLEAR_PP:g} pp)")
    if over:
        parts.append(f"{names(over)} {'over-fits' if len(over) == 1 else 'over-fit'} (a gap of {OVERFIT_CLEAR_PP:g} "
                     f"pp or more), where regularization can pay off")
    return "; ".join(parts)


def batches_note(base):
    """Why the accuracy on the augmented training batches is not the fit, with the baseline's numbers."""
    fit = base["fit"]
    if not (fit and base["augmented"] and np.isfinite(fit["batches"]) and np.isfinite(fit["train"])):
        return ""
    harder = "the harder task trained on" if fit["batches"] < fit["train"] else "the task trained on"
    return (f" Accuracy on the training batches during the epoch (augmented{', dropout on' if base['dropout'] else ''}) "
            f"measures {harder}, not the fit: {code(base['architecture'])} scored "
            f"{pct(fit['batches'])} on its batches against {pct(fit['train'])} on un-augmented trained-on faces.")


def cost_findings(ctx):
    metric, rows = ctx["metric"], ctx["archs"]
    base = next(r for r in rows if r["architecture"] == ctx["baseline"])
    best = max(rows, key=lambda r: r[f"{metric}_mean"])
    if not all(r["mflops"] is not None and np.isfinite(r["mflops"]) for r in rows):
        return {}
    close = [r for r in rows if r[f"{metric}_mean"] >= best[f"{metric}_mean"] - best[f"{metric}_std"]]
    cheapest = min(close, key=lambda r: r["mflops"])
    text = (f"The best network by cross-validation {metric.replace('_', ' ')}, {code(best['architecture'])}, costs "
            f"{mflops(best['mflops'])} MFLOPs per face and {num(best['params'])} parameters "
            f"({best['mflops'] / base['mflops']:.1f}x the baseline's compute).")
    if cheapest["architecture"] != best["architecture"]:
        text += (f" {code(cheapest['architecture'])} comes within one standard deviation of it "
                 f"({pct(cheapest[f'{metric}_mean'])} against {pct(best[f'{metric}_mean'])}) with "
                 f"{mflops(cheapest['mflops'])} MFLOPs, {best['mflops'] / cheapest['mflops']:.1f}x less compute.")
    else:
        text += " No cheaper network comes within one standard deviation of it."
    return {"cost": text}


def findings(ctx):
    return {**verdict_findings(ctx), **fit_findings(ctx), **cost_findings(ctx)}
