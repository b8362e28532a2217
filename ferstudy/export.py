"""`ferstudy export MODEL OUT.onnx`: a saved model with its preprocessing contract, as ONNX.

The graph is the whole evaluation path of the study, so a consumer feeds it the stored face and
nothing else:

    input  `faces`: uint8 (N, 1, 48, 48), grey 0-255, a face framed as FER2013 frames its faces
                    (`ferstudy.faces.face_crop`; N is dynamic)
    inside          x / 255 -> (x - 0.5) / 0.25 (`augment.normalize`), the model's evaluation crop
                    and test-time augmentation views (`augment.eval_views`: centre crop, + mirror for
                    `flip`, + corners for `tencrop`), the network, softmax, mean over the views
    output `probs`: float32 (N, 7), columns in `class_names` order

The contract is also in the model's metadata_props (`class_names` JSON, `image_size`, `crop`,
`tta`, `input`, `output`, `preprocessing`, `normalize_mean`, `normalize_std`, `face_margin`,
`run_config` JSON, `ferstudy_version`). Export checks itself: onnxruntime's probabilities on a few
faces must match torch's within 1e-4, or no file is written.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import CLASS_NAMES, IMAGE_SIZE, __version__
from .errors import UserError
from .io import atomic_path, refuse_overwrite

if TYPE_CHECKING:
    import argparse

    import torch

log = logging.getLogger("ferstudy.export")

OPSET = 17
TOLERANCE = 1e-4  # largest |onnxruntime - torch| probability difference export accepts
INPUT, OUTPUT = "faces", "probs"


def evaluation_module(model: torch.nn.Module, crop: int, tta: str) -> torch.nn.Module:
    """torch module: uint8 faces (N, 1, 48, 48) -> TTA-averaged probabilities (N, 7), the same
    computation as `train.predict` (fp32)."""
    import torch

    from .augment import eval_views

    class Evaluation(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, faces):
            views = eval_views(faces, crop, tta)  # (V, N, 1, crop, crop), normalised
            v, n = views.shape[0], views.shape[1]
            probs = self.model(views.reshape(v * n, 1, crop, crop)).softmax(1)
            # the class count as a constant: the graph's output is (batch, 7), not a symbolic second axis
            return probs.reshape(v, n, len(CLASS_NAMES)).mean(0)

    return Evaluation().eval()


def metadata(payload: dict[str, Any], source: Path | str) -> dict[str, str]:
    from .augment import MEAN, STD
    from .faces import FER_MARGIN

    run_cfg = payload["run_config"]
    crop, tta = int(payload["input_size"]), run_cfg["training"].get("tta", "none")
    views = {"none": 1, "flip": 2, "tencrop": 10}[tta]
    return {
        "class_names": json.dumps(CLASS_NAMES),
        "image_size": str(IMAGE_SIZE),
        "crop": str(crop),
        "tta": tta,
        "input": f"{INPUT}: uint8 (N, 1, {IMAGE_SIZE}, {IMAGE_SIZE}), grey pixels 0-255 (no scaling by the caller), "
        f"one face per image framed as FER2013 frames its faces: the square of the frontal-face Haar "
        f"cascade's box plus {FER_MARGIN:g} of its side on each side, resized to {IMAGE_SIZE}x{IMAGE_SIZE}",
        "output": f"{OUTPUT}: float32 (N, {len(CLASS_NAMES)}), softmax probabilities averaged over the "
        f"{views} test-time view(s), columns in class_names order",
        "preprocessing": f"inside the graph: x / 255, then (x - {MEAN}) / {STD}; centre {crop}x{crop} crop"
        + {
            "none": "",
            "flip": " and its mirror image",
            "tencrop": ", the four corner crops and the mirror images of all five",
        }[tta]
        + "; softmax per view, mean over the views",
        "normalize_mean": str(MEAN),
        "normalize_std": str(STD),
        "face_margin": str(FER_MARGIN),
        "precision": "fp32",
        "architecture": str(run_cfg.get("name", "")),
        "source_model": str(source),
        "run_config": json.dumps(run_cfg, default=str),
        "ferstudy_version": __version__,
    }


def export(
    model_path: Path | str, out_path: Path | str, opset: int = OPSET, check_faces: np.ndarray | None = None
) -> tuple[dict[str, str], float]:
    """Write `out_path` (ONNX) from a saved ferstudy model; returns (metadata, max difference of the
    self-check). `check_faces`: uint8 (N, 48, 48) for the self-check (default: 16 fixed random faces)."""
    import onnx
    import torch

    from .checkpoint import load_model
    from .train import predict

    refuse_overwrite([out_path], [model_path])
    model, payload = load_model(model_path)
    model = model.float().eval()
    meta = metadata(payload, model_path)
    crop, tta = int(meta["crop"]), meta["tta"]
    if crop > IMAGE_SIZE:
        raise UserError(
            f"{model_path}: evaluation crop {crop} is larger than the {IMAGE_SIZE}x{IMAGE_SIZE} faces: "
            f"the ONNX contract takes the stored face only"
        )
    module = evaluation_module(model, crop, tta)
    example = torch.zeros(2, 1, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        with warnings.catch_warnings():
            # The TorchScript exporter (the torch.export one needs onnxscript) warns that it is
            # deprecated, and that eval_views' shape checks become constants: they are (48x48 input).
            warnings.simplefilter("ignore")
            with torch.no_grad():
                torch.onnx.export(
                    module,
                    (example,),
                    str(tmp),
                    dynamo=False,
                    opset_version=opset,
                    input_names=[INPUT],
                    output_names=[OUTPUT],
                    dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                )
        proto = onnx.load(str(tmp))
        proto.producer_name = "ferstudy"
        proto.doc_string = (
            f"ferstudy {meta['architecture']} emotion classifier. {meta['input']}. "
            f"{meta['output']}. {meta['preprocessing']}."
        )
        del proto.metadata_props[:]
        for key, value in meta.items():
            proto.metadata_props.add(key=key, value=value)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        faces = (
            check_faces
            if check_faces is not None
            else np.random.default_rng(0).integers(0, 256, (16, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
        )
        want = predict(
            model,
            torch.from_numpy(np.asarray(faces, np.uint8)).unsqueeze(1),
            torch.arange(len(faces)),
            crop,
            tta,
            channels_last=False,
            amp=False,
        )
        got = run_onnx(tmp, faces)
        diff = float(np.abs(got - want).max())
        if not diff <= TOLERANCE:
            raise UserError(
                f"{model_path}: the exported graph's probabilities differ from torch's by {diff:.2e} "
                f"(more than {TOLERANCE:g}); nothing written to {out_path}"
            )
    return meta, diff


def run_onnx(path: Path | str, faces: np.ndarray, threads: int = 1) -> np.ndarray:
    """onnxruntime's probabilities (N, 7) float64 for uint8 faces (N, 48, 48)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.ascontiguousarray(faces, dtype=np.uint8)[:, None]
    return session.run(None, {session.get_inputs()[0].name: x})[0].astype(np.float64)


def cmd_export(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(max(1, args.threads))
    meta, diff = export(args.model, args.out, opset=args.opset)
    log.info(
        "%s -> %s: ONNX opset %d, input %s uint8 (N, 1, %s, %s), crop %s, tta %s inside the graph; "
        "onnxruntime matches torch within %.1e",
        args.model,
        args.out,
        args.opset,
        INPUT,
        IMAGE_SIZE,
        IMAGE_SIZE,
        meta["crop"],
        meta["tta"],
        diff,
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "export",
        help="a saved model with its preprocessing contract as ONNX",
        description="Export a saved ferstudy model (any architecture the study trained) to ONNX, with the whole "
        f"evaluation path inside the graph. Input `{INPUT}`: uint8 (N, 1, {IMAGE_SIZE}, {IMAGE_SIZE}) "
        "grey faces, pixels 0-255 unscaled, framed as FER2013 frames its faces (as `ferstudy "
        "predict-image` crops them). In the graph: x / 255, (x - 0.5) / 0.25, the model's evaluation "
        "crop and test-time augmentation (run config: augment.crop, training.tta), softmax, mean over "
        f"the views. Output `{OUTPUT}`: float32 (N, 7) probabilities, columns in the order of the "
        "metadata's class_names (angry, disgust, fear, happy, sad, surprise, neutral). The metadata_props "
        "hold this contract (class_names, image_size, crop, tta, input, output, preprocessing, "
        "run_config). The file is written only if onnxruntime's probabilities match torch's within "
        f"{TOLERANCE:g}.",
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help="a model the study saved (results/final/model.pt, results/cv/ARCH/foldK/model.pt)",
    )
    p.add_argument("out", metavar="OUT.onnx")
    p.add_argument("--opset", type=int, default=OPSET, help="ONNX opset (default %(default)s)")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_export)
