"""The prediction inside a study: the Snakefile's onstart (`in_study_prediction`) measures or
repeats it and records a whole-study run, and the report sets it against the real time
(`predicted_vs_actual`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..bench.context import child_env
from .actual import actual_times, compare
from .measure import PROGRESS

PREDICTION = Path("cost/prediction.json")  # under the study's results directory
WHOLE_RUN = Path("cost/run.json")  # the last run that built the whole study


def fingerprint(study_cfg: dict, cores: int) -> str:
    """What a prediction depends on: the resolved config, the cores and the ferstudy version."""
    import hashlib

    from .. import __version__

    blob = json.dumps({"config": study_cfg, "cores": cores, "version": __version__}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def in_study_prediction(
    raw_config: dict,
    study_cfg: dict,
    cores: int,
    jobs_by_rule: dict[str, int],
    jobs_to_run: int,
    results: Path | str = "results",
    started_at: float | None = None,
    snakemake_log: str | list[str] | None = None,
    enabled: bool = True,
    say: Callable[[str], Any] = print,
    planned: bool = False,
) -> None:
    """Called by the Snakefile's onstart: `say`s the jobs to do and the predicted wall time.

    A run that builds the whole study (every job of the DAG to do, `all` among them) measures this
    machine with `ferstudy predict-cost` unless a prediction for the same config, cores and version
    exists, and records itself in results/cost/run.json so that the report can set the prediction
    against the real time. A partial run says how much of the study it redoes and repeats a
    matching prediction; if the config changed since the recorded run, that record goes (the report
    then compares nothing). The prediction is advice: if measuring fails the study goes on.

    `planned` (study.time_budget): the study's rule `plan` measures and predicts, as a job of the
    DAG (ferstudy/plan.py); here a whole run is only recorded (measured this run unless plan.json
    exists) and a plan made before is said."""
    results = Path(results)
    pred_path, run_path, fp = results / PREDICTION, results / WHOLE_RUN, fingerprint(study_cfg, cores)
    total = sum(jobs_by_rule.values())
    whole = jobs_to_run >= total and "all" in jobs_by_rule
    say(f"This run: {jobs_to_run} of the study's {total} jobs.")
    recorded = _read_json(run_path)
    if recorded and (whole or recorded.get("fingerprint") != fp):
        run_path.unlink()  # replaced below, or no longer this study's
    if not enabled:
        return
    if planned:
        _planned_study(results, run_path, fp, whole, total, cores, started_at, snakemake_log, say)
        return
    pred = _read_json(pred_path)
    measured = False
    if pred is None or pred.get("fingerprint") != fp:
        pred = None
        if whole:
            pred = _measure_in_study(raw_config, results, pred_path, fp, cores, jobs_by_rule, say)
            measured = pred is not None
    if whole and pred:
        _record_whole_run(run_path, fp, total, cores, started_at, snakemake_log, measured)
    if pred:
        say(prediction_line(pred, measured))
    elif not whole:
        say("No cost prediction for this config yet: `ferstudy predict-cost --cores N` makes one.")


def _measure_in_study(
    raw_config: dict,
    results: Path,
    pred_path: Path,
    fp: str,
    cores: int,
    jobs_by_rule: dict[str, int],
    say: Callable[[str], Any],
) -> dict | None:
    """Runs `ferstudy predict-cost` on this machine; the prediction it wrote, or None if it failed."""
    import yaml

    from ..io import write_json, write_text

    config_path = results / "cost" / "study_config.yaml"
    write_text(config_path, yaml.safe_dump(raw_config, sort_keys=False))
    log_path = results / "logs" / "predict_cost.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    say(
        f"Measuring every network on this machine to predict the study's wall time "
        f"(log: {log_path}; `study: {{predict_cost: false}}` skips this)..."
    )
    cmd = [
        sys.executable,
        "-m",
        "ferstudy",
        "predict-cost",
        "--config",
        str(config_path),
        "--study-dir",
        os.getcwd(),
        "--cores",
        str(cores),
        "--no-dry-run",
        "--jobs-by-rule",
        json.dumps(jobs_by_rule),
        "--out",
        str(pred_path),
    ]
    with (
        open(log_path, "w") as log_file,
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=child_env(), text=True) as done,
    ):
        for line in done.stdout or ():  # the log gets every line; the study's log each network's progress
            log_file.write(line)
            if line.startswith(PROGRESS):
                say("  " + line.rstrip())
    if done.returncode != 0:
        say(f"Could not predict the study's cost (see {log_path}); the study goes on.")
        return None
    pred = {**json.loads(pred_path.read_text()), "fingerprint": fp, "measured_in_study": True}
    write_json(pred_path, pred)
    return pred


def _record_whole_run(
    run_path: Path,
    fp: str,
    total: int,
    cores: int,
    started_at: float | None,
    snakemake_log: str | list[str] | None,
    measured: bool,
) -> None:
    """Writes results/cost/run.json: when this whole run began, its log, and what it measured."""
    from ..io import write_json

    if isinstance(snakemake_log, (list, tuple)):  # Snakemake hands onstart a list of log files
        snakemake_log = snakemake_log[0] if snakemake_log else None
    write_json(
        run_path,
        {
            "started_at": started_at or time.time(),
            "snakemake_log": snakemake_log,
            "fingerprint": fp,
            "jobs": total,
            "cores": cores,
            "measured_this_run": measured,
        },
    )


def _planned_study(results, run_path, fp, whole, total, cores, started_at, snakemake_log, say):
    """onstart under study.time_budget: the plan job measures; record a whole run, say the plan."""
    plan = _read_json(results / "plan.json")
    if whole:
        _record_whole_run(run_path, fp, total, cores, started_at, snakemake_log, measured=plan is None)
    if plan:
        say(f"The plan (results/plan.json, reused: no new measurement): {plan['sentence']}")
    else:
        say(
            "study.time_budget: the job `plan` measures this machine first and plans the budgets to fit it "
            "(results/plan.json; its progress: results/logs/plan.log)."
        )


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def predicted_study_s(pred: dict, measured_this_run: bool) -> float:
    """Predicted wall time of the study, the measurement included when this run made it."""
    return pred["predicted_total_s"] + ((pred.get("measure_s") or 0.0) if measured_this_run else 0.0)


def prediction_line(pred: dict, measured_this_run: bool) -> str:
    fold_jobs = sum(p["jobs"] for p in pred["per_arch"].values())
    images = sum(p["images_x_epochs"] for p in pred["per_arch"].values()) + pred["final"]["images_x_epochs"]
    f = pred["final"]
    per_arch = sorted(f["per_arch_s"].values())
    measured = f" (this machine measured in {pred['measure_s']:.0f} s)" if measured_this_run else ""
    return (
        f"Predicted for the whole study on {pred['cores']} cores: "
        f"{clock(predicted_study_s(pred, measured_this_run))}{measured}: "
        f"{pred['jobs']} jobs, {fold_jobs} cross-validation jobs, {images:,} training images x epochs; "
        f"final model {f['architecture']}{' (assumed)' if f['assumed'] else ''} {clock(f['predicted_job_s'])}, "
        f"{clock(per_arch[0])}-{clock(per_arch[-1])} whichever architecture wins. Details: "
        f"results/{PREDICTION}."
    )


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, m, s = seconds // 3600, seconds % 3600 // 60, seconds % 60
    return f"{h} h {m:02d} min" if h else (f"{m} min {s:02d} s" if m else f"{s} s")


def predicted_vs_actual(results: Path | str, now: float | None = None) -> dict | None:
    """The report's table: the whole-study prediction against the recorded whole-study run, or None.

    The total is that run's elapsed time from Snakemake's log once it has ended well, or up to now
    while it is the newest run and still going (the report is its last job); a failed run
    compares no total. Per job: Snakemake's benchmark files. The predicted total counts the final
    model that cross-validation chose (the prediction lists every candidate's time)."""
    results = Path(results)
    pred, run = _read_json(results / PREDICTION), _read_json(results / WHOLE_RUN)
    if not pred or not run or pred.get("fingerprint") != run.get("fingerprint"):
        return None
    actual = actual_times(results.parent)
    log = run.get("snakemake_log")
    log = log[0] if isinstance(log, list) and log else log  # records written before the list was unpacked
    log_name = Path(log).name if log else None
    ended = [r for r in actual["runs"] if Path(r["log"]).name == log_name]
    newest = sorted((results.parent / ".snakemake" / "log").glob("*.snakemake.log"))
    if ended:
        total, note = (ended[0]["elapsed_s"], "whole run") if ended[0]["ok"] else (None, "the run failed")
    elif newest and newest[-1].name == log_name:
        total, note = (now or time.time()) - run["started_at"], "up to the report"
    else:
        total, note = None, "the run's log is gone"
    predicted = predicted_study_s(pred, run.get("measured_this_run", False))
    chosen, f = actual.get("final_architecture"), pred["final"]
    if f["assumed"] and chosen in f["per_arch_s"]:
        # cross-validation chose the final network after the prediction: count that one's predicted time
        predicted += f["per_arch_s"][chosen] - f["predicted_job_s"]
    rows: list[dict[str, Any]] = [{"what": "whole study", "predicted_s": predicted, "actual_s": total, "note": note}]
    jobs = compare(pred, actual)
    rows += [
        {
            "what": f"{name} fold job (mean)",
            "predicted_s": r["predicted_job_s"],
            "actual_s": r["actual_job_s"],
            "note": "",
        }
        for name, r in jobs["per_arch"].items()
        if r["actual_job_s"] is not None
    ]
    final = jobs["final"]
    if final["actual_job_s"] and final["predicted_job_s_for_actual_architecture"] is not None:
        rows.append(
            {
                "what": f"final model ({chosen})",
                "predicted_s": final["predicted_job_s_for_actual_architecture"],
                "actual_s": final["actual_job_s"],
                "note": "",
            }
        )
    for r in rows:
        r["error"] = r["predicted_s"] / r["actual_s"] - 1 if r["actual_s"] else None
    return {
        "rows": rows,
        "cores": pred["cores"],
        "measure_s": pred.get("measure_s"),
        "total_error": rows[0]["error"],
        "measured_in_study": bool(run.get("measured_this_run")),
    }
