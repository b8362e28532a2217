"""envs/ferstudy.yaml, the conda environment of every rule under `--sdm conda`, is self-contained:
it lists every runtime dependency of pyproject.toml, pinned as pyproject pins it, and nothing that
points at a path (Snakemake resolves paths in it against its own copy under .snakemake/conda/)."""

import re
import tomllib

import yaml

from conftest import REPO

ENV = yaml.safe_load((REPO / "envs" / "ferstudy.yaml").read_text())
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def normal(requirement):
    """`Name >= 1, <2` -> ("name", ">=1,<2"): the name as pip compares it, the specifier without spaces."""
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)$", requirement)
    if not m:  # `-e ..` and other pip options
        return None
    return re.sub(r"[-_.]+", "-", m[1]).lower(), re.sub(r"\s+", "", m[2])


def env_requirements():
    conda = [d for d in ENV["dependencies"] if isinstance(d, str)]
    pip = [p for d in ENV["dependencies"] if isinstance(d, dict) for p in d.get("pip", [])]
    return conda, pip


def test_env_lists_every_runtime_dependency_as_pyproject_pins_it():
    conda, pip = env_requirements()
    listed = dict(normal(r) for r in pip if normal(r))
    for name, spec in filter(None, map(normal, conda)):  # conda's `name=1.2` is pip's `name==1.2`
        listed[name] = "=" + spec if re.match(r"=\d", spec) else spec
    for requirement in PROJECT["dependencies"]:
        name, spec = normal(requirement)
        assert name in listed, f"envs/ferstudy.yaml lacks {requirement} (pyproject.toml)"
        assert listed[name] == spec, f"envs/ferstudy.yaml pins {name} {listed[name]!r}, pyproject.toml {spec!r}"


def test_env_points_at_no_path_and_has_a_python_pyproject_accepts():
    conda, pip = env_requirements()
    for entry in pip:
        assert not entry.startswith(("-e", "-r", ".", "/", "file:")) and "://" not in entry, entry
    python = next(d for d in conda if d.startswith("python"))
    major, minor = map(int, re.search(r"(\d+)\.(\d+)", python).groups())
    low = tuple(map(int, re.search(r">=\s*(\d+)\.(\d+)", PROJECT["requires-python"]).groups()))
    assert (major, minor) >= low and "pip" in conda


def test_every_rule_that_runs_a_command_uses_the_env():
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        text = smk.read_text()
        for rule in re.split(r"\n(?=rule \w+:)", text)[1:]:
            if "shell:" in rule:
                assert 'conda:\n        "../../envs/ferstudy.yaml"' in rule, (smk.name, rule.splitlines()[0])
