"""Model and checkpoint files are data, not code: every command that loads one refuses a file
whose unpickling would call a Python object, says so in one line, exits 2, and runs nothing."""

import subprocess
import sys

import pytest
import torch
import yaml

from ferstudy.checkpoint import load_model, load_torch_file, save_model
from ferstudy.data import load_h5, prepare
from ferstudy.errors import UserError
from ferstudy.train import fit
from test_train import tiny_run_config


class MakesMarker:
    """Unpickling this calls open(marker, "w"): the marker file appears iff the loader ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def real_h5(real_slice_csv, tmp_path_factory):
    path = tmp_path_factory.mktemp("h5") / "d.h5"
    prepare(real_slice_csv, path, folds=3, fold_seed=0)
    return path


@pytest.fixture()
def evil(tmp_path):
    marker = tmp_path / "MARKER"
    path = tmp_path / "shared model.pt"
    torch.save({"model": MakesMarker(marker), "spec": {}, "input_size": 44, "run_config": {}}, path)
    return path, marker


def ferstudy(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ferstudy", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def assert_refused(proc, path, marker):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    refusal = [line for line in lines if line.startswith("ferstudy: error:")]
    assert len(refusal) == 1 and str(path) in refusal[0] and "refused" in refusal[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists(), "the file's code ran"


def test_predict_refuses_a_model_that_would_run_code(evil, real_slice_csv, tmp_path):
    path, marker = evil
    proc = ferstudy("predict", "--model", path, "--csv", real_slice_csv, "--out", tmp_path / "p.csv")
    assert_refused(proc, path, marker)
    assert not (tmp_path / "p.csv").exists()


def test_bench_refuses_a_model_that_would_run_code(evil, tmp_path):
    path, marker = evil
    proc = ferstudy("bench", "--only", "inference", "--model", path, "--trials", "1")
    assert_refused(proc, path, marker)


def test_train_refuses_a_checkpoint_that_would_run_code(evil, real_h5, tmp_path):
    path, marker = evil
    rc = tmp_path / "run_config.yaml"
    rc.write_text(yaml.safe_dump(tiny_run_config(epochs=1)))
    proc = ferstudy(
        "train",
        "--h5",
        real_h5,
        "--run-config",
        rc,
        "--fold",
        "0",
        "--out-dir",
        tmp_path / "out",
        "--checkpoint",
        path,
        "--threads",
        "1",
    )
    assert_refused(proc, path, marker)
    assert not (tmp_path / "out" / "model.pt").exists()


def test_train_final_refuses_a_checkpoint_that_would_run_code(evil, real_h5, tmp_path):
    path, marker = evil
    (tmp_path / "cv" / "tiny").mkdir(parents=True)
    (tmp_path / "cv" / "tiny" / "run_config.yaml").write_text(yaml.safe_dump(tiny_run_config(epochs=1)))
    (tmp_path / "final.yaml").write_text(yaml.safe_dump({"training": {}}))
    proc = ferstudy(
        "train-final",
        "--h5",
        real_h5,
        "--run-config",
        tmp_path / "cv" / "tiny" / "run_config.yaml",
        "--final-config",
        tmp_path / "final.yaml",
        "--out-dir",
        tmp_path / "final",
        "--checkpoint",
        path,
        "--threads",
        "1",
    )
    assert_refused(proc, path, marker)


def test_the_figures_and_report_loader_refuses_it_too(evil):
    path, marker = evil
    with pytest.raises(UserError, match="refused.*io.open|refused.*open"):
        load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content,problem",
    [
        (b"\x00not a torch file" * 50, "not a PyTorch file"),
        (b"junk", "not a ferstudy model file"),
        (None, "without model, spec"),
    ],
)
def test_files_that_are_not_ferstudy_models_get_one_line(tmp_path, content, problem):
    path = tmp_path / "other.pt"
    if content is None:
        torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, path)  # another project's checkpoint
    else:
        path.write_bytes(content)
    with pytest.raises(UserError, match=problem) as err:
        load_model(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError, match="not a ferstudy checkpoint"):
        load_torch_file(path, "checkpoint")


def test_weights_that_do_not_fit_their_spec_are_named(real_h5, tmp_path):
    data = load_h5(real_h5)
    tr, va = data.fold_indices(0)
    run_cfg = tiny_run_config(epochs=1)
    model, _ = fit(run_cfg, data, tr, va, tmp_path / "ck.pt", progress=lambda s: None)
    save_model(tmp_path / "m.pt", model, run_cfg)
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["spec"]["layers"][0]["conv"]["filters"] = 5
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(UserError, match="do not fit its own layer spec"):
        load_model(tmp_path / "bad.pt")


def test_own_models_and_checkpoints_load_safely_and_round_trip(real_h5, tmp_path):
    data = load_h5(real_h5)
    tr, va = data.fold_indices(0)
    run_cfg = tiny_run_config(epochs=1)
    model, state = fit(run_cfg, data, tr, va, tmp_path / "ck.pt", progress=lambda s: None)
    save_model(tmp_path / "m.pt", model, run_cfg, {"amp": state["amp"]})
    loaded, payload = load_model(tmp_path / "m.pt")
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    assert payload["run_config"] == run_cfg
    ckpt = load_torch_file(tmp_path / "ck.pt", "checkpoint")
    assert ckpt["epoch"] == 1 and ckpt["history"][0]["train_loss"] == state["history"][0]["train_loss"]


# ---------------------------------------------------------------- hostile files (issue 24)
class CallsSystem:
    """Unpickling this would call os.system (torch blocks the whole module: a different message)."""

    def __reduce__(self):
        import os

        return (os.system, ("true",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle protocol 2", "pickle protocol 4", "pickle protocol 0"])
def test_a_file_that_would_call_os_system_is_refused_as_such_without_torch_warnings(writer, tmp_path):
    import pickle

    path = tmp_path / "model.pt"
    payload = {"model": CallsSystem(), "spec": {}, "input_size": 44, "run_config": {}}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=int(writer[-1])))
    proc = ferstudy("export", path, tmp_path / "m.onnx")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr  # one line: no torch warning
    assert "refused" in proc.stderr and "would call the Python object posix.system" in proc.stderr, proc.stderr
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("content", [b"junk\n", b"hello world\n", b"junk", b"PK\x03\x04junk", None])
def test_a_bad_checkpoint_says_to_delete_it(content, tmp_path):
    path = tmp_path / "fold0.pt"
    if content is None:
        torch.save({"model": CallsSystem()}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(UserError) as err:
        load_torch_file(path, "checkpoint")
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert message.endswith("delete it and run the job again (it trains from the start)"), message


@pytest.fixture(scope="module")
def saved_payload(tmp_path_factory):
    from ferstudy.models import build_model

    run_cfg = tiny_run_config(epochs=1)
    path = tmp_path_factory.mktemp("m") / "good.pt"
    save_model(path, build_model(run_cfg["model"], input_size=44), run_cfg)
    return torch.load(path, weights_only=True)


def _pop_training(p):
    p["run_config"].pop("training")


MODEL_CHANGES = {  # the data-only model files of issue 24: each made a KeyError/ValueError traceback
    "no training": (_pop_training, "its run_config has no training settings"),
    "run_config a list": (lambda p: p.__setitem__("run_config", [1]), "its run_config has no training settings"),
    "input_size 100000": (lambda p: p.__setitem__("input_size", 100000), "input_size 100000 is not an evaluation crop"),
    "input_size text": (lambda p: p.__setitem__("input_size", "44"), "input_size '44' is not an evaluation crop"),
    "tta bogus": (lambda p: p["run_config"]["training"].__setitem__("tta", "bogus"), "training.tta 'bogus' is not one"),
    "fc 3e9": (
        lambda p: p["spec"]["layers"].append({"fc": 3_000_000_000}),
        "its layer spec is not one ferstudy builds (layer 12 ({'fc': 3000000000}): units must be an integer "
        "from 1 to 65536",
    ),
    "spec a string": (lambda p: p.__setitem__("spec", "vgg"), "its spec is a str, not a mapping"),
    "weights a string": (lambda p: p.__setitem__("model", "w"), "its weights do not fit its own layer spec"),
}


@pytest.mark.parametrize("case", list(MODEL_CHANGES))
def test_a_model_file_with_bad_contents_is_named_in_one_line(case, saved_payload, tmp_path):
    import copy

    change, fragment = MODEL_CHANGES[case]
    payload = copy.deepcopy(saved_payload)
    change(payload)
    path = tmp_path / "edited.pt"
    torch.save(payload, path)
    with pytest.raises(UserError) as err:
        load_model(path)
    assert str(err.value).startswith(f"{path}: not a ferstudy model: ") and fragment in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("command", ["predict", "predict-image", "export"])
def test_every_command_that_reads_a_model_names_its_bad_contents(command, saved_payload, real_slice_csv, tmp_path):
    import copy

    payload = copy.deepcopy(saved_payload)
    payload["run_config"]["training"]["tta"] = "bogus"
    path = tmp_path / "edited.pt"
    torch.save(payload, path)
    args = {
        "predict": ["predict", "--model", path, "--csv", real_slice_csv, "--out", tmp_path / "p.csv"],
        "predict-image": ["predict-image", "--model", path, real_slice_csv, "--out", tmp_path / "o"],
        "export": ["export", path, tmp_path / "m.onnx"],
    }[command]
    proc = ferstudy(*args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"ferstudy: error: {path}: not a ferstudy model: training.tta 'bogus'" in proc.stderr


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda rc: rc.pop("training"), "not a run config (a mapping with name, model and training"),
        (lambda rc: rc["training"].pop("seed"), "missing key seed under training"),
        (
            lambda rc: rc["training"].__setitem__("batch_size", 32.0),
            "config key training.batch_size: 32.0 is not an integer",
        ),
        (
            lambda rc: rc["training"].__setitem__("epochs", 10**20),
            "config key training.epochs: 100000000000000000000 is greater than the maximum",
        ),
        (lambda rc: rc["model"]["layers"].append({"fc": 3e9}), "model: layer 12 ({'fc': 3000000000.0}): units must be"),
    ],
)
def test_train_names_a_bad_run_config_in_one_line(change, fragment, real_h5, tmp_path):
    run_cfg = tiny_run_config(epochs=1)
    change(run_cfg)
    rc = tmp_path / "run_config.yaml"
    rc.write_text(yaml.safe_dump(run_cfg))
    proc = ferstudy(
        "train",
        "--h5",
        real_h5,
        "--run-config",
        rc,
        "--fold",
        "0",
        "--out-dir",
        tmp_path / "out",
        "--checkpoint",
        tmp_path / "ck.pt",
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"ferstudy: error: {rc}: {fragment}" in proc.stderr


def test_predict_never_writes_over_its_csv_or_model(saved_payload, real_slice_csv, tmp_path):
    import shutil

    model = tmp_path / "model.pt"
    torch.save(saved_payload, model)
    csv = shutil.copy(real_slice_csv, tmp_path / "X.csv")
    before = (csv.read_bytes(), model.read_bytes())
    for out in (csv, model):
        proc = ferstudy("predict", "--model", model, "--csv", csv, "--out", out)
        assert proc.returncode == 2 and f"{out}: this output would replace the input {out}" in proc.stderr
    assert (csv.read_bytes(), model.read_bytes()) == before


def test_training_under_a_file_size_limit_is_one_line(real_h5, tmp_path):
    """`ulimit -f` while the checkpoint is written: torch's RuntimeError ("unexpected pos") before."""
    import resource

    rc = tmp_path / "run_config.yaml"
    rc.write_text(yaml.safe_dump(tiny_run_config(epochs=1)))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ferstudy",
            "train",
            "--h5",
            str(real_h5),
            "--run-config",
            str(rc),
            "--fold",
            "0",
            "--out-dir",
            str(tmp_path / "out"),
            "--checkpoint",
            str(tmp_path / "ck.pt"),
        ],
        capture_output=True,
        text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000)),
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"ferstudy: error: {tmp_path / 'ck.pt'}: writing it failed (File too large)" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run_config.yaml"]
