"""Faces in a picture: OpenCV's frontal-face Haar cascade and the FER2013-framed 48x48 crop.

`to_grey` makes the detector's input, `detect_faces` finds the boxes, `face_crop` cuts and resizes
each as FER2013 frames its faces (`crop_square`, `FER_MARGIN`). `photos` runs them on files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import IMAGE_SIZE
from .errors import UserError

if TYPE_CHECKING:
    import cv2

CASCADE = "haarcascade_frontalface_default.xml"
# Per side, as a fraction of the detected box: FER2013's 48x48 frame is the cascade's box / 0.98.
FER_MARGIN = 0.01


def cascade() -> cv2.CascadeClassifier:
    """The frontal-face Haar cascade shipped inside OpenCV's wheel."""
    import cv2

    path = Path(cv2.data.haarcascades) / CASCADE  # type: ignore[attr-defined]  # cv2's stubs omit cv2.data
    detector = cv2.CascadeClassifier(str(path))
    if detector.empty():
        raise UserError(
            f"{path}: OpenCV's face detector model is missing or unreadable (install "
            f"opencv-python-headless 4.x: the 5.x wheels no longer ship the Haar cascades)"
        )
    return detector


def to_uint8(image: np.ndarray) -> np.ndarray:
    """8-bit pixels of an OpenCV image (16-bit PNG/TIFF keep their top 8 bits)."""
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        return np.clip(image, 0, 255).astype(np.uint8)
    return image


def to_grey(image: np.ndarray) -> np.ndarray:
    """uint8 grey (H, W) from an OpenCV image: grey, BGR or BGRA, 8 or 16 bits."""
    import cv2

    image = to_uint8(image)
    if image.ndim == 2:
        return image
    if image.shape[2] == 1:
        return image[:, :, 0]
    return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY)


def detect_faces(
    grey: np.ndarray, detector: cv2.CascadeClassifier | None = None, min_face: int = 30
) -> list[tuple[int, ...]]:
    """Face boxes (x, y, w, h) in pixels of `grey`, in reading order (top to bottom, left to right)."""
    detector = detector or cascade()
    side = min(grey.shape[:2])
    if side < min_face:
        return []
    found = detector.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(min_face, min_face))
    boxes = [tuple(int(v) for v in b) for b in (found if len(found) else [])]
    return sorted(boxes, key=lambda b: (b[1] + b[3] // 2, b[0]))


def crop_square(box: Sequence[int], margin: float = FER_MARGIN) -> tuple[int, int, int]:
    """The square (x0, y0, side) `face_crop` takes for a detected box: side max(w, h) x (1 + 2 x
    margin), centred on the box."""
    x, y, w, h = box
    side = max(1, int(round(max(w, h) * (1 + 2 * margin))))
    x0 = int(round(x + w / 2 - side / 2))
    y0 = int(round(y + h / 2 - side / 2))
    return x0, y0, side


def face_crop(grey: np.ndarray, box: Sequence[int], margin: float = FER_MARGIN, size: int = IMAGE_SIZE) -> np.ndarray:
    """The model's input for one detected face: uint8 (size, size), framed as FER2013 frames its
    faces (`crop_square`), edge pixels repeated where the square leaves the image."""
    import cv2

    x0, y0, side = crop_square(box, margin)
    h, w = grey.shape[:2]
    pad = (max(0, -y0), max(0, y0 + side - h), max(0, -x0), max(0, x0 + side - w))  # top bottom left right
    if any(pad):
        grey = cv2.copyMakeBorder(grey, *pad, cv2.BORDER_REPLICATE)
        x0, y0 = x0 + pad[2], y0 + pad[0]
    square = grey[y0 : y0 + side, x0 : x0 + side]
    if side == size:
        return np.ascontiguousarray(square)
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(square, (size, size), interpolation=interpolation)
