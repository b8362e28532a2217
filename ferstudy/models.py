"""Architecture spec -> `torch.nn.Module`, torchvision backbones, parameter and FLOP counts.

A spec is either ``{"layers": [...]}`` or ``{"backbone": "resnet18" | "vgg11_bn", "pretrained":
None | "imagenet" | "path/to/weights.pth"}`` (`imagenet`: torchvision's ImageNet weights, read from
the torch cache and fetched into it the first time; see `imagenet_state_dict`). The layer types,
their options and the checks live in
`ferstudy.spec` (torch-free, shared with config validation); this module turns the checked
plan into modules named ``<type><index>``, so a printed model maps line by line onto the spec,
and appends the final ``Linear(features, num_classes)`` named ``head``.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import torch
from torch import nn

from ferstudy.errors import UserError
from ferstudy.probe import dummy_forward
from ferstudy.spec import (
    IMAGENET,
    LayerPlan,
    _check_backbone,
    _check_top,
    plan_layers,
)

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

log = logging.getLogger("ferstudy.models")


class GlobalAvgPool(nn.Module):
    """Average over height and width: (B, C, H, W) -> (B, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


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


def init_weights(model: nn.Module) -> None:
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


def build_model(
    spec: dict[str, Any], num_classes: int = 7, in_channels: int = 1, input_size: int = 48, weights: bool = True
) -> nn.Module:
    """Build the model for `spec`; deterministic given torch.manual_seed.

    `input_size` is the side of the square images the model will see (the crop size when
    augmentation crops); it only matters for shape checks and for the flattened feature count.
    `weights=False` leaves a backbone's `pretrained` weights unread (the same network, freshly
    initialised): for a model whose own state dict is loaded next, and for cost measurements.
    """
    _check_top(spec)
    if "backbone" in spec:
        if not weights:
            spec = {**spec, "pretrained": None}
        _check_backbone(spec, input_size)
        return _build_backbone(spec["backbone"], spec.get("pretrained"), num_classes, in_channels)
    plan = plan_layers(spec["layers"], in_channels, input_size)
    last = plan[-1].shape
    if len(last) == 3:
        plan.append(LayerPlan(None, "flatten", "flatten", {}, (math.prod(last),)))
    plan.append(
        LayerPlan(None, "head", "head", dict(in_features=plan[-1].shape[0], out_features=num_classes), (num_classes,))
    )
    modules = OrderedDict()
    for p in plan:
        if p.kind == "batchnorm":  # the shape after a batchnorm is the shape it sees
            module: nn.Module = (nn.BatchNorm1d if len(p.shape) == 1 else nn.BatchNorm2d)(**p.args)
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

    def __init__(self, in_channels: int = 1, num_classes: int = 7) -> None:
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        self.features = make_layers(cfgs["A"], batch_norm=True)
        self.features[0] = nn.Conv2d(in_channels, 64, kernel_size=3, padding=1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(512, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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
        load_pretrained(model, pretrained, first_conv, classifier, backbone=name)
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


def adapt_first_conv(weight: torch.Tensor, out_shape: tuple[int, ...]) -> torch.Tensor:
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


# torchvision's ImageNet weights of each backbone (`pretrained: imagenet`).
#
# Input contract: a pretrained backbone sees what every network here sees, a 1x48x48 face (the
# training crop, 44) normalised as (x / 255 - 0.5) / 0.25; no resize to 224, no ImageNet mean/std.
# Through ImageNet's normalisation the same grey face, fed as three equal channels, would be
# (x / 255 - m_c) / s_c with m = 0.485, 0.456, 0.406 and s = 0.229, 0.224, 0.225: the same image
# up to a scale (4.0 against 4.4) and an offset (0.5 against 0.45). Summing the RGB kernels gives
# the response to that grey face; both backbones put a batch norm right after their first conv,
# which in training normalises each channel by its batch statistics (so the scale and offset do
# not reach the next layer, up to the zero padding at the border), and fine-tuning re-estimates
# its running statistics. Keeping 48x48 keeps the from-scratch twin's layout and compute (the
# resnet18 stem is the 3x3 stride-1 one, its 7x7 kernels resampled by `adapt_first_conv`), so the
# comparison changes one thing, the initial weights. The price: ImageNet's filters were learned on
# objects at 224x224, and a 44-pixel face shows its structures about 5x smaller.
IMAGENET_WEIGHTS = {"resnet18": "ResNet18_Weights", "vgg11_bn": "VGG11_BN_Weights"}
DOWNLOAD_TIMEOUT_S = 60  # per socket operation: an offline machine fails in seconds, a firewalled one in a minute


def imagenet_weights(name: str) -> WeightsEnum:
    """torchvision's `IMAGENET1K_V1` weights entry for backbone `name` (its url names the file)."""
    import torchvision

    return getattr(torchvision.models, IMAGENET_WEIGHTS[name]).IMAGENET1K_V1


def imagenet_cache_file(name: str) -> tuple[str, Path]:
    """(url, path) of backbone `name`'s ImageNet weights: where torchvision's weights API reads
    them, `$TORCH_HOME/hub/checkpoints/<the file the url ends with>` (TORCH_HOME: ~/.cache/torch)."""
    url = imagenet_weights(name).url
    return url, Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def imagenet_state_dict(name: str) -> tuple[dict[str, Any], Path]:
    """(state dict, file) of torchvision's ImageNet weights for backbone `name`, through
    torchvision's weights API (`weights.get_state_dict`): read from the torch cache, downloaded
    into it the first time (hash-checked, read as data only). When the file is absent and cannot
    be fetched (offline, a cluster node without internet): one UserError line naming the url and
    the exact path to put the file at."""
    url, path = imagenet_cache_file(name)
    present = path.is_file()
    if not present:
        log.info("downloading torchvision's ImageNet weights for %s: %s -> %s", name, url, path)
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        state = imagenet_weights(name).get_state_dict(
            map_location="cpu", progress=False, check_hash=True, weights_only=True
        )
    except Exception as e:  # noqa: BLE001 - no network, a refused url, a bad hash, a broken file
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        if present:
            raise UserError(
                f"pretrained: imagenet: torchvision's weights file {str(path)!r} could not be read "
                f"({reason}); delete it to fetch it again from {url}"
            ) from None
        raise UserError(
            f"pretrained: imagenet needs torchvision's ImageNet weights for {name}, file "
            f"{path.name}, which is not in the torch cache and could not be downloaded ({reason}): "
            f"fetch {url} and put it at {path} (the cache is $TORCH_HOME/hub/checkpoints; "
            f"TORCH_HOME defaults to ~/.cache/torch)"
        ) from None
    finally:
        socket.setdefaulttimeout(old_timeout)
    log.info("pretrained: imagenet: %s starts from torchvision's weights %s", name, path)
    return state, path


def load_pretrained(
    model: nn.Module, path: Path | str, first_conv: str, classifier: str, backbone: str | None = None
) -> nn.Module:
    """Load an ImageNet-style state dict into an adapted backbone (in place): from the file `path`,
    or, for `path == "imagenet"`, torchvision's ImageNet weights of `backbone` (`imagenet_state_dict`).

    The first conv is adapted with `adapt_first_conv`; the classifier (`classifier.*` keys) is
    skipped and keeps its fresh init; every other tensor must match by name and shape.
    """
    if path == IMAGENET:
        if backbone is None:
            raise ValueError("load_pretrained: pretrained 'imagenet' needs the backbone's name")
        state, path = imagenet_state_dict(backbone)
        path = str(path)
    else:
        path = str(path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise UserError(
                f"pretrained weights file {path!r} not found "
                f"(download it yourself; ferstudy never downloads a file you name)"
            ) from None
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
            raise UserError(
                f"pretrained weights file {path!r}: unexpected tensor {k!r} "
                f"(is it a {type(model).__name__} state dict?)"
            )
        if k == weight_key:
            v = adapt_first_conv(v, tuple(own[k].shape))
        if tuple(v.shape) != tuple(own[k].shape):
            raise UserError(
                f"pretrained weights file {path!r}: tensor {k!r} has shape "
                f"{tuple(v.shape)}, the model needs {tuple(own[k].shape)}"
            )
        new[k] = v
    missing = [k for k in own if k not in new and not (k == classifier or k.startswith(classifier + "."))]
    if missing:
        raise UserError(f"pretrained weights file {path!r} lacks {len(missing)} tensors, e.g. {missing[0]!r}")
    model.load_state_dict(new, strict=False)
    return model


# ----------------------------------------------------------------------------- cost
def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def forward_flops(model: nn.Module, input_size: int = 48, in_channels: int | None = None) -> float:
    """Forward FLOPs per image of conv and linear layers (a multiply-add counts 2 FLOPs).

    Counted with forward hooks on one dummy image (`probe.dummy_forward`), so it works for any
    model; biases, norms, activations and pooling are not counted.
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

    hooks = [
        (m, conv_hook if isinstance(m, nn.Conv2d) else linear_hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    dummy_forward(model, hooks, input_size, in_channels)
    return float(total[0])
