"""A finished study's real times (Snakemake's benchmark files and logs) and the prediction set
against them (`ferstudy predict-cost --compare`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def actual_times(study_dir: Path | str) -> dict:
    """Real seconds of a finished study: per fold job (Snakemake benchmarks, column `s`), the
    final job, and the whole run: `Elapsed time` of the newest Snakemake log of a successful run
    (plus, in `total_s_with_resumed_runs`, the failed runs it resumed)."""
    import re

    import pandas as pd

    d = Path(study_dir)
    per_arch: dict[str, list[float]] = {}
    for tsv in sorted(d.glob("results/benchmarks/train/*/fold*.tsv")):
        per_arch.setdefault(tsv.parent.name, []).append(float(pd.read_csv(tsv, sep="\t")["s"].iloc[0]))
    final = d / "results/benchmarks/train_final.tsv"
    out: dict[str, Any] = {
        "per_arch_job_s": {a: float(np.mean(v)) for a, v in per_arch.items()},
        "final_job_s": float(pd.read_csv(final, sep="\t")["s"].iloc[0]) if final.is_file() else None,
        "total_s": None,
        "log": None,
    }
    selection = d / "results/final/selection.json"
    if selection.is_file():
        out["final_architecture"] = json.loads(selection.read_text()).get("architecture")
    runs = []
    for path in sorted(d.glob(".snakemake/log/*.snakemake.log")):
        text = path.read_text(errors="replace")
        elapsed = re.search(r"^Elapsed time: (?:(\d+) days?, )?(\d+):(\d\d):(\d\d(?:\.\d+)?)$", text, re.M)
        if not elapsed or not re.search(r"^Execute \d+ jobs", text, re.M) or "dry-run" in text.lower():
            continue  # dry runs, runs that did nothing, runs without their end
        days, h, mi, sec = elapsed.groups()
        seconds = int(days or 0) * 86400 + int(h) * 3600 + int(mi) * 60 + float(sec)
        failed = bool(re.search(r"^(WorkflowError|Exiting because a job execution failed)", text, re.M))
        runs.append({"log": str(path), "elapsed_s": seconds, "ok": not failed})
    out["runs"] = runs
    ok = [r for r in runs if r["ok"]]
    if ok:
        out["total_s"], out["log"] = ok[-1]["elapsed_s"], ok[-1]["log"]
        # a study that failed and was resumed: the runs since the last complete one count too
        last_ok_before = [i for i, r in enumerate(runs[:-1]) if r["ok"] and r is not ok[-1]]
        start = (last_ok_before[-1] + 1) if last_ok_before else 0
        out["total_s_with_resumed_runs"] = sum(r["elapsed_s"] for r in runs[start : runs.index(ok[-1]) + 1])
    return out


def compare(prediction: dict, actual: dict) -> dict:
    rows = {
        a: {"predicted_job_s": p["predicted_job_s"], "actual_job_s": actual["per_arch_job_s"].get(a)}
        for a, p in prediction["per_arch"].items()
    }
    for r in rows.values():
        r["ratio"] = r["predicted_job_s"] / r["actual_job_s"] if r["actual_job_s"] else None
    total = actual.get("total_s")
    chosen = actual.get("final_architecture")
    return {
        "per_arch": rows,
        "final": {
            "predicted_job_s": prediction["final"]["predicted_job_s"],
            "actual_job_s": actual.get("final_job_s"),
            "actual_architecture": chosen,
            "predicted_job_s_for_actual_architecture": prediction["final"]["per_arch_s"].get(chosen),
        },
        "total": {
            "predicted_s": prediction["predicted_total_s"],
            "actual_s": total,
            "ratio": prediction["predicted_total_s"] / total if total else None,
        },
    }


# The prediction's phases (predict.predict: phases_s) in the order the DAG runs them (aggregate waits
# for the recheck, the final for aggregate), and the rules whose last job ends each one.
PHASE_ENDS = {
    "measurement": ("plan",),
    "cross_validation": ("train_fold", "evaluate_arch", "recheck_plan"),
    "recheck": ("recheck",),
    "final": ("train_final",),
}


def phase_times(log_text: str, started: float, elapsed_s: float) -> dict[str, float]:
    """Real seconds per phase of one Snakemake run from its log (`started`: its start, epoch
    seconds; `elapsed_s`: its 'Elapsed time'). Contiguous: each phase runs from the end of the one
    before to its last job's end (light jobs between count to the phase they lead into), start-up and
    data to the measurement's (or first fold job's) start, the light jobs after to the run's end; they add up to the run."""
    import re
    from datetime import datetime

    def ts(text: str) -> float:  # Snakemake writes local time: read back as local time
        return datetime.strptime(text, "%a %b %d %H:%M:%S %Y").timestamp()

    # the first training-side job: the plan's measurement, else (no budget) the first fold job
    first = re.search(r"^\[(.+?)\]\n(?:local)?rule (?:plan|train_fold):", log_text, re.M)
    ends = re.findall(r"^\[(.+?)\]\nFinished jobid: \d+ \(Rule: (\w+)\)", log_text, re.M)
    t = ts(first.group(1)) if first else started
    out = {"startup_and_data": t - started}
    for phase, rules in PHASE_ENDS.items():
        last = [ts(stamp) for stamp, rule in ends if rule in rules]
        if last:
            out[phase], t = max(last) - t, max(last)
    out["light_jobs_after"] = started + elapsed_s - t
    return out
