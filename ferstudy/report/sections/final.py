"""Section 5, the final architecture and why: the choice against the runner-up (the paired test),
against the baseline, and what it costs against the alternatives: the networks of similar compute
(within `study.COMPUTE_SIMILAR` of its MFLOPs), where there are any, and the cheaper ones."""

import numpy as np

from ..text import code, mflops, num, pct, plain_description, plural, pp, pval, seconds
from ..verdicts import outcome


def selection_findings(ctx: dict) -> dict:
    sel, runner, test = ctx["selection"], ctx["selection"].get("runner_up"), ctx.get("runner_up_test")
    chosen, by_cv, alpha = ctx["chosen"], ctx["selected_by_cv"], ctx["alpha"]
    mname = ctx["metric"].replace("_", " ")
    desc = plain_description(chosen.get("description")) if sel["architecture"] != ctx["baseline"] else ""
    desc = f" ({desc})" if desc else ""
    text = (
        f"Cross-validation chose {code(sel['architecture'])}{desc}: "
        if by_cv
        else f"The config named {code(sel['architecture'])}{desc} as the final architecture: "
    ) + f"{pct(sel['mean'])} ± {100 * sel['std']:.1f} mean {mname} over {plural(int(chosen['folds']), 'fold')}"
    paired = ""
    if runner:
        margin = 100 * (sel["mean"] - runner["mean"])
        who = "the runner-up" if by_cv else "the best other architecture"
        text += (
            f", {abs(margin):.1f} pp {'ahead of' if margin >= 0 else 'behind'} {who} {code(runner['architecture'])}"
            if margin
            else f", tied with {code(runner['architecture'])}"
        )
        if test and np.isfinite(test["p"]):
            paired = f"; paired t-test {pval(test['p'])}"
            settled = "a measurable lead" if margin > 0 else "a measurable difference"
            text += f" (corrected paired t-test {pval(test['p'])}: " + (
                f"{settled})" if test["p"] < alpha else "these folds do not separate the two)"
            )
    text += "."
    row = next((r for r in ctx["ablation"] if r["arch"] == sel["architecture"]), None)
    if sel["architecture"] == ctx["baseline"] and by_cv and ctx["ablation"]:
        text += " No variant had a higher mean than the baseline, so the baseline itself was retrained."
    elif row is not None:
        text += (
            f" Against the baseline it {outcome(row)} ({pp(row['diff_pp'])}, {pval(row['p'])}, Holm "
            f"{pval(row['p_holm'])})."
        )
    order = (
        ""
        if not runner
        else "tied with"
        if runner["mean"] == sel["mean"]
        else "ahead of"
        if sel["mean"] > runner["mean"]
        else "behind"
    )
    short = (
        (
            f"Cross-validation chose {code(sel['architecture'])}"
            if by_cv
            else f"The config named {code(sel['architecture'])} as the final architecture"
        )
        + f" ({pct(sel['mean'])} mean {mname})"
        + (f", {order} {code(runner['architecture'])} ({pct(runner['mean'])}{paired})" if runner else "")
        + "."
    )
    return {"selection": text, "short_selection": short}


def similar_compute(ctx: dict) -> list[dict]:
    """The other networks whose compute is within `study.COMPUTE_SIMILAR` of the chosen one's, best first."""
    from ...study import COMPUTE_SIMILAR

    chosen = ctx["chosen"]
    if not chosen["mflops"]:
        return []
    lo, hi = COMPUTE_SIMILAR
    metric = f"{ctx['metric']}_mean"
    return sorted(
        [
            r
            for r in ctx["archs"]
            if r["architecture"] != chosen["architecture"]
            and r["mflops"]
            and lo <= r["mflops"] / chosen["mflops"] <= hi
        ],
        key=lambda r: -r[metric],
    )


def compute_findings(ctx: dict) -> dict:
    """What the final architecture costs against the baseline, the networks of similar compute and
    the cheaper ones."""
    chosen, metric = ctx["chosen"], f"{ctx['metric']}_mean"
    base = next(r for r in ctx["archs"] if r["architecture"] == ctx["baseline"])
    if not (chosen["mflops"] and base["mflops"]):
        return {"final_compute": ""}
    text = (
        f"It costs {mflops(chosen['mflops'])} MFLOPs per face and {num(chosen['params'])} parameters"
        + (f", {chosen['mflops'] / base['mflops']:.1f}x the baseline's compute" if chosen is not base else "")
        + (
            f", and trained in {seconds(chosen['train_seconds_per_fold'])} per fold against the baseline's "
            f"{seconds(base['train_seconds_per_fold'])}"
            if chosen is not base and chosen["train_seconds_per_fold"]
            else ""
        )
        + "."
    )
    row = next((r for r in ctx["ablation"] if r["arch"] == chosen["architecture"]), None)
    similar = similar_compute(ctx)
    if row is not None and not row.get("compute_mixed"):
        text += " Its compute is about the baseline's, so its difference from the baseline is not one of compute."
    elif similar:
        text += " " + similar_sentence(ctx, similar[0])
    cheaper = [r for r in ctx["archs"] if r["mflops"] and r["mflops"] < chosen["mflops"]]
    close = [r for r in cheaper if r[metric] >= chosen[metric] - chosen[f"{ctx['metric']}_std"]]
    if close:
        best = min(close, key=lambda r: r["mflops"])
        text += (
            f" {code(best['architecture'])} comes within one standard deviation of it at "
            f"{best['mflops'] / chosen['mflops']:.1f}x its compute ({pct(best[metric])})."
        )
    elif cheaper:
        text += f" None of the {len(cheaper)} cheaper networks comes within one standard deviation of it."
    return {"final_compute": text}


def similar_sentence(ctx: dict, other: dict) -> str:
    """The best network of similar compute against the chosen one, paired by fold."""
    chosen, metric = ctx["chosen"], f"{ctx['metric']}_mean"
    margin = 100 * (chosen[metric] - other[metric])
    test = (ctx.get("chosen_vs") or {}).get(other["architecture"])
    tested = f" (paired t-test {pval(test['p'])})" if test and np.isfinite(test["p"]) else ""
    text = (
        f"At about equal compute, {code(other['architecture'])} ({mflops(other['mflops'])} MFLOPs, "
        f"{other['mflops'] / chosen['mflops']:.1f}x) reached {pct(other[metric])}"
    )
    if equal_compute_lesson(ctx, other):
        return text + (
            f": spent on {chosen['factor']} rather than {other['factor']}, the same compute bought "
            f"{margin:.1f} pp{tested}."
        )
    unresolved = ", which these folds do not separate" if test and test["p"] >= ctx["alpha"] else ""
    return text + f", {abs(margin):.1f} pp {'less' if margin > 0 else 'more'}{unresolved}{tested}."


def equal_compute_lesson(ctx: dict, other: dict) -> bool:
    """Whether the chosen network beat `other`, of similar compute and another factor, measurably:
    then the study says where compute pays (e.g. depth rather than width)."""
    chosen = ctx["chosen"]
    test = (ctx.get("chosen_vs") or {}).get(other["architecture"])
    return (
        other["factor"] != chosen["factor"]
        and ctx["baseline"] not in (chosen["architecture"], other["architecture"])
        and test is not None
        and bool(test)
        and np.isfinite(test["p"])
        and test["p"] < ctx["alpha"]
        and test["diff_pp"] > 0
    )


def findings(ctx: dict) -> dict:
    return {**selection_findings(ctx), **compute_findings(ctx)}
