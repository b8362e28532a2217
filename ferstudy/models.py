"""Architecture spec -> `torch.nn.Module`, torchvision backbones, parameter and FLOP counts.

A spec is either ``{"layers": [...]}`` (see docs/DESIGN.md, "Architecture spec") or
``{"backbone": "resnet18" | "vgg11_bn", "pretrained": None | "path/to/weights.pth"}``.

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

import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from torch import nn

from ferstudy.errors import UserError

BACKBONES = ("resnet18", "vgg11_bn")
LAYER_TYPES = ("conv", "batchnorm", "relu", "leakyrelu", "elu", "gelu", "maxpool", "avgpool",
               "dropout", "gap", "flatten", "fc")
_CONV_OPTIONS = ("filters", "kernel", "stride", "padding", "bias")
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


class GlobalAvgPool(nn.Module):
    """Average over height and width: (B, C, H, W) -> (B, C)."""

    def forward(self, x):
        return x.mean(dim=(2, 3))


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
            raise UserError(f"{where}: a layer is a mapping with exactly one key (its type), "
                            f"got {len(item)} keys; check the indentation of this list item")
        (kind, value), = item.items()
    else:
        raise UserError(f"{where}: a layer must be a type name or a one-key mapping, "
                        f"e.g. `- relu` or `- conv: 32`")
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


def _int_option(where, opts, key, default, minimum):
    v = opts.get(key, default)
    if v is None:
        raise UserError(f"{where}: missing {key!r}")
    if not _is_int(v) or v < minimum:
        raise UserError(f"{where}: {key} must be an integer >= {minimum}, got {v!r}")
    return v


def _out_size(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


def plan_layers(layers, in_channels=1, input_size=48):
    """Check a layer list and compute every shape, without torch. Returns a list of LayerPlan."""
    if not isinstance(layers, list) or not layers:
        raise UserError("layers must be a non-empty list of layers")
    c, h, w = in_channels, input_size, input_size
    flat = None  # feature count once the tensor is 2-D
    flattened_at = None
    seen_conv = False
    plan = []

    def need_map(where, kind):
        if flat is not None:
            raise UserError(f"{where}: {kind} needs a feature map, but the tensor was already "
                            f"flattened at layer {flattened_at}; move it before the gap/flatten/fc")

    def shape():
        return (flat,) if flat is not None else (c, h, w)

    for i, item in enumerate(layers):
        where, kind, value = _split_item(i, item)
        args = {}
        if kind == "conv":
            need_map(where, "conv")
            o = _options(where, value, _CONV_OPTIONS, "filters")
            filters = _int_option(where, o, "filters", None, 1)
            kernel = _int_option(where, o, "kernel", 3, 1)
            stride = _int_option(where, o, "stride", 1, 1)
            bias = o.get("bias", True)
            if not isinstance(bias, bool):
                raise UserError(f"{where}: bias must be true or false, got {bias!r}")
            padding = o.get("padding", "same")
            if padding == "same":
                if kernel % 2 == 0 and stride > 1:
                    raise UserError(f"{where}: padding 'same' with an even kernel needs stride 1; "
                                    f"give an integer padding")
                pad = "same" if kernel % 2 == 0 else kernel // 2
            elif padding == "valid":
                pad = 0
            elif _is_int(padding) and padding >= 0:
                pad = padding
            else:
                raise UserError(f"{where}: padding must be 'same', 'valid' or an integer >= 0, "
                                f"got {padding!r}")
            if pad == "same":  # even kernel, stride 1: torch pads asymmetrically, size unchanged
                h2, w2 = h, w
            else:
                h2, w2 = _out_size(h, kernel, stride, pad), _out_size(w, kernel, stride, pad)
            args = dict(in_channels=c, out_channels=filters, kernel_size=kernel, stride=stride,
                        padding=pad, bias=bias)
            c, h, w = filters, h2, w2
            seen_conv = True
        elif kind in ("maxpool", "avgpool"):
            need_map(where, kind)
            o = _options(where, value, _POOL_OPTIONS, "size")
            size = _int_option(where, o, "size", None, 1)
            stride = _int_option(where, o, "stride", size, 1)
            padding = _int_option(where, o, "padding", 0, 0)
            if padding > size // 2:
                raise UserError(f"{where}: padding must be at most size // 2 = {size // 2}")
            args = dict(kernel_size=size, stride=stride, padding=padding)
            h, w = _out_size(h, size, stride, padding), _out_size(w, size, stride, padding)
        elif kind == "batchnorm":
            _options(where, value, (), None)
            args = dict(num_features=flat if flat is not None else c)
        elif kind in ("relu", "elu", "gelu"):
            _options(where, value, (), None)
        elif kind == "leakyrelu":
            o = _options(where, value, ("slope",), "slope")
            slope = o.get("slope", 0.01)
            if not _is_number(slope) or slope < 0:
                raise UserError(f"{where}: slope must be a number >= 0, got {slope!r}")
            args = dict(negative_slope=float(slope))
        elif kind == "dropout":
            o = _options(where, value, ("p",), "p")
            p = o.get("p")
            if p is None:
                raise UserError(f"{where}: give the drop probability, e.g. `dropout: 0.25`")
            if not _is_number(p) or not 0 <= p < 1:
                raise UserError(f"{where}: p must be a number in [0, 1), got {p!r}")
            args = dict(p=float(p))
        elif kind in ("gap", "flatten"):
            _options(where, value, (), None)
            need_map(where, kind)
            flat = c if kind == "gap" else c * h * w
            flattened_at = i
        elif kind == "fc":
            o = _options(where, value, ("units",), "units")
            units = _int_option(where, o, "units", None, 1)
            if flat is None:
                if not seen_conv:
                    raise UserError(f"{where}: fc before any conv layer; add conv layers first "
                                    f"(or put `flatten` before it for a pixel MLP)")
                plan.append(LayerPlan(None, f"flatten{i}", "flatten", {}, (c * h * w,)))
                flat, flattened_at = c * h * w, i
            args = dict(in_features=flat, out_features=units)
            flat = units
        if flat is None and (h < 1 or w < 1):
            raise UserError(f"after layer {i} ({item!r}) the feature map is {max(h, 0)}x{max(w, 0)}: "
                            f"too much pooling or striding for {input_size}x{input_size} input")
        plan.append(LayerPlan(i, f"{kind}{i}", kind, args, shape()))
    return plan


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
    if pretrained is not None:
        if not isinstance(pretrained, (str, os.PathLike)):
            raise UserError(f"pretrained must be null or a path to a state dict file, got {pretrained!r}")
        if not os.path.isfile(pretrained):
            raise UserError(f"pretrained weights file {str(pretrained)!r} not found "
                            f"(download it yourself; ferstudy never downloads)")
    minimum = 32 if name == "vgg11_bn" else 8
    if input_size < minimum:
        raise UserError(f"backbone {name} needs input of at least {minimum}x{minimum}, "
                        f"got {input_size}x{input_size}")


def validate_spec(spec, input_size=48, in_channels=1):
    """Raise UserError for a bad spec (same messages as build_model); allocates no weights."""
    _check_top(spec)
    if "layers" in spec:
        plan_layers(spec["layers"], in_channels, input_size)
    else:
        _check_backbone(spec, input_size)


# ----------------------------------------------------------------------------- building
_MODULES = {
    "relu": lambda a: nn.ReLU(),
    "elu": lambda a: nn.ELU(),
    "gelu": lambda a: nn.GELU(),
    "leakyrelu": lambda a: nn.LeakyReLU(**a),
    "maxpool": lambda a: nn.MaxPool2d(**a),
    "avgpool": lambda a: nn.AvgPool2d(**a),
    "dropout": lambda a: nn.Dropout(**a),
    "gap": lambda a: GlobalAvgPool(),
    "flatten": lambda a: nn.Flatten(),
    "fc": lambda a: nn.Linear(**a),
    "head": lambda a: nn.Linear(**a),
    "conv": lambda a: nn.Conv2d(**a),
}


def init_weights(model):
    """Kaiming-normal convs (fan_in: keeps the forward signal's scale, which nets without batch
    norm need to train at all), BN 1/0, linear N(0, 0.01)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def build_model(spec, num_classes=7, in_channels=1, input_size=48):
    """Build the model for `spec`; deterministic given torch.manual_seed.

    `input_size` is the side of the square images the model will see (the crop size when
    augmentation crops); it only matters for shape checks and for the flattened feature count.
    """
    _check_top(spec)
    if "backbone" in spec:
        _check_backbone(spec, input_size)
        return _build_backbone(spec["backbone"], spec.get("pretrained"), num_classes, in_channels)
    plan = plan_layers(spec["layers"], in_channels, input_size)
    last = plan[-1].shape
    if len(last) == 3:
        plan.append(LayerPlan(None, "flatten", "flatten", {}, (math.prod(last),)))
    plan.append(LayerPlan(None, "head", "head",
                          dict(in_features=plan[-1].shape[0], out_features=num_classes), (num_classes,)))
    modules = OrderedDict()
    for p in plan:
        if p.kind == "batchnorm":  # the shape after a batchnorm is the shape it sees
            module = (nn.BatchNorm1d if len(p.shape) == 1 else nn.BatchNorm2d)(**p.args)
        else:
            module = _MODULES[p.kind](p.args)
        modules[p.name] = module
    model = nn.Sequential(modules)
    init_weights(model)
    return model


# ----------------------------------------------------------------------------- backbones
class VGG11BN(nn.Module):
    """torchvision's vgg11_bn (same `features.*` names, so its state dicts load) for small grey
    images: `in_channels` first conv, global average pool and one Linear(512, classes) instead of
    the 7x7-pool + 4096-4096 classifier (which would need 224x224 input and 120M parameters)."""

    def __init__(self, in_channels=1, num_classes=7):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        self.features = make_layers(cfgs["A"], batch_norm=True)
        self.features[0] = nn.Conv2d(in_channels, 64, kernel_size=3, padding=1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(512, num_classes)
        init_weights(self)

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _build_backbone(name, pretrained, num_classes, in_channels):
    import torchvision

    if name == "resnet18":
        model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
        # CIFAR-style stem for small images: 3x3 stride-1 conv, no max pool (48x48 -> 6x6 at the end).
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        first_conv, classifier = "conv1", "fc"
    else:  # vgg11_bn: 5 max pools take 48x48 to 1x1; global average pool + one linear layer
        model = VGG11BN(in_channels, num_classes)
        first_conv, classifier = "features.0", "classifier"
    if pretrained is not None:
        load_pretrained(model, pretrained, first_conv, classifier)
    return model


def _area_matrix(k_in, k_out):
    """(k_out, k_in) area-resampling matrix: tap j of [j, j+1) splits over the output bins it
    overlaps (bins of width k_in / k_out); every column sums to 1, so sums are preserved."""
    r = k_in / k_out
    a = torch.zeros(k_out, k_in, dtype=torch.float64)
    for i in range(k_out):
        for j in range(k_in):
            a[i, j] = max(0.0, min(j + 1, (i + 1) * r) - max(j, i * r))
    return a


def adapt_first_conv(weight, out_shape):
    """ImageNet first-conv kernels (O, 3, k, k) -> `out_shape` (O, C, k', k').

    RGB kernels are summed (not averaged): a grey image fed as three equal channels gives the
    same response, so the activation scale the following batchnorm expects is kept. If the kernel
    size differs (resnet18's 7x7 stem vs our 3x3), each kernel is area-resampled keeping its sum:
    the same filter at the lower resolution of 48x48 faces.
    """
    o, c, kh, kw = out_shape
    w = weight.double()
    if w.shape[1] != c:
        w = w.sum(dim=1, keepdim=True).repeat(1, c, 1, 1) / c
    if tuple(w.shape[-2:]) != (kh, kw):
        w = torch.einsum("ih,jw,ochw->ocij", _area_matrix(w.shape[-2], kh), _area_matrix(w.shape[-1], kw), w)
    return w.to(weight.dtype)


def load_pretrained(model, path, first_conv, classifier):
    """Load an ImageNet-style state dict from `path` into an adapted backbone (in place).

    The first conv is adapted with `adapt_first_conv`; the classifier (`classifier.*` keys) is
    skipped and keeps its fresh init; every other tensor must match by name and shape.
    """
    path = str(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"pretrained weights file {path!r} not found "
                        f"(download it yourself; ferstudy never downloads)") from None
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise UserError(f"pretrained weights file {path!r} could not be read as a torch state dict: {e}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"pretrained weights file {path!r} does not hold a state dict")
    own = model.state_dict()
    weight_key = f"{first_conv}.weight"
    new = {}
    for k, v in state.items():
        if k == classifier or k.startswith(classifier + "."):
            continue
        if k not in own:
            raise UserError(f"pretrained weights file {path!r}: unexpected tensor {k!r} "
                            f"(is it a {type(model).__name__} state dict?)")
        if k == weight_key:
            v = adapt_first_conv(v, tuple(own[k].shape))
        if tuple(v.shape) != tuple(own[k].shape):
            raise UserError(f"pretrained weights file {path!r}: tensor {k!r} has shape "
                            f"{tuple(v.shape)}, the model needs {tuple(own[k].shape)}")
        new[k] = v
    missing = [k for k in own if k not in new and not (k == classifier or k.startswith(classifier + "."))]
    if missing:
        raise UserError(f"pretrained weights file {path!r} lacks {len(missing)} tensors, "
                        f"e.g. {missing[0]!r}")
    model.load_state_dict(new, strict=False)
    return model


# ----------------------------------------------------------------------------- cost
def count_parameters(model, trainable_only=False):
    """Number of parameters (all, or only those with requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def forward_flops(model, input_size=48, in_channels=None):
    """Forward FLOPs per image of conv and linear layers (a multiply-add counts 2 FLOPs).

    Counted with forward hooks on one dummy image, so it works for any model; biases, norms,
    activations and pooling are not counted.
    """
    if in_channels is None:
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        in_channels = first.in_channels if first is not None else 1
    total = [0]

    def conv_hook(m, inp, out):
        per_out = (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        total[0] += 2 * per_out * out[0].numel()

    def linear_hook(m, inp, out):
        total[0] += 2 * m.in_features * m.out_features * (out.numel() // out.shape[-1])  # batch is 1

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_channels, input_size, input_size, device=device, dtype=dtype))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return float(total[0])
