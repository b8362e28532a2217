"""Section 1, data and protocol: the class balance against chance, the test's rule, and the
baseline's augmentation in words."""

from ... import CLASS_NAMES
from ..text import and_join, num, pct, plural


def augmentation_text(aug):
    """What the augmentation settings do, in words (only the active ones)."""
    if not aug.get("enabled", True):
        return "No augmentation is used."
    crop = aug.get("crop", 48)
    ops = [f"randomly cropped to {crop}x{crop}" if crop < 48 else None, "flipped" if aug.get("flip") else None,
           f"rotated by up to {aug['rotate']} degrees" if aug.get("rotate") else None,
           "scaled" if aug.get("scale") else None, "shifted" if aug.get("translate") else None,
           "partly erased" if aug.get("erase") else None,
           "changed in brightness and contrast" if aug.get("brightness") or aug.get("contrast") else None]
    ops = [o for o in ops if o]
    return (f"The baseline's training faces are {and_join(ops)}" if ops else
            "Augmentation is on but every operation is off") + ("; evaluation uses the centre crop." if crop < 48 else ".")


def data_findings(ctx):
    train = ctx["data"]["counts"]["Training"]
    big = max(CLASS_NAMES, key=lambda c: train[c])
    small = min(CLASS_NAMES, key=lambda c: train[c])
    private = ctx["data"]["counts"]["PrivateTest"]
    major = max(CLASS_NAMES, key=lambda c: private[c])
    return {"augment": augmentation_text(ctx["cv_training"].get("augment", {})),
            "data_balance": (
                f"The classes are unbalanced: {big} is the largest Training class ({num(train[big])} faces, "
                f"{pct(train[big] / train['total'])}) and {small} the smallest ({num(train[small])}, "
                f"{pct(train[small] / train['total'])}), a ratio of {train[big] / max(train[small], 1):.1f} to 1. "
                f"Always answering {major} would score {pct(private[major] / private['total'])} on PrivateTest, "
                f"and guessing uniformly {pct(1 / len(CLASS_NAMES))}.")}


def protocol_findings(ctx):
    abl, k = ctx["ablation"], ctx["data"]["folds"]
    df = int(abl[0]["df"]) if abl else k - 1
    return {"tests": (
        f"A variant \"helped\" or \"hurt\" only when p < {ctx['alpha']:g}; with k = {k} folds each test has "
        f"{df} degrees of freedom. Each verdict also gives its Holm-adjusted p over the "
        f"{plural(len(abl), 'comparison')} and a budget-stability label (section 4); summaries lead with the "
        f"verdicts that survive Holm (Holm p < {ctx['alpha']:g}) and hold.")}


def findings(ctx):
    return {**data_findings(ctx), **protocol_findings(ctx)}
