"""Section 6, how well the final model recognises emotions: PrivateTest accuracy with its 95%
confidence interval (Wilson score interval, `metrics.wilson_interval`), macro precision, recall
and F1, each emotion's scores, the most frequent confusions, why a class ranks differently in
cross-validation (how many of its faces a fold model saw), why PrivateTest differs from the
cross-validation mean, and FER+ in one sentence (its details: the appendix)."""

import math

import numpy as np

from ... import CLASS_NAMES
from ..text import and_join, code, num, pct, plural


def top_confusions(cm: list | np.ndarray, n: int = 3) -> list[tuple]:
    """The n largest off-diagonal counts: [(true, predicted, count, share of the true class)]."""
    cm = np.asarray(cm, dtype=float)
    off = cm.copy()
    np.fill_diagonal(off, -1)
    order = np.argsort(-off, axis=None, kind="stable")[:n]
    out = []
    for flat in order:
        i, j = np.unravel_index(flat, cm.shape)
        if off[i, j] > 0:
            out.append((CLASS_NAMES[i], CLASS_NAMES[j], int(cm[i, j]), float(cm[i, j] / cm[i].sum())))
    return out


def accuracy_interval(m: dict) -> tuple[float, float]:
    """The 95% Wilson score interval of a test set's accuracy (`m`: its metrics.json entry)."""
    from ...metrics import wilson_interval

    return wilson_interval(int(round(m["accuracy"] * m["n"])), int(m["n"]))


def interval_text(m: dict) -> str:
    lo, hi = accuracy_interval(m)
    return f"{100 * lo:.1f}-{100 * hi:.1f}%"


def macro(m: dict, key: str) -> float:
    """Mean over the emotions present of a per-class score."""
    values = [v[key] for v in m["per_class"].values() if v.get("support", 1) > 0]
    return float(np.mean(values)) if values else math.nan


def score_findings(ctx: dict) -> dict:
    fin = ctx["final"]
    prv, pub = fin["private"], fin["public"]
    text = (
        f"On PrivateTest, predicted once, the final model scores {pct(prv['accuracy'])} (95% confidence interval "
        f"{interval_text(prv)}, Wilson score interval over {num(prv['n'])} faces); averaged over the "
        f"{len(CLASS_NAMES)} emotions, precision is {macro(prv, 'precision'):.2f}, recall "
        f"{macro(prv, 'recall'):.2f} and F1 {prv['macro_f1']:.3f}. PublicTest, which chose its epoch, gives "
        f"{pct(pub['accuracy'])}."
    )
    short = (
        f"Retrained on all of Training, it scores {pct(prv['accuracy'])} on PrivateTest (95% CI "
        f"{interval_text(prv)}; macro F1 {prv['macro_f1']:.3f})."
    )
    return {"test_scores": text + " " + cv_gap_short(ctx), "short_final": short}


def cv_gap_short(ctx: dict) -> str:
    """Why PrivateTest differs from the chosen network's cross-validation mean, in one sentence."""
    fin, chosen = ctx["final"], ctx["chosen"]
    fw, cw = fin["workload"], chosen["workload"]
    prv = fin["private"]
    gap = 100 * (prv["accuracy"] - chosen["accuracy_mean"])
    noise = 200 * math.sqrt(prv["accuracy"] * (1 - prv["accuracy"]) / prv["n"])
    where = f"{abs(gap):.1f} pp {'above' if gap >= 0 else 'below'} the cross-validation mean ({pct(chosen['accuracy_mean'])})"
    if abs(gap) <= noise:
        return f"That is {where}, within PrivateTest's sampling noise."
    if not fw or gap < 0:
        return f"That is {where} (appendix A5)."
    return (
        f"That is {where}: the final model trained on {fw['n_train'] / max(cw['n_train'], 1):.1f}x the faces for "
        f"{fw['steps'] / max(cw['steps'], 1):.1f}x the SGD steps of a fold model (appendix A5)."
    )


def class_rows(ctx: dict) -> list[list]:
    cvpc, pc = ctx["cv_chosen"]["per_class"], ctx["final"]["private"]["per_class"]
    train = ctx["data"]["counts"]["Training"]
    return [
        [
            c,
            num(train[c]),
            f"{cvpc[c]['f1']['mean']:.2f} ± {cvpc[c]['f1']['std']:.2f}",
            f"{pc[c]['precision']:.2f}",
            f"{pc[c]['recall']:.2f}",
            f"{pc[c]['f1']:.2f}",
            num(pc[c]["support"]),
        ]
        for c in CLASS_NAMES
    ]


def per_class_findings(ctx: dict) -> dict:
    pc = ctx["final"]["private"]["per_class"]
    present = [c for c in CLASS_NAMES if pc[c]["support"] > 0]
    best_c = max(present, key=lambda c: pc[c]["f1"])
    worst_c = min(present, key=lambda c: pc[c]["f1"])
    text = f"{best_c.capitalize()} is recognised best (F1 {pc[best_c]['f1']:.2f}) and {worst_c} worst ({pc[worst_c]['f1']:.2f})."
    text += " " + ranking_text(ctx, present, best_c, worst_c)
    pairs = top_confusions(ctx["final"]["private"]["confusion_matrix"])
    if pairs:
        text += (
            f" The {'most frequent confusions are' if len(pairs) > 1 else 'most frequent confusion is'} "
            + and_join(f"{a} taken for {b} ({pct(share, 0)} of {a} faces)" for a, b, n, share in pairs)
            + "."
        )
    few = [c for c in present if pc[c]["support"] < 30]
    if few:
        tiny = min(few, key=lambda c: pc[c]["support"])
        text += (
            f" Per-class scores rest on few faces ({plural(len(few), 'class', 'classes')} under 30): one "
            f"{tiny} face moves its recall by {100 / pc[tiny]['support']:.0f} pp."
        )
    return {"per_class": text, "class_rows": class_rows(ctx)}


def ranking_text(ctx: dict, present: list, best_c: str, worst_c: str) -> str:
    """Cross-validation's best and worst class against PrivateTest's; where the worst differs, how
    many of its faces a fold model and the final model trained on."""
    cvpc, pc = ctx["cv_chosen"]["per_class"], ctx["final"]["private"]["per_class"]
    cv_worst = min(present, key=lambda c: cvpc[c]["f1"]["mean"])
    cv_best = max(present, key=lambda c: cvpc[c]["f1"]["mean"])
    if (cv_best, cv_worst) == (best_c, worst_c):
        return "Cross-validation ranks the same classes best and worst."
    if cv_worst == worst_c:
        return f"In cross-validation {cv_best} is best (F1 {cvpc[cv_best]['f1']['mean']:.2f})."
    k, train = ctx["data"]["folds"], ctx["data"]["counts"]["Training"][cv_worst]
    fold_faces = train * (k - 1) / k * ctx["chosen"]["subsample"]
    final_faces = train * float(ctx["final"]["training"].get("subsample", 1.0))
    f1 = cvpc[cv_worst]["f1"]["mean"]
    return (
        f"In cross-validation {cv_worst} ranks worst (F1 {f1:.2f}): each fold model trained on about "
        f"{num(fold_faces)} {cv_worst} faces{' and almost never recognised one' if f1 < 0.1 else ''}, while the "
        f"final model trained on {num(final_faces)} and reaches F1 {pc[cv_worst]['f1']:.2f} on "
        f"{num(pc[cv_worst]['support'])} PrivateTest faces."
    )


def ferplus_short(ctx: dict) -> str:
    """FER+ in one sentence: how often the model and FER2013's own labels agree with the crowd."""
    fp = ctx.get("ferplus")
    if not fp:
        return ""
    prv = fp["private"]
    model, labels = prv["accuracy_ferplus"], prv["label_agreement"]
    side = (
        f", and the crowd sides with the model on {pct(prv['crowd_agrees'] / prv['errors'], 0)} of its errors "
        f"against FER2013"
        if prv["errors"]
        else ""
    )
    return (
        f"FER+ relabelled every face by ten annotators (appendix A6): the model agrees with the crowd on "
        f"{pct(model)} of the {num(prv['scored'])} PrivateTest faces the crowd labels, "
        f"{'more' if model > labels else 'less'} often than FER2013's own labels do ({pct(labels)}){side}."
    )


def findings(ctx: dict) -> dict:
    return {
        **score_findings(ctx),
        **per_class_findings(ctx),
        "ferplus_short": ferplus_short(ctx),
        "extra_short": extra_short(ctx),
    }


def extra_short(ctx: dict) -> str:
    extra, prv = ctx["final"]["extra"], ctx["final"]["private"]
    if not extra:
        return ""
    return (
        "On the extra test set"
        + ("s" if len(extra) > 1 else "")
        + " it scores "
        + and_join(f"{pct(m['accuracy'])} on {code(name)}" for name, m in sorted(extra.items()))
        + f" (appendix A7), against {pct(prv['accuracy'])} on PrivateTest."
    )
