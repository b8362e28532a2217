"""Section 5, the effect of each operation: what each operation does, the verdicts factor by factor
(with the pretrained backbones against their from-scratch twins), the variants that change more
than the architecture, and the recall per emotion against the baseline's."""

from ... import CLASS_NAMES
from ..text import and_join, code, pct, pp
from ..verdicts import factor_sentence, verdict_clause


HARD_CLASSES = ("fear", "disgust")  # recognised worst by FER2013 networks: does an operation lift them?


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
    "pretraining": ("Fine-tuning from torchvision's ImageNet weights (the first convolution's RGB kernels summed to "
                    "one grey channel, the faces kept at 48x48) tests whether features learned on natural images "
                    "help."),
}
ACTIVATION_NAMES = {"relu": "ReLU", "leakyrelu": "Leaky ReLU", "elu": "ELU", "gelu": "GELU"}
ACTIVATION_TEXT = {"elu": "ELU is smooth and lets negative values through, saturating at -1",
                   "gelu": "GELU is a smooth ReLU that lets small negative values through",
                   "leakyrelu": "Leaky ReLU keeps a small slope for them"}


def operation_text(factor, ctx):
    """What the operation does; for activations, only those that ran."""
    if factor != "activation":
        return OPERATIONS.get(factor, "")
    base = next(r for r in ctx["archs"] if r["architecture"] == ctx["baseline"])["activations"]
    ran = [a for r in ctx["archs"] if r["factor"] == "activation" for a in r["activations"] if a not in base]
    ran = list(dict.fromkeys(ran))
    if base == ["relu"] and ran and all(a in ACTIVATION_TEXT for a in ran):
        return f"Where the baseline's ReLU zeroes negative inputs, {and_join(ACTIVATION_TEXT[a] for a in ran)}."
    names = lambda acts: and_join(ACTIVATION_NAMES.get(a, a) for a in acts)  # noqa: E731
    return f"The baseline uses {names(base)}; the variants use {names(ran) or 'the same'}."


# Training settings that are the operation itself for a factor (not a confound when they differ).
OPERATION_SETTINGS = {"augmentation": ("augment.",)}


def factor_findings(ctx):
    """Per factor: what the operation does and its verdicts (the pretrained backbones' twin
    comparisons close their factor's paragraph); the variants that change more than the architecture."""
    abl = ctx["ablation"]
    f = {"factors": []}
    if not abl:
        return f
    by_factor = {}
    for row in abl:
        by_factor.setdefault(row["factor"], []).append(row)
    f["factors"] = [{"factor": factor, "explain": operation_text(factor, ctx),
                     "sentence": factor_sentence(frows)} for factor, frows in by_factor.items()]
    add_pretrained_sentences(f, ctx)
    confounds = []
    for r in ctx["archs"]:
        own = OPERATION_SETTINGS.get(r["factor"], ())
        extra = [c for c in r["training_changes"] if not c.startswith(own)] if own else r["training_changes"]
        if extra:
            confounds.append((r["architecture"], extra))
    if confounds:
        f["confounds"] = ("Some variants change more than the architecture: " + "; ".join(
            f"{code(a)} also trains with {and_join(ch)}" for a, ch in confounds) + ". Their differences mix both changes.")
    return f


def pretrained_sentence(pair):
    """A pretrained backbone against its from-scratch twin, its verdict stated as every verdict is
    (`verdict_clause`, the twin in the baseline's place)."""
    a, b = code(pair["arch"]), code(pair["twin"]) if pair["twin"] else None
    if not b:
        return (f"{a} has no from-scratch twin in this study (`{pair['backbone']}` with `pretrained: null`), "
                f"so only its comparison with the baseline is reported.")
    row = pair["row"]
    same = (f"the same network, also trained with {and_join(pair['changes'])}" if pair["changes"]
            else "the same network and training")
    return (f"Against its from-scratch twin {b} ({same}, random initial weights), {a} reached "
            f"{pct(row['mean'])} against {pct(row['baseline_mean'])} mean cross-validation accuracy: ImageNet "
            f"pretraining {verdict_clause(row, reason=True)}, one planned comparison outside the Holm correction.")


def add_pretrained_sentences(f, ctx):
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


def class_effect_findings(ctx):
    """Recall per class of each variant against the baseline's (mean over folds, descriptive)."""
    abl = ctx["ablation"]
    rows = {r["architecture"]: r for r in ctx["archs"]}
    base = rows[ctx["baseline"]]
    if not abl:
        return {"class_effect_rows": []}

    def diff(arch, c):
        return 100 * (rows[arch]["recall"][c] - base["recall"][c])

    table = [[f"{code(ctx['baseline'])} (recall)", "baseline", *(pct(base["recall"][c], 0) for c in CLASS_NAMES),
              pct(base["accuracy_mean"], 1)]]
    table += [[code(r["arch"]), r["factor"], *(f"{diff(r['arch'], c):+.1f}" for c in CLASS_NAMES), pp(r["diff_pp"])]
              for r in abl]
    text = "Per class, " + "; ".join(hard_class_extremes(abl, c, diff, base["recall"][c]) for c in HARD_CLASSES) + "."
    aug = [r for r in abl if r["factor"] == "augmentation"]
    if aug:
        def moved(arch):
            return and_join(f"{c} by {pp(diff(arch, c))}" for c in HARD_CLASSES)

        text += (" Does augmentation lift the hard classes? " + "; ".join(
            f"{code(r['arch'])} moved {moved(r['arch'])}, against {pp(r['diff_pp'])} in accuracy" for r in aug) + ".")
    rare = min(HARD_CLASSES, key=lambda c: base["support"][c])
    text += (f" These are differences of mean recall over the folds, not tested: one {rare} face moves a fold's "
             f"{rare} recall by {100 / max(base['support'][rare], 1):.1f} pp.")
    return {"class_effect_rows": table, "class_effects": text}


def hard_class_extremes(abl, c, diff, base_recall):
    """'fear (baseline recall 22%) gained most with `a` (+5.9 pp) and lost most with `b` (-13.2 pp)'."""
    up = max(abl, key=lambda r: diff(r["arch"], c))
    down = min(abl, key=lambda r: diff(r["arch"], c))
    moves = [f"gained most with {code(up['arch'])} ({pp(diff(up['arch'], c))})" if diff(up["arch"], c) > 0 else
             "no variant raised it",
             f"lost most with {code(down['arch'])} ({pp(diff(down['arch'], c))})" if diff(down["arch"], c) < 0 else
             "no variant lowered it"]
    return f"{c} (baseline recall {pct(base_recall, 0)}) {and_join(moves)}"


def findings(ctx):
    return {**factor_findings(ctx), **class_effect_findings(ctx)}
