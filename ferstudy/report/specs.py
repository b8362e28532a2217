"""A run config in words: its layers in one line, its convolution widths, activations and dropout,
and the training settings in which it differs from another."""


def layer_summary(model_spec: dict) -> str:
    """The layer list in one line: 'conv3x3 16 > BN > relu > maxpool2 > ...' (or the backbone)."""
    if "backbone" in model_spec:
        pretrained = model_spec.get("pretrained")
        return f"torchvision {model_spec['backbone']}" + (
            " (ImageNet-pretrained)" if pretrained == "imagenet" else " (pretrained)" if pretrained else ""
        )
    out = []
    for item in model_spec.get("layers", []):
        kind, opts = (item, None) if isinstance(item, str) else next(iter(item.items()))
        if kind == "conv":
            o = opts if isinstance(opts, dict) else {"filters": opts}
            kk = o.get("kernel", 3)
            out.append(f"conv{kk}x{kk} {o['filters']}" + (f" /{o['stride']}" if o.get("stride", 1) != 1 else ""))
        elif kind == "batchnorm":
            out.append("BN")
        elif kind in ("maxpool", "avgpool"):
            size = opts.get("size", 2) if isinstance(opts, dict) else opts
            out.append(f"{kind}{size}")
        elif opts is None or opts == {}:
            out.append(kind)
        else:
            value = ",".join(f"{a}={b}" for a, b in opts.items()) if isinstance(opts, dict) else opts
            out.append(f"{kind} {value}")
    return " > ".join(out) + " > fc 7"


def conv_filters(model_spec: dict) -> str:
    """'16-32-64': the filters of the conv layers in order ('torchvision resnet18' for a backbone)."""
    if "backbone" in model_spec:
        return f"torchvision {model_spec['backbone']}"
    widths = []
    for item in model_spec.get("layers", []):
        if isinstance(item, dict) and "conv" in item:
            opts = item["conv"]
            widths.append(str(opts["filters"] if isinstance(opts, dict) else opts))
    return "-".join(widths)


ACTIVATIONS = ("relu", "leakyrelu", "elu", "gelu")


def _layer_kinds(model_spec):
    return [item if isinstance(item, str) else next(iter(item)) for item in model_spec.get("layers", [])]


def activations(model_spec: dict) -> list[str]:
    """The activation layers a network uses, in first-use order: ['relu'] ('relu' for a backbone)."""
    if "backbone" in model_spec:
        return ["relu"]
    kinds = _layer_kinds(model_spec)
    return [a for a in dict.fromkeys(kinds) if a in ACTIVATIONS]


def has_dropout(model_spec: dict) -> bool:
    return any(kind == "dropout" for kind in _layer_kinds(model_spec))


def training_changes(base: dict, other: dict, prefix: str = "") -> list[str]:
    """['lr 0.1 -> 0.02', ...]: training settings of `other` that differ from `base`."""
    out = []
    for key in sorted(set(base) | set(other)):
        a, b = base.get(key), other.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += training_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} {a} -> {b}")
    return out
