"""`ferstudy export`: the ONNX graph holds the whole evaluation path and matches torch within 1e-4."""

import csv
import json

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from ferstudy import CLASS_NAMES
from ferstudy.checkpoint import load_model, save_model
from ferstudy.cli import main
from ferstudy.config import expand_blocks
from ferstudy.csvdata import parse_fer_csv
from ferstudy.data import load_h5, prepare
from ferstudy.demo import make_demo_faces
from ferstudy.export import TOLERANCE, export, run_onnx
from ferstudy.models import build_model
from ferstudy.train import fit, predict


def run_config(crop=44, tta="flip", layers=None):
    t = {
        "epochs": 1,
        "batch_size": 64,
        "optimizer": "sgd",
        "lr": 0.05,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "schedule": "onecycle",
        "warmup_fraction": 0.2,
        "label_smoothing": 0.1,
        "seed": 3,
        "subsample": 1.0,
        "tta": tta,
        "device": "cpu",
        "channels_last": "auto",
        "amp": False,
        "augment": {"enabled": True, "crop": crop, "pad": 0, "flip": True},
    }
    layers = layers or expand_blocks({"filters": [8, 16], "convs": 1, "head_dropout": 0.3, "dropout": 0.1})
    return {
        "name": "tiny",
        "description": "",
        "factor": "",
        "model": {"layers": layers},
        "training": t,
        "data": {"folds": 3, "fold_seed": 0},
        "dataset": "fer2013",
    }


def torch_probs(model_path, faces):
    model, payload = load_model(model_path)
    t = payload["run_config"]["training"]
    return predict(
        model,
        torch.from_numpy(faces).unsqueeze(1),
        torch.arange(len(faces)),
        payload["input_size"],
        t["tta"],
        channels_last=True,
        amp=False,
    )


@pytest.fixture(scope="module")
def real_faces(real_slice_csv):
    return parse_fer_csv(real_slice_csv)[0]


@pytest.fixture(scope="module")
def trained(real_slice_csv, tmp_path_factory):
    """A tiny network trained one epoch on the real slice, saved with each TTA mode of the study
    (the weights fit any crop: global average pooling). Its output layer is scaled up 30x, so the
    probabilities are far from uniform and a numerical difference anywhere in the graph shows."""
    tmp = tmp_path_factory.mktemp("trained")
    prepare(real_slice_csv, tmp / "d.h5", folds=3, fold_seed=0)
    data = load_h5(tmp / "d.h5")
    tr, va = data.fold_indices(0)
    model, _ = fit(run_config(), data, tr, va, tmp / "ck.pt", progress=lambda s: None)
    with torch.no_grad():
        model.head.weight.mul_(30)
        model.head.bias.mul_(30)
    return save_each_tta(model, tmp)


def save_each_tta(model, directory):
    paths = {}
    for crop, tta in ((48, "none"), (44, "flip"), (40, "tencrop")):
        paths[tta] = directory / f"model_{tta}.pt"
        save_model(paths[tta], model, run_config(crop, tta))
    return paths


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    torch.manual_seed(0)
    return save_each_tta(build_model(run_config()["model"], input_size=44), tmp_path_factory.mktemp("untrained"))


@pytest.mark.parametrize("tta", ["none", "flip", "tencrop"])
def test_onnxruntime_matches_torch_on_real_faces(trained, real_faces, tmp_path, tta):
    out = tmp_path / "m.onnx"
    meta, check = export(trained[tta], out)
    assert check <= TOLERANCE
    faces = real_faces[:300]
    want = torch_probs(trained[tta], faces)
    got = run_onnx(out, faces)
    assert got.shape == (len(faces), len(CLASS_NAMES))
    assert np.abs(got - want).max() < 1e-4
    assert want.max(1).mean() > 0.4 and len(set(want.argmax(1))) >= 2  # not uniform, not one class
    assert np.abs(run_onnx(out, faces[:1]) - want[:1]).max() < 1e-4  # the batch axis is dynamic


def test_metadata_holds_the_preprocessing_contract(untrained, tmp_path):
    out = tmp_path / "m.onnx"
    export(untrained["tencrop"], out)
    proto = onnx.load(str(out))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["class_names"]) == CLASS_NAMES
    assert (meta["image_size"], meta["crop"], meta["tta"]) == ("48", "40", "tencrop")
    assert (meta["normalize_mean"], meta["normalize_std"]) == ("0.5", "0.25")
    assert "uint8 (N, 1, 48, 48)" in meta["input"] and "(N, 7)" in meta["output"]
    assert json.loads(meta["run_config"])["training"]["tta"] == "tencrop"
    (inp,), (outp,) = proto.graph.input, proto.graph.output
    assert (inp.name, outp.name) == ("faces", "probs")
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 1, 48, 48]
    assert outp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in outp.type.tensor_type.shape.dim] == ["batch", 7]  # the 7 emotions
    # onnxruntime reads the same metadata (what `predict-image --onnx` uses)
    assert ort.InferenceSession(str(out)).get_modelmeta().custom_metadata_map["tta"] == "tencrop"


def test_every_layer_type_exports(tmp_path):
    """A `layers:` network with every layer type of the spec, untrained, on demo faces."""
    layers = [
        {"conv": {"filters": 8, "kernel": 3}},
        "batchnorm",
        "leakyrelu",
        {"maxpool": 2},
        {"conv": {"filters": 8, "kernel": 5, "stride": 2}},
        "elu",
        {"avgpool": 2},
        {"dropout": 0.2},
        "flatten",
        {"fc": 16},
        "batchnorm",
        "gelu",
    ]
    cfg = run_config(44, "flip", layers)
    torch.manual_seed(0)
    model = build_model(cfg["model"], input_size=44)
    for m in model.modules():  # non-trivial batch-norm statistics
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    save_model(tmp_path / "m.pt", model, cfg)
    export(tmp_path / "m.pt", tmp_path / "m.onnx")
    faces = make_demo_faces(64, seed=2)[0]
    assert np.abs(run_onnx(tmp_path / "m.onnx", faces) - torch_probs(tmp_path / "m.pt", faces)).max() < 1e-4


def test_export_command_and_predict_image_with_onnx(untrained, tmp_path):
    out = tmp_path / "m.onnx"
    assert main(["export", str(untrained["flip"]), str(out)]) == 0
    faces = make_demo_faces(64, seed=1)[0]
    photo = np.full((360, 480, 3), 120, np.uint8)
    photo[60:220, 150:310] = cv2.resize(faces[0], (160, 160), interpolation=cv2.INTER_CUBIC)[..., None]
    cv2.imwrite(str(tmp_path / "p.png"), photo)
    rows = {}
    for how, args in (("torch", ["--model", str(untrained["flip"])]), ("onnx", ["--onnx", str(out)])):
        assert main(["predict-image", str(tmp_path / "p.png"), *args, "--out", str(tmp_path / how)]) == 0
        with open(tmp_path / how / "faces.csv", newline="") as f:
            rows[how] = list(csv.DictReader(f))
    assert len(rows["torch"]) == len(rows["onnx"]) == 1
    a, b = rows["torch"][0], rows["onnx"][0]
    assert [a[k] for k in "xywh"] == [b[k] for k in "xywh"] and a["emotion"] == b["emotion"]
    assert max(abs(float(a[f"p_{c}"]) - float(b[f"p_{c}"])) for c in CLASS_NAMES) < 1e-4


def test_export_refuses_a_file_that_is_not_a_model_in_one_line(tmp_path, capsys):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "x.pt")  # another project's PyTorch file
    assert main(["export", str(tmp_path / "x.pt"), str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"ferstudy: error: {tmp_path / 'x.pt'}: not a ferstudy model file") and "\n" not in err
    assert not (tmp_path / "x.onnx").exists()


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("ferstudy: error: "), err
    return err


def test_export_never_replaces_its_model_and_names_a_bad_output_path(untrained, tmp_path, capsys):
    import shutil

    model = tmp_path / "M"
    shutil.copy(untrained["flip"], model)
    before = model.read_bytes()
    assert main(["export", str(model), str(model)]) == 2
    assert f"{model}: this output would replace the input {model}" in _one_error_line(capsys)
    (tmp_path / "link").symlink_to(model)
    assert main(["export", str(model), str(tmp_path / "link")]) == 2
    assert "would replace the input" in _one_error_line(capsys)
    assert model.read_bytes() == before
    assert main(["export", str(model), str(tmp_path)]) == 2
    assert f"{tmp_path}: a directory, not a file" in _one_error_line(capsys)
    assert main(["export", str(model), "/proc/x.onnx"]) == 2
    assert "/proc/x.onnx: cannot write there" in _one_error_line(capsys)
