"""Appendix A8, limitations: what the fold spread holds (`init_seed`), the budget, the uncorrected
verdicts, and what the data can stand for."""

from ..text import pct
from ..verdicts import _significant, seed_noise_sampled


def limitations_text(ctx: dict) -> str:
    tr, abl = ctx["cv_training"], ctx["ablation"]
    text = (
        "Each network was trained once per fold, fold k from seed s + k (every network of a fold from the same "
        "one), so the fold spread mixes data and initialisation noise."
        if seed_noise_sampled(ctx)
        else "Each network was trained once per fold and every fold model from the same initial weights, so the fold "
        "spread holds data noise only and understates the run-to-run noise a new seed adds."
    )
    if tr.get("epochs", 0) < 30:
        share = tr.get("subsample", 1.0)
        text += (
            f" The budget was small ({tr['epochs']} epochs per fold"
            + (f" on {pct(share, 0)} of each fold's training faces" if share < 1 else "")
            + "); A2 says what it can and cannot show."
        )
    if abl:
        kept = sum(_significant(r) and r["holm"] for r in abl)
        text += (
            f" Verdicts use the uncorrected p; {kept} of the {len(abl)} {'survives' if kept == 1 else 'survive'} "
            f"the Holm correction, and every variant is compared with one baseline only."
        )
    text += (
        " The demo faces are synthetic: nothing here transfers to real faces."
        if ctx["demo"]
        else " FER2013 faces are small web images with noisy labels; results need not transfer to video or "
        "spontaneous expressions."
    )
    return text


def findings(ctx: dict) -> dict:
    return {"limitations": limitations_text(ctx)}
