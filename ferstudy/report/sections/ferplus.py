"""Appendix A6, FER+ as a second opinion (`results/final/ferplus.json`, whenever it scores the
current final predictions): how many faces the crowd labels and why the others are left out, how
often the model and FER2013's own labels agree with the crowd, and per emotion how many of the
model's errors against FER2013 the crowd agrees with. The model never saw a test label: matching
FER2013 where the crowd disagrees says nothing about having learnt those labels."""

from ... import CLASS_NAMES
from ..text import and_join, num, pct, pp

FERPLUS_REASONS = {
    "dropped": "dropped by FER+",
    "tie": "tied for the most votes",
    "not_a_face": "voted not a face",
    "unknown": "voted unknown",
    "contempt": "voted contempt",
}


def ferplus_rows(fp: dict) -> tuple[list, list]:
    splits = [("PublicTest", fp["public"]), ("PrivateTest", fp["private"])]
    summary = [
        [
            name,
            num(s["faces"]),
            num(s["scored"]),
            *(num(s["excluded"][k]) for k in FERPLUS_REASONS),
            pct(s["accuracy_fer2013"]),
            pct(s["accuracy_ferplus"]),
            pct(s["label_agreement"]),
        ]
        for name, s in splits
    ]

    def share(agrees, errors):
        return f"{agrees} of {errors}" + (f" ({pct(agrees / errors, 0)})" if errors else "")

    per_class = [
        [c, *(share(s["per_class"][c]["crowd_agrees"], s["per_class"][c]["errors"]) for _, s in splits)]
        for c in CLASS_NAMES
    ]
    per_class.append(["**all**", *(share(s["crowd_agrees"], s["errors"]) for _, s in splits)])
    return summary, per_class


def ferplus_findings(ctx: dict) -> dict:
    fp = ctx.get("ferplus")
    if not fp:
        return {}
    summary, per_class = ferplus_rows(fp)
    prv, pub = fp["private"], fp["public"]
    out_counts = {k: prv["excluded"][k] + pub["excluded"][k] for k in FERPLUS_REASONS}
    left = prv["faces"] + pub["faces"] - prv["scored"] - pub["scored"]
    model, labels = prv["accuracy_ferplus"], prv["label_agreement"]
    text = (
        f"FER+ gives a crowd label (the most-voted of its categories) to {num(pub['scored'])} of the "
        f"{num(pub['faces'])} PublicTest and {num(prv['scored'])} of the {num(prv['faces'])} PrivateTest faces; "
        f"the other {num(left)} are left out and counted: "
        + and_join(f"{num(n)} {FERPLUS_REASONS[k]}" for k, n in out_counts.items() if n)
        + ". "
        f"On the labelled PrivateTest faces the FER2013 label is the crowd's for {pct(labels)} and the final "
        f"model's prediction for {pct(model)}: the model agrees with the crowd {'more' if model > labels else 'less'} "
        f"often than FER2013's own labels do. Against FER2013 on the same faces it scores "
        f"{pct(prv['accuracy_fer2013'])} ({pct(pub['accuracy_ferplus'])} against the crowd and "
        f"{pct(pub['accuracy_fer2013'])} against FER2013 on PublicTest)."
    )
    rate = {c: v["crowd_agrees"] / v["errors"] for c, v in prv["per_class"].items() if v["errors"] >= 10}
    if prv["errors"]:
        text += (
            f" Of its {num(prv['errors'])} PrivateTest errors against FER2013 the crowd sides with the model on "
            f"{num(prv['crowd_agrees'])} ({pct(prv['crowd_agrees'] / prv['errors'], 0)}) and with the FER2013 "
            f"label on {num(prv['crowd_keeps_label'])}"
        )
        if len(rate) >= 2:
            hi, lo = max(rate, key=lambda k: rate[k]), min(rate, key=lambda k: rate[k])
            text += f"; most often for {hi} faces ({pct(rate[hi], 0)}), least for {lo} ({pct(rate[lo], 0)})"
        text += (
            f', so many of the model\'s "errors" are likely label noise in FER2013. The crowd also overturns '
            f"{num(prv['crowd_overturns_match'])} FER2013 labels the model had matched"
        )
    diff = 100 * (model - prv["accuracy_fer2013"])
    text += (
        f"; label noise moves the score both ways, and against the crowd the model scores {pp(diff)} against "
        f"FER2013 on the same faces. FER+ entered nothing the study chose: it was read only after PrivateTest had "
        f"been predicted."
    )
    return {"ferplus_summary_rows": summary, "ferplus_class_rows": per_class, "ferplus": text}


def findings(ctx: dict) -> dict:
    return ferplus_findings(ctx)
