"""Appendix A1, every verdict with its statistics and stability evidence: the full ablation table
(own and pooled test, Holm, the difference found with 80% power, compute, the label and what it
rests on, the measured 1x and 2x differences), each label's reason as ablation.csv states it, how
many significant results chance would give, and what the corrected test could detect."""

import math

import numpy as np

from ..text import and_join, code, num, p_cell, plural, pp, pval
from ..verdicts import (
    _label,
    _n_test,
    _n_train,
    _significant,
    _strength,
    compute_note,
    min_detectable_pp,
)


def _pp_cell(x):
    return f"{x:+.1f}" if np.isfinite(x) else ""


def evidence_rows(ctx: dict) -> list[list]:
    """One row per verdict: every statistic it rests on."""
    return [
        [
            code(r["arch"]),
            f"{pp(r['diff_pp'])} ± {r['std_pp']:.1f}",
            f"{r['t']:.2f}",
            p_cell(r["p"]),
            p_cell(r["p_pooled"]),
            "yes" if r.get("fragile") else "",
            p_cell(r["p_holm"]),
            f"{r['detectable_pp']:.1f}" if np.isfinite(r["detectable_pp"]) else "n/a",
            compute_note(r) or "n/a",
            r["verdict"],
            _label(r),
            r.get("stability_basis") or "heuristic",
            (
                f"{_pp_cell(r['recheck_1x_pp'])} → {_pp_cell(r['recheck_2x_pp'])}"
                if np.isfinite(r["recheck_1x_pp"])
                else ""
            ),
        ]
        for r in ctx["ablation"]
    ]


def reason_rows(ctx: dict) -> list[list]:
    """Each verdict's label, its reason (ablation.csv's words) and the recheck's status."""
    return [
        [code(r["arch"]), _label(r), r.get("stability_reason") or "", r.get("recheck_status") or "n/a"]
        for r in ctx["ablation"]
    ]


def multiple_text(abl: list[dict], alpha: float) -> str:
    from scipy import stats

    n = len(abl)
    sig = [r for r in abl if _significant(r)]
    survivors = sorted([r for r in sig if r["holm"]], key=_strength)
    chance_p = float(stats.binom.sf(len(sig) - 1, n, alpha)) if sig else 1.0
    text = (
        f"If no operation mattered, about {n * alpha:.1f} of these {n} uncorrected tests would come out "
        f"significant by chance; {len(sig)} did"
    )
    if not sig:
        return text + "."
    text += (
        f", more than chance explains (binomial {pval(chance_p)})."
        if chance_p < alpha
        else f", which chance could produce (binomial {pval(chance_p)}), so treat {'it' if len(sig) == 1 else 'them'} "
        f"as tentative."
    )
    return text + (
        f" After the Holm correction for the {n} tests, "
        + (
            and_join(f"{code(r['arch'])} ({r['verdict']}; {_label(r)})" for r in survivors)
            + f" {'remains' if len(survivors) == 1 else 'remain'} significant."
            if survivors
            else "none remains significant."
        )
    )


def power_text(ctx: dict) -> str:
    """The corrected test's variance factor, the difference each pair's own spread let through, and
    the difference found with 80% power at the pooled spread: a verdict smaller than that passed
    because its pair's folds happened to agree, so it is the pooled check that says how far to trust it."""
    found = min_detectable_pp(ctx)
    if not found or not found[3]:
        return ""
    k, df, t_crit, mdd = found
    abl = [r for r in ctx["ablation"] if r["arch"] in mdd]
    n_train = sorted({_n_train(r, ctx) for r in abl})
    n_test = _n_test(abl[0], ctx)
    factors = [1 / k + n_test / n for n in n_train]
    ratio = (
        f"1/{k} + {num(n_test)}/{num(n_train[0])} = {factors[0]:.2f}"
        if len(n_train) == 1
        else f"{min(factors):.2f} to {max(factors):.2f} (n_train varies with the subsample)"
    )
    own = sorted(mdd.values())
    text = (
        f"With k = {k} folds each corrected t-test has {df} degrees of freedom (critical t = {t_crit:.2f}), and the "
        f"correction multiplies the variance of the mean difference by 1/k + n_test/n_train = {ratio} (n_train: "
        f"the faces each fold model of the pair trained on; n_test: its held-out faces), where a naive paired test "
        f"would use 1/k. With its own spread, a pair needed {own[0]:.1f} to {own[-1]:.1f} pp (median "
        f"{float(np.median(own)):.1f}) to reach p < {ctx['alpha']:g}: a pair whose {k} folds happen to agree passes "
        f"with little."
    )
    power = [r["detectable_pp"] for r in ctx["ablation"] if np.isfinite(r.get("detectable_pp", math.nan))]
    if power:
        d = float(np.median(power))
        small = [r for r in ctx["ablation"] if _significant(r) and abs(r["diff_pp"]) < d]
        text += (
            f" At the spread pooled over all pairs a true difference of {d:.1f} pp is found with 80% power, so a "
            f'"no measurable difference" is no evidence of no effect below that'
            + (
                f"; {and_join(code(r['arch']) for r in small)} passed with less, and the pooled test "
                f"(beside each pair's own) says whether {'it' if len(small) == 1 else 'they'} would pass with a "
                f"typical spread"
                if small
                else ""
            )
            + "."
        )
    return text


def filled_note(ctx: dict) -> str:
    filled = ctx.get("ablation_filled") or []
    if not filled:
        return ""
    return (
        f"This ablation.csv was written by an older ferstudy without {and_join(f'`{c}`' for c in filled)}: the "
        f"report computed {'it' if len(filled) == 1 else 'them'} from the cross-validation metrics by the study's "
        f"rule (`study.comparisons_with_pooled`); its stability labels are the older heuristic's."
    )


def pretrained_rows(ctx: dict) -> list[list]:
    """Each pretrained backbone against its from-scratch twin (`load.pretrained_pairs`): the statistics
    and the stability label with its reason (one planned comparison each, outside Holm)."""
    return [
        [
            code(pair["arch"]),
            code(pair["twin"]),
            f"{pp(r['diff_pp'])} ± {r['std_pp']:.1f}",
            p_cell(r["p"]),
            r["verdict"],
            _label(r),
            r.get("stability_reason") or "",
        ]
        for pair in ctx.get("pretrained_pairs") or []
        if (r := pair["row"]) is not None
    ]


def findings(ctx: dict) -> dict:
    abl = ctx["ablation"]
    if not abl:
        return {}
    return {
        "evidence_rows": evidence_rows(ctx),
        "reason_rows": reason_rows(ctx),
        "pretrained_rows": pretrained_rows(ctx),
        "multiple": multiple_text(abl, ctx["alpha"]),
        "power": power_text(ctx),
        "filled_note": filled_note(ctx),
        "variants_counted": plural(len(abl), "variant"),
    }
