"""The prediction: a study's jobs by rule (the rule table or Snakemake's dry run), list scheduling
on the cores, and the predicted seconds of every job and of the whole study from the measurements
of `measure.measure`."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .workload import cv_workload, final_workload


def count_jobs(cfg: dict) -> dict[str, int]:
    """Jobs of a fresh study, by rule, as workflow/rules/*.smk define them (the `all` target
    included). Keep in step with the workflow; `predict-cost` compares it with
    `snakemake -n --forceall` and uses Snakemake's table when they differ."""
    a, k = len(cfg["study"]["architectures"]), cfg["data"]["folds"]
    jobs = {
        "demo_csv": 1 if cfg["dataset"]["name"] == "demo" else 0,
        "prepare": 1,
        "run_config": a,
        "final_config": 1,
        "train_fold": a * k,
        "evaluate_arch": a,
        "aggregate": 1,
        "select": 1,
        "train_final": 1,
        "evaluate_final": 1,
        "figures": 1,
        "report": 1,
        "report_html": 1,
        "all": 1,
        # the checkpoint; its recheck jobs join the DAG only after it ran (`recheck_prediction`)
        "recheck_plan": int(cfg["study"].get("recheck", "auto") not in ("off", [])),
        # study.time_budget (workflow/rules/plan.smk): the plan's inputs and the plan (its measurement)
        "plan_config": int(cfg["study"].get("time_budget") is not None),
        "plan": int(cfg["study"].get("time_budget") is not None),
        "final_planned_config": int(cfg["study"].get("time_budget") is not None),
    }
    return {rule: n for rule, n in jobs.items() if n}


# Rules timed by their own model; every other rule (aggregate, select, evaluate_final, figures,
# report, report_html, and any rule added later) runs after the final model and costs one measured light job
# (figures renders a dozen plots and takes longer: an underestimate of some seconds).
OWN_MODEL_RULES = (
    "demo_csv",
    "prepare",
    "run_config",
    "final_config",
    "train_fold",
    "evaluate_arch",
    "train_final",
    "all",
    "plan_config",
    "plan",
    "final_planned_config",
)  # plan: the measurement (measure_s)
KNOWN_RULES = OWN_MODEL_RULES + (
    "aggregate",
    "select",
    "evaluate_final",
    "figures",
    "report",
    "report_html",
    "recheck_plan",
)


def dry_run_jobs(
    study_dir: Path | str,
    config_path: Path | str | None = None,
    configfiles: Sequence[Path | str] | None = (),
    preset: str | None = None,
) -> dict[str, int]:
    """{rule: count} of a fresh study from Snakemake itself: `snakemake -n --forceall --nolock`
    in the study directory (writes nothing but Snakemake's log; takes a few seconds)."""
    from ..bench.dryrun import parse_job_stats, run_snakemake

    args = ["-n", "--forceall", "--nolock", "--quiet", "rules"]
    extra = [str(Path(f).resolve()) for f in configfiles or ()]
    if config_path and Path(config_path).resolve() != (Path(study_dir) / "config" / "config.yaml").resolve():
        extra.insert(0, str(Path(config_path).resolve()))
    if extra:
        args += ["--configfile", *extra]
    if preset:
        args += ["--config", f"preset={preset}"]
    _, out = run_snakemake(study_dir, args)
    return parse_job_stats(out)


def lpt_schedule(durations: dict[str, float], slots: int) -> tuple[float, dict[str, tuple[int, float]]]:
    """Greedy list scheduling, longest job first, on `slots` identical slots.

    `durations`: {job: seconds}. Returns (makespan, {job: (slot, start)}); ties go to the lowest
    slot number, so the result is deterministic."""
    order = sorted(durations, key=lambda j: (-durations[j], str(j)))
    free = [(0.0, s) for s in range(max(1, slots))]
    heapq.heapify(free)
    placed = {}
    for job in order:
        start, slot = heapq.heappop(free)
        placed[job] = (slot, start)
        heapq.heappush(free, (start + durations[job], slot))
    return max([t for t, _ in free] + [0.0]), placed


def in_order_schedule(durations: dict[str, float], slots: int) -> float:
    """List scheduling in the given order (roughly what Snakemake does): the makespan."""
    free = [0.0] * max(1, slots)
    for d in durations.values():
        i = free.index(min(free))
        free[i] += d
    return max(free)


def fold_job_seconds(w: dict, job: dict, rates: dict[str, float], overhead: float) -> float:
    """Predicted seconds of one cross-validation job (eval img/s has the TTA views included; the
    last evaluation's predictions are the job's output, not predicted again)."""
    eval_s = job["n_val"] / rates["eval_img_per_s"]
    train_s = job["steps"] * job["batch_size"] / rates["img_per_s"]
    curve_s = min(w.get("curve_images", 0), job["n_train"] + job["n_val"]) / rates["eval_img_per_s"]
    return overhead + w["epochs"] * (train_s + curve_s + rates.get("checkpoint_s", 0.0)) + w["evaluations"] * eval_s


def final_job_seconds(
    w: dict, train_rate: float, eval_rate: float, overhead: float, checkpoint_s: float = 0.0
) -> float:
    """`eval_rate` is measured with the final's TTA; train-final ranks its epochs on PublicTest
    without it (1 view a face, about `views` times faster) and, at the end, predicts PublicTest
    without and with it (choosing it) and PrivateTest with it."""
    from ..resources import TTA_VIEWS

    views = TTA_VIEWS.get(w.get("tta", "none"), 10)
    train_s = w["steps"] * w["batch_size"] / train_rate
    public_untransformed_s = w["n_public"] / (eval_rate * views)
    end_s = (w["n_public"] + w["n_private"]) / eval_rate + (public_untransformed_s if views > 1 else 0.0)
    return overhead + w["epochs"] * (train_s + checkpoint_s) + w["evaluations"] * public_untransformed_s + end_s


def cv_job_predictions(
    cfg: dict, m: dict, job_overhead: float, light_job: float
) -> tuple[dict[str, dict], dict[str, float]]:
    """Each architecture's cross-validation prediction, and every CV job's predicted seconds by job name."""
    from ..config import resolve_arch

    counts, folds = m["counts"], cfg["data"]["folds"]
    per_arch, durations = {}, {}
    for name in cfg["study"]["architectures"]:
        w = cv_workload(resolve_arch(cfg, name), counts, folds)
        rates = m["per_arch"][name]
        times = [fold_job_seconds(w, j, rates, job_overhead) for j in w["jobs"]]
        for j, s in zip(w["jobs"], times):
            durations[f"train_fold[{name},{j['fold']}]"] = s
        durations[f"evaluate_arch[{name}]"] = light_job
        per_arch[name] = {
            "jobs": folds,
            "epochs": w["epochs"],
            "train_images": [j["n_train"] for j in w["jobs"]],
            "images_x_epochs": w["images_x_epochs"],
            "img_per_s": rates["img_per_s"],
            "eval_img_per_s": rates["eval_img_per_s"],
            "predicted_job_s": float(np.mean(times)),
            "predicted_arch_s": float(sum(times)),
        }
    return per_arch, durations


def final_seconds_per_arch(cfg: dict, m: dict, job_overhead: float) -> dict[str, float]:
    """Every candidate's predicted final-job seconds, as if it were the final architecture."""
    from ..config import resolve_arch

    f, counts = m["final"], m["counts"]
    # Every candidate's final time: its 1-thread rates scaled by the measured thread speed-up.
    base = m["per_arch"].get(f["architecture"])
    speed_train = f["img_per_s"] / base["img_per_s"] if base else 1.0
    speed_eval = f["eval_img_per_s"] / base["eval_img_per_s"] if base else 1.0
    per_arch_final = {}
    at_final_threads = m.get("final_per_arch") or {}  # each candidate timed at the final's threads
    for name, r in m["per_arch"].items():
        w = final_workload(resolve_arch(cfg, name, final=True), counts)
        own = at_final_threads.get(name)
        train_rate, eval_rate = (
            (own["img_per_s"], own["eval_img_per_s"])
            if own
            else (r["img_per_s"] * speed_train, r["eval_img_per_s"] * speed_eval)
        )
        per_arch_final[name] = final_job_seconds(w, train_rate, eval_rate, job_overhead, r.get("checkpoint_s", 0.0))
    return per_arch_final


def predict(cfg: dict, cores: int, m: dict) -> dict:
    """The prediction (JSON-ready dict) from a config and the measurements `m` of `measure`."""
    from ..config import resolve_arch

    c = m["constants"]
    job_overhead = c["job_overhead_s"] + c["snakemake_job_s"]
    light_job = c["light_job_s"] + c["snakemake_job_s"]
    counts, folds = m["counts"], cfg["data"]["folds"]
    jobs = m.get("jobs_by_rule") or count_jobs(cfg)
    unmodelled = sorted(r for r in jobs if r not in KNOWN_RULES)  # rules added after this table
    per_arch, durations = cv_job_predictions(cfg, m, job_overhead, light_job)
    cv_s, _ = lpt_schedule(durations, cores)
    cv_in_order_s = in_order_schedule(durations, cores)

    f = m["final"]
    final_name = f["architecture"]
    fw = final_workload(resolve_arch(cfg, final_name, final=True), counts)
    final_s = final_job_seconds(fw, f["img_per_s"], f["eval_img_per_s"], job_overhead, f.get("checkpoint_s", 0.0))
    per_arch_final = final_seconds_per_arch(cfg, m, job_overhead)
    pre_s = (
        c["snakemake_startup_s"]
        + (c["demo_csv_s"] + light_job if "demo_csv" in jobs else 0.0)
        + c["prepare_s"]
        + light_job
    )
    post_s = light_job * sum(n for r, n in jobs.items() if r not in OWN_MODEL_RULES)
    recheck = recheck_prediction(cfg, counts, folds, m["per_arch"], job_overhead, cores)
    total = pre_s + cv_s + recheck["predicted_s"] + final_s + post_s
    return {
        "cores": cores,
        "jobs": sum(jobs.values()),
        "jobs_by_rule": jobs,
        "jobs_from": m.get("jobs_from", "config (the rule table of cost.count_jobs)"),
        "unmodelled_rules": unmodelled,
        "predicted_total_s": total,
        "per_arch": per_arch,
        "final": {
            "architecture": final_name,
            "assumed": not cfg["final"].get("architecture"),
            "threads": cores,
            "epochs": fw["epochs"],
            "train_images": fw["n_train"],
            "images_x_epochs": fw["images_x_epochs"],
            "img_per_s": f["img_per_s"],
            "eval_img_per_s": f["eval_img_per_s"],
            "predicted_job_s": final_s,
            "per_arch_s": per_arch_final,
        },
        "phases_s": {
            "startup_and_data": pre_s,
            "cross_validation": cv_s,
            "cross_validation_in_order": cv_in_order_s,
            "recheck": recheck["predicted_s"],
            "final": final_s,
            "light_jobs_after": post_s,
        },
        "recheck": recheck,
        "constants": {**c, "job_overhead_with_snakemake_s": job_overhead, "light_job_with_snakemake_s": light_job},
        "data": {
            "source": m["data_source"],
            "counts": counts,
            "folds": folds,
            "dataset": cfg["dataset"]["name"],
            "preset": cfg["preset"],
        },
        "measure_s": m.get("measure_s"),
    }


def recheck_prediction(cfg: dict, counts: dict, folds: int, rates: dict, job_overhead: float, cores: int) -> dict:
    """The recheck's jobs (ferstudy/recheck.py): each variant `recheck.predicted_pairs` knows of and the
    baseline, at RECHECK_FACTOR x the epochs on fold RECHECK_FOLD, scheduled on `cores` slots after
    cross-validation (the plan waits for every fold). `bound` says whether more pairs may come:
    in auto mode the significant verdicts near zero are known only after cross-validation."""
    from ..config import resolve_arch
    from ..recheck import RECHECK_FACTOR, RECHECK_FOLD, longer_run_config, predicted_pairs

    variants, bound = predicted_pairs(cfg)
    runs = [cfg["study"]["baseline"], *variants] if variants else []
    per_job = {}
    for name in runs:
        w = cv_workload(longer_run_config(resolve_arch(cfg, name), RECHECK_FACTOR), counts, folds)
        per_job[name] = fold_job_seconds(w, w["jobs"][RECHECK_FOLD], rates[name], job_overhead)
    span, _ = lpt_schedule(per_job, cores) if per_job else (0.0, {})
    return {
        "variants": variants,
        "bound": bound,
        "jobs": 2 * len(runs),
        "per_job_s": per_job,
        "per_variant_s": float(np.mean([per_job[v] for v in variants])) if variants else 0.0,
        "predicted_s": span,
    }
