"""Batched augmentation of uint8 image tensors, evaluation crops and test-time augmentation.

Everything works on whole batches on the input's device (CPU or CUDA): no PIL, no per-image
Python loop. Randomness comes only from the `torch.Generator` passed in, so a training run is
reproducible and can resume mid-way (save and restore the generator's state).

Pipeline of `Augmenter` (each step skipped when its setting is 0 / false):

1. pixels -> [0, 1]; per-image brightness factor U(1-b, 1+b) then contrast factor U(1-c, 1+c)
   (blend with the image mean), clamped to [0, 1] like torchvision's ColorJitter.
2. normalise: (p - MEAN) / STD with MEAN = 0.5, STD = 0.25; 0 is now mid-grey, the value of
   everything outside the image below.
3. geometry, one batched op: a random `crop`x`crop` window of the image zero-padded by `pad`
   (mid-grey), mirrored with probability 0.5 if `flip`; and, if any of `rotate` (max degrees),
   `scale` (zoom U(1-s, 1+s)) or `translate` (shift U(-t, t) of the image side) is set, a random
   rotation/zoom/shift about the crop centre. Without affine parts this is one exact gather;
   with them, crop + flip + affine are one batched sampling grid + `F.grid_sample` (bilinear).
4. random erasing with probability `erase`: one rectangle per image (area 2-33 % of the crop,
   aspect ratio 0.3-3.3, as torchvision's RandomErasing) set to mid-grey (0).

Output: float32 (B, 1, crop, crop), contiguous (callers may convert to channels_last).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ferstudy.errors import UserError

MEAN = 0.5  # in [0, 1] pixel units: x_norm = (x / 255 - MEAN) / STD
STD = 0.25

DEFAULTS = {
    "crop": 48,
    "pad": 0,
    "flip": False,
    "rotate": 0.0,
    "scale": 0.0,
    "translate": 0.0,
    "erase": 0.0,
    "brightness": 0.0,
    "contrast": 0.0,
}
TTA_MODES = ("none", "flip", "tencrop")

# Columns of the one uniform draw per batch (fixed layout: a call always consumes B x _NDRAW).
_COLS = (
    "oy",
    "ox",
    "flip",
    "angle",
    "scale",
    "tx",
    "ty",
    "erase",
    "e_area",
    "e_ratio",
    "e_top",
    "e_left",
    "brightness",
    "contrast",
)
_NDRAW = len(_COLS)


def _as_batch(images):
    """(B, H, W) or (B, 1, H, W) uint8 (or float in 0-255) -> (B, 1, H, W)."""
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"expected images (B, H, W) or (B, 1, H, W), got {tuple(images.shape)}")
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"expected square images, got {tuple(images.shape)}")
    return images


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 / 0-255 pixels (any shape) -> float32 (x / 255 - MEAN) / STD."""
    return images.to(torch.float32, copy=True).mul_(1.0 / (255 * STD)).sub_(MEAN / STD)


def center_crop(images: torch.Tensor, crop: int) -> torch.Tensor:
    """Centre `crop`x`crop` window of (B, 1, S, S) or (B, S, S) images (same dtype, a view)."""
    images = _as_batch(images)
    size = images.shape[-1]
    if crop > size:
        raise ValueError(f"crop {crop} is larger than the images ({size})")
    o = (size - crop) // 2
    return images[..., o : o + crop, o : o + crop]


def eval_views(images: torch.Tensor, crop: int, tta: str = "none") -> torch.Tensor:
    """Evaluation views, float32 (V, B, 1, crop, crop), normalised; view 0 is the centre crop.

    tta "none": [centre] (V=1); "flip": [centre, mirrored centre] (V=2); "tencrop": [centre,
    top-left, top-right, bottom-left, bottom-right, then the same five mirrored] (V=10).
    The caller averages the softmax over V.
    """
    if tta not in TTA_MODES:
        raise UserError(f"unknown tta {tta!r} (expected {', '.join(TTA_MODES)})")
    images = _as_batch(images)
    size = images.shape[-1]
    if crop > size:
        raise ValueError(f"crop {crop} is larger than the images ({size})")
    x = normalize(images)
    c, m, e = (size - crop) // 2, 0, size - crop
    offsets = [(c, c)] if tta != "tencrop" else [(c, c), (m, m), (m, e), (e, m), (e, e)]
    views = [x[..., oy : oy + crop, ox : ox + crop] for oy, ox in offsets]
    if tta != "none":
        views += [v.flip(-1) for v in views]
    return torch.stack(views).contiguous()


def check_config(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """Validate an augmentation mapping and fill defaults; raises UserError naming the key."""
    cfg = {} if cfg is None else cfg
    if not isinstance(cfg, dict):
        raise UserError(f"augment must be a mapping, got {cfg!r}")
    out = dict(DEFAULTS)
    for k, v in cfg.items():
        if k == "enabled":
            if not isinstance(v, bool):
                raise UserError(f"augment: enabled must be true or false, got {v!r}")
            continue
        if k not in DEFAULTS:
            raise UserError(f"augment: unknown option {k!r} (expected enabled, {', '.join(DEFAULTS)})")
        if isinstance(v, bool) != (k == "flip") or not isinstance(v, (int, float)):
            kind = "true or false" if k == "flip" else "a number"
            raise UserError(f"augment: {k} must be {kind}, got {v!r}")
        out[k] = v
    limits = {
        "crop": (1, None),
        "pad": (0, None),
        "rotate": (0, 180),
        "scale": (0, 0.99),
        "translate": (0, 0.5),
        "erase": (0, 1),
        "brightness": (0, 1),
        "contrast": (0, 1),
    }
    for k, (lo, hi) in limits.items():
        v = out[k]
        if k in ("crop", "pad") and v != int(v):
            raise UserError(f"augment: {k} must be an integer, got {v!r}")
        if v < lo or (hi is not None and v > hi):
            rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise UserError(f"augment: {k} must be {rng}, got {v!r}")
    out["crop"], out["pad"] = int(out["crop"]), int(out["pad"])
    return out


class Augmenter:
    """Random training augmentation for batches of uint8 faces; see the module docstring.

    `Augmenter(cfg, enabled=True)`; `cfg` may hold `enabled: false`. Disabled, a call only
    centre-crops and normalises (and needs no generator). `aug(images, generator)` equals
    `aug.apply(images, aug.sample(len(images), generator))`.
    """

    def __init__(self, cfg: dict[str, Any] | None = None, enabled: bool = True) -> None:
        self.cfg = check_config(cfg)
        self.enabled = bool(enabled) and bool((cfg or {}).get("enabled", True))
        self.crop = self.cfg["crop"]
        c = self.cfg
        self.affine = c["rotate"] > 0 or c["scale"] > 0 or c["translate"] > 0

    def __repr__(self) -> str:
        on = ", ".join(f"{k}={v}" for k, v in self.cfg.items())
        return f"Augmenter({on}, enabled={self.enabled})"

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.enabled:
            return self.apply(images, None)
        if generator is None:
            raise ValueError("an enabled Augmenter needs a torch.Generator")
        return self.apply(images, self.sample(images.shape[0], generator))

    # -- randomness -------------------------------------------------------------------------
    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Draw per-image parameters: a dict of (B,) tensors on the generator's device."""
        u = torch.rand(batch_size, _NDRAW, generator=generator, device=generator.device)
        return dict(zip(_COLS, u.unbind(1)))

    # -- application ------------------------------------------------------------------------
    def apply(self, images: torch.Tensor, params: dict[str, torch.Tensor] | None) -> torch.Tensor:
        """Augment `images` with parameters from `sample` (None = centre crop only)."""
        images = _as_batch(images)
        size, crop, c = images.shape[-1], self.crop, self.cfg
        if crop > size + 2 * c["pad"]:
            raise ValueError(f"crop {crop} is larger than the (padded) images ({size} + 2 x {c['pad']})")
        if params is None and crop <= size:
            return normalize(center_crop(images, crop)).contiguous()
        if params is None:  # crop larger than the image: centre it on mid-grey padding
            return self._geometry(normalize(images), None).contiguous()
        p = params
        if any(v.device != images.device for v in p.values()):  # one host-to-device copy
            p = dict(zip(_COLS, torch.stack([p[k] for k in _COLS], 1).to(images.device).unbind(1)))
        b = images.shape[0]
        if c["brightness"] > 0 or c["contrast"] > 0:  # in [0, 1] pixel units, in place
            x = images.to(torch.float32, copy=True).mul_(1.0 / 255)
            if c["brightness"] > 0:
                f = _uniform(p["brightness"], 1 - c["brightness"], 1 + c["brightness"]).view(b, 1, 1, 1)
                x.mul_(f).clamp_(max=1)
            if c["contrast"] > 0:
                f = _uniform(p["contrast"], 1 - c["contrast"], 1 + c["contrast"]).view(b, 1, 1, 1)
                mean = x.mean(dim=(1, 2, 3), keepdim=True)
                x.mul_(f).add_(mean * (1 - f)).clamp_(0, 1)
            x.sub_(MEAN).mul_(1.0 / STD)
        else:
            x = normalize(images)
        x = self._geometry(x, p)  # 0 = mid-grey fills padding and outside-the-image
        if c["erase"] > 0:
            x = self._erase(x, p)
        return x.contiguous()

    def _geometry(self, x, p):
        """Crop (+ flip, + affine) of normalised floats (B, 1, S, S) -> (B, 1, crop, crop)."""
        b, size, crop, pad = x.shape[0], x.shape[-1], self.crop, self.cfg["pad"]
        span = size + 2 * pad - crop  # offsets in padded coordinates are 0..span
        if p is None:
            oy = ox = torch.full((b,), span // 2, device=x.device)
            flip = torch.zeros(b, dtype=torch.bool, device=x.device)
        else:
            oy = _randint(p["oy"], span + 1)
            ox = _randint(p["ox"], span + 1)
            flip = (p["flip"] < 0.5) if self.cfg["flip"] else torch.zeros(b, dtype=torch.bool, device=x.device)
        if p is not None and self.affine:
            return self._affine(x, p, oy - pad, ox - pad, flip)
        if pad:
            x = F.pad(x, (pad, pad, pad, pad))  # zeros = mid-grey
        if self.cfg["flip"] and p is not None:
            # the mirrored window at ox of an image is the window at span - ox of its mirror
            x = torch.cat([x, x.flip(-1)])
            ox = torch.where(flip, span - ox, ox)
            which = torch.arange(b, device=x.device) + b * flip.long()
        else:
            which = torch.arange(b, device=x.device)
        windows = x.unfold(2, crop, 1).unfold(3, crop, 1)  # (B', 1, span+1, span+1, crop, crop) view
        return windows[which, :, oy, ox]  # one gather: (B, 1, crop, crop)

    def _affine(self, x, p, oy, ox, flip):
        """One batched affine sampling grid + grid_sample: crop, flip, rotation, zoom and shift
        about the crop centre (the grid is built by broadcasting: F.affine_grid's batched matmul
        is 2x slower than grid_sample itself on CPU)."""
        b, size, crop, c = x.shape[0], x.shape[-1], self.crop, self.cfg
        angle = _uniform(p["angle"], -c["rotate"], c["rotate"]) * (math.pi / 180)
        zoom = _uniform(p["scale"], 1 - c["scale"], 1 + c["scale"])
        f = torch.where(flip, -1.0, 1.0)  # -1 mirrors
        k = crop / size / zoom
        cos, sin = torch.cos(angle) * k, torch.sin(angle) * k
        # Output pixel (i, j) sits at normalised (xo, yo) = ((2j+1)/crop - 1, (2i+1)/crop - 1); it
        # samples source pixel u = cx + crop/2 * (cos*f*xo - sin*yo) / zoom (v likewise), with
        # (cx, cy) the crop centre plus the shift, i.e. grid_sample's normalised (2u + 1) / size - 1.
        cx = ox + (crop - 1) / 2 + _uniform(p["tx"], -c["translate"], c["translate"]) * size
        cy = oy + (crop - 1) / 2 + _uniform(p["ty"], -c["translate"], c["translate"]) * size
        o = (torch.arange(crop, device=x.device, dtype=x.dtype) * 2 + 1) / crop - 1
        col, row = o.view(1, 1, crop), o.view(1, crop, 1)
        grid = torch.empty(b, crop, crop, 2, device=x.device, dtype=x.dtype)
        torch.add(
            (cos * f).view(b, 1, 1) * col + ((2 * cx + 1) / size - 1).view(b, 1, 1),
            -sin.view(b, 1, 1) * row,
            out=grid[..., 0],
        )
        torch.add(
            (sin * f).view(b, 1, 1) * col,
            cos.view(b, 1, 1) * row + ((2 * cy + 1) / size - 1).view(b, 1, 1),
            out=grid[..., 1],
        )
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _erase(self, x, p):
        crop = x.shape[-1]
        area = _uniform(p["e_area"], 0.02, 0.33) * crop * crop
        ratio = torch.exp(_uniform(p["e_ratio"], math.log(0.3), math.log(3.3)))
        h = torch.sqrt(area * ratio).round().clamp(1, crop).long()
        w = torch.sqrt(area / ratio).round().clamp(1, crop).long()
        top = _randint(p["e_top"], crop - h + 1)
        left = _randint(p["e_left"], crop - w + 1)
        ar = torch.arange(crop, device=x.device)
        on = (p["erase"] < self.cfg["erase"])[:, None]
        rows = (ar >= top[:, None]) & (ar < (top + h)[:, None]) & on  # (B, crop)
        cols = (ar >= left[:, None]) & (ar < (left + w)[:, None])
        return x.masked_fill_((rows[:, :, None] & cols[:, None, :]).unsqueeze(1), 0.0)


def _uniform(u, lo, hi):
    return lo + (hi - lo) * u


def _randint(u, n):
    """Uniform in [0, u) -> integers 0..n-1 (n may be a tensor)."""
    i = (u * n).long()
    return i.clamp_(max=n - 1) if isinstance(n, int) else torch.minimum(i, n - 1)
