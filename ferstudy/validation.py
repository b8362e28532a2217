"""Checking a config against the schema, and the messages that name the key.

`validate` checks a study's config against `schema/config.schema.yaml` with one readable line per
problem; `check_run_config` checks a run config as a training job reads it;
`check_extra_test_sets` checks the names and files of the extra test sets; `coerce_cli_config`
gives `--config` strings the types the schema expects. Resolving the layers is `config`'s job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

SCHEMA_PATH = Path(__file__).parent / "schema" / "config.schema.yaml"


def _schema():
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _validator(schema):
    """A Draft 2020-12 validator whose `integer` is an int: JSON Schema counts 2.0 as one, and a
    float reaching range() or a tensor shape crashes a job far from the config."""
    import jsonschema

    checker = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)
    )
    return jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=checker)(schema)


def validate(cfg: Any, source: str = "config") -> None:
    """Schema check with one readable line per problem: `config key training.lr: ...`."""
    errors = sorted(_validator(_schema()).iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [_describe(err) for err in errors[:5]]
        raise UserError(f"{source}: " + "; ".join(lines))


def _describe(err, prefix=""):
    path = prefix + ".".join(str(p) for p in err.absolute_path) or "(top level)"
    if err.validator == "type" and err.validator_value == "integer" and isinstance(err.instance, float):
        whole = f" (write {int(err.instance)})" if err.instance.is_integer() else ""
        return f"config key {path}: {err.instance!r} is not an integer{whole}"
    if err.validator == "pattern" and "propertyNames" in err.schema_path:
        return (
            f"config key {path}: the name {err.instance!r} is not allowed (letters, digits, _ and -, "
            f"starting with a letter or digit: it names a folder under results/)"
        )
    if err.validator == "additionalProperties":
        known = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(known))
        return f"unknown key {path + '.' if err.absolute_path else ''}{extra[0]}" + (
            f" (known keys here: {', '.join(known)})" if known else ""
        )
    if err.validator == "required":
        return f"missing key {err.message.split(' ')[0]} under {path}"
    return f"config key {path}: {err.message}"


# Training settings the training loop reads without a default (a resolved run config has them all).
TRAINING_NEEDS = (
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "weight_decay",
    "schedule",
    "label_smoothing",
    "seed",
    "augment",
)


def check_run_config(run_cfg: Any, source: Path | str) -> None:
    """A run config as a training job reads it (results/cv/{arch}/run_config.yaml, which the workflow
    writes from a validated config): a name, a model spec that builds and training settings of the
    schema's types. One UserError line naming the file and the key."""
    from .spec import validate_spec

    if (
        not isinstance(run_cfg, dict)
        or not isinstance(run_cfg.get("name"), str)
        or not isinstance(run_cfg.get("model"), dict)
        or not isinstance(run_cfg.get("training"), dict)
    ):
        raise UserError(
            f"{source}: not a run config (a mapping with name, model and training, as the workflow "
            f"writes results/cv/ARCH/run_config.yaml)"
        )
    training = run_cfg["training"]
    missing = [k for k in TRAINING_NEEDS if k not in training]
    if missing:
        raise UserError(f"{source}: missing key {missing[0]} under training")
    schema = _schema()
    errors = sorted(
        _validator({**schema["$defs"]["training"], "$defs": schema["$defs"]}).iter_errors(training),
        key=lambda e: list(e.absolute_path),
    )
    if errors:
        raise UserError(f"{source}: {_describe(errors[0], 'training.')}")
    try:
        validate_spec(run_cfg["model"], input_size=training["augment"].get("crop", 48))
    except UserError as err:
        raise UserError(f"{source}: model: {err}") from None


# Keys of results/final/metrics.json that are FER2013's own test sets: an extra set of that name
# would replace their numbers.
RESERVED_TEST_SET_NAMES = ("public", "private")


def check_extra_test_sets(sets: dict[str, str], workdir: Path | str = ".") -> None:
    """Extra test sets: names that are neither FER2013's own test sets nor each other's folder
    (case-insensitive filesystems), and files that exist. The schema's pattern keeps the names
    inside results/final/extra/."""
    seen: dict[str, str] = {}
    for name, path in sets.items():
        key = f"config key data.extra_test_sets.{name}"
        if name.lower() in RESERVED_TEST_SET_NAMES:
            raise UserError(
                f"{key}: the name is reserved for FER2013's {name.lower().title()}Test (its numbers "
                f"would replace them in results/final/metrics.json); choose another name"
            )
        if name.lower() in seen:
            raise UserError(
                f"{key}: the name differs from {seen[name.lower()]!r} only in case (the two would "
                f"share one folder on a case-insensitive filesystem); choose another name"
            )
        seen[name.lower()] = name
        if not (Path(workdir) / path).is_file():
            raise UserError(f"{key}: {path} does not exist")


def coerce_cli_config(values: dict[str, Any]) -> dict[str, Any]:
    """`--config` values with the types the schema expects. Snakemake hands nested values as
    strings (`--config "training={epochs: 6}"` gives {"training": {"epochs": "6"}}): a string
    becomes what YAML reads in it when that is of the type expected where it stands (6, 0.5,
    true, null; out-of-range numbers too, so validation names the range), and stays a string
    otherwise (a path, a name, `auto`). A mapping or list that is not valid YAML is an error."""
    schema = _schema()
    return _coerce(values, schema, schema, ())


def _coerce(value, sub, root, path):
    if isinstance(sub, dict) and "$ref" in sub:
        sub = root["$defs"][sub["$ref"].rsplit("/", 1)[-1]]
    if isinstance(value, dict):
        props = (sub or {}).get("properties", {})
        extra = (sub or {}).get("additionalProperties")
        return {
            k: _coerce(v, props.get(k, extra if isinstance(extra, dict) else None), root, path + (k,))
            for k, v in value.items()
        }
    if isinstance(value, list):
        items = (sub or {}).get("items")
        return [_coerce(v, items if isinstance(items, dict) else None, root, path) for v in value]
    if not isinstance(value, str):
        return value
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as err:
        if isinstance(sub, dict) and sub.get("type") in ("object", "array"):
            why = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise UserError(f"--config {'.'.join(path)}={value!r}: not valid YAML ({why})") from None
        return value
    if isinstance(parsed, str):  # YAML 1.1 reads 1e-3 as a string
        for number in (int, float):
            try:
                parsed = number(value)
                break
            except ValueError:
                pass
    if isinstance(parsed, (str, dict, list)):
        return value
    if sub is None:  # free-form (layers, preset sections): what a YAML file would have given
        return parsed
    if _validator({**sub, "$defs": root["$defs"]}).is_valid(parsed) or _same_kind(parsed, sub.get("type")):
        return parsed
    return value


def _same_kind(value, expected):
    """Whether `value` is of the JSON type `expected` names, any number for a number (so a float for
    an integer key, or -3 for a positive one, reaches validation as the number it is)."""
    if expected is None:
        return False
    expected = {expected} if isinstance(expected, str) else set(expected)
    if isinstance(value, bool):
        return "boolean" in expected
    if isinstance(value, (int, float)):
        return bool(expected & {"integer", "number"})
    return value is None and "null" in expected
