"""Config validation, the layers (shipped defaults, preset, the study's own files) and architecture resolution."""

import copy

import pytest
import yaml

from ferstudy.config import expand_blocks, load_yaml, resolve_arch, resolve_config
from ferstudy.errors import UserError
from ferstudy.models import build_model

from conftest import REPO

BASE = load_yaml(REPO / "ferstudy" / "defaults.yaml")


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
        # weights=False: `pretrained: imagenet` is read when training starts (tests/test_models.py)
        build_model(run["model"], input_size=run["training"]["augment"]["crop"], weights=False)


@pytest.mark.parametrize(
    "path,value,fragment",
    [
        (("training", "lr"), "fast", "config key training.lr: 'fast' is not of type 'number'"),
        (("training", "learning_rate"), 0.1, "unknown key training.learning_rate"),
        (("data", "folds"), 1, "config key data.folds: 1 is less than the minimum of 2"),
        (("training", "optimizer"), "rmsprop", "config key training.optimizer"),
        (("architectures", "baseline", "blocks", "pool"), "median", "architectures.baseline.blocks.pool"),
        (("colour",), "blue", "unknown key colour"),
    ],
)
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
    layers = expand_blocks(
        {
            "filters": [8, 16],
            "convs": 2,
            "pool": "none",
            "norm": "none",
            "activation": "elu",
            "head": [32],
            "head_dropout": 0.5,
        }
    )
    convs = [layer["conv"] for layer in layers if isinstance(layer, dict) and "conv" in layer]
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

    cfg = resolve_config(with_change(("final", "training"), {"lr": 0.01, "augment": {"flip": False}}), workdir=tmp_path)
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


# ---------------------------------------------------------------- layers: defaults, preset, the user's own


def real_data_dir(tmp_path):
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "fer2013.csv").write_text("emotion,pixels,Usage\n")
    return tmp_path


def test_the_users_layers_win_over_the_preset(tmp_path):
    """Layer 3 (the user's config/config.yaml, --configfile, --config) beats layer 2 (the auto
    preset), which beats layer 1 (the shipped defaults) where the user wrote nothing."""
    from ferstudy.config import resolve_layers

    overlay = ("my.yaml", {"study": {"only": ["baseline", "no_augment"]}, "training": {"epochs": 20}})
    for workdir, preset in ((tmp_path / "nodata", "demo"), (real_data_dir(tmp_path), "cpu")):
        r = resolve_layers(with_change(("training", "device"), "cpu"), [overlay], workdir=workdir)
        cfg = r.config
        assert cfg["preset"] == preset
        assert cfg["study"]["architectures"] == ["baseline", "no_augment"]
        assert cfg["training"]["epochs"] == 20 and resolve_arch(cfg, "baseline")["training"]["epochs"] == 20
        assert cfg["training"]["batch_size"] == BASE["presets"][preset]["training"]["batch_size"]  # the preset
        assert cfg["training"]["momentum"] == BASE["training"]["momentum"]  # the defaults
        assert "training.epochs" not in [key for key, _, _ in r.replaced]
        assert ("training.epochs", BASE["presets"][preset]["training"]["epochs"], 20, "my.yaml") in r.overridden
        # a later layer wins over an earlier one
        later = ("--config", {"training": {"epochs": 6}})
        assert resolve_layers(BASE, [overlay, later], workdir=workdir).config["training"]["epochs"] == 6


def test_the_defaults_alone_are_the_defaults_layer(tmp_path):
    """One dict (the defaults, or any caller of resolve_config(raw)): the preset replaces its values,
    and the run lists what it replaced."""
    from ferstudy.config import preset_lines, resolve_layers

    r = resolve_layers(with_change(("training", "epochs"), 20), workdir=tmp_path)
    assert r.preset == "demo" and r.config["training"]["epochs"] == BASE["presets"]["demo"]["training"]["epochs"]
    assert ("training.epochs", 20, 8) in r.replaced
    assert ("data.folds", 5, 3) in r.replaced
    assert ("study.recheck_max", None, 1) in r.replaced  # the demo rechecks its riskiest pair only
    assert not [
        key
        for key, _, _ in r.replaced
        if key.startswith("study.") and key != "study.recheck_max" or key == "final.training.epochs"
    ]
    lines = preset_lines(r)
    assert "Preset 'demo' set 12 value(s)" in "\n".join(lines) and "  training.epochs: 20 -> 8" in lines
    assert not r.overridden and "Your config replaced" not in "\n".join(lines)
    assert any("leaves out" in line and "vgg_deep" in line for line in lines)
    assert resolve_config(with_change(("training", "epochs"), 20), workdir=tmp_path) == r.config


@pytest.mark.parametrize("preset", ["demo", "cpu", "gpu", "none"])
def test_an_architecture_the_user_adds_runs_under_every_preset(preset, tmp_path):
    from ferstudy.config import resolve_layers

    mine = {"extends": "baseline", "blocks": {"kernel": 5}}
    workdir = real_data_dir(tmp_path)
    # added in the user's own file
    r = resolve_layers(
        with_change(("preset",), preset), [("my.yaml", {"architectures": {"my_net": mine}})], workdir=workdir
    )
    assert "my_net" in r.config["study"]["architectures"]
    # added to the defaults themselves
    cfg = resolve_config(with_change(("architectures", "my_net"), mine) | {"preset": preset}, workdir=workdir)
    assert "my_net" in cfg["study"]["architectures"]
    # ... unless the user leaves it out
    for study in ({"only": ["baseline"]}, {"skip": ["my_net"]}):
        r = resolve_layers(
            with_change(("preset",), preset),
            [("my.yaml", {"architectures": {"my_net": mine}, "study": study})],
            workdir=workdir,
        )
        assert "my_net" not in r.config["study"]["architectures"]


def test_a_presets_only_list_takes_the_architectures_the_user_adds(tmp_path):
    from ferstudy.config import resolve_layers

    raw = copy.deepcopy(BASE)
    raw["presets"]["small"] = {"study": {"only": ["baseline", "pool_avg"]}}
    raw["preset"] = "small"
    added = ("my.yaml", {"architectures": {"my_net": {"extends": "baseline", "blocks": {"kernel": 5}}}})
    assert resolve_layers(raw, [added], workdir=tmp_path).config["study"]["architectures"] == [
        "baseline",
        "pool_avg",
        "my_net",
    ]
    assert resolve_config(raw, workdir=tmp_path)["study"]["architectures"] == ["baseline", "pool_avg"]
    # the user's own only: exactly that, whatever the preset leaves out
    own = ("my.yaml", {"study": {"only": ["vgg_deep", "baseline"]}})
    assert resolve_layers(with_change(("preset",), "demo"), [own], workdir=tmp_path).config["study"][
        "architectures"
    ] == ["vgg_deep", "baseline"]
    # a copy of the defaults' study section as the user's (its `only: []`) keeps the preset's skip; `skip: []` drops it
    copied = ("my.yaml", {"study": copy.deepcopy(BASE["study"])})
    assert "vgg_deep" not in resolve_layers(BASE, [copied], workdir=tmp_path).config["study"]["architectures"]
    everything = ("my.yaml", {"study": {"skip": []}})
    assert len(resolve_layers(BASE, [everything], workdir=tmp_path).config["study"]["architectures"]) == 20


def test_the_flat_config_resolves_to_the_same_study(tmp_path):
    """The cost prediction in a study (common.smk `announce_cost`) writes `Resolved.flat`, one dict,
    and `predict-cost --config` reads it as the study's file over the defaults (load_study); either
    way it must be the study the layers gave."""
    import yaml

    from ferstudy.config import load_study, resolve_layers

    workdir = real_data_dir(tmp_path)
    user = [
        (
            "my.yaml",
            {
                "study": {"only": ["baseline", "no_augment"]},
                "training": {"epochs": 3},
                "architectures": {"my_net": {"extends": "baseline", "blocks": {"kernel": 5}}},
            },
        ),
        ("--config", {"preset": "cpu", "data": {"folds": 4}}),
    ]
    for layers in ([], user[:1], user):
        r = resolve_layers(BASE, layers, workdir=workdir)
        assert resolve_config(copy.deepcopy(r.flat), workdir=workdir) == r.config
        (tmp_path / "flat.yaml").write_text(yaml.safe_dump(r.flat))
        assert load_study(tmp_path / "flat.yaml", workdir=workdir) == r.config


def test_a_value_in_the_studys_config_file_beats_the_preset(tmp_path):
    """The shipped config/config.yaml sets nothing a preset sets (the demo study stays the demo
    study); a value the user writes there wins over the preset, and the run's first lines say so."""
    from ferstudy.config import load_study, preset_lines, resolve_layers

    shipped = REPO / "config" / "config.yaml"
    r = resolve_layers(BASE, [("config/config.yaml", load_yaml(shipped))], workdir=tmp_path)
    assert r.preset == "demo" and not r.overridden
    assert r.config == resolve_config(BASE, workdir=tmp_path)
    study = tmp_path / "study"
    (study / "config").mkdir(parents=True)
    (study / "config" / "config.yaml").write_text(shipped.read_text() + "training:\n  epochs: 3\n")
    cfg = load_study(workdir=study)  # as `ferstudy predict-cost` in that directory reads it
    assert cfg["preset"] == "demo" and cfg["training"]["epochs"] == 3
    assert resolve_arch(cfg, "baseline")["training"]["epochs"] == 3
    assert cfg["training"]["batch_size"] == BASE["presets"]["demo"]["training"]["batch_size"]  # left to the preset
    r = resolve_layers(BASE, [("config/config.yaml", load_yaml(study / "config" / "config.yaml"))], workdir=study)
    lines = preset_lines(r)
    assert "  training.epochs: 3 (config/config.yaml; the preset's: 8)" in lines
    assert not [line for line in lines if line.startswith("  training.epochs: 30 ->")]
    assert load_study(workdir=tmp_path / "elsewhere") == resolve_config(BASE, workdir=tmp_path / "elsewhere")


def test_a_bad_key_in_a_users_layer_names_that_layer(tmp_path):
    from ferstudy.config import resolve_layers

    with pytest.raises(UserError, match=r"^my\.yaml: unknown key training\.learning_rate"):
        resolve_layers(BASE, [("my.yaml", {"training": {"learning_rate": 0.1}})], workdir=tmp_path)
    with pytest.raises(UserError, match="study.skip: unknown architecture 'nope'"):
        resolve_layers(BASE, [("my.yaml", {"study": {"skip": ["nope"]}})], workdir=tmp_path)


def test_nested_config_values_get_the_schemas_types(tmp_path):
    """Snakemake hands `--config "training={epochs: 6}"` as {"training": {"epochs": "6"}}."""
    from ferstudy.config import resolve_layers
    from ferstudy.validation import coerce_cli_config

    given = {
        "preset": "none",
        "threads": 2,
        "training": {
            "epochs": "6",
            "lr": "0.05",
            "label_smoothing": "0",
            "device": "cpu",
            "amp": "false",
            "channels_last": "auto",
            "augment": {"flip": "false", "crop": "40"},
        },
        "data": {"csv": "demo", "folds": "3", "extra_test_sets": {"my set": "2013.csv"}},
        "study": {"only": ["baseline"], "predict_cost": "false", "alpha": "1e-2"},
        "final": {"architecture": "null", "training": {"epochs": "2"}},
        "architectures": {
            "mine": {"layers": [{"conv": "16"}, "relu", {"maxpool": "2"}, "gap"], "blocks_note": "kept"},
            "baseline": {"blocks": {"filters": ["8", "16"], "pool": "max"}},
        },
    }
    got = coerce_cli_config(given)
    assert got["training"] == {
        "epochs": 6,
        "lr": 0.05,
        "label_smoothing": 0,
        "device": "cpu",
        "amp": False,
        "channels_last": "auto",
        "augment": {"flip": False, "crop": 40},
    }
    assert got["data"] == {"csv": "demo", "folds": 3, "extra_test_sets": {"my set": "2013.csv"}}
    assert got["study"] == {"only": ["baseline"], "predict_cost": False, "alpha": 0.01}
    assert got["final"] == {"architecture": None, "training": {"epochs": 2}}
    assert got["architectures"]["mine"]["layers"] == [{"conv": 16}, "relu", {"maxpool": 2}, "gap"]
    assert got["architectures"]["baseline"]["blocks"]["filters"] == [8, 16] and got["threads"] == 2
    del got["architectures"]["mine"]["blocks_note"], got["data"]["extra_test_sets"]
    cfg = resolve_layers(BASE, [("--config", got)], workdir=tmp_path).config
    assert cfg["training"]["epochs"] == 6 and cfg["data"]["folds"] == 3 and cfg["final"]["architecture"] is None


def test_the_submitting_hosts_preset_is_pinned_for_its_jobs(tmp_path, monkeypatch):
    """A job re-reads the config on its compute node: with a GPU there, `preset: auto` would turn a
    cpu study's job into a gpu one (5 folds instead of 3). The pinned preset wins over auto."""
    import ferstudy.config as config

    monkeypatch.setattr(config, "_cuda_available", lambda: True)
    workdir = real_data_dir(tmp_path)
    assert resolve_config(BASE, workdir=workdir)["preset"] == "gpu"
    cfg = resolve_config(BASE, workdir=workdir, pinned_preset="cpu")
    assert cfg["preset"] == "cpu" and cfg["data"]["folds"] == 3
    # a preset the user names is theirs, pinned or not
    assert resolve_config(with_change(("preset",), "gpu"), workdir=workdir, pinned_preset="cpu")["preset"] == "gpu"


def test_recheck_off_unquoted_and_a_list_of_variants(tmp_path):
    """`study.recheck: off` written plainly (YAML reads false) means off; a list must name variants."""
    from ferstudy.config import resolve_config

    raw = yaml.safe_load((REPO / "ferstudy" / "defaults.yaml").read_text().replace("  recheck: auto", "  recheck: off"))
    assert resolve_config(raw, workdir=tmp_path)["study"]["recheck"] == "off"
    raw["study"]["recheck"] = ["no_dropout", "kernel_5"]
    assert resolve_config(raw, workdir=tmp_path)["study"]["recheck"] == ["no_dropout", "kernel_5"]
    raw["study"]["recheck"] = ["vgg_deep"]  # skipped by the demo preset: not studied
    with pytest.raises(UserError, match="study.recheck: 'vgg_deep' is no variant of this study"):
        resolve_config(raw, workdir=tmp_path)


# ---------------------------------------------------------------- hostile and careless values (issue 24)
@pytest.mark.parametrize(
    "path,value,fragment",
    [
        # integers that are integers: JSON Schema counts 2.0 as one, range() and tensor shapes do not
        (("training", "epochs"), 2.0, "config key training.epochs: 2.0 is not an integer (write 2)"),
        (("data", "folds"), 3.0, "config key data.folds: 3.0 is not an integer (write 3)"),
        (("training", "batch_size"), 32.0, "config key training.batch_size: 32.0 is not an integer (write 32)"),
        (("training", "epochs"), 1e8, "config key training.epochs: 100000000.0 is not an integer"),
        (("training", "epochs"), 2.5, "config key training.epochs: 2.5 is not an integer"),
        (
            ("architectures", "baseline", "blocks", "filters"),
            [8.0, 16],
            "config key architectures.baseline.blocks.filters.0: 8.0 is not an integer (write 8)",
        ),
        # values that size memory or time have a maximum
        (
            ("training", "epochs"),
            99999999999999999999,
            "config key training.epochs: 99999999999999999999 is greater than the maximum of 10000",
        ),
        (("training", "batch_size"), 10**9, "config key training.batch_size: 1000000000 is greater than the maximum"),
        (("training", "curve_images"), 10**12, "config key training.curve_images: 1000000000000 is greater"),
        (("data", "demo_images"), 10**10, "config key data.demo_images: 10000000000 is greater than the maximum"),
        (("threads",), 10**7, "config key threads: 10000000 is greater than the maximum of 1024"),
        (("architectures", "baseline", "blocks", "filters"), [8, 10**7], "blocks.filters.1: 10000000 is greater"),
        # extra test sets: names stay inside results/, never replace FER2013's own test sets
        (
            ("data", "extra_test_sets"),
            {"../../../../../../tmp/x/ESCAPED": "x.csv"},
            "config key data.extra_test_sets: the name '../../../../../../tmp/x/ESCAPED' is not allowed",
        ),
        (("data", "extra_test_sets"), {"a;b": "x.csv"}, "the name 'a;b' is not allowed"),
        (("data", "extra_test_sets"), {"$(touch x)": "x.csv"}, "the name '$(touch x)' is not allowed"),
        (("data", "extra_test_sets"), {"a/b": "x.csv"}, "the name 'a/b' is not allowed"),
        (("data", "extra_test_sets"), {".hidden": "x.csv"}, "the name '.hidden' is not allowed"),
        (
            ("data", "extra_test_sets"),
            {"private": "x.csv"},
            "config key data.extra_test_sets.private: the name is reserved for FER2013's PrivateTest",
        ),
        (
            ("data", "extra_test_sets"),
            {"public": "x.csv"},
            "config key data.extra_test_sets.public: the name is reserved for FER2013's PublicTest",
        ),
        (("data", "extra_test_sets"), {"Private": "x.csv"}, "data.extra_test_sets.Private: the name is reserved"),
        (
            ("data", "extra_test_sets"),
            {"ck": "ck.csv", "CK": "ck.csv"},
            "config key data.extra_test_sets.CK: the name differs from 'ck' only in case",
        ),
        # a final architecture that is not studied fails here, not as a traceback in the DAG
        (
            ("final", "architecture"),
            "nope",
            "config key final.architecture: 'nope' is not among the architectures studied",
        ),
    ],
)
def test_hostile_values_fail_in_one_line_naming_the_key(path, value, fragment, tmp_path):
    (tmp_path / "ck.csv").write_text("emotion,pixels,Usage\n")
    with pytest.raises(UserError) as err:
        resolve_config(with_change(path, value), workdir=tmp_path)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_command_line_values_are_judged_as_the_numbers_they_are(tmp_path):
    """`--config "training={epochs: -3}"` is out of range (not "'-3' is not of type 'integer'"),
    2.0 and 1e9 are floats for an integer key, and a mapping that is not YAML says so."""
    from ferstudy.config import resolve_layers
    from ferstudy.validation import coerce_cli_config

    def error(given):
        with pytest.raises(UserError) as err:
            resolve_layers(BASE, [("--config", coerce_cli_config(given))], workdir=tmp_path)
        return str(err.value)

    assert "config key training.epochs: -3 is less than the minimum of 1" in error({"training": {"epochs": "-3"}})
    assert "config key training.epochs: 2.0 is not an integer (write 2)" in error({"training": {"epochs": "2.0"}})
    assert "config key training.epochs: 1000000000.0 is not an integer" in error({"training": {"epochs": "1e9"}})
    assert "config key data.folds: 3.0 is not an integer (write 3)" in error({"data": {"folds": "3.0"}})
    assert "greater than the maximum of 10000" in error({"training": {"epochs": "99999999999999999999"}})
    with pytest.raises(UserError, match=r"^--config training='\{epochs: \[\}': not valid YAML \("):
        coerce_cli_config({"training": "{epochs: [}"})
    assert coerce_cli_config({"data": {"csv": "123"}}) == {"data": {"csv": "123"}}  # a path stays a path


def test_evaluation_epochs_take_no_memory_for_many_epochs():
    from ferstudy.config import evaluation_epochs

    many = evaluation_epochs({"epochs": 10**15, "eval_every": 7})
    assert 10**15 in many and 7 * 10**13 in many and 8 not in many and 0 not in many and 10**15 + 7 not in many
    assert len(many) == 10**15 // 7 + 1
    for epochs, every in [(10, 1), (10, 3), (9, 3), (5, 0), (1, 4)]:
        want = {e for e in range(1, epochs + 1) if e == epochs or (every > 0 and e % every == 0)}
        got = evaluation_epochs({"epochs": epochs, "eval_every": every})
        assert {e for e in range(-2, epochs + 5) if e in got} == want and len(got) == len(want)
