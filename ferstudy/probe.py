"""Probing a torch model from outside, for the figures (ferstudy/figures/inside.py), the report's
look inside the final model (ferstudy/report/model_facts.py) and `models.forward_flops`: forward
hooks on one dummy image, feature-map taps, captured activations, Grad-CAM, the PublicTest faces
that are shown, and how much of a channel's variance the emotion explains (eta squared).

Layers are found generically (`nn.Conv2d` modules, feature maps by their output shapes), so this
works for the layer-list `nn.Sequential` models and for the torchvision backbones alike. Faces are
always PublicTest faces, picked with a seeded generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from . import CLASS_NAMES

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .data import FerData

PICK_SEED = 0  # seed of the faces the figures show and the report measures on
CHANNEL_FACES_PER_CLASS = 150  # PublicTest faces per emotion behind the channel-emotion figure and sentences


def dummy_forward(
    model: nn.Module, hooks: Sequence[tuple[nn.Module, Callable[..., Any]]], input_size: int, in_channels: int = 1
) -> None:
    """One all-zero image through `model` in eval mode, without gradients, with the forward hooks
    [(module, hook)] registered for that pass only; the model's train/eval mode is restored."""
    import torch

    handles = [m.register_forward_hook(hook) for m, hook in hooks]
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


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """[(name, nn.Conv2d)] in module order (the first is the input layer)."""
    from torch import nn

    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def first_layer_filters(model: nn.Module) -> tuple[str | None, np.ndarray]:
    """(layer name, kernels (out_channels, k, k) as numpy), input channels averaged."""
    convs = conv_layers(model)
    if not convs:
        return None, np.zeros((0, 0, 0))
    name, conv = convs[0]
    return name, conv.weight.detach().cpu().float().mean(dim=1).numpy()


def stage_taps(
    model: nn.Module, input_size: int, in_channels: int = 1, min_size: int = 2
) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    """Feature-map taps, one per spatial resolution, shallow to deep: [(name, module, (C, H, W))].

    For each resolution that a convolution outputs, the tap is the module whose output is the
    last one at that resolution in execution order: the post-activation output of a block before
    it is pooled or strided (`relu<i>` in layer lists, `layer1`..`layer4` in resnet18, the ReLUs
    of vgg11_bn). The last tap is thus the last conv layer's activation (not the pooled map after
    it). Maps smaller than `min_size` are skipped (nothing to see in 1x1).
    """
    import torch
    from torch import nn

    events, conv_sizes = [], set()

    def hook(module, inputs, output, name=None):
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            events.append((name, module, tuple(output.shape[1:])))
            if isinstance(module, nn.Conv2d):
                conv_sizes.add(tuple(output.shape[2:]))

    dummy_forward(
        model,
        [(m, lambda mod, i, o, name=name: hook(mod, i, o, name)) for name, m in model.named_modules() if name],
        input_size,
        in_channels,
    )
    taps = {}
    for name, module, shape in events:
        if min(shape[1:]) >= min_size and shape[1:] in conv_sizes:
            taps[shape[1:]] = (name, module, shape)
    return list(taps.values())


def capture(model: nn.Module, x: torch.Tensor, modules: Sequence[nn.Module]) -> tuple[list[Any], torch.Tensor]:
    """Outputs of `modules` for input x (no gradients): a list of tensors."""
    import torch

    out = [None] * len(modules)
    handles = [
        m.register_forward_hook(lambda mod, i, o, k=k: out.__setitem__(k, o.detach().clone()))
        for k, m in enumerate(modules)
    ]
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        for h in handles:
            h.remove()
    return out, logits


def grad_cam(
    model: nn.Module, x: torch.Tensor, targets: torch.Tensor | np.ndarray, module: nn.Module
) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM (Selvaraju et al. 2017) of class `targets` at `module`'s output.

    x: float (B, C, H, W) model input; targets: int (B,). Returns (maps (B, H, W) numpy in [0, 1],
    each scaled to its own max (all zero where no location supports the class), softmax (B, 7)).
    """
    import torch
    import torch.nn.functional as F

    model.eval()
    store: dict[str, torch.Tensor] = {}
    handle = module.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    try:
        with torch.enable_grad():
            logits = model(x)
            a = store["a"]
            score = logits.gather(1, torch.as_tensor(targets, device=logits.device).long()[:, None]).sum()
            (g,) = torch.autograd.grad(score, a)
    finally:
        handle.remove()
    with torch.no_grad():
        cam = F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1, keepdim=True))
        cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        cam = cam / cam.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
        return cam.clamp_(0, 1).cpu().numpy(), logits.softmax(1).cpu().numpy()


def model_input(images: np.ndarray, crop: int) -> torch.Tensor:
    """uint8 (B, 48, 48) numpy -> the normalised centre crop the model sees, float (B, 1, crop, crop)."""
    import torch

    from .augment import eval_views

    return eval_views(torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1), crop, "none")[0]


def pick_faces(data: FerData, per_class: int, seed: int = PICK_SEED) -> dict[int, np.ndarray]:
    """Seeded PublicTest indices, per emotion: {class: sorted array of up to `per_class` indices}."""
    rng = np.random.default_rng(seed)
    public = data.split == 1
    picks = {}
    for c in range(len(CLASS_NAMES)):
        pool = np.flatnonzero(public & (data.labels == c))
        picks[c] = np.sort(rng.choice(pool, size=min(per_class, len(pool)), replace=False)) if len(pool) else pool
    return picks


def channel_features(
    model: nn.Module, images: np.ndarray, crop: int, module: nn.Module, batch: int = 256
) -> np.ndarray:
    """Each image's spatial mean of every channel of `module`'s output: float64 (N, C)."""
    feats = []
    for s in range(0, len(images), batch):
        (a,), _ = capture(model, model_input(images[s : s + batch], crop), [module])
        feats.append(a.float().mean(dim=(2, 3)).cpu().numpy())
    return np.concatenate(feats).astype(np.float64)


def eta_squared(
    features: np.ndarray, labels: np.ndarray, n_classes: int = len(CLASS_NAMES)
) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: mean feature per class (n_classes, C) and the share of its variance the class explains."""
    f = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    grand = f.mean(axis=0)
    means = np.full((n_classes, f.shape[1]), np.nan)
    between = np.zeros(f.shape[1])
    for c in range(n_classes):
        sel = labels == c
        if sel.any():
            means[c] = f[sel].mean(axis=0)
            between += sel.sum() * (means[c] - grand) ** 2
    total = ((f - grand) ** 2).sum(axis=0)
    return means, np.divide(between, total, out=np.zeros_like(total), where=total > 0)


def channel_emotion_matrix(
    model: nn.Module, images: np.ndarray, labels: np.ndarray, crop: int, module: nn.Module, batch: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Mean activation per emotion of each channel of `module`'s output (spatial mean per image).

    Returns (means (7, C), selectivity (C,)): selectivity is the share of a channel's variance over
    images explained by the emotion (eta squared, 0-1). Emotions without images give NaN rows.
    """
    return eta_squared(channel_features(model, images, crop, module, batch), labels)
