"""Model and checkpoint files are data, not code: every command that loads one refuses a file
whose unpickling would call a Python object, says so in one line, exits 2, and runs nothing."""

import subprocess
import sys

import pytest
import torch
import yaml

from ferstudy.data import load_h5, prepare
from ferstudy.errors import UserError
from ferstudy.train import fit, load_model, load_torch_file, save_model
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
    return subprocess.run([sys.executable, "-m", "ferstudy", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


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
    proc = ferstudy("train", "--h5", real_h5, "--run-config", rc, "--fold", "0", "--out-dir", tmp_path / "out",
                    "--checkpoint", path, "--threads", "1")
    assert_refused(proc, path, marker)
    assert not (tmp_path / "out" / "model.pt").exists()


def test_train_final_refuses_a_checkpoint_that_would_run_code(evil, real_h5, tmp_path):
    path, marker = evil
    (tmp_path / "cv" / "tiny").mkdir(parents=True)
    (tmp_path / "cv" / "tiny" / "run_config.yaml").write_text(yaml.safe_dump(tiny_run_config(epochs=1)))
    (tmp_path / "final.yaml").write_text(yaml.safe_dump({"training": {}}))
    proc = ferstudy("train-final", "--h5", real_h5, "--run-config", tmp_path / "cv" / "tiny" / "run_config.yaml",
                    "--final-config", tmp_path / "final.yaml", "--out-dir", tmp_path / "final",
                    "--checkpoint", path, "--threads", "1")
    assert_refused(proc, path, marker)


def test_the_figures_and_report_loader_refuses_it_too(evil):
    path, marker = evil
    with pytest.raises(UserError, match="refused.*io.open|refused.*open"):
        load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize("content,problem", [
    (b"\x00not a torch file" * 50, "not a PyTorch file"),
    (b"junk", "not a ferstudy model file"),
    (None, "without model, spec"),
])
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
