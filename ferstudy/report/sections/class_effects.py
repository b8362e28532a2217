"""Appendix A3, recall per emotion of each variant against the baseline's (mean over the folds,
descriptive): the table, the hard classes' extremes and whether augmentation lifts them."""

from collections.abc import Callable

from ... import CLASS_NAMES
from ..text import and_join, code, pct, pp

HARD_CLASSES = ("fear", "disgust")  # recognised worst by FER2013 networks: does an operation lift them?


def class_effect_findings(ctx: dict) -> dict:
    """Recall per class of each variant against the baseline's (mean over folds, descriptive)."""
    abl = ctx["ablation"]
    rows = {r["architecture"]: r for r in ctx["archs"]}
    base = rows[ctx["baseline"]]
    if not abl:
        return {"class_effect_rows": []}

    def diff(arch, c):
        return 100 * (rows[arch]["recall"][c] - base["recall"][c])

    table = [
        [
            f"{code(ctx['baseline'])} (recall)",
            "baseline",
            *(pct(base["recall"][c], 0) for c in CLASS_NAMES),
            pct(base["accuracy_mean"], 1),
        ]
    ]
    table += [
        [code(r["arch"]), r["factor"], *(f"{diff(r['arch'], c):+.1f}" for c in CLASS_NAMES), pp(r["diff_pp"])]
        for r in abl
    ]
    text = "Per class, " + "; ".join(hard_class_extremes(abl, c, diff, base["recall"][c]) for c in HARD_CLASSES) + "."
    aug = [r for r in abl if r["factor"] == "augmentation"]
    if aug:

        def moved(arch):
            return and_join(f"{c} by {pp(diff(arch, c))}" for c in HARD_CLASSES)

        text += (
            " Does augmentation lift the hard classes? "
            + "; ".join(
                f"{code(r['arch'])} moved {moved(r['arch'])}, against {pp(r['diff_pp'])} in accuracy" for r in aug
            )
            + "."
        )
    rare = min(HARD_CLASSES, key=lambda c: base["support"][c])
    text += (
        f" These are differences of mean recall over the folds, not tested: one {rare} face moves a fold's "
        f"{rare} recall by {100 / max(base['support'][rare], 1):.1f} pp."
    )
    return {"class_effect_rows": table, "class_effects": text}


def hard_class_extremes(abl: list[dict], c: str, diff: Callable[[str, str], float], base_recall: float) -> str:
    """'fear (baseline recall 22%) gained most with `a` (+5.9 pp) and lost most with `b` (-13.2 pp)'."""
    up = max(abl, key=lambda r: diff(r["arch"], c))
    down = min(abl, key=lambda r: diff(r["arch"], c))
    moves = [
        f"gained most with {code(up['arch'])} ({pp(diff(up['arch'], c))})"
        if diff(up["arch"], c) > 0
        else "no variant raised it",
        f"lost most with {code(down['arch'])} ({pp(diff(down['arch'], c))})"
        if diff(down["arch"], c) < 0
        else "no variant lowered it",
    ]
    return f"{c} (baseline recall {pct(base_recall, 0)}) {and_join(moves)}"


def findings(ctx: dict) -> dict:
    return class_effect_findings(ctx)
