#!/usr/bin/env python3
"""Copy a finished real-data study's evidence into the repo (issue #10's list) and write its
`study_run.json`: Snakemake's elapsed time, the prediction made at its start, the final model,
the precision of every training job and each job's seconds and peak memory.

    python scripts/collect_study.py --study-dir /work/run --out docs/measurements/cpu_preset \\
        --note "nothing else ran on the machine"

Copies (never data, weights or predictions): report.md, appendix.md, final_metrics.json, selection.json,
final_history.csv, ablation.csv, cv_summary.csv, cost.csv, cost_prediction.json, ferplus.json and
recheck_plan.json and plan.json (study.time_budget) when the study made them, every fold's history as histories/{arch}_fold{k}.csv
and every 2x recheck run's as histories/recheck_x2_{arch}_fold{k}.csv.
"""

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import pandas as pd
import yaml

COPIES = {
    "report/report.md": "report.md",
    "report/appendix.md": "appendix.md",
    "final/metrics.json": "final_metrics.json",
    "final/selection.json": "selection.json",
    "final/history.csv": "final_history.csv",
    "tables/ablation.csv": "ablation.csv",
    "tables/cv_summary.csv": "cv_summary.csv",
    "tables/cost.csv": "cost.csv",
    "cost/prediction.json": "cost_prediction.json",
}
OPTIONAL = {
    "final/ferplus.json": "ferplus.json",
    "recheck/plan.json": "recheck_plan.json",
    "plan.json": "plan.json",
}  # study.time_budget: the plan and its measurement


def elapsed_seconds(log_text):
    """Snakemake's closing 'Elapsed time: H:MM:SS.ffffff' in seconds, with the text itself."""
    m = re.search(r"Elapsed time: (?:(\d+) days?, )?(\d+):(\d\d):(\d\d(?:\.\d+)?)", log_text)
    if not m:
        raise SystemExit("no 'Elapsed time' line in the Snakemake log: the study has not finished")
    days, h, mnt, s = m.groups()
    return int(days or 0) * 86400 + int(h) * 3600 + int(mnt) * 60 + float(s), m.group(0).split(": ", 1)[1]


def machine():
    import os
    import platform

    import torch

    from ferstudy.config import cpu_name

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = sorted({f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if re.search(rf"\b{f}\b", info)})
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu_name(),
        "flags": flags,
        "cores": cores,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def job_times(results):
    jobs = {}
    for tsv in sorted((results / "benchmarks").rglob("*.tsv")):
        row = pd.read_csv(tsv, sep="\t").iloc[-1]
        jobs[str(tsv.relative_to(results / "benchmarks"))] = {"s": float(row["s"]), "max_rss_mb": float(row["max_rss"])}
    return jobs


def stale_report(results: Path) -> None:
    """Stop when a result the report reads is newer than the report: ferplus.json scored by hand after
    the study (without data.ferplus) left FER+ out of a committed report. Rerun `snakemake` first."""
    report = results / "report" / "report.md"
    newer = [
        p
        for p in (
            results / "final" / "ferplus.json",
            results / "final" / "metrics.json",
            results / "tables" / "ablation.csv",
        )
        if p.exists() and p.stat().st_mtime > report.stat().st_mtime
    ]
    if newer:
        raise SystemExit(
            f"{report} is older than {', '.join(map(str, newer))}: rerun `snakemake` (the report "
            f"reads them) before collecting"
        )


def phases(study: Path, log_path: Path, run: dict, wall_s: float, pred: dict, chosen: str) -> dict:
    """{phase: {predicted_s, real_s}}: the prediction made at the start (the plan's, with the chosen
    network's final job) against the Snakemake log's real spans (cost.actual.phase_times)."""
    from ferstudy.cost.actual import phase_times

    predicted = {**pred["phases_s"], "measurement": pred.get("measure_s") or 0.0}
    predicted["final"] = pred["final"]["per_arch_s"].get(chosen, predicted["final"])
    predicted.pop("cross_validation_in_order", None)  # the schedule not used (LPT is)
    real = phase_times(log_path.read_text(), float(run["started_at"]), wall_s)
    rows = {k: {"predicted_s": predicted.get(k), "real_s": real.get(k)} for k in [*real, *predicted] if k}
    rows["whole_study"] = {"predicted_s": sum(predicted.values()), "real_s": wall_s}
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study-dir", required=True, help="the study's working directory (holds results/)")
    p.add_argument("--out", required=True, help="e.g. docs/measurements/cpu_preset")
    p.add_argument(
        "--log", help="Snakemake log with the 'Elapsed time' line (default: the one results/cost/run.json names)"
    )
    p.add_argument("--command", default="snakemake --cores 2", help="the command that ran the study")
    p.add_argument("--note", default="", help="what else ran on the machine meanwhile")
    args = p.parse_args(argv)
    study, out = Path(args.study_dir), Path(args.out)
    results = study / "results"
    run = json.loads((results / "cost" / "run.json").read_text())
    log_path = Path(args.log or run["snakemake_log"])
    if not args.log and not log_path.exists():  # the study directory was moved since
        log_path = study / ".snakemake" / "log" / log_path.name
    wall_s, wall = elapsed_seconds(log_path.read_text())
    stale_report(results)

    out.mkdir(parents=True, exist_ok=True)
    for src, dst in {**COPIES, **{k: v for k, v in OPTIONAL.items() if (results / k).exists()}}.items():
        shutil.copyfile(results / src, out / dst)
    hist = out / "histories"
    shutil.rmtree(hist, ignore_errors=True)
    hist.mkdir()
    fold_precisions = {}
    for h in sorted((results / "cv").glob("*/fold*/history.csv")):
        arch, fold = h.parent.parent.name, h.parent.name
        shutil.copyfile(h, hist / f"{arch}_{fold}.csv")
        fold_precisions[f"{arch}/{fold}"] = yaml.safe_load((h.parent / "config.yaml").read_text()).get("precision")
    for h in sorted((results / "recheck").glob("x*/*/fold*/history.csv")):
        shutil.copyfile(h, hist / f"recheck_{h.parents[2].name}_{h.parents[1].name}_{h.parent.name}.csv")

    pred = json.loads((results / "cost" / "prediction.json").read_text())
    selection = json.loads((results / "final" / "selection.json").read_text())
    final_cfg = yaml.safe_load((results / "final" / "config.yaml").read_text())
    history = pd.read_csv(results / "final" / "history.csv")
    chosen = selection["architecture"]
    jobs = job_times(results)
    record = {
        "wall_s": wall_s,
        "wall": f"{wall} (Snakemake's 'Elapsed time')",
        "command": args.command,
        "started": run.get("started_at"),
        "snakemake_log": log_path.name,
        "machine": machine(),
        "note": args.note,
        "predicted_s": pred["predicted_total_s"] + (pred.get("measure_s") or 0.0),
        "predicted_final_assumed": pred["final"]["architecture"],
        "predicted_final_s_for_chosen": pred["final"]["per_arch_s"].get(chosen),
        "final": {
            "architecture": chosen,
            "seconds": jobs.get("train_final.tsv", {}).get("s"),
            "epochs": int(len(history)),
            "best_epoch": int(history["val_acc"].idxmax()) + 1,
            "precision": final_cfg.get("precision"),
            "precision_reason": final_cfg.get("precision_reason"),
        },
        "fold_precisions": fold_precisions,
        "jobs": jobs,
    }
    # the prediction set against the run: what the chosen final network would have cost instead of the assumed one
    if record["predicted_final_s_for_chosen"] is not None:
        corrected = record["predicted_s"] - pred["final"]["predicted_job_s"] + record["predicted_final_s_for_chosen"]
        record["predicted_s_with_chosen_final"] = corrected
        record["prediction_error"] = corrected / wall_s - 1
    record["phases_s"] = phases(study, log_path, run, wall_s, pred, chosen)
    (out / "study_run.json").write_text(json.dumps(record, indent=1) + "\n")
    print(
        f"{out}: wall {wall} ({wall_s:.0f} s); final {chosen}; {len(fold_precisions)} fold histories", file=sys.stderr
    )


if __name__ == "__main__":
    main()
