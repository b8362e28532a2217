"""Architecture specs checked without torch: layer lists planned shape by shape, backbones named.

`ferstudy.models` builds the modules from these plans; config validation and dry runs use this
module alone, so they never import torch (seconds saved on every `snakemake -n`).

A spec is either ``{"layers": [...]}`` (see docs/DESIGN.md, "Architecture spec") or
``{"backbone": "resnet18" | "vgg11_bn", "pretrained": None | "imagenet" | "path/to/weights.pth"}``
(`imagenet`: torchvision's ImageNet weights, fetched when the model is built, so not checked here).

Layer lists are checked and their shapes computed by plain Python (`plan_layers`) before any
module is built, so a bad spec fails with one line naming the layer, e.g.::

    layer 3 ({'conv': {'filter': 32}}): unknown option 'filter' (expected filters, kernel, stride, padding, bias)

Layer indices in messages are 0-based positions in the resolved ``layers`` list.

Layer types (each list item is a bare string or a one-key mapping, as YAML gives them):

=============  ==========================================================================
``conv``       ``conv: 32`` or ``conv: {filters, kernel: 3, stride: 1, padding: same, bias: true}``;
               padding is ``same``, ``valid`` or an int; ``same`` with stride > 1 pads
               kernel // 2 (output = ceil(size / stride)). bias defaults to true; write
               ``bias: false`` before a batchnorm if you want to save the redundant parameters.
``batchnorm``  BatchNorm2d on a feature map, BatchNorm1d once flattened (no options)
``relu`` ``elu`` ``gelu``   activations (no options; not in-place, so hooks see clean tensors)
``leakyrelu``  ``leakyrelu: 0.1`` or ``{slope: 0.1}``; bare ``leakyrelu`` = slope 0.01
``maxpool`` ``avgpool``  ``maxpool: 2`` or ``{size: 2, stride: size, padding: 0}``
``dropout``    ``dropout: 0.25`` or ``{p: 0.25}`` (plain Dropout, also on feature maps)
``gap``        global average pooling to one value per channel (flattens)
``flatten``    flatten the feature map
``fc``         ``fc: 256`` or ``{units: 256}``: hidden linear layer
=============  ==========================================================================

The builder flattens automatically before the first ``fc`` / the head and appends the final
``Linear(features, num_classes)`` named ``head``. Module names are ``<type><index>`` so a printed
model maps line by line onto the spec.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ferstudy.errors import UserError

BACKBONES = ("resnet18", "vgg11_bn")
IMAGENET = "imagenet"  # `pretrained: imagenet`: torchvision's ImageNet weights (models.imagenet_state_dict)
LAYER_TYPES = (
    "conv",
    "batchnorm",
    "relu",
    "leakyrelu",
    "elu",
    "gelu",
    "maxpool",
    "avgpool",
    "dropout",
    "gap",
    "flatten",
    "fc",
)
_CONV_OPTIONS = ("filters", "kernel", "stride", "padding", "bias")
# Widths that size memory: a layer list (or a model file's spec) of `fc: 3000000000` must fail here,
# in one line, not in the allocator (the config schema's blocks have the same maxima).
MAX_FILTERS = 4096
MAX_UNITS = 65536
MAX_KERNEL = 48  # no window (or padding) larger than the 48x48 face
MAX_PARAMETERS = 200_000_000  # 0.8 GB of fp32 weights, several times that in training; the study's are < 20 M
_POOL_OPTIONS = ("size", "stride", "padding")


# ----------------------------------------------------------------------------- spec checking
@dataclass
class LayerPlan:
    """One resolved layer: module type name, constructor arguments, and the shape after it."""

    index: int | None  # position in the spec; None for layers the builder adds
    name: str  # module name in the Sequential
    kind: str  # layer type (see LAYER_TYPES) or "head"
    args: dict = field(default_factory=dict)
    shape: tuple = ()  # (C, H, W) or (F,) after this layer


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _split_item(i, item):
    """A list item -> (where, type, value); `where` prefixes every message about it."""
    where = f"layer {i} ({item!r})"
    if isinstance(item, str):
        kind, value = item, None
    elif isinstance(item, dict):
        if len(item) != 1:
            raise UserError(
                f"{where}: a layer is a mapping with exactly one key (its type), "
                f"got {len(item)} keys; check the indentation of this list item"
            )
        ((kind, value),) = item.items()
    else:
        raise UserError(f"{where}: a layer must be a type name or a one-key mapping, e.g. `- relu` or `- conv: 32`")
    if kind not in LAYER_TYPES:
        raise UserError(f"{where}: unknown layer type {kind!r} (expected {', '.join(LAYER_TYPES)})")
    return where, kind, value


def _options(where, value, allowed, scalar_key):
    """Normalise a layer's value to a dict of options; a bare scalar means `scalar_key`."""
    if value is None:
        return {}
    if isinstance(value, dict):
        for k in value:
            if k not in allowed:
                expected = ", ".join(allowed) if allowed else "no options"
                raise UserError(f"{where}: unknown option {k!r} (expected {expected})")
        return dict(value)
    if scalar_key is None:
        raise UserError(f"{where}: this layer takes no value (write it as a bare name)")
    return {scalar_key: value}


def _int_option(where, opts, key, default, minimum, maximum=None):
    v = opts.get(key, default)
    if v is None:
        raise UserError(f"{where}: missing {key!r}")
    if not _is_int(v) or v < minimum or (maximum is not None and v > maximum):
        bounds = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise UserError(f"{where}: {key} must be an integer {bounds}, got {v!r}")
    return v


def _out_size(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


@dataclass
class _Tensor:
    """The tensor between layers while planning: a (c, h, w) map until `flat` features."""

    c: int
    h: int
    w: int
    flat: int | None = None  # feature count once the tensor is 2-D
    flattened_at: int | None = None
    seen_conv: bool = False

    def shape(self):
        return (self.flat,) if self.flat is not None else (self.c, self.h, self.w)

    def need_map(self, where, kind):
        if self.flat is not None:
            raise UserError(
                f"{where}: {kind} needs a feature map, but the tensor was already "
                f"flattened at layer {self.flattened_at}; move it before the gap/flatten/fc"
            )


def _conv_padding(where, padding, kernel, stride):
    """An int, or "same" for an even kernel at stride 1 (torch pads that asymmetrically)."""
    if padding == "same":
        if kernel % 2 == 0 and stride > 1:
            raise UserError(f"{where}: padding 'same' with an even kernel needs stride 1; give an integer padding")
        return "same" if kernel % 2 == 0 else kernel // 2
    if padding == "valid":
        return 0
    if _is_int(padding) and 0 <= padding <= MAX_KERNEL:
        return padding
    raise UserError(f"{where}: padding must be 'same', 'valid' or an integer from 0 to {MAX_KERNEL}, got {padding!r}")


def _plan_conv(where, kind, value, t, i):
    t.need_map(where, "conv")
    o = _options(where, value, _CONV_OPTIONS, "filters")
    filters = _int_option(where, o, "filters", None, 1, MAX_FILTERS)
    kernel = _int_option(where, o, "kernel", 3, 1, MAX_KERNEL)
    stride = _int_option(where, o, "stride", 1, 1, MAX_KERNEL)
    bias = o.get("bias", True)
    if not isinstance(bias, bool):
        raise UserError(f"{where}: bias must be true or false, got {bias!r}")
    pad = _conv_padding(where, o.get("padding", "same"), kernel, stride)
    args = dict(in_channels=t.c, out_channels=filters, kernel_size=kernel, stride=stride, padding=pad, bias=bias)
    if pad != "same":  # "same" (even kernel, stride 1) keeps the size
        t.h, t.w = _out_size(t.h, kernel, stride, pad), _out_size(t.w, kernel, stride, pad)
    t.c, t.seen_conv = filters, True
    return args


def _plan_pool(where, kind, value, t, i):
    t.need_map(where, kind)
    o = _options(where, value, _POOL_OPTIONS, "size")
    size = _int_option(where, o, "size", None, 1, MAX_KERNEL)
    stride = _int_option(where, o, "stride", size, 1, MAX_KERNEL)
    padding = _int_option(where, o, "padding", 0, 0)
    if padding > size // 2:
        raise UserError(f"{where}: padding must be at most size // 2 = {size // 2}")
    t.h, t.w = _out_size(t.h, size, stride, padding), _out_size(t.w, size, stride, padding)
    return dict(kernel_size=size, stride=stride, padding=padding)


def _plan_batchnorm(where, kind, value, t, i):
    _options(where, value, (), None)
    return dict(num_features=t.flat if t.flat is not None else t.c)


def _plan_activation(where, kind, value, t, i):
    if kind != "leakyrelu":
        _options(where, value, (), None)
        return {}
    slope = _options(where, value, ("slope",), "slope").get("slope", 0.01)
    if not _is_number(slope) or slope < 0:
        raise UserError(f"{where}: slope must be a number >= 0, got {slope!r}")
    return dict(negative_slope=float(slope))


def _plan_dropout(where, kind, value, t, i):
    p = _options(where, value, ("p",), "p").get("p")
    if p is None:
        raise UserError(f"{where}: give the drop probability, e.g. `dropout: 0.25`")
    if not _is_number(p) or not 0 <= p < 1:
        raise UserError(f"{where}: p must be a number in [0, 1), got {p!r}")
    return dict(p=float(p))


def _plan_flatten(where, kind, value, t, i):
    _options(where, value, (), None)
    t.need_map(where, kind)
    t.flat, t.flattened_at = (t.c if kind == "gap" else t.c * t.h * t.w), i
    return {}


def _plan_fc(where, kind, value, t, i, plan):
    units = _int_option(where, _options(where, value, ("units",), "units"), "units", None, 1, MAX_UNITS)
    if t.flat is None:
        if not t.seen_conv:
            raise UserError(
                f"{where}: fc before any conv layer; add conv layers first (or put `flatten` before it for a pixel MLP)"
            )
        plan.append(LayerPlan(None, f"flatten{i}", "flatten", {}, (t.c * t.h * t.w,)))
        t.flat, t.flattened_at = t.c * t.h * t.w, i
    args = dict(in_features=t.flat, out_features=units)
    t.flat = units
    return args


_PLANNERS = {
    "conv": _plan_conv,
    "maxpool": _plan_pool,
    "avgpool": _plan_pool,
    "batchnorm": _plan_batchnorm,
    "relu": _plan_activation,
    "elu": _plan_activation,
    "gelu": _plan_activation,
    "leakyrelu": _plan_activation,
    "dropout": _plan_dropout,
    "gap": _plan_flatten,
    "flatten": _plan_flatten,
}


def plan_layers(layers: Any, in_channels: int = 1, input_size: int = 48) -> list[LayerPlan]:
    """Check a layer list and compute every shape, without torch. Returns a list of LayerPlan."""
    if not isinstance(layers, list) or not layers:
        raise UserError("layers must be a non-empty list of layers")
    t = _Tensor(in_channels, input_size, input_size)
    plan: list[LayerPlan]
    plan, weights = [], 0
    for i, item in enumerate(layers):
        where, kind, value = _split_item(i, item)
        if kind == "fc":  # may add the flatten the spec left out
            args = _plan_fc(where, kind, value, t, i, plan)
        else:
            args = _PLANNERS[kind](where, kind, value, t, i)
        weights += _weight_count(kind, args)
        if weights > MAX_PARAMETERS:
            raise UserError(
                f"{where}: the network has {weights:,} weights up to here, more than "
                f"{MAX_PARAMETERS:,} (a width or an fc after a large feature map)"
            )
        if t.flat is None and (t.h < 1 or t.w < 1):
            raise UserError(
                f"after layer {i} ({item!r}) the feature map is {max(t.h, 0)}x{max(t.w, 0)}: "
                f"too much pooling or striding for {input_size}x{input_size} input"
            )
        plan.append(LayerPlan(i, f"{kind}{i}", kind, args, t.shape()))
    return plan


def _weight_count(kind, args):
    """Weights of a conv or fc layer (the others have none worth counting for the cap)."""
    if kind == "conv":
        return args["in_channels"] * args["out_channels"] * args["kernel_size"] ** 2
    if kind == "fc":
        return args["in_features"] * args["out_features"]
    return 0


def _check_top(spec):
    if not isinstance(spec, dict):
        raise UserError(f"an architecture must be a mapping with `layers` or `backbone`, got {spec!r}")
    if ("layers" in spec) == ("backbone" in spec):
        raise UserError("an architecture needs exactly one of `layers` or `backbone`")
    allowed = ("layers",) if "layers" in spec else ("backbone", "pretrained")
    for k in spec:
        if k not in allowed:
            raise UserError(f"unknown architecture key {k!r} (expected {', '.join(allowed)})")


def _check_backbone(spec, input_size):
    name = spec["backbone"]
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r} (expected {', '.join(BACKBONES)})")
    pretrained = spec.get("pretrained")
    if pretrained is not None and pretrained != IMAGENET:
        if not isinstance(pretrained, (str, os.PathLike)):
            raise UserError(
                f"pretrained must be null or a path to a state dict file (or {IMAGENET}: "
                f"torchvision's ImageNet weights), got {pretrained!r}"
            )
        if not os.path.isfile(pretrained):
            raise UserError(
                f"pretrained weights file {str(pretrained)!r} not found "
                f"(download it yourself; ferstudy never downloads a file you name)"
            )
    minimum = 32 if name == "vgg11_bn" else 8
    if input_size < minimum:
        raise UserError(f"backbone {name} needs input of at least {minimum}x{minimum}, got {input_size}x{input_size}")


def validate_spec(spec: Any, input_size: int = 48, in_channels: int = 1) -> None:
    """Raise UserError for a bad spec (same messages as build_model); allocates no weights."""
    _check_top(spec)
    if "layers" in spec:
        plan_layers(spec["layers"], in_channels, input_size)
    else:
        _check_backbone(spec, input_size)
