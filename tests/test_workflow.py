"""The Snakemake workflow end to end on the built-in demo data (tiny config), and its incrementality."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

TINY = REPO / "tests" / "configs" / "tiny.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
             "--configfile", str(REPO / "config.yaml"), str(TINY)]


def snakemake(workdir, *args, extra_configs=(), check=True):
    cmd = SNAKEMAKE + [str(c) for c in extra_configs] + ["--cores", "2", *args]
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def planned_jobs(output):
    """(rule, wildcards) of every job a dry run plans."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        m = re.match(r"(?:local)?rule (\w+):", block.strip())
        if m:
            w = re.search(r"wildcards: (.*)", block)
            jobs.append((m.group(1), w.group(1).strip() if w else ""))
    return jobs


def test_dry_run_plans_every_job(tmp_path):
    out = snakemake(tmp_path, "-n").stdout + snakemake(tmp_path, "-n").stderr
    jobs = planned_jobs(out)
    train = sorted(w for r, w in jobs if r == "train_fold")
    assert train == ["arch=baseline, fold=0", "arch=baseline, fold=1", "arch=pool_avg, fold=0", "arch=pool_avg, fold=1"]
    assert [r for r, _ in jobs].count("train_final") == 1 and "demo_csv" in [r for r, _ in jobs]


def test_unknown_config_key_fails_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: {learning_rate: 0.1}\n")
    result = snakemake(tmp_path, "-n", extra_configs=[bad], check=False)
    assert result.returncode != 0
    assert "unknown key training.learning_rate" in result.stdout + result.stderr


@pytest.mark.slow
def test_tiny_study_runs_and_reruns_only_what_changed(tmp_path):
    log = snakemake(tmp_path).stderr
    results = tmp_path / "results"
    # The first lines of the log: the jobs and the wall time predicted by measuring this machine.
    head = log[:log.index("rule ")] if "rule " in log else log
    assert "This run: " in head and "Predicted for the whole study on 2 cores" in head, head[-3000:]
    assert (results / "cost" / "prediction.json").is_file() and (results / "cost" / "run.json").is_file()
    for path in ("data/dataset.h5", "data/faces.png", "tables/cv_summary.csv", "tables/ablation.csv",
                 "final/selection.json", "final/metrics.json", "final/predictions_private.csv",
                 "cv/pool_avg/fold1/history.csv", "benchmarks/train/baseline/fold0.tsv",
                 "figures/saliency.png", "figures/training_curves.png", "report/report.md"):
        assert (results / path).is_file(), path
    assert "DEMO DATA" in (results / "logs" / "demo_csv.log").read_text()
    # Nothing to do when nothing changed.
    assert not [j for j in planned_jobs(snakemake(tmp_path, "-n").stdout) if j[0] != "all"]
    report_md = (results / "report" / "report.md").read_text()
    assert "DEMO" in report_md[:2000] and "../figures/cv_accuracy.png" in report_md
    assert "| whole study (up to the report) |" in report_md and "the 25% this tool aims at" in report_md
    # `snakemake --report` (HTML) works on the finished study.
    snakemake(tmp_path, "--report", "report.html")
    assert (tmp_path / "report.html").stat().st_size > 10_000
    # Editing the template reruns only the report (Snakemake compares content, so really edit it).
    template = REPO / "report" / "report.md.j2"
    original = template.read_bytes()
    try:
        template.write_bytes(original + b"{# edited by test_workflow #}\n")
        assert {r for r, _ in planned_jobs(snakemake(tmp_path, "-n").stdout)} == {"report", "all"}
    finally:
        template.write_bytes(original)
    # Change one architecture: only its jobs and what depends on them rerun.
    change = tmp_path / "change.yaml"
    change.write_text(yaml.safe_dump({"architectures": {"pool_avg": {"blocks": {"kernel": 5}}}}))
    jobs = planned_jobs(snakemake(tmp_path, "-n", extra_configs=[change]).stdout)
    trained = sorted(w for r, w in jobs if r == "train_fold")
    assert trained == ["arch=pool_avg, fold=0", "arch=pool_avg, fold=1"]
    rules = {r for r, _ in jobs}
    assert {"run_config", "evaluate_arch", "aggregate", "select", "figures", "report"} <= rules
    assert not any("baseline" in w for r, w in jobs)
    assert {"prepare", "demo_csv"}.isdisjoint(rules)
