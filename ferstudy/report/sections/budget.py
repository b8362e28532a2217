"""Section 4, what this budget can and cannot show: the training budget in SGD steps, the smallest
difference it could see, and the budget-stability labels with their rule."""

import math

import numpy as np

from ..text import and_join, code, num, pct, plural
from ..verdicts import counts_text, label_counts, min_detectable_pp


BUDGET_RULE = ("a rechecked verdict holds when its difference at twice the epochs keeps its sign and more than "
               "half its size, and is budget-dependent otherwise (a null one when a difference beyond one fold's "
               "noise appears); a verdict not rechecked keeps a heuristic label: budget-dependent when the "
               "variant-minus-baseline curve changed sign over the last half of the epochs, when a regularizer "
               "(dropout, augmentation) lost while the less regularized network was not yet over-fitting (a gap "
               "under {gap:g} pp), or did not win while that network's gap kept growing; else it holds when "
               "significant and is undecided otherwise")


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
        text += " " + recheck_text(abl) + " " + counts_text(label_counts(abl)) + ". The rule: " \
            + BUDGET_RULE.format(gap=MIN_OVERFIT_GAP_PP) + "."
    return {"budget": text}


def recheck_text(abl: list[dict]) -> str:
    """Which verdicts the study retrained at twice the budget, and which at-risk ones it left."""
    done = [r for r in abl if r.get("stability_basis") == "measured"]
    left = [r for r in abl if str(r.get("recheck_status", "")).startswith("at risk")]
    text = (f"The study retrained {and_join(code(r['arch']) for r in done)} and the baseline at twice the epochs "
            f"on one fold, so {'its label is' if len(done) == 1 else 'their labels are'} measured"
            if done else "No verdict was retrained at a longer budget (`study.recheck`), so every label is a heuristic")
    if left:
        text += f"; at risk but not rechecked: {and_join(code(r['arch']) for r in left)}"
    return text + ". Labels:"


def findings(ctx):
    return budget_findings(ctx)
