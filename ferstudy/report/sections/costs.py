"""Appendix A4, cost and time: each network's parameters, compute and training time against its
accuracy, the cheapest network within one standard deviation of the best, the wall time per stage
(Snakemake's benchmark files) and the whole-study cost prediction against the real time."""

import numpy as np

from ..text import code, mflops, num, pct, seconds


def cost_rows(ctx: dict) -> list[list]:
    metric = f"{ctx['metric']}_mean"
    base = next(r for r in ctx["archs"] if r["architecture"] == ctx["baseline"])

    def ratio(r):
        return f"{r['mflops'] / base['mflops']:.1f}x" if r["mflops"] and base["mflops"] else "n/a"

    return [
        [
            code(a["architecture"]),
            num(a["params"]),
            mflops(a["mflops"]),
            ratio(a),
            seconds(a["train_seconds_per_fold"]),
            pct(a[metric]),
        ]
        for a in sorted(ctx["archs"], key=lambda a: a["mflops"] or 0)
    ]


def cost_findings(ctx: dict) -> dict:
    metric, rows = ctx["metric"], ctx["archs"]
    base = next(r for r in rows if r["architecture"] == ctx["baseline"])
    best = max(rows, key=lambda r: r[f"{metric}_mean"])
    f: dict = {"cost_rows": cost_rows(ctx)}
    if not all(r["mflops"] is not None and np.isfinite(r["mflops"]) for r in rows):
        return f
    close = [r for r in rows if r[f"{metric}_mean"] >= best[f"{metric}_mean"] - best[f"{metric}_std"]]
    cheapest = min(close, key=lambda r: r["mflops"])
    text = (
        f"The best network by cross-validation {metric.replace('_', ' ')}, {code(best['architecture'])}, costs "
        f"{mflops(best['mflops'])} MFLOPs per face and {num(best['params'])} parameters "
        f"({best['mflops'] / base['mflops']:.1f}x the baseline's compute)."
    )
    if cheapest["architecture"] != best["architecture"]:
        text += (
            f" {code(cheapest['architecture'])} comes within one standard deviation of it "
            f"({pct(cheapest[f'{metric}_mean'])} against {pct(best[f'{metric}_mean'])}) with "
            f"{mflops(cheapest['mflops'])} MFLOPs, {best['mflops'] / cheapest['mflops']:.1f}x less compute."
        )
    else:
        text += " No cheaper network comes within one standard deviation of it."
    f["cost"] = text
    return f


def cost_prediction_sentence(cp: dict | None) -> str:
    """How far the prediction made when the study started was from its real wall time."""
    if not cp or cp["total_error"] is None:
        why = f" ({cp['rows'][0]['note']})" if cp else ""
        return (
            f"No whole-study cost prediction can be set against this study's real wall time{why}; a local "
            "run that builds the whole study with `study.predict_cost` on makes one."
        )
    err = cp["total_error"]
    how = (
        "made by measuring every network on this machine when the run started"
        if cp["measured_in_study"]
        else "repeated from an earlier measurement of the same config on this machine"
    )
    return (
        f"The prediction of the whole study's wall time, {how}, was {pct(abs(err))} "
        f"{'above' if err > 0 else 'below'} the real time, {'within' if abs(err) <= 0.25 else 'outside'} "
        f"the 25% this tool aims at."
    )


def findings(ctx: dict) -> dict:
    return {**cost_findings(ctx), "cost_prediction": cost_prediction_sentence(ctx.get("cost_prediction"))}
