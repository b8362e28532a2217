"""Section 2, architectures tried: what each network changes, what ran (filters, parameters) and
its compute against the baseline's; larger networks are promised only when the study ran some."""

import math

from ..text import code, mflops, num


def architecture_findings(ctx: dict) -> dict:
    base = next(r for r in ctx["archs"] if r["architecture"] == ctx["baseline"])
    ratio = {r["arch"]: r.get("compute_ratio") for r in ctx["ablation"]}

    def compute(row):
        if row["architecture"] == ctx["baseline"]:
            return "1.0x"
        value = ratio.get(row["architecture"])
        if value is None or math.isnan(value):  # not in ablation.csv: from the cost table
            value = row["mflops"] / base["mflops"] if row["mflops"] and base["mflops"] else None
        return f"{value:.1f}x" if value is not None else "n/a"

    rows = [
        [
            code(a["architecture"]),
            a["factor"],
            a["description"],
            a["conv_filters"],
            num(a["params"]),
            mflops(a["mflops"]),
            compute(a),
        ]
        for a in ctx["archs"]
    ]
    capacity = [a for a in ctx["archs"] if a["factor"] in ("capacity", "backbone")]
    text = (
        f"Each variant changes one operation of {code(ctx['baseline'])}, so that a difference can be attributed "
        f"to it"
        + ("; larger networks and standard backbones test whether capacity is the bottleneck" if capacity else "")
        + ". Compute: forward MFLOPs per face, and their multiple of the baseline's."
    )
    return {"arch_rows": rows, "arch_intro": text}


def findings(ctx: dict) -> dict:
    return architecture_findings(ctx)
