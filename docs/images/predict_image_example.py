"""Make docs/images/predict_image_input.png (a synthetic picture, clean: the example's input) and
docs/images/predict_image_example.png (what `ferstudy predict-image` makes of it: the annotated copy).

Only synthetic content: demo faces (ferstudy.demo, drawn by code) enlarged and pasted into a
gradient picture (for each emotion shown, the first demo face of that emotion the cascade finds
at its pasted size), and a small network trained for 10 epochs on 3,000 other demo faces (FER2013
faces may not be redistributed, so none is in the picture or in the model). The labels show the
output, not the study's accuracy. Run from the repository root (a few minutes on one CPU core):

    .venv/bin/python docs/images/predict_image_example.py
"""

import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from ferstudy import CLASS_NAMES
from ferstudy.checkpoint import save_model
from ferstudy.config import expand_blocks
from ferstudy.data import FerData
from ferstudy.demo import make_demo_faces
from ferstudy.faces import cascade, detect_faces, to_grey
from ferstudy.photos import TorchPredictor, annotate, predict_faces
from ferstudy.train import fit

INPUT = Path(__file__).with_name("predict_image_input.png")  # feed this one to `ferstudy predict-image`
OUT = Path(__file__).with_name("predict_image_example.png")  # its output: boxes and labels drawn


def train_demo_model(path):
    images, labels, usage = make_demo_faces(3000, seed=0)
    split = np.select([usage == "Training", usage == "PublicTest"], [0, 1], 2).astype(np.uint8)
    data = FerData(
        images, labels, split, np.arange(len(labels)), np.full(len(labels), -1, np.int8), {"dataset": "demo"}
    )
    t = {
        "epochs": 10,
        "batch_size": 32,
        "optimizer": "sgd",
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "schedule": "onecycle",
        "warmup_fraction": 0.2,
        "label_smoothing": 0.1,
        "seed": 0,
        "subsample": 1.0,
        "tta": "flip",
        "device": "cpu",
        "channels_last": "auto",
        "amp": False,
        "eval_every": 0,
        "augment": {"enabled": True, "crop": 48, "pad": 0, "flip": True, "scale": 0.15},
    }
    cfg = {
        "name": "demo_example",
        "model": {"layers": expand_blocks({"filters": [16, 32, 64, 128], "convs": 1, "head_dropout": 0.3})},
        "training": t,
        "dataset": "demo",
    }
    model, state = fit(
        cfg,
        data,
        data.indices("Training"),
        data.indices("PublicTest"),
        Path(path).with_suffix(".ck"),
        threads=1,
        progress=lambda s: None,
    )
    print(f"demo model: PublicTest accuracy {state['history'][-1]['val_acc']:.3f}", file=sys.stderr)
    save_model(path, model, cfg)


BOXES = [(30, 70, 150), (215, 40, 130), (380, 100, 160)]  # x, y, side of each pasted face


def background(h=300, w=560):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([200 - 90 * yy / h, 170 - 40 * xx / w, 120 + 80 * xx / w], -1).astype(np.uint8)  # BGR


def paste(img, face, x, y, s):
    img[y : y + s, x : x + s] = cv2.resize(face, (s, s), interpolation=cv2.INTER_CUBIC)[..., None]
    return img


def pick(faces, labels, emotion, box, detector):
    """The first face of `emotion` the cascade finds alone where it was pasted."""
    x, y, s = box
    for i in np.flatnonzero(labels == CLASS_NAMES.index(emotion)):
        found = detect_faces(to_grey(paste(background(), faces[i], x, y, s)), detector)
        if len(found) == 1 and abs(found[0][0] + found[0][2] / 2 - x - s / 2) < s / 4:
            return int(i)
    raise SystemExit(f"no {emotion} demo face found by the cascade")


def main():
    faces, labels, _ = make_demo_faces(300, seed=7)  # not the training faces (seed 0)
    detector = cascade()
    picks = [pick(faces, labels, e, b, detector) for e, b in zip(("happy", "surprise", "sad"), BOXES)]
    img = background()
    for i, (x, y, s) in zip(picks, BOXES):
        paste(img, faces[i], x, y, s)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model.pt"
        train_demo_model(model)
        predictor = TorchPredictor(model, threads=1)
        grey = to_grey(img)
        boxes = detect_faces(grey, detector)
        _, probs = predict_faces(grey, boxes, predictor)
    drawn = [CLASS_NAMES[int(p.argmax())] for _, p in sorted(zip([b[0] for b in boxes], probs), key=lambda t: t[0])]
    print(
        f"{len(boxes)} faces detected; left to right, drawn {drawn}, true {[CLASS_NAMES[labels[i]] for i in picks]}",
        file=sys.stderr,
    )
    cv2.imwrite(str(INPUT), img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    cv2.imwrite(str(OUT), annotate(img, boxes, probs), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    for path in (INPUT, OUT):
        print(f"{path}: {path.stat().st_size / 1024:.0f} kB", file=sys.stderr)


if __name__ == "__main__":
    main()
