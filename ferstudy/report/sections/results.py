"""Section 3, results: the verdict table (the numbers every later paragraph refers to) and what the
tests can and cannot see: how many verdicts chance would give, the smallest difference found with
80% power at the spread pooled over all pairs, the verdicts the pooled check disputes, and where
the stability labels come from; also the In-short verdicts at the top of the report."""

import math

import numpy as np

from ..text import and_join, code, p_cell, pct, plural, pp, pval
from ..verdicts import _label, _significant, _strength, compute_note


def verdict_rows(ctx: dict) -> list[list]:
    """The main report's verdict table: difference ± spread, p, Holm p, verdict, stability, compute."""
    return [
        [
            code(r["arch"]),
            r["factor"],
            f"{pp(r['diff_pp'])} ± {r['std_pp']:.1f}",
            p_cell(r["p"]),
            p_cell(r["p_holm"]),
            r["verdict"] + (" (fragile)" if r.get("fragile") else ""),
            r["stability"],
            compute_note(r) or "n/a",
        ]
        for r in ctx["ablation"]
    ]


def detectable(ctx: dict) -> float:
    """The median over pairs of the smallest difference found with 80% power (`detectable_pp`)."""
    values = [r["detectable_pp"] for r in ctx["ablation"] if np.isfinite(r.get("detectable_pp", math.nan))]
    return float(np.median(values)) if values else math.nan


def verdict_summary(ctx: dict) -> str:
    """How many verdicts, against chance and Holm; the power at the pooled spread, the significant
    verdicts smaller than it and what the pooled check says of them; where the labels come from."""
    from scipy import stats

    abl, alpha = ctx["ablation"], ctx["alpha"]
    n, sig = len(abl), [r for r in abl if _significant(r)]
    holm = [r for r in sig if r["holm"]]
    chance = float(stats.binom.sf(len(sig) - 1, n, alpha)) if sig else 1.0
    text = (
        (
            f"{len(sig)} of the {n} variants differ from the baseline at p < {alpha:g}, where chance alone would give "
            f"about {n * alpha:.1f} (binomial {pval(chance)}); "
        )
        if sig
        else f"None of the {n} variants differs from the baseline at p < {alpha:g} (chance alone would give about "
        f"{n * alpha:.1f}), and "
    )
    text += (
        f"{and_join(code(r['arch']) for r in sorted(holm, key=_strength))} "
        f"{'survives' if len(holm) == 1 else 'survive'} the Holm correction."
        if holm
        else "none survives the Holm correction."
    )
    d = detectable(ctx)
    if np.isfinite(d):
        small = [r for r in sig if abs(r["diff_pp"]) < d]
        text += f" At the spread pooled over all pairs a true difference of {d:.1f} pp is found with 80% power"
        if small:
            text += (
                f"; {and_join(code(r['arch']) for r in small)} passed with less, where "
                f"{'its own folds' if len(small) == 1 else 'their own folds'} happened to agree"
            )
        text += "." + fragile_text(abl)
    rechecked = [r for r in abl if r.get("stability_basis") == "measured"]
    text += (
        " Stability is measured for "
        + and_join(code(r["arch"]) for r in rechecked)
        + " (retrained with the baseline at twice the epochs on one fold), a heuristic from the learning curves "
        "for the others"
        if rechecked
        else " Stability labels are a heuristic from the learning curves (no pair was retrained at twice the epochs)"
    )
    return text + f"; the [appendix]({ctx['appendix']}) gives each verdict's evidence."


def fragile_text(abl: list[dict]) -> str:
    """The verdicts the test with the pooled variance disagrees on, both ways."""
    lost = [r for r in abl if r.get("fragile") and _significant(r)]
    gained = [r for r in abl if r.get("fragile") and not _significant(r)]
    parts = []
    if lost:
        parts.append(f"does not confirm {and_join(code(r['arch']) for r in lost)}")
    if gained:
        parts.append(f"would call {and_join(code(r['arch']) for r in gained)} significant")
    return (
        (
            f" With that pooled variance the same test {' and '.join(parts)}, so "
            f"{'this verdict is' if len(lost) + len(gained) == 1 else 'these verdicts are'} fragile."
        )
        if parts
        else ""
    )


def short_study(ctx: dict) -> str:
    n, k, tr = len(ctx["archs"]), ctx["data"]["folds"], ctx["cv_training"]
    data = "the demo data" if ctx["demo"] else "FER2013"
    share = tr.get("subsample", 1.0)
    if n == 1:
        return f"One CNN was trained by {k}-fold cross-validation inside {data}'s Training set."
    return (
        f"{n} CNNs, a baseline and {n - 1} variants that each change one operation, were compared by {k}-fold "
        f"cross-validation inside {data}'s Training set ({tr.get('epochs')} epochs per fold"
        + (f" on {pct(share, 0)} of its faces" if share < 1 else "")
        + ")."
    )


def short_findings(ctx: dict) -> str:
    """The In-short verdicts: those surviving Holm (their numbers), then how many more before it."""
    abl = ctx["ablation"]
    sig = sorted([r for r in abl if _significant(r)], key=_strength)
    lead, rest = [r for r in sig if r["holm"]], [r for r in sig if not r["holm"]]

    def clause(r):
        label = "" if _label(r) == "holds" else f", {_label(r)}"
        return f"{code(r['arch'])} {r['verdict']} ({pp(r['diff_pp'])}{label})"

    if not sig:
        d = detectable(ctx)
        return "No variant differed measurably from the baseline at this budget" + (
            f" (a difference of {d:.1f} pp would have been found with 80% power)." if np.isfinite(d) else "."
        )
    text = (
        f"Surviving the Holm correction for {plural(len(abl), 'test')}, {and_join(clause(r) for r in lead)}."
        if lead
        else f"No difference survives the Holm correction for {plural(len(abl), 'test')}."
    )
    if rest:
        text += (
            f" {plural(len(rest), 'more variant')} differed before the correction (section 3)."
            if lead
            else f" {plural(len(rest), 'variant')} differed before it (section 3)."
        )
    return text


def findings(ctx: dict) -> dict:
    f: dict = {"short_study": short_study(ctx)}
    if ctx["ablation"]:
        f.update(
            short_ablation=short_findings(ctx), verdict_rows=verdict_rows(ctx), verdict_summary=verdict_summary(ctx)
        )
    return f
