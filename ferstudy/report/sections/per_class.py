"""Section 7, per-class analysis: the best and worst emotion, the most frequent confusions, and FER+
as a second opinion (`results/final/ferplus.json`, when `data.ferplus` is set)."""

import numpy as np

from ... import CLASS_NAMES
from ..text import and_join, num, pct, plural, pp


def top_confusions(cm, n=3):
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


def per_class_findings(ctx):
    prv = ctx["final"]["private"]
    train = ctx["data"]["counts"]["Training"]
    big = max(CLASS_NAMES, key=lambda c: train[c])
    small = min(CLASS_NAMES, key=lambda c: train[c])
    pc = prv["per_class"]
    present = [c for c in CLASS_NAMES if pc[c]["support"] > 0]
    best_c = max(present, key=lambda c: pc[c]["f1"])
    worst_c = min(present, key=lambda c: pc[c]["f1"])
    text = (f"On PrivateTest {best_c} is recognised best (F1 {pc[best_c]['f1']:.2f}, "
            f"recall {pct(pc[best_c]['recall'], 0)}) "
            f"and {worst_c} worst (F1 {pc[worst_c]['f1']:.2f}, recall {pct(pc[worst_c]['recall'], 0)}).")
    if worst_c == small:
        text += f" {worst_c.capitalize()} is also the rarest Training class, consistent with too few examples."
    elif best_c == big:
        text += f" {best_c.capitalize()} is also the most frequent Training class."
    cvpc = ctx["cv_chosen"]["per_class"]
    cv_worst = min(present, key=lambda c: cvpc[c]["f1"]["mean"])
    cv_best = max(present, key=lambda c: cvpc[c]["f1"]["mean"])
    if (cv_best, cv_worst) == (best_c, worst_c):
        text += " Cross-validation ranks the same classes best and worst."
    else:
        text += (f" In cross-validation {cv_best} is best and {cv_worst} worst (by mean F1), so the ranking "
                 f"is not stable across these evaluations.")
    pairs = top_confusions(prv["confusion_matrix"])
    if pairs:
        text += (f" The {'most frequent confusions are' if len(pairs) > 1 else 'most frequent confusion is'} "
                 + and_join(f"{a} taken for {b} ({n} of the {int(pc[a]['support'])} {a} faces, {pct(share, 0)})"
                            for a, b, n, share in pairs) + ".")
    few = [c for c in present if pc[c]["support"] < 30]
    if few:
        tiny = min(few, key=lambda c: pc[c]["support"])
        text += (f" Per-class scores rest on few faces ({plural(len(few), 'class', 'classes')} under 30): one "
                 f"{tiny} face moves its recall by {100 / pc[tiny]['support']:.0f} pp.")
    return {"per_class": text}


FERPLUS_REASONS = {"dropped": "dropped by FER+", "tie": "tied for the most votes", "not_a_face": "voted not a face",
                   "unknown": "voted unknown", "contempt": "voted contempt"}


def ferplus_findings(ctx):
    """FER+ as a second opinion (results/final/ferplus.json): how many faces the crowd labels and why
    the others are left out, the accuracy against the crowd's majority, and per emotion how many of
    the model's errors against FER2013 the crowd agrees with."""
    fp = ctx.get("ferplus")
    if not fp:
        return {}
    splits = [("PublicTest", fp["public"]), ("PrivateTest", fp["private"])]
    summary = [[name, num(s["faces"]), num(s["scored"]), *(num(s["excluded"][k]) for k in FERPLUS_REASONS),
                pct(s["accuracy_fer2013"]), pct(s["accuracy_ferplus"]), pct(s["label_agreement"])]
               for name, s in splits]

    def share(agrees, errors):
        return f"{agrees} of {errors}" + (f" ({pct(agrees / errors, 0)})" if errors else "")

    per_class = [[c, *(share(s["per_class"][c]["crowd_agrees"], s["per_class"][c]["errors"]) for _, s in splits)]
                 for c in CLASS_NAMES]
    per_class.append(["**all**", *(share(s["crowd_agrees"], s["errors"]) for _, s in splits)])
    prv, pub = fp["private"], fp["public"]
    out_counts = {k: prv["excluded"][k] + pub["excluded"][k] for k in FERPLUS_REASONS}
    left = prv["faces"] + pub["faces"] - prv["scored"] - pub["scored"]
    text = (f"FER+ gives a crowd label (the most-voted of its categories) to {num(pub['scored'])} of the "
            f"{num(pub['faces'])} PublicTest and {num(prv['scored'])} of the {num(prv['faces'])} PrivateTest faces; "
            f"the other {num(left)} are left out and counted: "
            + and_join(f"{num(n)} {FERPLUS_REASONS[k]}" for k, n in out_counts.items() if n) + ". "
            f"The FER2013 label is the crowd's on {pct(prv['label_agreement'])} of the labelled PrivateTest faces. "
            f"Against the crowd the final model scores {pct(prv['accuracy_ferplus'])} on PrivateTest and "
            f"{pct(pub['accuracy_ferplus'])} on PublicTest ({pct(prv['accuracy_fer2013'])} and "
            f"{pct(pub['accuracy_fer2013'])} against FER2013 on the same faces).")
    rate = {c: v["crowd_agrees"] / v["errors"] for c, v in prv["per_class"].items() if v["errors"] >= 10}
    if prv["errors"]:
        text += (f" Of its {num(prv['errors'])} PrivateTest errors against FER2013 the crowd sides with the model on "
                 f"{num(prv['crowd_agrees'])} ({pct(prv['crowd_agrees'] / prv['errors'], 0)}) and with the FER2013 "
                 f"label on {num(prv['crowd_keeps_label'])}")
        if len(rate) >= 2:
            hi, lo = max(rate, key=rate.get), min(rate, key=rate.get)
            text += f"; most often for {hi} faces ({pct(rate[hi], 0)}), least for {lo} ({pct(rate[lo], 0)})"
        text += "."
    diff = 100 * (prv["accuracy_ferplus"] - prv["accuracy_fer2013"])
    agreed = pct(prv["crowd_agrees"] / prv["errors"], 0) if prv["errors"] else "none"
    if diff > 1:
        text += (f" So many of the model's \"errors\" are likely label noise in FER2013 ({agreed} of them by the "
                 f"crowd's vote), and against the crowd it scores {pp(diff)} higher.")
    else:
        text += (f" So {agreed} of its \"errors\" are likely label noise, yet the crowd also overturns "
                 f"{num(prv['crowd_overturns_match'])} FER2013 labels the model had matched (it learnt those labels, "
                 f"noise included): against the crowd it scores {abs(diff):.1f} pp {'lower' if diff < 0 else 'higher'} "
                 f"than against FER2013 on the same faces, so label noise moves the score both ways.")
    text += " FER+ entered nothing the study chose: it was read only after PrivateTest had been predicted."
    return {"ferplus_summary_rows": summary, "ferplus_class_rows": per_class, "ferplus": text}


def findings(ctx):
    return {**per_class_findings(ctx), **ferplus_findings(ctx)}
