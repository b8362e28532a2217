"""The time-budget plan (`study.time_budget`): from this machine's measurement (the cost
prediction's per-network rates, `cost.measure`), the budgets that make the predicted wall time
fit the budget. The plan chooses

* the fold budget: one (epochs, subsample) for every architecture (the comparison stays
  one-factor), at most the config's, scaled down together along `fold_ladder`;
* the recheck (`study.recheck_max`): fewer pairs once the fold budget is at its floor;
* the final model's epochs, per candidate architecture (the final network is chosen later, by
  cross-validation): the time left after everything else, at that network's measured rate at the
  final's threads, between the config's final epochs and `FINAL_EPOCHS_CAP_FACTOR` x them.

A value the user wrote (config/config.yaml, --configfile, --config) is kept and named in the plan.
Workflow: rule `plan_config` writes the plan's inputs, rule `plan` (`ferstudy plan`) measures and
writes results/plan.json; run_config, final_config and recheck_plan read it (`apply_plan`). A
rerun with the same inputs reuses plan.json: no new measurement, the same budgets."""

from __future__ import annotations

import argparse
import copy
import math
import os
import re
import time
from pathlib import Path

from .errors import UserError

PLANNED_KEYS = ("training.epochs", "training.subsample", "study.recheck_max", "final.training.epochs")
MIN_EPOCHS = 2
MIN_SUBSAMPLE = 0.05
FOLD_FLOOR = 0.35  # below this share of the config's fold cost, fewer rechecks come first
FINAL_EPOCHS_CAP_FACTOR = 2  # the final model gets at most this many times the config's final epochs
BUDGET_MIN_S, BUDGET_MAX_S = 5 * 60, 7 * 24 * 3600
BUSY_LOAD_MARGIN = 0.5  # busy: the load average before measuring exceeds cores + this
BUSY_REFERENCE_RATIO = 1.25  # busy: the reference kernel timed before and after differs by more
BUSY_FACTOR_FLOOR = 0.5  # the conservative figure: the measured rates x at least this, never a wild one
_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(h|min)\s*$")


def budget_seconds(value: object, key: str = "study.time_budget") -> float | None:
    """Seconds of a time budget: null (no budget), a number of minutes (120) or a string with its
    unit, `h` or `min` ("2h", "1.5h", "90min"). Anything else is a UserError naming the key."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise UserError(f"config key {key}: {value!r} is not a time (write minutes, e.g. 120, or '2h', '90min')")
    if isinstance(value, (int, float)):
        seconds = float(value) * 60
    else:
        match = _BUDGET.match(str(value))
        if not match:
            raise UserError(f"config key {key}: {value!r} is not a time (write minutes, e.g. 120, or '2h', '90min')")
        seconds = float(match[1]) * (3600 if match[2] == "h" else 60)
    if not BUDGET_MIN_S <= seconds <= BUDGET_MAX_S:
        raise UserError(f"config key {key}: {value!r} is outside 5 min to 7 days")
    return seconds


def user_settings(layers: list, keys: tuple = PLANNED_KEYS) -> dict:
    """{dotted key: {"value", "layer"}} of the planned keys that a user layer (name, dict) sets; the
    last layer that sets one wins, as in config.resolve_layers."""
    found = {}
    for name, layer in layers:
        for key in keys:
            node, ok = layer, True
            for part in key.split("."):
                if not isinstance(node, dict) or part not in node:
                    ok = False
                    break
                node = node[part]
            if ok:
                found[key] = {"value": node, "layer": name}
    return found


# Keys that change no budget: an edit to them must not re-measure and retrain (study.alpha reruns
# the tables only).
NOT_PLANNED_FROM = ("study.alpha", "study.select_metric", "study.predict_cost", "data.extra_test_sets", "data.ferplus")


def plan_relevant(flat: dict) -> dict:
    """The config the plan depends on: `flat` without NOT_PLANNED_FROM (the plan's rerun trigger)."""
    out = copy.deepcopy(flat)
    for key in NOT_PLANNED_FROM:
        section, name = key.split(".")
        (out.get(section) or {}).pop(name, None)
    return out


def fold_ladder(epochs: int, subsample: float, fixed_epochs: bool = False, fixed_subsample: bool = False) -> list:
    """(epochs, subsample) from the config's fold budget down, both scaled by sqrt of the cost
    share (so neither goes to its floor alone); a value the user set stays. Largest first."""
    ladder: list = []
    share = 1.0
    while True:
        root = math.sqrt(share)
        e = epochs if fixed_epochs else max(MIN_EPOCHS, int(round(epochs * root)))
        f = subsample if fixed_subsample else max(MIN_SUBSAMPLE, round(subsample * root, 2))
        if not ladder or (e, f) != ladder[-1]:
            ladder.append((e, f))
        if (fixed_epochs or e == MIN_EPOCHS) and (fixed_subsample or f == MIN_SUBSAMPLE):
            return ladder
        share *= 0.85


def apply_plan(cfg: dict, plan: dict | None, final_arch: str | None = None) -> dict:
    """The study config with the plan's budgets (a copy; `cfg` itself if there is no plan). The
    final model's epochs are those planned for `final_arch` (else for the assumed one)."""
    if not plan:
        return cfg
    out = copy.deepcopy(cfg)
    out["training"]["epochs"], out["training"]["subsample"] = plan["fold"]["epochs"], plan["fold"]["subsample"]
    out["study"]["recheck_max"] = plan["recheck_max"]
    epochs = plan["final_epochs"].get(final_arch, plan["final_epochs_assumed"])
    out["final"]["training"] = {**(out["final"].get("training") or {}), "epochs": int(epochs)}
    return out


def _with(cfg, epochs, subsample, recheck_max, final_epochs):
    return apply_plan(
        cfg,
        {
            "fold": {"epochs": epochs, "subsample": subsample},
            "recheck_max": recheck_max,
            "final_epochs": {},
            "final_epochs_assumed": final_epochs,
        },
    )


def recheck_seconds(cfg: dict, m: dict, job_overhead: float, cores: int, pairs: int) -> float:
    """Wall seconds of `pairs` recheck pairs and the baseline's rerun at the recheck's epochs on
    fold 0: the mean job of every candidate (which pairs is known only after cross-validation), on
    `cores` slots."""
    from .config import resolve_arch
    from .cost.predict import fold_job_seconds
    from .cost.workload import cv_workload
    from .recheck import RECHECK_FACTOR, RECHECK_FOLD, longer_run_config

    if pairs <= 0 or cfg["study"].get("recheck", "auto") in ("off", False, []):
        return 0.0
    times = []
    for name in cfg["study"]["architectures"]:
        w = cv_workload(longer_run_config(resolve_arch(cfg, name), RECHECK_FACTOR), m["counts"], cfg["data"]["folds"])
        times.append(fold_job_seconds(w, w["jobs"][RECHECK_FOLD], m["per_arch"][name], job_overhead))
    return math.ceil((pairs + 1) / max(1, cores)) * sum(times) / len(times)


def final_seconds(cfg: dict, m: dict, arch: str, epochs: int, job_overhead: float) -> float:
    """The final model's seconds for `arch` at `epochs`, at its rate measured at the final's threads
    (`final_per_arch`; the assumed network's `final` rates when only that one was timed)."""
    from .config import resolve_arch
    from .cost.predict import final_job_seconds
    from .cost.workload import final_workload

    rates = (m.get("final_per_arch") or {}).get(arch) or m["final"]
    c = copy.deepcopy(cfg)
    c["final"]["training"] = {**(c["final"].get("training") or {}), "epochs": int(epochs)}
    w = final_workload(resolve_arch(c, arch, final=True), m["counts"])
    return final_job_seconds(
        w, rates["img_per_s"], rates["eval_img_per_s"], job_overhead, rates.get("checkpoint_s", 0.0)
    )


def final_reserve(cfg: dict, m: dict, assumed: str, epochs: int, job_overhead: float) -> float:
    """Seconds kept for the final model while the fold budget and the recheck are chosen: the
    assumed network at `epochs`, or the slowest candidate at half of them if that is more (the
    final network is chosen later; a 3x slower winner still gets half the epochs)."""
    half = max(MIN_EPOCHS, epochs // 2)
    return max(
        [final_seconds(cfg, m, assumed, epochs, job_overhead)]
        + [final_seconds(cfg, m, a, half, job_overhead) for a in cfg["study"]["architectures"]]
    )


def _total(cfg, m, cores, budget_choice, assumed):
    """(predicted study seconds with the measurement and the final reserve, the prediction) for one choice."""
    from .cost.predict import predict

    e, f, r, fe = budget_choice
    planned = _with(cfg, e, f, r, fe)
    pred = predict(
        planned,
        cores,
        {**m, "final": {**m["final"], **((m.get("final_per_arch") or {}).get(assumed) or {}), "architecture": assumed}},
    )
    overhead = pred["constants"]["job_overhead_with_snakemake_s"]
    recheck = recheck_seconds(planned, m, overhead, cores, r or 0)
    pred["predicted_total_s"] += recheck - pred["phases_s"]["recheck"]
    pred["phases_s"]["recheck"] = recheck
    reserve = final_reserve(cfg, m, assumed, fe, overhead)
    return pred["predicted_total_s"] - pred["phases_s"]["final"] + reserve + (m.get("measure_s") or 0.0), pred


def _recheck_base(cfg):
    from .recheck import predicted_pairs

    cap = cfg["study"].get("recheck_max")
    if cap is not None:
        return int(cap)
    variants, _ = predicted_pairs(cfg)
    return len(variants)


def final_epochs_within(
    cfg: dict, m: dict, budget_s: float, before_final: float, cap: int, job_overhead: float
) -> dict[str, int]:
    """Each candidate's most final epochs (at most `cap`, at least MIN_EPOCHS) whose final job,
    after the `before_final` seconds of the rest of the study, ends within `budget_s`."""
    per_arch = {}
    for name in cfg["study"]["architectures"]:
        per_arch[name] = next(
            (
                n
                for n in range(cap, MIN_EPOCHS - 1, -1)
                if before_final + final_seconds(cfg, m, name, n, job_overhead) <= budget_s
            ),
            MIN_EPOCHS,
        )
    return per_arch


def make_plan(
    cfg: dict, m: dict, cores: int, budget_s: float, user: dict | None = None, busy: dict | None = None
) -> tuple[dict, dict]:
    """(plan, prediction): the largest budgets whose predicted wall time (the measurement included)
    fits `budget_s`, from the measurement `m` (`cost.measure.measure`). `user`: `user_settings`,
    whose values stay. Preference: the fold budget down to `FOLD_FLOOR` of the config's, then fewer
    rechecks, then the fold budget further, then fewer final epochs; then the time left goes to
    each candidate's final epochs (up to the cap)."""
    user = user or {}
    cfg = _with_user_values(cfg, user)
    t, final_t = cfg["training"], cfg["final"].get("training") or {}
    base_final = int(final_t.get("epochs", t["epochs"]))
    ladder = fold_ladder(
        int(t["epochs"]), float(t.get("subsample", 1.0)), "training.epochs" in user, "training.subsample" in user
    )
    full_cost = ladder[0][0] * ladder[0][1]
    floor = max([i for i, (e, f) in enumerate(ladder) if e * f >= FOLD_FLOOR * full_cost] or [0])
    r_base = _recheck_base(cfg)
    rechecks = [r_base] if "study.recheck_max" in user else list(range(r_base, -1, -1))
    finals = [base_final] if "final.training.epochs" in user else list(range(base_final, MIN_EPOCHS - 1, -1))
    assumed = cfg["final"].get("architecture") or cfg["study"]["baseline"]
    order = (
        [(e, f, r, base_final) for r in rechecks for e, f in ladder[: floor + 1]]
        + [(e, f, rechecks[-1], base_final) for e, f in ladder[floor + 1 :]]
        + [(*ladder[-1], rechecks[-1], fe) for fe in finals[1:]]
    )
    choice, fits = order[-1], False
    for candidate in order:
        if _total(cfg, m, cores, candidate, assumed)[0] <= budget_s:
            choice, fits = candidate, True
            break
    _, pred = _total(cfg, m, cores, choice, assumed)
    e, f, r, fe = choice
    overhead = pred["constants"]["job_overhead_with_snakemake_s"]
    before_final = pred["predicted_total_s"] - pred["phases_s"]["final"] + (m.get("measure_s") or 0.0)
    cap = fe if "final.training.epochs" in user or not fits else max(fe, FINAL_EPOCHS_CAP_FACTOR * base_final)
    fitted = final_epochs_within(cfg, m, budget_s, before_final, cap, overhead)
    per_arch = {name: epochs if fits else fe for name, epochs in fitted.items()}
    final_pred = {a: final_seconds(cfg, m, a, n, overhead) for a, n in per_arch.items()}
    pred["final"]["per_arch_s"] = final_pred
    pred["final"]["predicted_job_s"] = final_pred.get(assumed, pred["final"]["predicted_job_s"])
    pred["final"]["epochs"] = per_arch.get(assumed, fe)
    pred["phases_s"]["final"] = pred["final"]["predicted_job_s"]
    pred["predicted_total_s"] = before_final - (m.get("measure_s") or 0.0) + pred["phases_s"]["final"]
    plan = {
        "time_budget_s": budget_s,
        "cores": cores,
        "fits": fits,
        "fold": {"epochs": e, "subsample": f},
        "recheck_max": r,
        "final_epochs": per_arch,
        "final_epochs_assumed": per_arch.get(assumed, fe),
        "assumed_final": assumed,
        "final_epochs_range": [base_final, cap],
        "final_predicted_s": final_pred,  # each candidate's final job: the prediction once one is chosen
        "config_values": {
            "training.epochs": t["epochs"],
            "training.subsample": t.get("subsample", 1.0),
            "study.recheck_max": cfg["study"].get("recheck_max"),
            "final.training.epochs": base_final,
        },
        "user_set": user,
        "predicted_s": pred["predicted_total_s"] + (m.get("measure_s") or 0.0),
        "phases_s": {**pred["phases_s"], "measurement": m.get("measure_s") or 0.0},
        "busy": busy or {"busy": False},
        "made_at": time.time(),
        "measurement": {
            k: m[k]
            for k in ("per_arch", "final", "final_per_arch", "constants", "counts", "measure_s", "data_source")
            if k in m
        },
    }
    plan["sentence"] = plan_sentence(plan)
    return plan, pred


def _with_user_values(cfg, user):
    """`cfg` with the user's values of the planned keys (already there in a study's config)."""
    out = copy.deepcopy(cfg)
    for key, setting in user.items():
        *parents, last = key.split(".")
        node = out
        for part in parents:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        node[last] = setting["value"]
    return out


def plan_sentence(plan: dict, final_arch: str | None = None) -> str:
    """The plan and why, in one sentence for the log and the report (`final_arch`: the network
    cross-validation chose, once known; before, the range over the candidates)."""
    from .cost.study import clock

    fold, budget = plan["fold"], clock(plan["time_budget_s"])
    epochs = sorted(set(plan["final_epochs"].values())) or [plan["final_epochs_assumed"]]
    final = f"{epochs[0]}" if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]} (by the network chosen)"
    predicted = plan["predicted_s"]  # with the assumed final
    if final_arch in plan["final_epochs"]:
        final = f"({final_arch}) {plan['final_epochs'][final_arch]}"
        if final_arch in plan.get("final_predicted_s", {}):  # plans made before it lack the key
            predicted += plan["final_predicted_s"][final_arch] - plan["phases_s"]["final"]
    recheck = (
        f"at most {plan['recheck_max']} verdict(s) rechecked at twice that"
        if plan["recheck_max"]
        else "no verdict rechecked"
    )
    text = (
        f"Each fold model trained {fold['epochs']} epochs on {fold['subsample']:.0%} of its faces, "
        f"{recheck}, and the final model {final} epochs, "
        f"so that the study fits {budget} on this machine's {plan['cores']} cores "
        f"(predicted {clock(predicted)}, the measurement included)"
    )
    if not plan["fits"]:
        text += f"; even the smallest budgets are predicted over {budget}"
    if plan["user_set"]:
        text += "; kept as you set them: " + ", ".join(
            f"{k} {v['value']} ({v['layer']})" for k, v in plan["user_set"].items()
        )
    b = plan.get("busy") or {}
    if b.get("busy"):
        text += f"; the machine was busy while measured ({b['why']}), so the plan is conservative"
    return text + "."


# ---------------------------------------------------------------- a busy machine


def reference_kernel_s(repeats: int = 200) -> float:
    """Seconds of a fixed single-thread matrix product loop: timed before and after the
    measurement, a machine whose other work comes and goes shows as a difference."""
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((160, 160), dtype=np.float32) for _ in range(2))
    out = np.empty_like(a)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(repeats):  # the same product each time: no values drifting into denormals
            np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return best


def busy_check(load: float, cores: int, reference_before: float, reference_after: float) -> dict:
    """Whether the machine was busy while measured: a 1-minute load average over `cores` +
    BUSY_LOAD_MARGIN before it started (other work on the cores the study will use), or the
    reference kernel slower or faster by more than BUSY_REFERENCE_RATIO after than before (load
    that came or went). `factor` (<= 1) scales the measured rates when busy: the faster
    reference over the slower, at least BUSY_FACTOR_FLOOR (the conservative figure, not a wild one:
    a measurement beside load 6-8 once predicted 26 h for a 2 h study)."""
    ratio = max(reference_before, reference_after) / max(1e-9, min(reference_before, reference_after))
    why = []
    if load > cores + BUSY_LOAD_MARGIN:
        why.append(f"load average {load:.1f} on {cores} cores")
    if ratio > BUSY_REFERENCE_RATIO:
        why.append(f"a reference kernel {ratio:.2f}x apart before and after")
    return {
        "busy": bool(why),
        "why": "; ".join(why),
        "load": load,
        "cores": cores,
        "reference_s": [reference_before, reference_after],
        "factor": max(BUSY_FACTOR_FLOOR, 1.0 / ratio) if why else 1.0,
    }


def conservative(m: dict, factor: float) -> dict:
    """The measurement with every rate scaled by `factor` (busy_check's)."""
    if factor >= 1.0:
        return m
    out = copy.deepcopy(m)
    for rates in [*out["per_arch"].values(), out["final"], *(out.get("final_per_arch") or {}).values()]:
        for key in ("img_per_s", "eval_img_per_s"):
            if key in rates:
                rates[key] *= factor
    return out


# ---------------------------------------------------------------- the command (rule plan)


def load_plan(path: str | os.PathLike) -> dict | None:
    import json

    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def cmd_plan(args: argparse.Namespace) -> None:
    """`ferstudy plan`: measure this machine (quick), make the plan, write plan.json and the
    study's cost prediction for the planned budgets."""
    import logging

    import yaml

    from .config import load_yaml, resolve_config, load_defaults, DEFAULTS_NAME
    from .cost.measure import measure
    from .io import write_json

    log = logging.getLogger("ferstudy.plan")
    inputs = load_yaml(args.inputs)
    workdir = Path(args.study_dir or ".")
    cfg = resolve_config(load_defaults(), workdir=workdir, source=DEFAULTS_NAME, user=[("plan", inputs["config"])])
    config_path = Path(args.inputs).with_name("study_config.yaml")
    config_path.write_text(yaml.safe_dump(inputs["config"], sort_keys=False))
    cfg["_config_path"], cfg["_workdir"] = str(config_path), str(workdir)
    cores = int(args.cores or inputs["cores"])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    ref_before = reference_kernel_s()
    m = measure(cfg, cores, h5=args.h5, quick=True)
    busy = busy_check(load, cores, ref_before, reference_kernel_s())
    if busy["busy"]:
        log.warning("the machine was busy while measured (%s): planning from rates x %.2f", busy["why"], busy["factor"])
    plan, pred = make_plan(
        cfg, conservative(m, busy["factor"]), cores, float(inputs["time_budget_s"]), inputs.get("user_set") or {}, busy
    )
    plan["fingerprint"] = inputs.get("fingerprint")
    write_json(args.out, plan)
    if args.prediction:
        write_json(
            args.prediction,
            {
                **pred,
                "fingerprint": inputs.get("fingerprint"),
                "measured_in_study": True,
                "measure_s": m.get("measure_s"),
                "busy": busy,
                "planned": True,
            },
        )
    log.info("%s", plan["sentence"])
    print(plan["sentence"])


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("plan", help="measure this machine and plan the budgets that fit study.time_budget")
    p.add_argument("--inputs", required=True, help="the plan's inputs (rule plan_config)")
    p.add_argument("--h5", help="the prepared HDF5 (data sizes and measurement faces)")
    p.add_argument("--cores", type=int, default=0, help="cores of the run (default: the inputs')")
    p.add_argument("--study-dir", default=".")
    p.add_argument("--out", required=True, help="plan.json")
    p.add_argument("--prediction", help="write the study's cost prediction for the planned budgets here")
    p.set_defaults(func=cmd_plan)
