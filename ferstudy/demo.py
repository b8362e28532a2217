"""Synthetic FER2013-format faces, so the pipeline runs without the real dataset.

Generative model, per image:
  1. Identity: face ellipse size, eye spacing, feature heights, skin tone, hair, background.
  2. Expression: each emotion has a mean vector of action parameters (brow raise, inner-brow
     raise, brow arch, eye openness, mouth width / curvature / opening / asymmetry, lip press,
     teeth, nose wrinkle, smile lines). An image takes neutral + intensity * (emotion - neutral)
     plus Gaussian jitter, so weak expressions drift toward neutral and neighbouring emotions
     (fear/surprise, angry/disgust, sad/neutral) overlap: learnable, but not trivially.
  3. Pose and imaging: rotation, translation, scale, directional light, contrast, noise.
Shapes are distance fields turned into coverage by a one-pixel linear ramp (anti-aliased),
evaluated in a face-centred frame for a batch of images at once with numpy.
"""

import gzip
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import CLASS_NAMES, IMAGE_SIZE, SPLIT_NAMES
from .io import atomic_path

# Rough FER2013 shape (happy common, disgust rare) but disgust kept learnable at ~6%.
DEFAULT_CLASS_WEIGHTS = (0.13, 0.06, 0.14, 0.22, 0.16, 0.12, 0.17)
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
HEADER = "emotion,pixels,Usage"

# Expression parameters in face-frame pixels (y grows downward; "raise" means up).
# Columns: brow_raise, brow_inner (inner ends up, <0: down), brow_arch, eye_open (half-height),
#          mouth_w (half-width), mouth_curve (>0: corners up), mouth_open, mouth_asym,
#          lip_press, teeth, wrinkle (nose / glabella), smile_lines
_PARAMS = (
    "brow_raise",
    "brow_inner",
    "brow_arch",
    "eye_open",
    "mouth_w",
    "mouth_curve",
    "mouth_open",
    "mouth_asym",
    "lip_press",
    "teeth",
    "wrinkle",
    "smile_lines",
)
_EXPRESSIONS = np.array(
    [
        # raise inner arch  eye   mw   curve open asym press teeth wrinkle smile
        [-1.3, -2.6, 0.3, 1.35, 5.0, -0.6, 0.0, 0.0, 1.0, 0.0, 0.8, 0.0],  # angry
        [-0.8, -1.2, 0.4, 1.0, 6.0, -1.0, 0.9, 2.2, 0.2, 0.4, 1.2, 0.3],  # disgust
        [1.8, 1.8, 0.5, 2.6, 7.5, -0.7, 2.2, 0.0, 0.0, 0.5, 0.2, 0.0],  # fear
        [0.2, 0.0, 0.6, 0.8, 7.5, 2.6, 1.3, 0.0, 0.0, 1.0, 0.0, 1.0],  # happy
        [0.3, 2.4, 0.2, 1.25, 5.5, -2.0, 0.0, 0.0, 0.3, 0.0, 0.0, 0.0],  # sad
        [3.0, 0.4, 1.5, 3.0, 3.6, 0.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # surprise
        [0.0, 0.0, 0.6, 1.6, 6.0, 0.0, 0.0, 0.0, 0.2, 0.0, 0.0, 0.0],  # neutral
    ],
    dtype=np.float32,
)
_NEUTRAL = _EXPRESSIONS[CLASS_NAMES.index("neutral")]
# Per-image jitter (standard deviation) of each expression parameter.
_JITTER = np.array([0.6, 0.6, 0.3, 0.3, 0.7, 0.5, 0.45, 0.3, 0.25, 0.25, 0.2, 0.2], dtype=np.float32)
_CHUNK = 64  # images rendered at once: arrays stay cache-sized (measured fastest)


def make_demo_faces(
    n_images: int = 3000, seed: int = 0, class_weights: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw `n_images` synthetic faces.

    Returns (images uint8 (N, 48, 48), labels uint8 (N,), usage str array (N,)), rows ordered
    Training, PublicTest, PrivateTest as in FER2013 and shuffled within each split.
    """
    rng = np.random.default_rng(seed)
    labels, split = _labels_and_splits(n_images, class_weights, rng)
    params = _sample_params(labels, rng)
    images = np.empty((n_images, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for start in range(0, n_images, _CHUNK):
        chunk = {k: v[start : start + _CHUNK] for k, v in params.items()}
        images[start : start + _CHUNK] = _render(chunk, rng)
    usage = np.array(SPLIT_NAMES, dtype=object)[split]
    return images, labels.astype(np.uint8), usage


def write_demo_csv(
    path: Path | str, n_images: int = 3000, seed: int = 0, class_weights: Sequence[float] | None = None
) -> Path:
    """Write a FER2013-format CSV (`.csv` or `.csv.gz`) atomically; same seed, same bytes."""
    images, labels, usage = make_demo_faces(n_images, seed, class_weights)
    text = _csv_text(images, labels, usage).encode("ascii")
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.name.endswith(".gz"):
            # mtime=0 and no file name in the header, or the bytes would change on every run.
            # Level 1: noisy pixels compress little better at 6 (-18%) and take 8x longer.
            with (
                open(tmp, "wb") as raw,
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=1) as gz,
            ):
                gz.write(text)
        else:
            Path(tmp).write_bytes(text)
    return path


def _csv_text(images, labels, usage):
    # A lookup table of the 256 decimal strings makes the join ~5x faster than str() per pixel.
    lut = np.array([str(i) for i in range(256)], dtype=object)
    flat = images.reshape(len(images), -1)
    lines = [HEADER]
    for label, pixels, use in zip(labels, flat, usage):
        lines.append(f"{label},{' '.join(lut[pixels])},{use}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# labels and splits


def _labels_and_splits(n_images, class_weights, rng):
    weights = np.asarray(DEFAULT_CLASS_WEIGHTS if class_weights is None else class_weights, dtype=float)
    if weights.shape != (len(CLASS_NAMES),) or not np.all(weights > 0):
        raise ValueError(f"class_weights must be {len(CLASS_NAMES)} positive numbers, got {class_weights!r}")
    counts = _largest_remainder(n_images, weights / weights.sum())
    if counts.min() < len(SPLIT_NAMES):
        raise ValueError(
            f"n_images={n_images} is too small: every class needs at least "
            f"{len(SPLIT_NAMES)} images to appear in every split"
        )
    labels, split = [], []
    for cls, n_cls in enumerate(counts):
        # Stratify per class so every split holds every class, at least one image each.
        n_test = [max(1, round(n_cls * f)) for f in SPLIT_FRACTIONS[1:]]
        sizes = [n_cls - sum(n_test)] + n_test
        for s, size in enumerate(sizes):
            labels += [cls] * size
            split += [s] * size
    labels, split = np.array(labels), np.array(split)
    # FER2013 lists Training rows first, then PublicTest, then PrivateTest.
    order = np.lexsort((rng.random(n_images), split))
    return labels[order], split[order]


def _largest_remainder(total, fractions):
    exact = total * fractions
    counts = np.floor(exact).astype(int)
    short = total - counts.sum()
    counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
    return counts


# ---------------------------------------------------------------------------------------------
# parameters


def _sample_params(labels, rng):
    n = len(labels)
    f32 = np.float32
    # Expression: scale the class's deviation from neutral, then jitter every parameter.
    intensity = np.clip(rng.normal(1.0, 0.25, n), 0.35, 1.5).astype(f32)[:, None]
    expr = _NEUTRAL + intensity * (_EXPRESSIONS[labels] - _NEUTRAL)
    expr = expr + _JITTER * rng.standard_normal((n, len(_PARAMS))).astype(f32)
    p = dict(zip(_PARAMS, expr.T))
    p["eye_open"] = np.clip(p["eye_open"], 0.45, None)
    p["mouth_w"] = np.clip(p["mouth_w"], 2.5, None)
    for k in ("mouth_open", "mouth_asym", "lip_press", "wrinkle", "smile_lines", "teeth"):
        p[k] = np.clip(p[k], 0.0, 1.0 if k in ("lip_press", "teeth") else None)

    def uni(lo, hi):
        return rng.uniform(lo, hi, n).astype(f32)

    p.update(
        # identity
        face_a=uni(15.5, 19.0),
        face_b=uni(20.5, 24.0),
        eye_x=uni(6.5, 8.3),
        eye_y=uni(-5.0, -3.0),
        brow_gap=uni(3.8, 5.0),
        mouth_y=uni(9.0, 11.5),
        gaze=uni(-0.8, 0.8),
        asym_side=rng.choice(np.array([-1.0, 1.0], dtype=f32), n),
        skin=uni(0.45, 0.85),
        hair=uni(0.05, 0.45),
        hairline=uni(0.0, 4.0),
        hair_len=uni(-8.0, 24.0),
        brow_dark=uni(0.45, 0.75),
        lip_dark=uni(0.2, 0.4),
        feat_dark=uni(0.55, 0.85),
        # pose
        rot=rng.normal(0.0, 0.13, n).astype(f32),
        tx=rng.normal(0, 1.5, n).astype(f32),
        ty=rng.normal(0, 1.5, n).astype(f32),
        scale=uni(0.92, 1.18),
        # imaging
        bg=uni(0.05, 0.95),
        bg_gx=uni(-0.25, 0.25),
        bg_gy=uni(-0.25, 0.25),
        light_x=uni(-0.35, 0.35),
        light_y=uni(-0.2, 0.2),
        contrast=uni(0.7, 1.25),
        brightness=uni(-0.12, 0.12),
        noise=uni(0.005, 0.04),
    )
    return p


# ---------------------------------------------------------------------------------------------
# drawing primitives (all on broadcast arrays (n, 48, 48); params are (n, 1, 1))


def _soft(d, aa):
    """Coverage of a shape with signed distance `d` (<0 inside): a linear ramp `aa` wide.

    A ramp about one pixel wide is what box-filtering an ideal edge gives: anti-aliasing.
    """
    return np.clip(0.5 - d / aa, 0.0, 1.0)


def _over(img, alpha, color):
    """Alpha-composite `color` over `img`."""
    return img + alpha * (color - img)


def _quad_stroke(u, v, u0, hw, c0, c1, c2):
    """Distance to the curve v = c0 + c1 t + c2 t^2, t = (u - u0) / hw in [-1, 1].

    Vertical distance divided by sqrt(1 + slope^2) is the perpendicular distance for gentle
    curves (brows, lips); beyond the ends the horizontal overshoot rounds the caps.
    """
    t = (u - u0) / hw
    tc = np.clip(t, -1.0, 1.0)
    dv = (v - (c0 + c1 * tc + c2 * tc * tc)) / np.sqrt(1.0 + ((c1 + 2 * c2 * tc) / hw) ** 2)
    du = (np.abs(t) - 1.0).clip(0.0) * hw
    return np.sqrt(dv * dv + du * du)


def _segment(u, v, x0, y0, x1, y1):
    """Distance to the segment (x0, y0)-(x1, y1)."""
    ex, ey = x1 - x0, y1 - y0
    t = np.clip(((u - x0) * ex + (v - y0) * ey) / (ex * ex + ey * ey), 0.0, 1.0)
    return np.hypot(u - x0 - t * ex, v - y0 - t * ey)


def _ellipse_sd(u, v, cx, cy, a, b):
    """Approximate signed distance to an axis-aligned ellipse (exact on the axes)."""
    r = np.sqrt(((u - cx) / a) ** 2 + ((v - cy) / b) ** 2)
    return (r - 1.0) * np.minimum(a, b)


# ---------------------------------------------------------------------------------------------
# rendering


def _render(p, rng):
    p = {k: np.asarray(v, dtype=np.float32)[:, None, None] for k, v in p.items()}
    n = len(p["rot"])
    ys, xs = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) + 0.5
    centre = IMAGE_SIZE / 2
    # Face frame: undo translation, rotation and scale so features are drawn upright.
    dx, dy = xs - centre - p["tx"], ys - centre - 1.0 - p["ty"]
    cos, sin = np.cos(p["rot"]), np.sin(p["rot"])
    u = (cos * dx + sin * dy) / p["scale"]
    v = (-sin * dx + cos * dy) / p["scale"]
    aa = 1.0 / p["scale"]  # one output pixel, in face units

    img = _background(p, xs, ys, centre)
    img = _head(img, p, u, v, aa)
    img = _brows(img, p, u, v, aa)
    img = _eyes(img, p, u, v, aa)
    img = _nose_and_folds(img, p, u, v, aa)
    img = _mouth(img, p, u, v, aa)

    img = (img - 0.5) * p["contrast"] + 0.5 + p["brightness"]
    img = img + p["noise"] * rng.standard_normal((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _background(p, xs, ys, centre):
    return p["bg"] + (p["bg_gx"] * (xs - centre) + p["bg_gy"] * (ys - centre)) / centre


def _head(img, p, u, v, aa):
    a, b, skin, hair = p["face_a"], p["face_b"], p["skin"], p["hair"]
    # Long hair hangs behind the head: the cap's outline continued straight down the sides.
    cap = _ellipse_sd(u, v, 0.0, -2.0, a + 2.5, b + 3.0)
    sides = np.where(v > -2.0, np.abs(u) - a - 2.5, np.float32(99.0))
    img = _over(img, _soft(np.maximum(np.minimum(cap, sides), v - p["hair_len"]), aa), hair)
    # Neck, darker: it sits in the face's shadow.
    neck = _soft(np.maximum(np.abs(u) - 0.55 * a, 8.0 - v), aa)
    img = _over(img, neck, 0.75 * skin)
    # Skin with a directional light and a spherical falloff toward the rim.
    face_sd = _ellipse_sd(u, v, 0.0, 0.0, a, b)
    r2 = (u / a) ** 2 + (v / b) ** 2
    shade = skin * (1.0 + p["light_x"] * u / a + p["light_y"] * v / b) * (1.0 - 0.25 * r2)
    img = _over(img, _soft(face_sd, aa), shade)
    # Hair in front: the cap above a hairline that stays above the brows.
    hairline = -0.62 * b - p["hairline"] + 0.04 * u * u
    return _over(img, _soft(np.maximum(cap, v - hairline), aa), hair)


def _brows(img, p, u, v, aa):
    # Brows, eyes and folds are mirror images, so they are drawn once in |u| (half the work).
    au = np.abs(u)
    base = p["eye_y"] - p["brow_gap"] - p["brow_raise"]
    inner, arch = p["brow_inner"], p["brow_arch"]
    # t = (|u| - 7) / 4.6 runs from -1 at the inner end to +1 at the outer end.
    hw = 4.6
    d = _quad_stroke(au, v, 7.0, hw, base - inner / 2 - arch, inner / 2, arch)
    taper = 1.0 - 0.175 * np.clip((au - 7.0) / hw + 1.0, 0.0, 2.0)
    img = _over(img, _soft(d - 1.05 * taper, aa), p["skin"] * (1.0 - p["brow_dark"]))
    # Frown lines between the brows (anger, disgust).
    glabella = _segment(au, v, 1.0, base + 1.5, 0.6, base - 1.0)
    alpha = _soft(glabella - 0.4, aa) * np.clip(p["wrinkle"] - 0.3, 0.0, 1.0) * 0.6
    return _over(img, alpha, p["skin"] * 0.55)


def _eyes(img, p, u, v, aa):
    au = np.abs(u)
    skin, ex, ey, eh, ew = p["skin"], p["eye_x"], p["eye_y"], p["eye_open"], 3.3
    dark = skin * (1.0 - p["feat_dark"])
    # Socket shadow, then the visible eye, iris (hidden by the lids) and a lash line on top.
    socket = np.exp(-(((au - ex) / 4.5) ** 2) - ((v - ey + 0.5) / 3.0) ** 2)
    img = _over(img, 0.25 * socket, 0.5 * skin)
    eye_sd = _ellipse_sd(au, v, ex, ey, ew, eh)
    inside = _soft(eye_sd, aa)
    img = _over(img, inside, np.minimum(skin + 0.2, 0.95))
    gaze = np.where(u < 0, -p["gaze"], p["gaze"])  # both eyes look the same way
    iris = _soft(np.hypot(au - ex - gaze, v - ey) - 1.7, aa) * inside
    img = _over(img, iris, dark)
    lash = np.where(v < ey, np.float32(1.0), np.float32(0.5)) * _soft(np.abs(eye_sd) - 0.45, aa)
    return _over(img, lash, dark)


def _nose_and_folds(img, p, u, v, aa):
    au = np.abs(u)
    skin = p["skin"]
    nostrils = np.hypot(au - 1.8, v - 4.5) - 0.85
    img = _over(img, 0.55 * _soft(nostrils, aa), 0.5 * skin)
    ridge = _segment(u, v, 1.6, -1.5, 2.4, 3.5) - 0.5  # shadow along one side of the nose
    img = _over(img, 0.2 * _soft(ridge, aa), 0.7 * skin)
    # Nose wrinkles (disgust): short diagonals on the bridge.
    wrinkle = _segment(au, v, 1.2, 0.0, 3.2, -1.4)
    img = _over(img, np.clip(p["wrinkle"] - 0.4, 0.0, 1.0) * 0.7 * _soft(wrinkle - 0.4, aa), 0.55 * skin)
    # Nasolabial folds deepen with a smile.
    folds = _segment(au, v, 3.0, 3.8, p["mouth_w"] + 1.0, p["mouth_y"] + 0.5)
    return _over(img, np.clip(p["smile_lines"], 0.0, 1.0) * 0.45 * _soft(folds - 0.5, aa), 0.6 * skin)


def _mouth(img, p, u, v, aa):
    skin, mw, curve, side = p["skin"], p["mouth_w"], p["mouth_curve"], p["asym_side"]
    x = np.clip(u / mw, -1.0, 1.0)
    # Mid line: curve > 0 lifts the corners (smile); asym lifts one corner (disgust sneer).
    raise_ = 0.5 + 0.5 * side * x
    mid = p["mouth_y"] + curve * (0.5 - x * x) - p["mouth_asym"] * raise_ * raise_
    slope = (-2 * curve * x - p["mouth_asym"] * side * raise_) / mw
    k = np.sqrt(1.0 + slope * slope)
    # Elliptic opening, the upper lip also lifted on the sneer side.
    h = p["mouth_open"] * np.sqrt(1.0 - x * x)
    upper = mid - 0.45 * h - 0.8 * p["mouth_asym"] * raise_ * np.sqrt(1.0 - x * x)
    lower = mid + 0.55 * h
    d_in = np.maximum(np.maximum((upper - v) / k, (v - lower) / k), np.abs(u) - mw)
    # Lips: a band round the opening; pressed lips are thinner and darker.
    lip_t = (1.05 - 0.45 * p["lip_press"]) * (1.0 - 0.5 * x * x)
    lip_color = skin * (1.0 - p["lip_dark"] - 0.3 * p["lip_press"])
    img = _over(img, _soft(d_in - lip_t, aa), lip_color)
    opening = np.clip(lower - upper, 0.0, 1.0)  # 0 closed .. 1 open by a pixel or more
    img = _over(img, _soft(d_in, aa) * np.maximum(opening, 0.35), 0.12 * skin)
    # Teeth show under the upper lip of an open mouth.
    teeth_h = np.minimum(0.5 * (lower - upper), 1.8)
    d_teeth = np.maximum(np.maximum((upper - v) / k, (v - upper - teeth_h) / k), np.abs(u) - 0.8 * mw)
    return _over(img, _soft(d_teeth, aa) * p["teeth"] * opening, np.minimum(skin + 0.25, 0.95))
