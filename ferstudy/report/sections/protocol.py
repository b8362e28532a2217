"""Section 1, data and protocol: the class balance against chance, the test's rule, the baseline's
augmentation in words, and what the fold spread holds (data noise, and initialisation noise when
the folds started from different seeds)."""

from ... import CLASS_NAMES
from ..text import and_join, num, pct, plural
from ..verdicts import seed_noise_sampled


def augmentation_text(aug: dict) -> str:
    """What the augmentation settings do, in words (only the active ones)."""
    if not aug.get("enabled", True):
        return "No augmentation is used."
    crop = aug.get("crop", 48)
    ops = [
        f"randomly cropped to {crop}x{crop}" if crop < 48 else None,
        "flipped" if aug.get("flip") else None,
        f"rotated by up to {aug['rotate']} degrees" if aug.get("rotate") else None,
        "scaled" if aug.get("scale") else None,
        "shifted" if aug.get("translate") else None,
        "partly erased" if aug.get("erase") else None,
        "changed in brightness and contrast" if aug.get("brightness") or aug.get("contrast") else None,
    ]
    done = [o for o in ops if o]
    return (
        f"The baseline's training faces are {and_join(done)}"
        if done
        else "Augmentation is on but every operation is off"
    ) + ("; evaluation uses the centre crop." if crop < 48 else ".")


def data_findings(ctx: dict) -> dict:
    train = ctx["data"]["counts"]["Training"]
    big = max(CLASS_NAMES, key=lambda c: train[c])
    small = min(CLASS_NAMES, key=lambda c: train[c])
    private = ctx["data"]["counts"]["PrivateTest"]
    major = max(CLASS_NAMES, key=lambda c: private[c])
    return {
        "augment": augmentation_text(ctx["cv_training"].get("augment", {})),
        "data_balance": (
            f"The classes are unbalanced: {big} has {num(train[big])} Training faces "
            f"({pct(train[big] / train['total'])}), {small} {num(train[small])}. Always answering {major} "
            f"would score {pct(private[major] / private['total'])} on PrivateTest."
        ),
    }


def seed_text(ctx: dict) -> str:
    """Where the fold models' initial weights came from, and so what the fold spread holds."""
    seed = ctx["cv_training"].get("seed", 0)
    if seed_noise_sampled(ctx):
        return (
            f"Fold k's networks start from seed {seed} + k, so the fold spread holds initialisation as well as "
            f"data noise."
        )
    return (
        f"Every fold model started from the same initial weights (seed {seed}), so the fold spread holds "
        f"data noise only; seed-to-seed noise is not sampled."
    )


def protocol_findings(ctx: dict) -> dict:
    abl, k = ctx["ablation"], ctx["data"]["folds"]
    df = int(abl[0]["df"]) if abl else k - 1
    holm = f"; Holm's correction covers the {plural(len(abl), 'comparison')}" if len(abl) > 1 else ""
    return {
        "tests": (f'A variant "helped" or "hurt" when p < {ctx["alpha"]:g} ({df} degrees of freedom){holm}.'),
        "seeds": seed_text(ctx),
    }


def findings(ctx: dict) -> dict:
    return {**data_findings(ctx), **protocol_findings(ctx)}
