"""Loading and resolving a study's config (the checks and their messages: `validation`).

A study's config comes in layers, lowest first (`resolve_layers`):

1. the defaults: the shipped `defaults.yaml` (every key, the architecture catalog, `presets:`);
2. the preset (`preset:`; `auto` picks one), whose values replace the defaults;
3. the user's own layers, in order: the study's config/config.yaml, each `--configfile` file,
   then `--config`; a key set there wins over both.

`resolve_config(raw, user=[...])` validates against `schema/config.schema.yaml`, applies the
layers and returns the config every rule and command uses (one dict, no user layers: the preset
over it). `load_study` does it for the commands run without Snakemake. `resolve_arch(cfg, name)`
turns one architecture entry (with `extends:` and the `blocks:` shorthand) into the run config a
training job needs: the model spec (a layer list or a backbone) and the merged training settings.
"""

import copy
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError
from .validation import check_extra_test_sets, validate

DEFAULTS_PATH = Path(__file__).parent / "defaults.yaml"
DEFAULTS_NAME = "ferstudy/defaults.yaml"  # what messages call the shipped defaults
STUDY_CONFIG = "config/config.yaml"  # the study's own choices, relative to the study directory
REAL_DATA_CANDIDATES = ("data/fer2013.csv", "data/fer2013.csv.gz", "data/icml_face_data.csv")
DEMO_CSV = "results/data/demo.csv"
# The preset the submitting Snakemake resolved, pinned for the jobs it spawns (cluster jobs, local
# `run:` jobs): a compute node with a GPU must not turn a cpu study's job into a gpu one.
PINNED_PRESET_ENV = "FERSTUDY_PRESET"


def load_yaml(path: Path | str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({err})") from None


def load_defaults() -> dict:
    """The shipped defaults (layer 1): every key, the architecture catalog and the presets."""
    return load_yaml(DEFAULTS_PATH)


def load_study(
    config_path: Path | str | None = None,
    configfiles: Iterable[Path | str] = (),
    preset: str | None = None,
    workdir: Path | str | None = None,
) -> dict[str, Any]:
    """The resolved study for a command run without Snakemake (`bench`, `predict-cost`), layered
    as the workflow layers it: the shipped defaults, the preset, then the user's layers: the
    study's config file (`config_path`; default config/config.yaml of `workdir` when it exists),
    each of `configfiles`, and `preset` (a `--preset` choice). `workdir`: the study directory
    (default: the current one)."""
    workdir = Path("." if workdir is None else workdir)
    if config_path is None and (workdir / STUDY_CONFIG).is_file():
        config_path = workdir / STUDY_CONFIG
    files = ([config_path] if config_path else []) + list(configfiles or ())
    user = [(str(f), load_yaml(f)) for f in files] + ([("--preset", {"preset": preset})] if preset else [])
    return resolve_config(load_defaults(), workdir=workdir, source=DEFAULTS_NAME, user=user)


def deep_merge(base: dict[str, Any], override: dict[str, Any] | None) -> dict[str, Any]:
    """Recursive dict merge: override wins; lists and scalars are replaced, not merged."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def choose_preset(cfg: dict[str, Any], dataset: str, pinned: str | None = None) -> str:
    """`preset: auto` picks demo for the demo data; else `training.device` decides (cuda: gpu,
    cpu: cpu) and, when that is auto too, whether this machine has CUDA. On a cluster the machine
    deciding is the submitting host: the workflow pins its choice for the jobs (`pinned`)."""
    name = cfg.get("preset", "auto")
    if name == "auto" and pinned:
        name = pinned
    if name == "auto":
        device = cfg.get("training", {}).get("device", "auto")
        if dataset == "demo":
            name = "demo"
        elif device != "auto":
            name = "gpu" if device == "cuda" else "cpu"
        else:
            name = "gpu" if _cuda_available() else "cpu"
    if name != "none" and name not in cfg.get("presets", {}):
        raise UserError(
            f"config key preset: unknown preset {name!r} (defined: {', '.join(cfg.get('presets', {})) or 'none'})"
        )
    return name


def _cuda_available():
    if not (
        Path("/proc/driver/nvidia/gpus").is_dir()
        or Path("/dev/kfd").exists()
        or Path("/dev/dxg").exists()
        or os.environ.get("CUDA_VISIBLE_DEVICES")
    ):
        return False  # no NVIDIA, ROCm or WSL2 GPU driver here: skip the torch import, dry runs stay fast
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def choose_dataset(cfg: dict[str, Any], workdir: Path | str = ".") -> tuple[str, str]:
    """(dataset name, CSV path). `data.csv: auto` uses data/fer2013.csv if present, else the demo.

    A path the user gave that does not exist is an error, never a silent fallback.
    """
    csv = cfg["data"].get("csv", "auto")
    if csv == "demo":
        return "demo", DEMO_CSV
    if csv == "auto":
        for candidate in REAL_DATA_CANDIDATES:
            if (Path(workdir) / candidate).is_file():
                return "fer2013", candidate
        return "demo", DEMO_CSV
    if not (Path(workdir) / csv).is_file():
        raise UserError(
            f"config key data.csv: {csv} does not exist (download FER2013 as the README says, "
            f"or set data.csv: auto to use the built-in demo)"
        )
    return "fer2013", csv


@dataclass
class Resolved:
    """A study resolved from its layers (`resolve_layers`)."""

    config: dict  # what every rule and command uses
    flat: dict  # one dict that resolve_config(flat) turns into the same config (no layers)
    preset: str
    replaced: list = field(default_factory=list)  # [(key, the defaults' value, the preset's)]: keys the user left alone
    skipped: list = field(default_factory=list)  # architectures the preset leaves out
    overridden: list = field(default_factory=list)  # [(key, the preset's value, the user's, the layer that set it)]


def resolve_config(
    raw: dict[str, Any],
    workdir: Path | str = ".",
    source: str = "config",
    user: Iterable[dict[str, Any] | tuple[str, dict[str, Any]]] = (),
    pinned_preset: str | None = None,
) -> dict[str, Any]:
    """Validate, pick dataset and preset, apply the layers (see `resolve_layers`). Every
    architecture is checked here. With one dict (`user` empty) the preset goes over it."""
    return resolve_layers(raw, user, workdir, source, pinned_preset).config


def resolve_layers(
    raw: dict[str, Any],
    user: Iterable[dict[str, Any] | tuple[str, dict[str, Any]]] = (),
    workdir: Path | str = ".",
    source: str = "config",
    pinned_preset: str | None = None,
) -> Resolved:
    """The study from its layers, lowest first: `raw` (the defaults: the shipped defaults.yaml
    with its `presets:`), then the preset, then each of the user's own layers in `user` (the
    study's config/config.yaml, the `--configfile` files, then `--config`; a dict or a
    (name, dict) pair each): a key set there wins over both.

    Architectures: a preset's `study.skip` leaves some out; a preset's (or the defaults')
    `study.only` keeps the ones it names and every architecture a user layer adds; a non-empty
    `study.only` in a user layer is the list, whatever the preset leaves out (`skip: []` there
    runs what the preset skips). `pinned_preset` replaces
    `preset: auto` (the submitting host's choice, in the jobs it spawns)."""
    layers = [
        layer if isinstance(layer, tuple) else (f"config layer {i + 1}", layer) for i, layer in enumerate(user or ())
    ]
    validate(raw, source)
    written = raw
    for name, layer in layers:
        validate(deep_merge(raw, layer), name)  # a bad key is blamed on the layer that has it
        written = deep_merge(written, layer)
    dataset, csv = choose_dataset(written, workdir)
    preset = choose_preset(written, dataset, pinned_preset)
    values = copy.deepcopy((written.get("presets") or {}).get(preset) or {})
    values.pop("description", None)
    defaults = {k: v for k, v in raw.items() if k not in ("presets", "description")}
    mine: dict[str, Any] = {}
    for _, layer in layers:
        mine = deep_merge(mine, {k: v for k, v in layer.items() if k not in ("presets", "description")})
    flat = deep_merge(deep_merge(defaults, values), mine)
    study, my_study = flat.setdefault("study", {}), mine.get("study") or {}
    if my_study.get("only"):  # the user's own list: no preset leaves anything out of it
        study["skip"] = list(my_study.get("skip") or [])
    else:
        if study.get("only"):  # a preset's or the defaults' list: architectures the user adds run too
            added = [a for a in mine.get("architectures") or {} if a not in (defaults.get("architectures") or {})]
            study["only"] = list(study["only"]) + [a for a in added if a not in study["only"]]
        if "skip" not in my_study:  # a preset's skip list may name architectures the user removed
            study["skip"] = [a for a in study.get("skip") or [] if a in flat.get("architectures", {})]
    replaced = [
        (".".join(path), found, value)
        for path, value in _leaves(values)
        for ok, found in [_lookup(defaults, path)]
        if ok and found != value and not _lookup(mine, path)[0]
    ]
    overridden = [
        (".".join(path), value, found, _setter(layers, path))
        for path, value in _leaves(values)
        for ok, found in [_lookup(mine, path)]
        if ok and found != value
    ]
    flat["preset"] = preset
    flat["presets"] = {} if preset == "none" else {preset: {}}
    cfg = _resolve_flat(flat, preset, dataset, csv, workdir, source)
    by_preset = values.get("study") or {}
    skipped = (
        []
        if my_study.get("only") or "skip" in my_study
        else [
            a
            for a in cfg["architectures"]
            if a not in cfg["study"]["architectures"]
            and (a in (by_preset.get("skip") or []) or (by_preset.get("only") and a not in by_preset["only"]))
        ]
    )
    return Resolved(cfg, flat, preset, replaced, skipped, overridden)


def _setter(layers, path):
    """The name of the last user layer that sets the dotted `path`."""
    return next(name for name, layer in reversed(layers) if _lookup(layer, path)[0])


def _leaves(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, prefix + (key,))
        else:
            yield prefix + (key,), value


def _lookup(tree, path):
    """(found, value) of a dotted path in nested dicts."""
    node = tree
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False, None
        node = node[key]
    return True, node


def _resolve_flat(flat, preset, dataset, csv, workdir, source):
    cfg = copy.deepcopy(flat)
    cfg.pop("presets", None)
    cfg.pop("description", None)
    validate(cfg, f"{source} (after preset {preset!r})")
    cfg["preset"] = preset
    cfg["dataset"] = {"name": dataset, "csv": csv}
    check_extra_test_sets(cfg["data"].get("extra_test_sets") or {}, workdir)
    ferplus = cfg["data"].get("ferplus")
    if ferplus and not (Path(workdir) / ferplus).is_file():
        raise UserError(f"config key data.ferplus: {ferplus} does not exist (FER+ is Microsoft's fer2013new.csv)")
    if ferplus and dataset == "demo":
        raise UserError(
            "config key data.ferplus: FER+ relabels FER2013, but this study runs on the built-in demo "
            "data (set data.csv to the real fer2013.csv, or remove data.ferplus)"
        )
    study = cfg["study"]
    names = study.get("only") or list(cfg["architectures"])
    for key in ("only", "skip"):
        for name in study.get(key) or []:
            if name not in cfg["architectures"]:
                raise UserError(f"config key study.{key}: unknown architecture {name!r}")
    names = [n for n in names if n not in (study.get("skip") or [])]
    if not names:
        raise UserError("config key study.skip: it leaves no architecture to study")
    study["architectures"] = names
    if study.get("baseline", names[0]) not in names:
        raise UserError(f"config key study.baseline: {study['baseline']!r} is not among the architectures studied")
    study.setdefault("baseline", names[0])
    if study.get("recheck") is False or study.get("recheck") == []:
        study["recheck"] = "off"  # `recheck: off` unquoted is YAML's false
    recheck = study.get("recheck")
    unknown = [a for a in recheck if a not in names or a == study["baseline"]] if isinstance(recheck, list) else []
    if unknown:
        raise UserError(
            f"config key study.recheck: {', '.join(map(repr, unknown))} is no variant of this study "
            f"(the baseline is rechecked with every pair; variants: "
            f"{', '.join(n for n in names if n != study['baseline'])})"
        )
    chosen = (cfg.get("final") or {}).get("architecture")
    if chosen is not None and chosen not in names:
        raise UserError(
            f"config key final.architecture: {chosen!r} is not among the architectures studied ({', '.join(names)})"
        )
    for name in cfg["architectures"]:
        resolve_arch(cfg, name)  # fail early for every declared one, naming the architecture and layer
    for name in names:
        resolve_arch(cfg, name, final=True)  # and for the final retrain of every candidate
    return cfg


def preset_lines(resolved: Resolved, defaults_name: str = DEFAULTS_NAME) -> list[str]:
    """What a run says first about its preset: the architectures it leaves out, every value of
    the shipped defaults it changed where the user set nothing, and every value of the preset
    that the user's own (config/config.yaml, --configfile, --config) replaced."""
    lines = []
    name = resolved.preset
    if resolved.skipped:
        lines.append(
            f"Preset {name!r} studies {len(resolved.config['study']['architectures'])} "
            f"architectures and leaves out {', '.join(resolved.skipped)} (your own study.only or "
            f"study.skip wins; architectures you add always run)."
        )
    if resolved.replaced:
        lines.append(
            f"Preset {name!r} set {len(resolved.replaced)} value(s) that your config leaves to it "
            f"({defaults_name} -> the preset's; set a key in config/config.yaml to choose it yourself):"
        )
        lines += [f"  {key}: {_short(old)} -> {_short(new)}" for key, old, new in resolved.replaced]
    if resolved.overridden:
        lines.append(f"Your config replaced {len(resolved.overridden)} value(s) of preset {name!r} (yours win):")
        lines += [
            f"  {key}: {_short(mine)} ({layer}; the preset's: {_short(theirs)})"
            for key, theirs, mine, layer in resolved.overridden
        ]
    return lines


def _short(value, limit=80):
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def resolve_arch(cfg: dict[str, Any], name: str, final: bool = False) -> dict[str, Any]:
    """Run config for one architecture: {name, description, factor, model, training, data}."""
    archs = cfg["architectures"]
    chain: list[str]
    chain, entry = [], archs.get(name)
    if entry is None:
        raise UserError(f"architecture {name!r} is not defined under `architectures`")
    merged: dict[str, Any] = {}
    while entry is not None:
        if name in chain:
            raise UserError(f"architecture {chain[0]!r}: `extends` forms a cycle ({' -> '.join(chain + [name])})")
        chain.append(name)
        merged = deep_merge(entry, merged)
        name = entry.get("extends")
        if name is not None and name not in archs:
            raise UserError(f"architecture {chain[-1]!r}: extends unknown architecture {name!r}")
        entry = archs.get(name) if name else None
    arch_name = chain[0]
    model = _model_spec(arch_name, merged)
    training = deep_merge(cfg["training"], merged.get("training", {}))
    if final:
        training = final_training(training, cfg.get("final"))
        if training.get("schedule") == "plateau" and training.get("eval_every", 1) != 1:
            # the final model's plateau schedule steps on PublicTest loss, so it needs it every epoch
            raise UserError(
                f"architecture {arch_name!r}: the final model's schedule `plateau` needs "
                f"training.eval_every 1 (final.training.eval_every), not {training.get('eval_every')}"
            )
    from .spec import validate_spec

    try:
        validate_spec(model, input_size=training.get("augment", {}).get("crop", 48))
    except UserError as err:
        raise UserError(f"architecture {arch_name!r}: {err}") from None
    return {
        "name": arch_name,
        "description": merged.get("description", ""),
        "factor": merged.get("factor", ""),
        "model": model,
        "training": training,
        "data": {k: cfg["data"][k] for k in ("folds", "fold_seed") if k in cfg["data"]},
        "dataset": cfg.get("dataset", {}).get("name"),
    }


@dataclass(frozen=True)
class EvaluationEpochs:
    """`epoch in it` and `len(it)` in constant time and memory, whatever the number of epochs."""

    epochs: int
    every: int

    def __contains__(self, epoch: int) -> bool:
        return 1 <= epoch <= self.epochs and (epoch == self.epochs or (self.every > 0 and epoch % self.every == 0))

    def __len__(self) -> int:
        if self.every <= 0:
            return 1
        return self.epochs // self.every + (self.epochs % self.every != 0)


def evaluation_epochs(training: dict[str, Any]) -> EvaluationEpochs:
    """Epochs after which the validation set is predicted: every `eval_every` and always the last
    (0: the last only; on a CPU, predicting a large held-out fold can cost more than the epoch)."""
    return EvaluationEpochs(int(training["epochs"]), int(training.get("eval_every", 1)))


def final_training(training: dict[str, Any], final: dict[str, Any] | None) -> dict[str, Any]:
    """The final retrain's settings: an architecture's training settings with `final.training` over them."""
    return deep_merge(training, (final or {}).get("training") or {})


def _model_spec(name, merged):
    kinds = [k for k in ("blocks", "layers", "backbone") if k in merged]
    if len(kinds) != 1:
        raise UserError(
            f"architecture {name!r}: give exactly one of blocks, layers or backbone "
            f"(found: {', '.join(kinds) or 'none'})"
        )
    if "backbone" in merged:
        return {"backbone": merged["backbone"], "pretrained": merged.get("pretrained")}
    if "layers" in merged:
        return {"layers": merged["layers"]}
    return {"layers": expand_blocks(merged["blocks"])}


BLOCK_DEFAULTS = {
    "convs": 2,
    "kernel": 3,
    "pool": "max",
    "norm": "batch",
    "activation": "relu",
    "dropout": 0.0,
    "global_pool": True,
    "head": [],
    "head_dropout": 0.0,
}


def expand_blocks(blocks: dict[str, Any]) -> list[str | dict[str, Any]]:
    """VGG-style stages -> a layer list: per stage `convs` x (conv, [batchnorm], activation), then
    pooling (`pool: none` downsamples with a stride-2 last conv instead), then optional dropout."""
    b = {**BLOCK_DEFAULTS, **blocks}
    if "filters" not in b:
        raise UserError("blocks: `filters` (one number per stage) is required")
    norm = b["norm"] == "batch"
    layers: list[str | dict[str, Any]] = []
    for filters in b["filters"]:
        for i in range(b["convs"]):
            stride = 2 if (b["pool"] == "none" and i == b["convs"] - 1) else 1
            layers.append(
                {
                    "conv": {
                        "filters": filters,
                        "kernel": b["kernel"],
                        "stride": stride,
                        "padding": b["kernel"] // 2,
                        "bias": not norm,
                    }
                }
            )
            if norm:
                layers.append("batchnorm")
            layers.append(b["activation"])
        if b["pool"] != "none":
            layers.append({f"{b['pool']}pool": 2})
        if b["dropout"]:
            layers.append({"dropout": b["dropout"]})
    layers.append("gap" if b["global_pool"] else "flatten")
    for units in b["head"]:
        layers += [{"fc": units}, b["activation"]]
        if b["head_dropout"]:
            layers.append({"dropout": b["head_dropout"]})
    if not b["head"] and b["head_dropout"]:
        layers.append({"dropout": b["head_dropout"]})
    return layers


def config_hash(obj: Any) -> str:
    """Short stable hash of a config (recorded in every result and the report)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def cpu_name() -> str:
    """The processor's model name (/proc/cpuinfo; platform's guess elsewhere)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, str | None]:
    """Versions and hardware recorded beside every result."""
    import platform

    from . import __version__

    env: dict[str, str | None]
    env = {
        "ferstudy": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu": cpu_name(),
    }
    from importlib.metadata import PackageNotFoundError, version

    # Versions from package metadata: importing sklearn, torchvision or snakemake costs seconds.
    for dist in ("torch", "torchvision", "numpy", "h5py", "scikit-learn", "pandas", "snakemake"):
        try:
            env[dist] = version(dist)
        except PackageNotFoundError:
            pass
    try:
        import torch

        env["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return env
