"""`ferstudy predict-image`: the emotions of the faces in photos and videos, as a study's model sees them.

Pipeline, per image (or every `--every`th video frame):

1. grey: colour -> grey with OpenCV's BGR -> grey (ITU-R 601 luma); grey inputs stay as they are.
2. detect: OpenCV's frontal-face Haar cascade (`haarcascade_frontalface_default.xml`, shipped in
   the `opencv-python-headless` 4.x wheel), on the grey image.
3. crop (`face_crop`): the square of side max(w, h) x (1 + 2 x margin) centred on the detected box,
   taken from the grey image (edge pixels repeated where it leaves the image), resized to 48x48
   (area averaging when shrinking, bilinear when enlarging), uint8. The default margin
   (`FER_MARGIN`) reproduces FER2013's framing: on real FER2013 faces the same cascade's box covers
   a median 98% of the 48x48 frame, centred (docs/PREDICT_IMAGE.md).
4. predict: exactly what evaluation in the study does with a stored 48x48 uint8 face:
   `train.predict` with the model's own run config (its evaluation crop `augment.crop`, its
   test-time augmentation `training.tta`, the normalisation of `augment.normalize`), or the same
   contract inside an ONNX graph (`ferstudy export`, `--onnx`).

Outputs under `--out`: `faces.csv` (one row per face: file, frame, x, y, w, h, p_<class> x 7,
emotion) and an annotated copy of each photo (box, top emotion, probability); for a video, an
annotated image of each sampled frame with a face.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import CLASS_NAMES, IMAGE_SIZE
from .errors import UserError
from .faces import CASCADE, FER_MARGIN, cascade, detect_faces, face_crop, to_grey, to_uint8
from .io import atomic_path, refuse_overwrite

if TYPE_CHECKING:
    import argparse

    import cv2

log = logging.getLogger("ferstudy.photos")

VIDEO_SUFFIXES = {".avi", ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm"}
CSV_COLUMNS = ["file", "frame", "x", "y", "w", "h", *(f"p_{c}" for c in CLASS_NAMES), "emotion"]
# Largest image (or video frame) read, in pixels: the face detector needs ~30 bytes per pixel (a
# 20000x20000 PNG of 440 KB asked for 13 GB). Checked from the file's header, before decoding.
MAX_PIXELS = 50_000_000
# One BGR colour per emotion for the boxes (angry red, disgust green, fear purple, happy yellow,
# sad blue, surprise orange, neutral grey).
COLOURS = [(40, 40, 220), (60, 160, 40), (160, 60, 150), (0, 200, 240), (200, 110, 30), (0, 140, 255), (170, 170, 170)]


# ---------------------------------------------------------------- predictors (torch or ONNX)


class TorchPredictor:
    """A saved ferstudy model predicting uint8 faces (N, 48, 48) exactly as the study evaluates
    (`train.predict` with the model's run config: evaluation crop, TTA, precision)."""

    def __init__(self, path: Path | str, threads: int = 1) -> None:
        import torch

        from .checkpoint import load_model
        from .precision import cpu_has_bf16
        from .train import setup_torch, use_channels_last

        self.device = torch.device("cpu")
        setup_torch(self.device, threads)
        self.model, payload = load_model(path, self.device)
        t = payload["run_config"]["training"]
        self.crop = int(payload["input_size"])
        self.tta = t.get("tta", "none")
        self.channels_last = use_channels_last(t, self.device)
        self.amp = bool(payload.get("amp")) and cpu_has_bf16()  # the precision it was trained and chosen in
        self.name = payload["run_config"].get("name", Path(path).parent.name)
        self.source = str(path)

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        import torch

        from .train import predict

        if len(faces) == 0:
            return np.zeros((0, len(CLASS_NAMES)))
        images = torch.from_numpy(np.ascontiguousarray(faces, dtype=np.uint8)).unsqueeze(1)
        return predict(self.model, images, torch.arange(len(faces)), self.crop, self.tta, self.channels_last, self.amp)

    def describe(self) -> str:
        return f"{self.source} ({self.name}, crop {self.crop}, tta {self.tta}{', bf16' if self.amp else ''})"


class OnnxPredictor:
    """A model written by `ferstudy export`, run with onnxruntime: same input, same probabilities."""

    def __init__(self, path: Path | str, threads: int = 1) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: ONNX file not found")
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types for unreadable models
            why = (str(err).splitlines() or [type(err).__name__])[0][:160]
            raise UserError(f"{path}: not an ONNX model onnxruntime can load ({why})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            names = json.loads(meta["class_names"])
            self.image_size = int(meta["image_size"])
        except (KeyError, ValueError):
            raise UserError(
                f"{path}: not an ONNX model written by `ferstudy export` (no class_names / image_size in its metadata)"
            ) from None
        if names != CLASS_NAMES or self.image_size != IMAGE_SIZE:
            raise UserError(
                f"{path}: its classes {names} / input {self.image_size}x{self.image_size} are not "
                f"ferstudy's {CLASS_NAMES} / {IMAGE_SIZE}x{IMAGE_SIZE}"
            )
        self.input = self.session.get_inputs()[0].name
        self.crop, self.tta, self.name = meta.get("crop"), meta.get("tta"), meta.get("architecture", "?")
        self.source = str(path)

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        if len(faces) == 0:
            return np.zeros((0, len(CLASS_NAMES)))
        x = np.ascontiguousarray(faces, dtype=np.uint8)[:, None]
        return self.session.run(None, {self.input: x})[0].astype(np.float64)

    def describe(self) -> str:
        return f"{self.source} (ONNX, {self.name}, crop {self.crop}, tta {self.tta})"


def predict_faces(
    grey: np.ndarray,
    boxes: Sequence[Sequence[int]],
    predictor: Callable[[np.ndarray], np.ndarray],
    margin: float = FER_MARGIN,
) -> tuple[np.ndarray, np.ndarray]:
    """(crops uint8 (N, 48, 48), probabilities (N, 7)) of the faces at `boxes` in `grey`."""
    crops = (
        np.stack([face_crop(grey, b, margin) for b in boxes])
        if boxes
        else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    )
    return crops, predictor(crops)


# ---------------------------------------------------------------- annotation


def annotate(image: np.ndarray, boxes: Sequence[Sequence[int]], probs: np.ndarray) -> np.ndarray:
    """A BGR copy of `image` with each face's box, top emotion and its probability."""
    import cv2

    image = to_uint8(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    out = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image[:, :, :3].copy()
    h, w = out.shape[:2]
    thick = max(1, int(round(min(h, w) / 300)))
    for (x, y, bw, bh), p in zip(boxes, probs):
        k = int(np.argmax(p))
        colour = COLOURS[k]
        cv2.rectangle(out, (x, y), (x + bw - 1, y + bh - 1), colour, thick, cv2.LINE_AA)
        text = f"{CLASS_NAMES[k]} {p[k]:.2f}"
        scale = max(0.4, min(2.0, bw / 160))
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        ty = y - 4 if y - th - base - 4 >= 0 else min(h - 1, y + bh + th + 4)  # above the box, else below
        cv2.rectangle(out, (x, ty - th - base), (x + tw + 4, ty + base // 2), colour, cv2.FILLED)
        dark = sum(colour) > 380
        cv2.putText(
            out,
            text,
            (x + 2, ty - base // 2),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (0, 0, 0) if dark else (255, 255, 255),
            thick,
            cv2.LINE_AA,
        )
    return out


def write_image(path: Path | str, image: np.ndarray) -> None:
    import cv2

    ok, data = cv2.imencode(Path(path).suffix, image)
    if not ok:
        raise UserError(f"{path}: OpenCV could not encode the annotated image")
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data.tobytes())


# ---------------------------------------------------------------- files


class Unreadable(Exception):
    """A file that is neither an image nor a video OpenCV can read."""


def read_image(path: Path | str, max_pixels: int = MAX_PIXELS) -> np.ndarray | None:
    import cv2

    check_size(header_size(path), max_pixels)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise Unreadable(f"cannot read it ({err.strerror or err})") from None
    if data.size == 0:
        raise Unreadable("empty file")
    # IMREAD_COLOR: 8-bit BGR (grey stays grey in all three channels, 16 bits keep the top 8, alpha
    # is dropped), turned as its EXIF orientation says.
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is not None:
        check_size(image.shape[1::-1], max_pixels)  # a format Pillow could not size
    return image


def header_size(path: Path | str) -> tuple[int, int] | None:
    """(width, height) from the image file's header (Pillow reads no pixels for it), or None."""
    import warnings

    from PIL import Image

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # its bomb check would stop the sizing
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                return image.size
    except Exception:  # not a format Pillow knows (or damaged): OpenCV decides
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def check_size(size: Sequence[int] | None, max_pixels: int) -> None:
    if size is not None and size[0] * size[1] > max_pixels:
        raise Unreadable(
            f"{size[0]}x{size[1]} pixels, more than --max-pixels {max_pixels:,} (the face detector "
            f"needs about 30 bytes per pixel); shrink it or raise --max-pixels"
        )


def video_frames(path: Path | str, every: int, max_pixels: int = MAX_PIXELS) -> Iterator[tuple[int, np.ndarray]]:
    """(frame number, image) of every `every`th frame from frame 0; Unreadable if none can be read."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise Unreadable("not an image or a video OpenCV can read")
        check_size((int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))), max_pixels)
        index, read_any = 0, False
        while True:
            if index % every == 0:
                ok, frame = cap.read()
                if not ok:
                    break
                read_any = True
                yield index, frame
            elif not cap.grab():
                break
            index += 1
        if not read_any:
            raise Unreadable("a video without a readable frame")
    finally:
        cap.release()


def is_video(path: Path | str) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


class Outputs:
    """Unique annotated-image names under `out` (two inputs may share a name), none of them one of
    the `inputs` (an input named like an output, p_annotated.jpg beside p.jpg, is never replaced)."""

    used: set[str]  # the names given so far

    def __init__(self, out: Path | str, inputs: Sequence[Path | str] = ()) -> None:
        self.out, self.used = Path(out), set()
        self.inputs = {Path(p).resolve() for p in inputs}
        self.inodes = {(st.st_dev, st.st_ino) for st in map(_stat, inputs) if st is not None}

    def is_input(self, path: Path) -> bool:
        st = _stat(path)
        return path.resolve() in self.inputs or (st is not None and (st.st_dev, st.st_ino) in self.inodes)

    def name(self, path: Path | str, frame: int | None = None) -> Path:
        p = Path(path)
        suffix = (
            p.suffix.lower()
            if p.suffix.lower() in (".jpg", ".jpeg", ".png") and frame is None
            else (".jpg" if frame is not None else ".png")
        )
        stem = p.stem + (f"_frame{frame:06d}" if frame is not None else "") + "_annotated"
        candidate, n = stem, 1
        while candidate + suffix in self.used or self.is_input(self.out / (candidate + suffix)):
            n += 1
            candidate = f"{p.stem}-{n}" + stem[len(p.stem) :]
        self.used.add(candidate + suffix)
        return self.out / (candidate + suffix)


def _stat(path):
    try:
        return os.stat(path)
    except OSError:
        return None


def face_rows(path: Path | str, frame: int, boxes: Sequence[Sequence[int]], probs: np.ndarray) -> list[list[Any]]:
    rows = []
    for (x, y, w, h), p in zip(boxes, probs):
        rows.append([str(path), frame, x, y, w, h, *(f"{v:.6g}" for v in p), CLASS_NAMES[int(np.argmax(p))]])
    return rows


def summary(boxes: Sequence[Sequence[int]], probs: np.ndarray) -> str:
    return ", ".join(
        f"{CLASS_NAMES[int(np.argmax(p))]} {p.max():.2f} at {x},{y} {w}x{h}" for (x, y, w, h), p in zip(boxes, probs)
    )


def process_file(
    path: Path | str,
    predictor: Callable[[np.ndarray], np.ndarray],
    detector: cv2.CascadeClassifier | None,
    outputs: Outputs,
    every: int = 10,
    margin: float = FER_MARGIN,
    min_face: int = 30,
    max_pixels: int = MAX_PIXELS,
) -> list[list[Any]]:
    """CSV rows of one photo or video; writes its annotated image(s). Raises Unreadable."""
    path = Path(path)
    if not path.is_file():
        raise Unreadable("file not found" if not path.exists() else "not a file")
    image = None if is_video(path) else read_image(path, max_pixels)
    if image is None and path.suffix.lower() in IMAGE_SUFFIXES:
        raise Unreadable("not an image OpenCV can read (damaged, or an unsupported variant)")
    if image is not None:
        grey = to_grey(image)
        boxes = detect_faces(grey, detector, min_face)
        _, probs = predict_faces(grey, boxes, predictor, margin)
        target = outputs.name(path)
        write_image(target, annotate(image, boxes, probs))
        if boxes:
            log.info("%s: %d face%s: %s -> %s", path, len(boxes), "s" * (len(boxes) > 1), summary(boxes, probs), target)
        else:
            log.warning("%s: no face found (annotated copy without boxes: %s)", path, target)
        return face_rows(path, 0, boxes, probs)
    rows, sampled, with_faces = [], 0, 0
    for frame, image in video_frames(path, every, max_pixels):
        sampled += 1
        grey = to_grey(image)
        boxes = detect_faces(grey, detector, min_face)
        if not boxes:
            continue
        with_faces += 1
        _, probs = predict_faces(grey, boxes, predictor, margin)
        write_image(outputs.name(path, frame), annotate(image, boxes, probs))
        rows += face_rows(path, frame, boxes, probs)
    if rows:
        log.info(
            "%s: video: faces in %d of %d sampled frames (every %d), %d faces; annotated frames in %s",
            path,
            with_faces,
            sampled,
            every,
            len(rows),
            outputs.out,
        )
    else:
        log.warning("%s: no face found in %d sampled frames (every %d)", path, sampled, every)
    return rows


def predict_files(
    paths: Sequence[Path | str],
    predictor: Callable[[np.ndarray], np.ndarray],
    out_dir: Path | str,
    csv_path: Path | str | None = None,
    every: int = 10,
    margin: float = FER_MARGIN,
    min_face: int = 30,
    inputs: Sequence[Path | str] = (),
    max_pixels: int = MAX_PIXELS,
) -> tuple[list[list[Any]], dict[str, str], Path]:
    """Process every file; returns (rows, {path: why} of the unreadable ones). Writes the CSV even
    when files fail (the others' rows) or no face was found (header only): a file too large, or one
    OpenCV fails on, is named on its line and the others are still done. No output replaces one of
    `paths` or of the other `inputs` (the model)."""
    import cv2

    if every < 1:
        raise UserError(f"--every {every}: must be 1 or more")
    if not 0 <= margin <= 1:
        raise UserError(f"--margin {margin}: must be in [0, 1] (a fraction of the face box per side)")
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise UserError(f"--out {out_dir}: a file, not a directory (the annotated images and faces.csv go there)")
    csv_path = Path(csv_path) if csv_path else Path(out_dir) / "faces.csv"
    refuse_overwrite([csv_path], [*paths, *inputs])
    detector = cascade()
    outputs = Outputs(out_dir, [*paths, *inputs])
    rows, failed = [], {}
    for path in paths:
        try:
            rows += process_file(path, predictor, detector, outputs, every, margin, min_face, max_pixels)
        except (Unreadable, cv2.error, MemoryError) as err:
            why = (
                str(err)
                if isinstance(err, Unreadable)
                else f"OpenCV could not process it ({(str(err).strip().splitlines() or ['out of memory'])[-1][:160]})"
            )
            failed[str(path)] = why
            print(f"ferstudy: error: {path}: {why}; skipped", file=sys.stderr, flush=True)
            if not isinstance(err, Unreadable):
                detector = cascade()  # a failed detection leaves the cascade asking for its memory again
    with atomic_path(csv_path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_COLUMNS)
            writer.writerows(rows)
    return rows, failed, csv_path


# ---------------------------------------------------------------- command

DEFAULT_MODEL = "results/final/model.pt"


def cmd_predict_image(args: argparse.Namespace) -> None:
    import cv2

    cv2.setNumThreads(max(1, args.threads))
    predictor: TorchPredictor | OnnxPredictor
    if args.onnx:
        if args.model:
            raise UserError("give --model or --onnx, not both")
        predictor = OnnxPredictor(args.onnx, args.threads)
    else:
        predictor = TorchPredictor(args.model or DEFAULT_MODEL, args.threads)
    log.info(
        "predicting faces with %s; Haar cascade %s, margin %.3f per side, min face %d px",
        predictor.describe(),
        CASCADE,
        args.margin,
        args.min_face,
    )
    rows, failed, csv_path = predict_files(
        args.paths,
        predictor,
        args.out,
        args.csv,
        args.every,
        args.margin,
        args.min_face,
        inputs=[predictor.source],
        max_pixels=args.max_pixels,
    )
    log.info(
        "%d face%s in %d of %d files -> %s (annotated images in %s)",
        len(rows),
        "s" * (len(rows) != 1),
        len({r[0] for r in rows}),
        len(args.paths),
        csv_path,
        args.out,
    )
    if failed:
        raise UserError(
            f"{len(failed)} of {len(args.paths)} files could not be read ({', '.join(failed)}); "
            f"the other files' results are in {csv_path}"
        )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "predict-image",
        help="emotions of the faces in photos or videos (face detection + a study's model)",
        description="Detect faces (OpenCV's frontal-face Haar cascade), crop each as FER2013 frames its faces "
        "(square, margin per side), make it the model's 48x48 grey input and predict it exactly "
        "as the study evaluates (the model's own evaluation crop and test-time augmentation). "
        "Writes OUT/faces.csv (file, frame, x, y, w, h, p_angry..p_neutral, emotion; frame is 0 "
        "for photos) and an annotated copy of each photo (each sampled video frame with a face). "
        "A file without a face is reported on one line, not an error. Unreadable files are "
        "named, skipped, and make the exit status 2 after the other files are done.",
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="photos (JPEG, PNG, ...; colour or grey, any size) or videos (" + ", ".join(sorted(VIDEO_SUFFIXES)) + ")",
    )
    p.add_argument("--model", help=f"a model the study saved (default {DEFAULT_MODEL}; fold models work too)")
    p.add_argument(
        "--onnx", metavar="FILE", help="an ONNX model from `ferstudy export`, run with onnxruntime instead of torch"
    )
    p.add_argument("--out", default="results/predict_image", help="output directory (default %(default)s)")
    p.add_argument("--csv", help="the CSV's path (default OUT/faces.csv)")
    p.add_argument(
        "--every", type=int, default=10, metavar="N", help="videos: every Nth frame, from frame 0 (default %(default)s)"
    )
    p.add_argument(
        "--margin",
        type=float,
        default=FER_MARGIN,
        help="added to the face box on each side, as a fraction of its side (default %(default)s: FER2013's framing)",
    )
    p.add_argument(
        "--min-face",
        type=int,
        default=30,
        metavar="PX",
        help="smallest face searched for, in pixels (default %(default)s)",
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        metavar="N",
        help="larger images and video "
        "frames are skipped with an error line (default %(default)s; the face detector needs about 30 "
        "bytes per pixel)",
    )
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_predict_image)
