"""Section 4, what this budget can and cannot show: the training budget in SGD steps, the smallest
difference it could see, and the budget-stability labels with their rule."""

import math

import numpy as np

from ..text import num, pct, plural
from ..verdicts import counts_text, label_counts, min_detectable_pp


BUDGET_RULE = ("a verdict is budget-dependent when the variant-minus-baseline curve changed sign over the last "
               "half of the epochs, when its late trend carried on for as many epochs again would flip or erase a "
               "significant difference or make a null one measurable, or when a regularizer (dropout, augmentation) "
               "lost while the less regularized network was not yet over-fitting (a gap under {gap:g} pp); it holds "
               "when it is significant and none of these apply, and is undecided otherwise")


def budget_findings(ctx):
    from ...stability import MIN_OVERFIT_GAP_PP

    base = next(r for r in ctx["archs"] if r["architecture"] == ctx["baseline"])
    w, fw, tr = base["workload"], ctx["final"]["workload"], ctx["cv_training"]
    share = tr.get("subsample", 1.0)
    text = (f"Each fold model trained {w['epochs']} epochs on about {num(w['n_train'])} faces"
            + (f" ({pct(share, 0)} of its {num(ctx['data']['fold_train'])})" if share < 1 else "")
            + f" at batch {w['batch_size']}: {num(w['steps'])} SGD steps ({num(w['steps_per_epoch'])} per epoch)")
    if fw:
        text += (f"; the final model {fw['epochs']} epochs on {num(fw['n_train'])} faces at batch {fw['batch_size']}, "
                 f"{num(fw['steps'])} steps ({fw['steps'] / max(w['steps'], 1):.1f}x)")
    found = min_detectable_pp(ctx)
    mdd = float(np.median(list(found[3].values()))) if found and found[3] else math.nan
    text += (f". Such a budget can show which operations matter early in training, after each face was seen "
             f"{plural(w['epochs'], 'time')}; it cannot show which would win at convergence"
             + (f", and differences under about {mdd:.1f} pp stay invisible" if np.isfinite(mdd) else "") + ".")
    abl = ctx["ablation"]
    if abl:
        curve = int(tr.get("curve_images") or 0)
        text += (" Each verdict is labelled from the paired learning curves ("
                 + (f"{num(curve)} held-out faces per fold, after every epoch" if curve else "none was recorded")
                 + "): " + counts_text(label_counts(abl)) + ". The rule: "
                 + BUDGET_RULE.format(gap=MIN_OVERFIT_GAP_PP) + ". The labels flag risk from the evidence the study "
                 "has and do not prove stability; `scripts/recheck_budget.py` retrains a pair at a longer budget.")
    return {"budget": text}


def findings(ctx):
    return budget_findings(ctx)
