"""Section 4, what each operation did: one paragraph per factor, what the operation does, what its
variants showed (in words: the numbers stand in section 3's table) and the lesson the numbers
support (a second change in the training, a strided first layer, the over-fitting a regularizer
had to prevent, compute); the verdicts that change compute several-fold named once; the
pretrained backbones against their from-scratch twins."""

import math
import re

from ..text import and_join, code, pct, plain_description
from ..verdicts import _significant, _strength, compute_note, outcome, verdict_clause

OPERATIONS = {
    "depth": "More layers add non-linearity and widen the receptive field.",
    "filters": "Width sets the parameters and compute of every stage.",
    "kernel size": "Larger kernels see more of the face per layer, at a higher cost.",
    "pooling": "Pooling downsamples by the window's maximum or mean; a strided convolution learns it.",
    "normalization": "Batch normalization standardises each channel over the mini-batch.",
    "dropout": "Dropout zeroes random activations in training, against memorising faces.",
    "augmentation": "Augmentation varies every training face at random, against memorising faces.",
    "capacity": "A much larger VGG-style network tests whether capacity is the bottleneck.",
    "backbone": "Torchvision backbones adapted to one grey channel test off-the-shelf designs.",
    "pretraining": (
        "Fine-tuning from torchvision's ImageNet weights (the first convolution's RGB kernels summed to "
        "one grey channel) tests whether features learned on natural images help."
    ),
}
ACTIVATION_NAMES = {"relu": "ReLU", "leakyrelu": "Leaky ReLU", "elu": "ELU", "gelu": "GELU"}
ACTIVATION_TEXT = {
    "elu": "ELU is smooth and lets negative values through, saturating at -1",
    "gelu": "GELU is a smooth ReLU that lets small negative values through",
    "leakyrelu": "Leaky ReLU keeps a small slope for them",
}
# Training settings that are the operation itself for a factor (not a second change when they differ).
OPERATION_SETTINGS = {"augmentation": ("augment.",)}
MAX_DESCRIPTION_WORDS = 6  # a longer description is left to section 2's table


def operation_text(factor: str, ctx: dict) -> str:
    """What the operation does; for activations, only those that ran."""
    if factor != "activation":
        return OPERATIONS.get(factor, "")
    base = _row(ctx, ctx["baseline"])["activations"]
    ran = [a for r in ctx["archs"] if r["factor"] == "activation" for a in r["activations"] if a not in base]
    ran = list(dict.fromkeys(ran))
    if base == ["relu"] and ran and all(a in ACTIVATION_TEXT for a in ran):
        return f"Where the baseline's ReLU zeroes negative inputs, {and_join(ACTIVATION_TEXT[a] for a in ran)}."

    def names(acts):
        return and_join(ACTIVATION_NAMES.get(a, a) for a in acts)

    return f"The baseline uses {names(base)}; the variants use {names(ran) or 'the same'}."


def _row(ctx, arch):
    return next(r for r in ctx["archs"] if r["architecture"] == arch)


def named(row: dict) -> str:
    """'5x5 kernels (`kernel_5`)': a variant by its (short) description and its name."""
    desc = plain_description(row.get("description"))
    if not desc or len(desc.split()) > MAX_DESCRIPTION_WORDS:
        return code(row["arch"])
    return f"{desc} ({code(row['arch'])})"


def verdict_sentence(factor: str, frows: list[dict]) -> str:
    """What a factor's variants showed, in words, the strongest first; all-null factors said so."""
    frows = sorted(frows, key=_strength)
    if not any(_significant(r) for r in frows):
        if len(frows) == 1:
            return f"{_capital(named(frows[0]))} made no measurable difference."
        if len(frows) == 2:
            return f"Neither {named(frows[0])} nor {named(frows[1])} made a measurable difference."
        return (
            f"None of the {factor} variants made a measurable difference ({and_join(code(r['arch']) for r in frows)})."
        )
    groups: dict = {}
    for r in frows:
        groups.setdefault(outcome(r), []).append(r)
    parts = [f"{and_join(named(r) for r in rows)} {what}" for what, rows in groups.items()]
    return _capital(", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]) + "."


def _capital(text):
    """Upper-case the first letter, unless the text starts with a name (`vgg11_bn ...`)."""
    first = text.split(" ", 1)[0]
    return text if "_" in first or "`" in first else text[:1].upper() + text[1:]


def second_change(row: dict, ctx: dict) -> str:
    """A variant that also changes its training (not the operation's own settings)."""
    arch = _row(ctx, row["arch"])
    own = OPERATION_SETTINGS.get(row["factor"], ())
    extra = [c for c in arch["training_changes"] if not (own and c.startswith(own))]
    if not extra:
        return ""
    groups: dict = {}
    for change in extra:  # 'augment.rotate 0 -> 10' -> the augment settings, counted
        groups.setdefault(change.split(".", 1)[0] if "." in change.split(" ", 1)[0] else change, []).append(change)
    said = [items[0] if len(items) == 1 else f"{len(items)} different {key} settings" for key, items in groups.items()]
    return f"{code(row['arch'])} also trains with {and_join(said)}, so its verdict mixes the changes."


def strided_lesson(row: dict, ctx: dict) -> str:
    """A variant that strides its convolutions (the first included): its verdict is on resolution and
    compute as much as on the operation."""
    layers = _row(ctx, row["arch"])["layers"]
    convs = re.findall(r"conv\d+x\d+ \d+( /\d+)?", layers)
    strided = [c for c in convs if c]
    if not strided:
        return ""
    which = (
        f"all {len(convs)} convolutions"
        if len(strided) == len(convs)
        else f"{len(strided)} of its {len(convs)} convolutions"
    )
    first = ", the first included" if convs[0] else ""
    return (
        f"{code(row['arch'])} strides {which}{first}: its verdict is on resolution and compute as "
        f"much as on {row['factor']}."
    )


def regularizer_lesson(factor: str, frows: list[dict], ctx: dict) -> str:
    """What the over-fitting gaps say of dropout or augmentation (train-minus-held-out accuracy on
    the learning-curve faces at the last epoch)."""
    from ...stability import MIN_OVERFIT_GAP_PP

    base = _row(ctx, ctx["baseline"])
    base_gap = base["fit"]["gap_pp"] if base["fit"] else float("nan")
    if math.isnan(base_gap):
        return ""
    if factor == "augmentation":
        bare = [r for r in frows if not _row(ctx, r["arch"])["augmented"] and _row(ctx, r["arch"])["fit"]]
        if not bare:
            return ""
        r = bare[0]
        gap = _row(ctx, r["arch"])["fit"]["gap_pp"]
        then = (
            "even where accuracy did not move"
            if not _significant(r)
            else "and that paid off"
            if r["diff_pp"] < 0
            else "yet cost accuracy at this budget"
        )
        return (
            f"Without augmentation the network fit its training faces {gap:.1f} pp better than new ones, against "
            f"the baseline's {base_gap:.1f} pp: augmentation holds over-fitting down {then}."
        )
    if base_gap < MIN_OVERFIT_GAP_PP:
        return (
            f"The baseline fit its training faces only {base_gap:.1f} pp better than new ones, so there was little "
            f"over-fitting for dropout to prevent at this budget."
        )
    return f"The baseline over-fit by {base_gap:.1f} pp, which is what dropout is there to prevent."


def compute_lesson(row: dict, ctx: dict) -> str:
    """A cheap variant that lost nothing measurable (not the final one): the costly gains are named
    once, with every verdict that changes compute (`compute_mixed_text`)."""
    ratio = row.get("compute_ratio", float("nan"))
    if math.isnan(ratio) or row["arch"] == ctx["selection"]["architecture"]:
        return ""
    if ratio < 0.67 and not _significant(row):
        return f"{code(row['arch'])} lost no measurable accuracy at {compute_note(row)} the compute."
    return ""


def factor_lessons(factor: str, frows: list[dict], ctx: dict, limit: int = 2) -> list[str]:
    """At most `limit` lessons for one factor's paragraph, the most telling first."""
    lessons = [second_change(r, ctx) for r in frows] + [strided_lesson(r, ctx) for r in frows]
    if factor in ("dropout", "augmentation"):
        lessons.append(regularizer_lesson(factor, frows, ctx))
    chosen = ctx["selection"]["architecture"]
    if any(r["arch"] == chosen for r in frows):
        lessons.append(f"{code(chosen)} became the final architecture (section 5).")
    lessons += [compute_lesson(r, ctx) for r in frows]
    return [x for x in lessons if x][:limit]


def compute_mixed_text(ctx: dict) -> str:
    from ...study import COMPUTE_SIMILAR

    mixed = sorted([r for r in ctx["ablation"] if r.get("compute_mixed")], key=lambda r: r["compute_ratio"])
    if not mixed:
        return ""
    lo, hi = COMPUTE_SIMILAR
    names = and_join(f"{code(r['arch'])} ({compute_note(r)})" for r in mixed)
    return (
        f"{names} "
        f"{'changes' if len(mixed) == 1 else 'change'} compute beyond {lo:g}-{hi:g}x the baseline's, so "
        f"{'its verdict is' if len(mixed) == 1 else 'their verdicts are'} on the operation and its compute "
        f"together."
    )


def factor_findings(ctx: dict) -> dict:
    """Per factor: what the operation does, what its variants showed and its lessons; the pretrained
    backbones' twin comparisons close their factor's paragraph."""
    abl = ctx["ablation"]
    f: dict = {"factors": []}
    if not abl:
        return f
    by_factor: dict = {}
    for row in abl:
        by_factor.setdefault(row["factor"], []).append(row)
    f["factors"] = [
        {
            "factor": factor,
            "explain": operation_text(factor, ctx),
            "sentence": " ".join([verdict_sentence(factor, frows), *factor_lessons(factor, frows, ctx)]),
        }
        for factor, frows in by_factor.items()
    ]
    add_pretrained_sentences(f, ctx)
    f["effects_intro"] = compute_mixed_text(ctx)
    return f


def pretrained_sentence(pair: dict) -> str:
    """A pretrained backbone against its from-scratch twin, its verdict stated as every verdict is
    (`verdict_clause`, the twin in the baseline's place)."""
    a, b = code(pair["arch"]), code(pair["twin"]) if pair["twin"] else None
    if not b:
        return (
            f"{a} has no from-scratch twin in this study (`{pair['backbone']}` with `pretrained: null`), "
            f"so only its comparison with the baseline is reported."
        )
    row = pair["row"]
    same = (
        f"the same network, also trained with {and_join(pair['changes'])}"
        if pair["changes"]
        else "the same network and training"
    )
    return (
        f"Against its from-scratch twin {b} ({same}), {a} reached {pct(row['mean'])} against "
        f"{pct(row['baseline_mean'])}: ImageNet pretraining {verdict_clause(row)}, a planned comparison outside Holm."
    )


def add_pretrained_sentences(f: dict, ctx: dict) -> None:
    """Each pretrained backbone's twin comparison (`pretrained_pairs`) closes its factor's paragraph
    (a paragraph of its own when its factor has none); also f["pretrained"] = {arch: sentence}."""
    f["pretrained"] = {}
    for pair in ctx.get("pretrained_pairs") or []:
        sentence = f["pretrained"][pair["arch"]] = pretrained_sentence(pair)
        factor = next((r["factor"] for r in ctx["ablation"] if r["arch"] == pair["arch"]), "pretraining")
        entry = next((fac for fac in f["factors"] if fac["factor"] == factor), None)
        if entry is None:
            f["factors"].append({"factor": factor, "explain": operation_text(factor, ctx), "sentence": sentence})
        else:
            entry["sentence"] = f"{entry['sentence']} {sentence}"


def findings(ctx: dict) -> dict:
    return factor_findings(ctx)
