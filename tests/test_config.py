"""config.yaml validation and architecture resolution."""

import copy

import pytest

from ferstudy.config import expand_blocks, load_yaml, resolve_arch, resolve_config
from ferstudy.errors import UserError
from ferstudy.models import build_model

from conftest import REPO

BASE = load_yaml(REPO / "config.yaml")


def with_change(path, value):
    cfg = copy.deepcopy(BASE)
    node = cfg
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return cfg


def test_shipped_config_resolves_every_architecture(tmp_path):
    cfg = resolve_config(BASE, workdir=tmp_path)
    assert cfg["dataset"]["name"] == "demo" and cfg["preset"] == "demo"
    for name in cfg["architectures"]:
        run = resolve_arch(cfg, name)
        build_model(run["model"], input_size=run["training"]["augment"]["crop"])


@pytest.mark.parametrize("path,value,fragment", [
    (("training", "lr"), "fast", "config key training.lr: 'fast' is not of type 'number'"),
    (("training", "learning_rate"), 0.1, "unknown key training.learning_rate"),
    (("data", "folds"), 1, "config key data.folds: 1 is less than the minimum of 2"),
    (("training", "optimizer"), "rmsprop", "config key training.optimizer"),
    (("architectures", "baseline", "blocks", "pool"), "median", "architectures.baseline.blocks.pool"),
    (("colour",), "blue", "unknown key colour"),
])
def test_bad_config_names_the_key(path, value, fragment, tmp_path):
    with pytest.raises(UserError) as err:
        resolve_config(with_change(path, value), workdir=tmp_path)
    assert fragment in str(err.value)


def test_invalid_layer_names_architecture_and_layer(tmp_path):
    cfg = with_change(("architectures", "broken"), {"layers": [{"conv": 16}, "relu", {"conv": {"filter": 8}}]})
    with pytest.raises(UserError) as err:
        resolve_config(cfg, workdir=tmp_path)
    assert "architecture 'broken'" in str(err.value) and "layer 2" in str(err.value) and "filter" in str(err.value)


def test_too_much_pooling_is_caught(tmp_path):
    cfg = with_change(("architectures", "baseline", "blocks", "filters"), [8] * 7)
    cfg["preset"] = "none"
    with pytest.raises(UserError, match="architecture 'baseline'"):
        resolve_config(cfg, workdir=tmp_path)


def test_missing_data_path_is_an_error_not_a_fallback(tmp_path):
    with pytest.raises(UserError, match="data.csv: data/mine.csv does not exist"):
        resolve_config(with_change(("data", "csv"), "data/mine.csv"), workdir=tmp_path)


def test_real_data_is_picked_up_when_present(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "fer2013.csv").write_text("emotion,pixels,Usage\n")
    cfg = resolve_config(BASE, workdir=tmp_path)
    assert cfg["dataset"] == {"name": "fer2013", "csv": "data/fer2013.csv"}
    assert cfg["preset"] in ("cpu", "gpu")


def test_extends_merges_and_detects_cycles(tmp_path):
    cfg = resolve_config(BASE, workdir=tmp_path)
    pool_avg = resolve_arch(cfg, "pool_avg")
    baseline = resolve_arch(cfg, "baseline")
    differing = [i for i, (a, b) in enumerate(zip(pool_avg["model"]["layers"], baseline["model"]["layers"])) if a != b]
    assert differing and all("avgpool" in pool_avg["model"]["layers"][i] for i in differing)
    cyc = copy.deepcopy(cfg)
    cyc["architectures"]["baseline"]["extends"] = "pool_avg"
    with pytest.raises(UserError, match="cycle"):
        resolve_arch(cyc, "pool_avg")


def test_blocks_expand_to_a_layer_list():
    layers = expand_blocks({"filters": [8, 16], "convs": 2, "pool": "none", "norm": "none", "activation": "elu",
                            "head": [32], "head_dropout": 0.5})
    convs = [l["conv"] for l in layers if isinstance(l, dict) and "conv" in l]
    assert [c["filters"] for c in convs] == [8, 8, 16, 16]
    assert [c["stride"] for c in convs] == [1, 2, 1, 2] and all(c["bias"] for c in convs)
    assert "batchnorm" not in layers and layers.count("elu") == 5
    assert layers[-4:] == ["gap", {"fc": 32}, "elu", {"dropout": 0.5}]


def test_auto_preset_follows_the_configured_device(tmp_path):
    """On real data `preset: auto` takes training.device when it names one (the host that submits
    a cluster study need not have the GPU); the demo data always gets the demo preset."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "fer2013.csv").write_text("emotion,pixels,Usage\n")
    assert resolve_config(with_change(("training", "device"), "cuda"), workdir=tmp_path)["preset"] == "gpu"
    assert resolve_config(with_change(("training", "device"), "cpu"), workdir=tmp_path)["preset"] == "cpu"
    assert resolve_config(with_change(("training", "device"), "cuda"), workdir=tmp_path / "none")["preset"] == "demo"


def test_final_retrain_settings_are_merged_one_way(tmp_path):
    """resolve_arch(final=True) (cost prediction, resources) and train-final (final_training over the
    architecture's run config) give the same settings."""
    from ferstudy.config import final_training

    cfg = resolve_config(with_change(("final", "training"), {"lr": 0.01, "augment": {"flip": False}}),
                         workdir=tmp_path)
    arch = "no_augment"
    final = resolve_arch(cfg, arch, final=True)["training"]
    assert final == final_training(resolve_arch(cfg, arch)["training"], cfg["final"])
    assert final["lr"] == 0.01 and final["augment"]["flip"] is False and final["augment"]["enabled"] is False


def test_final_plateau_schedule_needs_publictest_every_epoch(tmp_path):
    with pytest.raises(UserError, match="'baseline'.*plateau.*eval_every 1"):
        resolve_config(with_change(("final", "training"), {"schedule": "plateau", "eval_every": 0}), workdir=tmp_path)
    # cross-validation steps on training loss: any eval_every will do there
    raw = with_change(("training",), {**BASE["training"], "schedule": "plateau", "eval_every": 0})
    raw["final"]["training"] = {"eval_every": 1}
    cfg = resolve_config(raw, workdir=tmp_path / "x")
    assert resolve_arch(cfg, "baseline")["training"]["schedule"] == "plateau"
