"""6. Snakemake (`snakemake_dry_run`, `snakemake_change`): `snakemake -n` in a finished study and
the jobs a change to one architecture's spec triggers; also how to run Snakemake and read its job
tables (the cost prediction counts a study's jobs with them)."""

from __future__ import annotations

import copy
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse


def snakemake_command() -> list[str]:
    exe = Path(sys.executable).with_name("snakemake")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "snakemake"]


def run_snakemake(study_dir: Path | str, args: Sequence[str], timeout: float = 600) -> tuple[float, str]:
    """(seconds, combined output) of `snakemake <args>` run in `study_dir`."""
    env = dict(os.environ)
    t0 = time.perf_counter()
    proc = subprocess.run(
        snakemake_command() + list(args), cwd=study_dir, capture_output=True, text=True, timeout=timeout, env=env
    )
    seconds = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        last = out.strip().splitlines()[-1] if out.strip() else ""
        raise RuntimeError(f"snakemake {' '.join(args)} in {study_dir} failed ({proc.returncode}): {last}")
    return seconds, out


def parse_job_stats(text: str) -> dict[str, int]:
    """{rule: count} from a Snakemake `Job stats:` table (without the `total` row); {} if none."""
    counts: dict[str, int] = {}
    inside = False
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("Job stats"):
            inside, counts = True, {}
            continue
        if not inside:
            continue
        if not s or s.startswith("job ") or set(s) <= set("- "):
            if not s and counts:
                inside = False
            continue
        m = re.fullmatch(r"(\S+)\s+(\d+)", s)
        if not m:
            inside = False
            continue
        if m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


def parse_dry_run_jobs(text: str) -> list[str]:
    """['rule[wildcards]', ...] from a Snakemake dry run's job listing."""
    jobs, rule = [], None
    for line in text.splitlines():
        m = re.match(r"^(?:local)?(?:checkpoint|rule) (\w+):\s*$", line.strip())
        if m:
            if rule is not None:
                jobs.append(rule)
            rule = m.group(1)
            continue
        if rule is not None and line.strip().startswith("wildcards:"):
            jobs.append(f"{rule}[{line.strip()[len('wildcards:') :].strip()}]")
            rule = None
    if rule is not None:
        jobs.append(rule)
    return jobs


def default_change_arch(cfg: dict, change: dict) -> str | None:
    """A studied architecture that no other extends and that `change` really alters."""
    from ..config import resolve_arch

    names = cfg["study"]["architectures"]
    extended = {e.get("extends") for e in cfg["architectures"].values()}
    for name in names:
        if name in extended or name == cfg["study"]["baseline"]:
            continue
        if "backbone" in resolve_arch(cfg, name)["model"]:
            continue
        if changed_archs(cfg, name, change) == [name]:
            return name
    return None


def changed_archs(cfg: dict, arch: str, change: dict) -> list[str]:
    """Studied architectures whose resolved run config differs after `change` to `arch`."""
    from ..config import deep_merge, resolve_arch

    changed = copy.deepcopy(cfg)
    changed["architectures"][arch] = deep_merge(changed["architectures"][arch], change)
    return [n for n in cfg["study"]["architectures"] if resolve_arch(cfg, n) != resolve_arch(changed, n)]


def snakemake_times(
    study_dir: Path | str, cfg: dict, arch: str | None = None, change: dict | None = None, trials: int = 3
) -> tuple[dict, dict | None]:
    """Dry-run time of a finished study and the jobs one architecture change triggers."""
    import yaml

    change = change or {"blocks": {"kernel": 5}}
    times = []
    for _ in range(trials):
        seconds, out = run_snakemake(study_dir, ["-n"])
        times.append(seconds)
    pending = parse_job_stats(out)
    arch = arch or default_change_arch(cfg, change)
    result = {
        "dry_run_s": min(times),
        "dry_run_s_median": statistics.median(times),
        "trials": trials,
        "pending_jobs": sum(pending.values()),
        "pending_by_rule": pending,
    }
    if arch is None:
        return result, None
    expected = changed_archs(cfg, arch, change)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="ferstudy-bench-", delete=False) as f:
        yaml.safe_dump({"architectures": {arch: change}}, f)
        override = f.name
    try:
        seconds, out = run_snakemake(study_dir, ["-n", "--configfile", override])
    finally:
        os.unlink(override)
    jobs = parse_dry_run_jobs(out)
    by_rule = parse_job_stats(out)
    trained = sorted(
        {m.group(1) for j in jobs for m in [re.search(r"arch=([\w-]+)", j)] if m and j.startswith("train_fold")}
    )
    change_line = {
        "arch": arch,
        "change": change,
        "dry_run_s": seconds,
        "jobs": sum(by_rule.values()),
        "jobs_by_rule": by_rule,
        "job_list": jobs,
        "expected_archs": expected,
        "retrained_archs": trained,
        "only_expected": trained == sorted(expected),
    }
    return result, change_line


def snakemake_records(out: Callable[[dict], dict], args: argparse.Namespace, cfg: dict) -> None:
    """`snakemake -n` on a finished study, and the jobs one architecture's change triggers."""
    if not args.study_dir:
        out({"name": "snakemake_dry_run", "skipped": "no --study-dir (a finished study directory)", "context": {}})
        return
    import yaml

    change = yaml.safe_load(args.change) if args.change else None
    dry, chg = snakemake_times(args.study_dir, cfg, args.change_arch, change, trials=args.trials)
    out(
        {
            "name": "snakemake_dry_run",
            "seconds": dry["dry_run_s"],
            "seconds_median": dry["dry_run_s_median"],
            "pending_jobs": dry["pending_jobs"],
            "pending_by_rule": dry["pending_by_rule"],
            "units": {"seconds": "s wall of `snakemake -n`, best trial"},
            "context": {"study_dir": str(args.study_dir), "trials": dry["trials"]},
        }
    )
    if chg is None:
        out({"name": "snakemake_change", "skipped": "no architecture that the change alters alone", "context": {}})
    else:
        out(
            {
                "name": "snakemake_change",
                **{k: v for k, v in chg.items()},
                "units": {
                    "dry_run_s": "s wall of `snakemake -n --configfile <override>`",
                    "jobs": "jobs the change triggers",
                },
                "context": {"study_dir": str(args.study_dir)},
            }
        )
