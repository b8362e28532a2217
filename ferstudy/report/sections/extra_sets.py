"""Appendix A7, the extra test sets (`data.extra_test_sets`) beside PrivateTest: their scores and
recall per emotion, and what a difference from PrivateTest does and does not mean."""

from ... import CLASS_NAMES
from ..text import and_join, code, num, pct, pp


def cross_dataset_findings(ctx: dict) -> dict:
    """Table rows (faces, accuracy, balanced accuracy, recall per emotion; '–' where a set has no face
    of that emotion) and the differences from PrivateTest."""
    extra, prv = ctx["final"]["extra"], ctx["final"]["private"]
    if not extra:
        return {}

    def recall(m, c):
        return m["per_class"][c]["recall"] if m["per_class"][c]["support"] else None

    def row(name, m):
        return [
            name,
            num(m["n"]),
            pct(m["accuracy"]),
            pct(m["balanced_accuracy"]),
            *("–" if recall(m, c) is None else pct(recall(m, c), 0) for c in CLASS_NAMES),
        ]

    rows = [row("PrivateTest (FER2013)", prv)] + [row(code(name), m) for name, m in sorted(extra.items())]
    diffs = {name: 100 * (m["accuracy"] - prv["accuracy"]) for name, m in sorted(extra.items())}
    lower = [n for n, d in diffs.items() if d < 0]
    higher = [n for n, d in diffs.items() if d >= 0]
    parts = []
    if lower:
        parts.append("lower on " + and_join(f"{code(n)} ({pp(diffs[n])})" for n in lower))
    if higher:
        parts.append(
            ("higher" if all(diffs[n] > 0 for n in higher) else "no lower")
            + " on "
            + and_join(f"{code(n)} ({pp(diffs[n])})" for n in higher)
        )
    text = f"Against PrivateTest's {pct(prv['accuracy'])}, accuracy is {' and '.join(parts)}."
    falls = [
        (100 * (recall(m, c) - recall(prv, c)), n, c)
        for n, m in extra.items()
        for c in CLASS_NAMES
        if recall(m, c) is not None and recall(prv, c) is not None
    ]
    worst = min(falls) if falls else None
    if worst and worst[0] < 0:
        text += f" The largest fall in recall is {worst[2]} on {code(worst[1])} ({pp(worst[0])})."
    text += (
        " A difference like this measures domain shift, not a model that got worse: another camera, another "
        "population and another labelling protocol (posed or spontaneous faces, who chose the label and how) "
        'change the task itself, so it reads as "the same model, worse" only where a set\'s labels follow '
        "FER2013's protocol."
    )
    return {"cross_dataset_rows": rows, "cross_dataset": text}


def findings(ctx: dict) -> dict:
    return cross_dataset_findings(ctx)
