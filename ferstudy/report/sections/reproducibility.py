"""Appendix A9, reproducibility: the versions, seeds, data hash and hardware (the template), and the
precision each job trained in and why."""

import re

from ..text import and_join, code, plural

PRECISION_NAMES = {"bf16": "bf16 autocast", "fp32": "fp32"}


def precision_text(ctx: dict) -> str:
    """The precision of the final model and of the fold jobs (grouped by precision), with the reasons
    their config.yaml recorded."""
    fin, folds = ctx["precision"]["final"], ctx["precision"]["folds"]

    def name(p):
        return PRECISION_NAMES.get(p, "an unrecorded precision")

    def why(items):
        reasons = list(dict.fromkeys(fo["reason"] for fo in items if fo["reason"]))
        gains = [float(m.group(1)) for m in (re.search(r"measured ([0-9.]+)x fp32", r) for r in reasons) if m]
        if len(reasons) > 1 and len(gains) == len(reasons):
            return f" (native bf16 CPU; bf16 measured {min(gains):.2f}x-{max(gains):.2f}x fp32, network by network)"
        return (
            f" ({reasons[0]})" if len(reasons) == 1 else f" (reasons per network, e.g. {reasons[0]})" if reasons else ""
        )

    text = f"The final model trained in {name(fin['precision'])}" + (f" ({fin['reason']})" if fin["reason"] else "")
    groups: dict = {}
    for fo in folds:
        groups.setdefault(fo["precision"], []).append(fo)
    if len(groups) == 1:
        ((p, items),) = groups.items()
        same = p == fin["precision"] and why(items) == (f" ({fin['reason']})" if fin["reason"] else "")
        text += (
            f"; so did all {len(items)} fold jobs" if same else f"; all {len(items)} fold jobs in {name(p)}{why(items)}"
        )
    elif groups:

        def who(items):
            archs = list(dict.fromkeys(fo["arch"] for fo in items))
            return and_join(code(a) for a in archs) if len(archs) <= 4 else plural(len(archs), "network")

        text += f"; of the {plural(len(folds), 'fold job')}, " + and_join(
            f"{len(items)} in {name(p)} ({who(items)}){why(items)}" for p, items in groups.items()
        )
    text += "."
    if "bf16" in (fin["precision"], *groups):
        text += (
            " In bf16 autocast the convolutions and matrix products run in bfloat16; weights, batch-norm "
            "statistics, the loss and the optimizer stay fp32."
        )
    return text


def findings(ctx: dict) -> dict:
    return {"precision": precision_text(ctx)}
