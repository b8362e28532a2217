"""The study on a real Slurm cluster: a single-node Slurm started here, the shipped profile
(profiles/slurm) and the Snakemake Slurm executor plugin, compared with a local run.

Brings up munged + slurmctld + slurmd in a temporary folder (tests/slurm/cluster.py), runs a
small study (tests/slurm/config.yaml: demo data, 3 architectures x 2 folds, 2 epochs) through the
Slurm executor to the end (the default target: final metrics, figures, report when the workflow
has them) and the same study locally, then checks that
  - the training jobs really went through Slurm (the plugin's "submitted with SLURM jobid" lines,
    its per-job logs under .snakemake/slurm_logs, and Slurm's own job completion records),
  - the light rules did not (localrules),
  - the results are identical to the local run (training is deterministic on CPU).
The daemons and every file are removed afterwards, also when the test fails.

Skipped when not root or without the Slurm/munge binaries or the plugin; with
FERSTUDY_REQUIRE_SLURM=1 (set by .ci/run) those are failures instead.
"""

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent / "slurm"
REQUIRE = os.environ.get("FERSTUDY_REQUIRE_SLURM") == "1"
RUN_TIMEOUT = 480  # seconds for each Snakemake run
WORKFLOW_FILES = ("workflow", "config", "ferstudy", "report", "profiles", "envs")  # a checkout
SLURM_RULES = {"prepare", "train_fold", "train_final", "predict_extra", "recheck"}  # everything else is a localrule
TIMING = re.compile(r"seconds|time|rss|per_s|duration|date|host|platform|processor", re.I)

_spec = importlib.util.spec_from_file_location("ferstudy_minislurm", HERE / "cluster.py")
minislurm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(minislurm)

pytestmark = pytest.mark.slow


def _unavailable():
    why = minislurm.missing_requirements()
    if why is None and importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        why = "snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')"
    return why


@pytest.fixture(scope="module")
def slurm_root():
    """A temporary folder holding a running single-node Slurm cluster and the two study copies."""
    why = _unavailable()
    if why:
        if REQUIRE:
            pytest.fail(f"FERSTUDY_REQUIRE_SLURM=1 but {why}")
        pytest.skip(why)
    root = Path(tempfile.mkdtemp(prefix="ferstudy-slurm-"))
    root.chmod(0o755)  # munged runs as the `munge` user and must reach its folder inside
    cluster = minislurm.MiniSlurm(root / "cluster")
    try:
        cluster.start()
        yield cluster, root
    finally:
        cluster.stop()
        alive = [d for d in minislurm.DAEMONS if cluster._alive(d)]
        shutil.rmtree(root, ignore_errors=True)
        assert not alive, f"daemons still running after stop: {alive}"


def _copy_workflow(dest):
    dest.mkdir(parents=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", ".snakemake", "results"))
        elif src.is_file():
            shutil.copy2(src, dest / name)
    shutil.copy2(HERE / "config.yaml", dest / "test_config.yaml")
    return dest


def _start_snakemake(workdir, args, env):
    log = open(workdir / "snakemake.out", "w")
    cmd = [sys.executable, "-m", "snakemake", "--configfile", "test_config.yaml", *args]
    proc = subprocess.Popen(
        cmd,
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    return proc


def _wait_all(procs, deadline):
    """Wait for every process; {name: (return code or "timeout", seconds)}."""
    t0, done = time.monotonic(), {}
    while len(done) < len(procs) and time.monotonic() < deadline:
        for name, proc in procs.items():
            if name not in done and proc.poll() is not None:
                done[name] = (proc.returncode, time.monotonic() - t0)
        time.sleep(0.5)
    for name, proc in procs.items():
        if name not in done:
            done[name] = (_finish(proc, deadline), time.monotonic() - t0)
    return done


def _finish(proc, deadline):
    try:
        return proc.wait(timeout=max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: Snakemake and its local jobs
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        return "timeout"


def _tail(path, lines=60):
    path = Path(path)
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else "(none)"


def _strip_timing(obj):
    """JSON without the keys that measure time, memory or the machine."""
    if isinstance(obj, dict):
        return {k: _strip_timing(v) for k, v in obj.items() if not TIMING.search(str(k))}
    if isinstance(obj, list):
        return [_strip_timing(v) for v in obj]
    return obj


def _same_weights(a, b):
    import torch

    sa = torch.load(a, map_location="cpu", weights_only=True)["model"]
    sb = torch.load(b, map_location="cpu", weights_only=True)["model"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_study_runs_through_slurm_and_matches_a_local_run(slurm_root):
    cluster, root = slurm_root
    threads = min(2, os.cpu_count() or 1)  # train_final's threads, the same in both runs
    env = cluster.env()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # ferstudy + snakemake in jobs
    slurm_dir = _copy_workflow(root / "slurm_run")
    local_dir = _copy_workflow(root / "local_run")

    deadline = time.monotonic() + RUN_TIMEOUT
    # Both at once: the Slurm run mostly waits (job start-up, status polling), the local run fills
    # those gaps. The results do not depend on the load.
    local = _start_snakemake(local_dir, ["--cores", str(threads), "--set-threads", f"train_final={threads}"], env)
    slurm = _start_snakemake(
        slurm_dir,
        [
            "--profile",
            "profiles/slurm",
            # This cluster has no accounting database: status from squeue (MinJobAge=300 keeps
            # finished jobs there), no account; a short first status check keeps the run short.
            "--slurm-status-command",
            "squeue",
            "--slurm-no-account",
            "--slurm-init-seconds-before-status-checks",
            "2",
            "--latency-wait",
            "5",
            "--retries",
            "0",
            "--set-threads",
            f"train_final={threads}",
        ],
        env,
    )
    done = _wait_all({"slurm": slurm, "local": local}, deadline)
    (rc_slurm, slurm_s), (rc_local, local_s) = done["slurm"], done["local"]
    print(f"\nSlurm run {slurm_s:.0f} s, local run {local_s:.0f} s (side by side)")

    out = (slurm_dir / "snakemake.out").read_text(errors="replace")
    context = (
        f"\n--- Slurm run (rc {rc_slurm}):\n{_tail(slurm_dir / 'snakemake.out')}\n--- local run (rc {rc_local}):\n"
        f"{_tail(local_dir / 'snakemake.out')}\n--- cluster:\n{cluster.logs_tail()}"
    )
    assert rc_slurm == 0, "the Slurm run failed" + context
    assert rc_local == 0, "the local run failed" + context
    assert (slurm_dir / "results/final/metrics.json").is_file(), context

    # 1. The heavy jobs went through Slurm: Snakemake's submissions, the plugin's per-job logs and
    #    Slurm's completion records all name the same job ids.
    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", out))
    run_id = re.search(r"SLURM run ID: (\S+)", out).group(1)  # the plugin's job name
    slurm_logs = {p.stem: p for p in (slurm_dir / ".snakemake/slurm_logs").rglob("*.log")}
    by_rule = {}
    for jobid, path in slurm_logs.items():
        rule = next(
            part[5:] for part in path.relative_to(slurm_dir / ".snakemake/slurm_logs").parts if part.startswith("rule_")
        )
        by_rule.setdefault(rule, set()).add(jobid)
    import yaml

    study = yaml.safe_load((HERE / "config.yaml").read_text())
    n_archs, n_folds = len(study["study"]["only"]), study["data"]["folds"]
    assert len(by_rule.get("train_fold", ())) == n_archs * n_folds, f"{by_rule}{context}"
    assert len(by_rule.get("train_final", ())) == 1, f"{by_rule}{context}"
    assert set(by_rule) <= SLURM_RULES, (
        f"light rules were submitted to Slurm: {set(by_rule) - SLURM_RULES} "
        "(add them to a `localrules:` line in their .smk file)"
    )
    all_jobs = set().union(*by_rule.values())
    assert all_jobs == set(submitted.values()), f"{all_jobs} vs {submitted}{context}"
    records = {r["JobId"]: r for r in cluster.jobcomp_records()}
    for jobid in all_jobs:
        rec = records.get(jobid)
        assert rec is not None and rec["JobState"] == "COMPLETED", f"job {jobid}: {rec}{context}"
        assert rec["Name"] == run_id, f"job {jobid} is not from this run: {rec}"
        mem = re.search(r"mem=(\d+)([MGT])", rec.get("Tres", ""))
        mem_mb = int(mem.group(1)) * {"M": 1, "G": 1024, "T": 1024**2}[mem.group(2)] if mem else 0
        assert mem_mb >= 1000, f"job {jobid} ran without its mem_mb (Slurm's default is 500 per CPU): {rec}"
        assert int(rec.get("TimeLimit", "0")) >= 1, f"job {jobid} ran without its runtime: {rec}"
        text = slurm_logs[jobid].read_text(errors="replace")
        assert "Finished jobid" in text or "1 of 1 steps (100%) done" in text, f"job {jobid} log:\n{text[-3000:]}"

    # 2. The same results as the local run.
    results_s, results_l = slurm_dir / "results", local_dir / "results"
    predictions = sorted(p.relative_to(results_l) for p in results_l.rglob("predictions*.csv"))
    assert len(predictions) == n_archs * n_folds + 2, predictions  # folds + PublicTest + PrivateTest
    for rel in predictions:
        assert (results_s / rel).read_bytes() == (results_l / rel).read_bytes(), f"{rel} differs"
    for rel in [p.relative_to(results_l) for p in results_l.rglob("model.pt")]:
        assert _same_weights(results_s / rel, results_l / rel), f"{rel}: weights differ"
    for rel in [p.relative_to(results_l) for p in results_l.rglob("history.csv")]:
        import pandas as pd

        hs, hl = (pd.read_csv(d / rel) for d in (results_s, results_l))
        keep = [c for c in hl.columns if not TIMING.search(c)]
        pd.testing.assert_frame_equal(hs[keep], hl[keep], check_exact=True, obj=str(rel))
    for rel in [p.relative_to(results_l) for p in results_l.rglob("*.json")]:
        js, jl = (json.loads((d / rel).read_text()) for d in (results_s, results_l))
        assert _strip_timing(js) == _strip_timing(jl), f"{rel} differs"
    for rel in ("tables/cv_summary.csv", "tables/ablation.csv", "data/dataset.h5"):
        if (results_l / rel).is_file():
            assert (results_s / rel).read_bytes() == (results_l / rel).read_bytes(), f"{rel} differs"
    # Whatever else the default target builds (figures, report) exists in both.
    made_l = {p.relative_to(results_l) for p in results_l.rglob("*") if p.is_file() and "checkpoints" not in p.parts}
    made_s = {p.relative_to(results_s) for p in results_s.rglob("*") if p.is_file() and "checkpoints" not in p.parts}
    assert made_l == made_s, f"only local: {sorted(made_l - made_s)}; only Slurm: {sorted(made_s - made_l)}"


def _dry_run_resources(workdir, args):
    """{(rule, wildcards): {resource: value}} of a dry run (no cluster needed)."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", "test_config.yaml", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = {}
    for block in re.split(r"\n(?=rule \w+:)", proc.stdout):
        rule = re.match(r"rule (\w+):", block)
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        if rule and res:
            wc = re.search(r"^\s+wildcards: (.*)$", block, re.M)
            jobs[(rule.group(1), wc.group(1) if wc else "")] = dict(kv.split("=", 1) for kv in res.group(1).split(", "))
    return jobs


def test_profiles_size_jobs_and_ask_for_gpus(tmp_path):
    """profiles/slurm and profiles/slurm-gpu parse; training jobs carry their computed runtime and
    memory, a GPU and the GPU partition only where the config asks for CUDA; --set-resources wins."""
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        if REQUIRE:
            pytest.fail("FERSTUDY_REQUIRE_SLURM=1 but snakemake-executor-plugin-slurm is not installed")
        pytest.skip("snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')")
    workdir = _copy_workflow(tmp_path / "wf")
    cpu = _dry_run_resources(workdir, ["--profile", "profiles/slurm", "--set-resources", "train_final:runtime=999"])
    gpu = _dry_run_resources(workdir, ["--profile", "profiles/slurm-gpu"])
    folds = [k for k in cpu if k[0] == "train_fold"]
    assert folds and ("train_final", "") in cpu, sorted(cpu)
    for key in folds:
        assert int(cpu[key]["runtime"]) >= 1 and int(cpu[key]["mem_mb"]) >= 1000, (key, cpu[key])
        assert cpu[key]["gpu"] == "0" and "slurm_partition" not in cpu[key], (key, cpu[key])
    assert cpu[("train_final", "")]["runtime"] == "999"
    for key in [k for k in gpu if k[0] in ("train_fold", "train_final")]:
        assert gpu[key]["gpu"] == "1" and gpu[key]["slurm_partition"] == "gpu", (key, gpu[key])
    # Light rules ask for little (they run in the Snakemake process anyway).
    assert all(int(r["mem_mb"]) <= 2000 for (rule, _), r in cpu.items() if rule in ("aggregate", "select"))
