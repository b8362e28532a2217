"""Loading, validating and resolving config.yaml: the single source of truth of a study.

`resolve_config(raw)` validates against `schema/config.schema.yaml`, applies the chosen preset
and returns the config every rule and command uses. `resolve_arch(cfg, name)` turns one
architecture entry (with `extends:` and the `blocks:` shorthand) into the run config a training
job needs: the model spec (a layer list or a backbone) and the merged training settings.
"""

import copy
import hashlib
import json
import os
from pathlib import Path

import yaml

from .errors import UserError

SCHEMA_PATH = Path(__file__).parent / "schema" / "config.schema.yaml"
REAL_DATA_CANDIDATES = ("data/fer2013.csv", "data/fer2013.csv.gz", "data/icml_face_data.csv")
DEMO_CSV = "results/data/demo.csv"


def load_yaml(path):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({err})") from None


def deep_merge(base, override):
    """Recursive dict merge: override wins; lists and scalars are replaced, not merged."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def validate(cfg, source="config"):
    """Schema check with one readable line per problem: `config key training.lr: ...`."""
    import jsonschema

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [_describe(err) for err in errors[:5]]
        raise UserError(f"{source}: " + "; ".join(lines))


def _describe(err):
    path = ".".join(str(p) for p in err.absolute_path) or "(top level)"
    if err.validator == "additionalProperties":
        known = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(known))
        return f"unknown key {path + '.' if err.absolute_path else ''}{extra[0]}" + (
            f" (known keys here: {', '.join(known)})" if known else "")
    if err.validator == "required":
        return f"missing key {err.message.split(' ')[0]} under {path}"
    return f"config key {path}: {err.message}"


def choose_preset(cfg, dataset):
    """`preset: auto` picks demo for the demo data; else `training.device` decides (cuda: gpu,
    cpu: cpu) and, when that is auto too, whether this machine has CUDA. On a cluster the machine
    deciding is the submitting host, so name the preset or the device there."""
    name = cfg.get("preset", "auto")
    if name == "auto":
        device = cfg.get("training", {}).get("device", "auto")
        if dataset == "demo":
            name = "demo"
        elif device != "auto":
            name = "gpu" if device == "cuda" else "cpu"
        else:
            name = "gpu" if _cuda_available() else "cpu"
    if name != "none" and name not in cfg.get("presets", {}):
        raise UserError(f"config key preset: unknown preset {name!r} "
                        f"(defined: {', '.join(cfg.get('presets', {})) or 'none'})")
    return name


def _cuda_available():
    if not (Path("/proc/driver/nvidia/gpus").is_dir() or Path("/dev/kfd").exists() or Path("/dev/dxg").exists()
            or os.environ.get("CUDA_VISIBLE_DEVICES")):
        return False  # no NVIDIA, ROCm or WSL2 GPU driver here: skip the torch import, dry runs stay fast
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


def choose_dataset(cfg, workdir="."):
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
        raise UserError(f"config key data.csv: {csv} does not exist (download FER2013 as the README says, "
                        f"or set data.csv: auto to use the built-in demo)")
    return "fer2013", csv


def resolve_config(raw, workdir=".", source="config"):
    """Validate, pick dataset and preset, apply the preset. Every architecture is checked here."""
    validate(raw, source)
    dataset, csv = choose_dataset(raw, workdir)
    preset = choose_preset(raw, dataset)
    cfg = deep_merge(raw, raw.get("presets", {}).get(preset, {}))
    cfg.pop("presets", None)
    cfg.pop("description", None)
    validate(cfg, f"{source} (after preset {preset!r})")
    cfg["preset"] = preset
    cfg["dataset"] = {"name": dataset, "csv": csv}
    for name, path in (cfg["data"].get("extra_test_sets") or {}).items():
        if not (Path(workdir) / path).is_file():
            raise UserError(f"config key data.extra_test_sets.{name}: {path} does not exist")
    study = cfg["study"]
    names = study.get("only") or list(cfg["architectures"])
    for name in names:
        if name not in cfg["architectures"]:
            raise UserError(f"config key study.only: unknown architecture {name!r}")
    study["architectures"] = names
    if study.get("baseline", names[0]) not in names:
        raise UserError(f"config key study.baseline: {study['baseline']!r} is not among the architectures studied")
    study.setdefault("baseline", names[0])
    for name in cfg["architectures"]:
        resolve_arch(cfg, name)  # fail early for every declared one, naming the architecture and layer
    for name in names:
        resolve_arch(cfg, name, final=True)  # and for the final retrain of every candidate
    return cfg


def resolve_arch(cfg, name, final=False):
    """Run config for one architecture: {name, description, factor, model, training, data}."""
    archs = cfg["architectures"]
    chain, entry = [], archs.get(name)
    if entry is None:
        raise UserError(f"architecture {name!r} is not defined under `architectures`")
    merged = {}
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
            raise UserError(f"architecture {arch_name!r}: the final model's schedule `plateau` needs "
                            f"training.eval_every 1 (final.training.eval_every), not {training.get('eval_every')}")
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


def evaluation_epochs(training):
    """Epochs after which the validation set is predicted: every `eval_every` and always the last
    (0: the last only; on a CPU, predicting a large held-out fold can cost more than the epoch)."""
    every, epochs = training.get("eval_every", 1), training["epochs"]
    return {e for e in range(1, epochs + 1) if e == epochs or (every > 0 and e % every == 0)}


def final_training(training, final):
    """The final retrain's settings: an architecture's training settings with `final.training` over them."""
    return deep_merge(training, (final or {}).get("training") or {})


def _model_spec(name, merged):
    kinds = [k for k in ("blocks", "layers", "backbone") if k in merged]
    if len(kinds) != 1:
        raise UserError(f"architecture {name!r}: give exactly one of blocks, layers or backbone "
                        f"(found: {', '.join(kinds) or 'none'})")
    if "backbone" in merged:
        return {"backbone": merged["backbone"], "pretrained": merged.get("pretrained")}
    if "layers" in merged:
        return {"layers": merged["layers"]}
    return {"layers": expand_blocks(merged["blocks"])}


BLOCK_DEFAULTS = {"convs": 2, "kernel": 3, "pool": "max", "norm": "batch", "activation": "relu",
                  "dropout": 0.0, "global_pool": True, "head": [], "head_dropout": 0.0}


def expand_blocks(blocks):
    """VGG-style stages -> a layer list: per stage `convs` x (conv, [batchnorm], activation), then
    pooling (`pool: none` downsamples with a stride-2 last conv instead), then optional dropout."""
    b = {**BLOCK_DEFAULTS, **blocks}
    if "filters" not in b:
        raise UserError("blocks: `filters` (one number per stage) is required")
    norm = b["norm"] == "batch"
    layers = []
    for filters in b["filters"]:
        for i in range(b["convs"]):
            stride = 2 if (b["pool"] == "none" and i == b["convs"] - 1) else 1
            layers.append({"conv": {"filters": filters, "kernel": b["kernel"], "stride": stride,
                                    "padding": b["kernel"] // 2, "bias": not norm}})
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


def config_hash(obj):
    """Short stable hash of a config (recorded in every result and the report)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def environment():
    """Versions and hardware recorded beside every result."""
    import platform

    from . import __version__

    env = {"ferstudy": __version__, "python": platform.python_version(), "platform": platform.platform(),
           "processor": platform.processor() or platform.machine()}
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
