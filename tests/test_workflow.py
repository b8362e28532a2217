"""The Snakemake workflow end to end on the built-in demo data (tiny config), and its incrementality."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, TINY, TINY_SNAKEMAKE

SNAKEMAKE = TINY_SNAKEMAKE


def snakemake(workdir, *args, extra_configs=(), check=True):
    cmd = SNAKEMAKE + [str(c) for c in extra_configs] + ["--cores", "2", *args]
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def planned_jobs(output):
    """(rule, wildcards) of every job a dry run plans."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?(?:rule|checkpoint) \w+:)", output):
        m = re.match(r"(?:local)?(?:rule|checkpoint) (\w+):", block.strip())
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
    head = log[: log.index("rule ")] if "rule " in log else log
    assert "This run: " in head and "Predicted for the whole study on 2 cores" in head, head[-3000:]
    assert head.count("\n  measured network ") == 2  # one line per network while it measures
    assert (results / "cost" / "prediction.json").is_file() and (results / "cost" / "run.json").is_file()
    for path in (
        "data/dataset.h5",
        "data/faces.png",
        "tables/cv_summary.csv",
        "tables/ablation.csv",
        "final/selection.json",
        "final/metrics.json",
        "final/predictions_private.csv",
        "cv/pool_avg/fold1/history.csv",
        "benchmarks/train/baseline/fold0.tsv",
        "figures/saliency.png",
        "figures/training_curves.png",
        "report/report.md",
    ):
        assert (results / path).is_file(), path
    assert "DEMO DATA" in (results / "logs" / "demo_csv.log").read_text()
    # One log per job, none empty; a benchmark for every rule that computes (not run_config, final_config:
    # they write a settings file in the Snakemake process)
    logs = sorted((results / "logs").rglob("*.log"))
    assert len(logs) >= 18 and not [str(p) for p in logs if p.stat().st_size == 0]
    benchmarks = {p.relative_to(results / "benchmarks").as_posix() for p in (results / "benchmarks").rglob("*.tsv")}
    assert {
        "demo_csv.tsv",
        "prepare.tsv",
        "train/pool_avg/fold1.tsv",
        "evaluate/baseline.tsv",
        "aggregate.tsv",
        "select.tsv",
        "train_final.tsv",
        "evaluate_final.tsv",
        "figures.tsv",
        "report/report.tsv",
        "report/report_html.tsv",
    } <= benchmarks, sorted(benchmarks)
    # Nothing to do when nothing changed.
    assert not [j for j in planned_jobs(snakemake(tmp_path, "-n").stdout) if j[0] != "all"]
    report_md = (results / "report" / "report.md").read_text()
    appendix_md = (results / "report" / "appendix.md").read_text()
    assert "DEMO" in report_md[:2000] and "../figures/cv_accuracy.png" in report_md and "(appendix.md)" in report_md
    assert "| whole study (up to the report) |" in appendix_md and "the 25% this tool aims at" in appendix_md
    assert (results / "report" / "html" / "appendix.html").is_file()
    # `snakemake --report` works on the finished study (a zip: the HTML report is a folder result).
    snakemake(tmp_path, "--report", "report.zip")
    assert (tmp_path / "report.zip").stat().st_size > 10_000
    # Editing a template reruns only the report and its HTML pages (Snakemake compares content, so really edit it).
    for template in (REPO / "report" / "report.md.j2", REPO / "report" / "appendix.md.j2"):
        original = template.read_bytes()
        try:
            template.write_bytes(original + b"{# edited by test_workflow #}\n")
            assert {r for r, _ in planned_jobs(snakemake(tmp_path, "-n").stdout)} == {"report", "report_html", "all"}
        finally:
            template.write_bytes(original)
    # Change one architecture: only its jobs and what depends on them rerun.
    # (`description` is each one's own: a change to baseline's blocks would reach pool_avg, which extends it.)
    chosen = json.loads((results / "final" / "selection.json").read_text())["architecture"]
    change = tmp_path / "change.yaml"
    for arch, retrains in (({"baseline", "pool_avg"} - {chosen}).pop(), False), (chosen, True):
        change.write_text(yaml.safe_dump({"architectures": {arch: {"description": "edited by test_workflow"}}}))
        out = snakemake(tmp_path, "-n", extra_configs=[change])
        jobs = planned_jobs(out.stdout)
        trained = sorted(w for r, w in jobs if r == "train_fold")
        assert trained == [f"arch={arch}, fold=0", f"arch={arch}, fold=1"]
        rules = {r for r, _ in jobs}
        assert {"run_config", "evaluate_arch", "aggregate", "select", "figures", "report"} <= rules
        assert ("train_final" in rules) is retrains, (arch, chosen, sorted(rules))
        assert not any(w and arch not in w for r, w in jobs)
        assert {"prepare", "demo_csv"}.isdisjoint(rules)
        # `reason:` lines name a changed spec by a hash beside its name, not by both whole specs
        reasons = [line for line in out.stdout.splitlines() if "reason: Params have changed" in line]
        assert reasons and max(map(len, reasons)) < 300, max(reasons, key=len)
    # study.alpha changes the tables and the report only: nothing trains
    change.write_text(yaml.safe_dump({"study": {"alpha": 0.1}}))
    rules = {r for r, _ in planned_jobs(snakemake(tmp_path, "-n", extra_configs=[change]).stdout)}
    assert "aggregate" in rules and "report" in rules and not rules & {"train_fold", "train_final", "prepare"}
    # A new architecture that ties the chosen one (its twin, same precision) and wins the tie by its name:
    # the dry run cannot know that and plans no final model; the run finds it at the checkpoint and retrains.
    precision = yaml.safe_load((results / "cv" / chosen / "fold0" / "config.yaml").read_text())["precision"]
    change.write_text(
        yaml.safe_dump(
            {
                "architectures": {"aaa_twin": {"extends": chosen, "training": {"amp": precision == "bf16"}}},
                "study": {"only": ["baseline", "pool_avg", "aaa_twin"]},
            }
        )
    )
    rules = {r for r, _ in planned_jobs(snakemake(tmp_path, "-n", extra_configs=[change]).stdout)}
    assert {"train_fold", "select"} <= rules and "train_final" not in rules
    ran = snakemake(tmp_path, extra_configs=[change]).stderr
    assert json.loads((results / "final" / "selection.json").read_text())["architecture"] == "aaa_twin"
    assert re.search(r"^(local)?rule train_final:", ran, re.M), ran[-3000:]
    assert yaml.safe_load((results / "final" / "config.yaml").read_text())["architecture"] == "aaa_twin"


# ---------------------------------------------------------------- the user's config, paths, environments


def fake_real_data(workdir, name="data/fer2013.csv"):
    path = workdir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("emotion,pixels,Usage\n")  # exists: enough for the config and a dry run
    return path


def test_the_users_overlay_wins_over_the_auto_preset(tmp_path):
    """`preset: auto` (the demo here): the user's --configfile and --config (nested values too) beat
    the preset, and the first lines of the run list what the preset set and what the user's replaced."""
    overlay = tmp_path / "mine.yaml"
    overlay.write_text("study: {only: [baseline, no_augment]}\ntraining: {epochs: 20}\n")
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "workflow" / "Snakefile"),
        "--configfile",
        str(REPO / "config" / "config.yaml"),
        str(overlay),
        "--cores",
        "1",
    ]
    dry = subprocess.run(cmd + ["-n"], cwd=tmp_path, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr[-3000:]
    log = dry.stdout + dry.stderr
    train = sorted(w for r, w in planned_jobs(log) if r == "train_fold")
    assert train == [f"arch={a}, fold={k}" for a in ("baseline", "no_augment") for k in range(3)]
    head = log[: log.index("Building DAG")]
    assert "Preset 'demo' set" in head and "  data.folds: 5 -> 3" in head
    assert "  training.epochs: 20 (" in head and "mine.yaml; the preset's: 8)" in head  # the user's 20 won
    assert "training.epochs: 30 -> 8" not in head
    # --config with a nested value, over the overlay; the run config is what training jobs read
    run = subprocess.run(
        cmd + ["results/cv/baseline/run_config.yaml", "--config", "training={epochs: 6, lr: 0.02}", "data={folds: 4}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    spec = yaml.safe_load((tmp_path / "results/cv/baseline/run_config.yaml").read_text())
    assert spec["training"]["epochs"] == 6 and spec["training"]["lr"] == 0.02 and spec["data"]["folds"] == 4
    assert spec["training"]["batch_size"] == 32  # the demo preset where the user wrote nothing


def test_an_edit_to_the_config_file_takes_effect_under_the_demo_preset(tmp_path):
    """The README's first command in a fresh checkout, on the demo: `snakemake` from the root reads
    config/config.yaml (found by `configfile:`) and workflow/Snakefile (found by Snakemake) by
    itself; a value written there wins over the preset, and the first lines say so."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    for part in ("workflow", "ferstudy", "report"):  # the checkout's layout: Snakemake finds workflow/Snakefile
        (tmp_path / part).symlink_to(REPO / part)
    edited = (REPO / "config" / "config.yaml").read_text().replace("# training:  ", "training:    ", 1)
    edited = edited.replace("#   epochs: 30", "  epochs: 3", 1)
    assert edited.count("\ntraining:") == 1 and "\n  epochs: 3\n" in edited
    (tmp_path / "config" / "config.yaml").write_text(edited)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--cores",
            "1",
            "results/cv/baseline/run_config.yaml",
            "results/final/final_config.yaml",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    head = run.stderr[: run.stderr.index("Building DAG")]
    assert "  training.epochs: 3 (config/config.yaml; the preset's: 8)" in head
    assert "Preset 'demo' set" in head and "  training.epochs: 30 -> 8" not in head
    spec = yaml.safe_load((tmp_path / "results/cv/baseline/run_config.yaml").read_text())
    assert spec["training"]["epochs"] == 3 and spec["data"]["folds"] == 3  # yours; the demo preset's
    # no empty logs: the two settings rules say what they wrote
    for log in ("run_config/baseline.log", "final_config.log"):
        text = (tmp_path / "results" / "logs" / log).read_text()
        assert text.startswith("wrote results/") and "hash" in text, log


def test_the_submitting_hosts_preset_reaches_every_job(tmp_path):
    """Jobs re-read the config where they run (a cluster node, or a local `run:` job). Here every
    process that Snakemake spawns (`--mode ...`) sees a GPU that the submitting one lacks: the
    run config it writes must still be the cpu study's (3 folds), not the gpu one's (5)."""
    fake_real_data(tmp_path)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\n"
        "if '--mode' in sys.argv:  # a job spawned by Snakemake: this 'node' has a GPU\n"
        "    import ferstudy.config\n"
        "    ferstudy.config._cuda_available = lambda: True\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env.pop("FERSTUDY_PRESET", None)
    no_budget = tmp_path / "no_budget.yaml"  # the cpu preset's time budget would measure first (the plan)
    no_budget.write_text("study: {time_budget: null}\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(REPO / "workflow" / "Snakefile"),
            "--configfile",
            str(REPO / "config" / "config.yaml"),
            str(no_budget),
            "--cores",
            "1",
            "results/cv/baseline/run_config.yaml",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    spec = yaml.safe_load((tmp_path / "results/cv/baseline/run_config.yaml").read_text())
    assert spec["data"]["folds"] == 3 and spec["training"]["epochs"] == 8  # the cpu preset's


@pytest.mark.slow
def test_data_paths_with_spaces_and_shell_characters(tmp_path, real_slice_csv):
    """`prepare` and a training job on a CSV whose path has a space, quotes and shell characters,
    in a study directory with a space."""
    study = tmp_path / "my study"
    csv = study / "My Data" / "fer 2013 (Jo's copy) & $HOME;.csv"
    csv.parent.mkdir(parents=True)
    shutil.copy(real_slice_csv, csv)
    mine = study / "my config.yaml"
    mine.write_text(
        yaml.safe_dump(
            {
                "preset": "none",
                "data": {"csv": str(csv.relative_to(study)), "folds": 2},
                "training": {"epochs": 1, "batch_size": 32, "tta": "none", "curve_images": 0},
                "architectures": {"baseline": {"blocks": {"filters": [8, 16]}}},
                "study": {"only": ["baseline"], "predict_cost": False},
            }
        )
    )
    result = snakemake(study, "results/cv/baseline/fold0/predictions.csv", extra_configs=[mine])
    assert "ferstudy: error" not in result.stderr
    assert (study / "results/data/dataset.h5").is_file() and (study / "results/cv/baseline/fold0/model.pt").is_file()
    assert "fer 2013 (Jo's copy)" in (study / "results/logs/prepare.log").read_text()


def test_every_job_runs_the_workflows_own_package(tmp_path):
    """Under `--sdm conda` a job runs in an environment with the dependencies only (envs/ferstudy.yaml),
    no `ferstudy` installed. Emulated: Snakemake runs from a copy of the venv whose bin/ has no
    `ferstudy` script and whose `python3` (what the jobs call) starts without site-packages, so
    without the installed package, and sees the dependencies on its path only."""
    import sysconfig

    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    lib = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    lib.mkdir(parents=True)
    site_packages = sysconfig.get_paths()["purelib"]
    (lib / "site-packages").symlink_to(site_packages)
    shutil.copy(Path(sys.prefix) / "pyvenv.cfg", venv / "pyvenv.cfg")
    base = Path(sys._base_executable).resolve()
    (venv / "bin" / "python").symlink_to(base)
    (venv / "bin" / "python3").write_text(
        f'#!/bin/sh\nPYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{site_packages}" exec {base} -S "$@"\n'
    )
    (venv / "bin" / "python3").chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    run = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "snakemake",
            "--snakefile",
            str(REPO / "workflow" / "Snakefile"),
            "--configfile",
            str(REPO / "config" / "config.yaml"),
            str(TINY),
            "--cores",
            "1",
            "-p",
            "results/data/demo.csv",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    log = tmp_path / "results" / "logs" / "demo_csv.log"
    assert run.returncode == 0, (run.stderr[-3000:], log.read_text() if log.is_file() else "")
    assert "python3 -m ferstudy demo --out results/data/demo.csv " in run.stdout + run.stderr
    assert (tmp_path / "results" / "data" / "demo.csv").stat().st_size > 100_000


def test_predict_extra_asks_for_what_it_uses(tmp_path):
    """`ferstudy predict` runs on the CPU: the job asks for no GPU, also when training does."""
    fake_real_data(tmp_path, "extra/ck.csv")
    extra = tmp_path / "extra.yaml"
    extra.write_text("data: {extra_test_sets: {ck: extra/ck.csv}}\ntraining: {device: cuda}\n")
    out = snakemake(tmp_path, "-n", extra_configs=[extra])
    blocks = {m.group(1): m.group(0) for m in re.finditer(r"rule (\w+):\n(?:    .*\n)+", out.stdout + out.stderr)}
    assert "gpu=1" in blocks["train_fold"] and "gpu=1" in blocks["train_final"]
    assert "gpu" not in blocks["predict_extra"].split("resources:")[1]


def test_recheck_off_has_no_plan_and_an_unknown_variant_is_refused(tmp_path):
    """`study.recheck: off` leaves the checkpoint out of the DAG; a list naming no variant of the
    study (the baseline, or a network it does not train) fails before any job."""
    auto = [r for r, _ in planned_jobs(snakemake(tmp_path, "-n").stdout)]
    assert auto.count("recheck_plan") == 1 and "recheck" not in auto  # its jobs come once the plan exists
    off = snakemake(tmp_path, "-n", "--config", "study={recheck: 'off', only: [baseline, pool_avg]}").stdout
    assert "recheck_plan" not in [r for r, _ in planned_jobs(off)]
    bad = snakemake(tmp_path, "-n", "--config", "study={recheck: [baseline], only: [baseline, pool_avg]}", check=False)
    assert bad.returncode != 0 and "study.recheck: 'baseline' is no variant of this study" in bad.stdout + bad.stderr


@pytest.mark.slow
def test_an_at_risk_pair_gets_its_recheck_jobs(tmp_path):
    """A tiny demo study with a regularizer variant (every regularizer verdict is at risk): once
    cross-validation and the plan ran, the dry run shows the 2x runs of the variant and of the
    baseline, and aggregate waits for them."""
    mine = tmp_path / "mine.yaml"
    mine.write_text("study: {only: [baseline, no_dropout], predict_cost: false}\n")
    snakemake(tmp_path, "results/recheck/plan.json", extra_configs=[mine])
    plan = json.loads((tmp_path / "results/recheck/plan.json").read_text())
    assert plan["rechecked"] == ["no_dropout"] and plan["runs"] == ["baseline", "no_dropout"]
    jobs = planned_jobs(snakemake(tmp_path, "-n", extra_configs=[mine]).stdout)
    assert sorted(w for r, w in jobs if r == "recheck") == ["arch=baseline", "arch=no_dropout"]
    assert sorted(w for r, w in jobs if r == "recheck_config") == ["arch=baseline", "arch=no_dropout"]
    assert "aggregate" in [r for r, _ in jobs] and "train_fold" not in [r for r, _ in jobs]
    longer = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())["training"]["epochs"] * 2
    snakemake(tmp_path, "results/recheck/x2/no_dropout/run_config.yaml", extra_configs=[mine])
    spec = yaml.safe_load((tmp_path / "results/recheck/x2/no_dropout/run_config.yaml").read_text())
    assert spec["training"]["epochs"] == longer and spec["training"]["subsample"] == 1.0
    assert spec["training"]["amp"] in (True, False)  # pinned to the precision fold 0 trained in


def test_new_data_with_the_old_mtime_reruns_prepare(tmp_path):
    """`cp -p` of different data over data/fer2013.csv keeps its mtime; the HDF5 stores the data's
    SHA-256, and that hash is a rerun trigger of `prepare`."""
    from ferstudy.demo import write_demo_csv

    data = tmp_path / "data" / "fer2013.csv"
    data.parent.mkdir()
    for seed, path in ((0, data), (1, tmp_path / "other.csv")):
        write_demo_csv(path, n_images=700, seed=seed)
    mine = tmp_path / "mine.yaml"
    mine.write_text("data: {csv: data/fer2013.csv}\nstudy: {only: [baseline], predict_cost: false}\n")

    def dry_run():
        result = snakemake(tmp_path, "-n", "results/data/dataset.h5", extra_configs=[mine])
        return result.stdout + result.stderr

    snakemake(tmp_path, "results/data/dataset.h5", extra_configs=[mine])
    assert "Nothing to be done" in dry_run()
    stat = data.stat()
    shutil.copyfile(tmp_path / "other.csv", data)
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as `cp -p` leaves it
    dry = dry_run()
    assert [r for r, _ in planned_jobs(dry)] == ["prepare"] and "params have changed" in dry.lower(), dry


@pytest.mark.parametrize(
    "given, message",
    [
        ("data={extra_test_sets: {private: x.csv}}", "config key data.extra_test_sets.private: the name is reserved"),
        (
            "data={extra_test_sets: {'../../../../../../tmp/x/ESCAPED': x.csv}}",
            "config key data.extra_test_sets: the name '../../../../../../tmp/x/ESCAPED' is not allowed",
        ),
        ("training={epochs: 99999999999999999999}", "config key training.epochs: 99999999999999999999 is greater than"),
        ("training={epochs: 1e8}", "config key training.epochs: 100000000.0 is not an integer"),
        ("training={batch_size: 32.0}", "config key training.batch_size: 32.0 is not an integer (write 32)"),
        ("data={folds: 3.0}", "config key data.folds: 3.0 is not an integer (write 3)"),
        ("training={epochs: -3}", "config key training.epochs: -3 is less than the minimum of 1"),
        ("training={epochs: [}", "--config training='{epochs: [}': not valid YAML"),
        ("final={architecture: nope}", "config key final.architecture: 'nope' is not among the architectures studied"),
    ],
)
def test_hostile_config_values_stop_the_dry_run_in_one_line(given, message, tmp_path):
    """Each made a traceback, an out-of-memory dry run (21.8 GB for 1e20 epochs) or a crash in every
    training job; now the dry run stops before any job with one line naming the key."""
    import resource

    (tmp_path / "x.csv").write_text("emotion,pixels,Usage\n")
    cmd = SNAKEMAKE + ["--cores", "1", "-n", "--config", given]
    result = subprocess.run(
        cmd,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30)),
    )
    out = result.stdout + result.stderr
    assert result.returncode != 0 and message in out and "Traceback" not in out, out[-3000:]
    assert not (tmp_path / "results").exists() and not Path("/tmp/x/ESCAPED").exists()


def test_a_time_budget_puts_the_plan_before_training(tmp_path):
    """study.time_budget: the plan's jobs join the DAG (the dry run stays a dry run: no measurement),
    run_config and recheck_plan read plan.json and train_final the planned final settings."""
    mine = tmp_path / "budget.yaml"
    mine.write_text("study: {time_budget: 30min}\n")
    out = snakemake(tmp_path, "-n", extra_configs=[mine]).stdout
    rules = [r for r, _ in planned_jobs(out)]
    assert rules.count("plan_config") == 1 and rules.count("plan") == 1 and rules.count("final_planned_config") == 1
    assert "results/plan.json" in out and "results/final/final_config_planned.yaml" in out
    assert not (tmp_path / "results" / "plan.json").exists() and not (tmp_path / "results" / "cost").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: {time_budget: 2 hours}\n")
    result = snakemake(tmp_path, "-n", extra_configs=[bad], check=False)
    assert (
        result.returncode != 0
        and "config key study.time_budget: '2 hours' is not a time" in result.stdout + result.stderr
    )


@pytest.mark.slow
def test_the_plan_reaches_the_training_jobs_and_a_rerun_reuses_it(tmp_path):
    """The plan job measures once and writes plan.json; the run configs carry its fold budget; a
    rerun (also with other --cores) plans no new measurement; the user's epochs win and are named."""
    mine = tmp_path / "budget.yaml"
    mine.write_text("study: {time_budget: 6min, predict_cost: true}\ntraining: {epochs: 1}\n")
    snakemake(
        tmp_path, "results/cv/baseline/run_config.yaml", "results/cv/pool_avg/run_config.yaml", extra_configs=[mine]
    )
    plan = json.loads((tmp_path / "results" / "plan.json").read_text())
    assert plan["user_set"]["training.epochs"]["value"] == 1 and "training.epochs 1" in plan["sentence"]
    assert plan["measurement"]["per_arch"].keys() == {"baseline", "pool_avg"}
    for arch in ("baseline", "pool_avg"):
        spec = yaml.safe_load((tmp_path / "results" / "cv" / arch / "run_config.yaml").read_text())
        assert (spec["training"]["epochs"], spec["training"]["subsample"]) == (1, plan["fold"]["subsample"])
    pred = json.loads((tmp_path / "results" / "cost" / "prediction.json").read_text())
    assert pred["planned"] and pred["final"]["per_arch_s"].keys() == {"baseline", "pool_avg"}
    for cores in ("2", "1"):
        rerun = subprocess.run(
            SNAKEMAKE + [str(mine), "--cores", cores, "-n", "results/cv/baseline/run_config.yaml"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert "Nothing to be done" in rerun.stdout + rerun.stderr, rerun.stdout[-2000:]
    # after select, train_final's settings: tiny.yaml's final epochs (a user layer) win over the plan
    snakemake(tmp_path, "results/final/final_config_planned.yaml", extra_configs=[mine])
    assert plan["user_set"]["final.training.epochs"] == {"value": 2, "layer": str(TINY)}
    final = yaml.safe_load((tmp_path / "results" / "final" / "final_config_planned.yaml").read_text())
    assert final["training"]["epochs"] == 2 and set(plan["final_epochs"].values()) == {2}
