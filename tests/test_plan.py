"""The time-budget plan (ferstudy/plan.py) on made-up measurements: the budget form, the plan fits
the budget with one fold budget for every network, a value the user set wins and is named, a
busy machine is detected and planned conservatively, a rerun reuses plan.json without measuring,
and `ferstudy status` uses the finished jobs' pace."""

import json
from pathlib import Path

import pytest

from ferstudy import plan as planning
from ferstudy.config import load_defaults, resolve_arch, resolve_config
from ferstudy.cost.workload import FER2013_COUNTS
from ferstudy.errors import UserError

HOUR = 3600.0


@pytest.fixture(scope="module")
def cpu_cfg(tmp_path_factory):
    """The shipped cpu preset, sized as FER2013 (the data file itself is not needed)."""
    cfg = resolve_config(load_defaults(), workdir=tmp_path_factory.mktemp("nodata"), user=[("test", {"preset": "cpu"})])
    cfg["dataset"] = {"name": "fer2013", "csv": "data/fer2013.csv"}
    return cfg


def made_up(cfg, speed=1.0, measure_s=80.0):
    """A 2-core machine about as fast as the issue's Ice Lake without bf16, x `speed`: the baseline
    trains 150 img/s on one thread; wider networks slower; 1.6x that at 2 threads."""
    slow = {"filters_double": 3.0, "depth_2convs": 2.3, "kernel_5": 2.0, "depth_5blocks": 1.2}
    per_arch = {
        a: {
            "img_per_s": speed * 150 / slow.get(a, 1.0),
            "eval_img_per_s": speed * 900 / slow.get(a, 1.0),
            "checkpoint_s": 0.05,
        }
        for a in cfg["study"]["architectures"]
    }
    finals = {a: {k: (v * 1.6 if k != "checkpoint_s" else v) for k, v in r.items()} for a, r in per_arch.items()}
    return {
        "data_source": "config",
        "counts": {k: list(v) for k, v in FER2013_COUNTS.items()},
        "constants": {
            "job_overhead_s": 6.0,
            "light_job_s": 4.0,
            "snakemake_job_s": 1.0,
            "snakemake_startup_s": 3.0,
            "demo_csv_s": 0.0,
            "prepare_s": 25.0,
        },
        "per_arch": per_arch,
        "final": {"architecture": "baseline", **finals["baseline"], "threads": 2},
        "final_per_arch": finals,
        "measure_s": measure_s,
    }


@pytest.mark.parametrize("value, seconds", [("2h", 7200), (120, 7200), ("90min", 5400), ("1.5h", 5400), (None, None)])
def test_budget_forms(value, seconds):
    assert planning.budget_seconds(value) == seconds


@pytest.mark.parametrize("value", ["2 hours", "1h30", True, 1, "0h", "-2h", "30d"])
def test_bad_budgets_name_the_key(value):
    with pytest.raises(UserError, match="study.time_budget"):
        planning.budget_seconds(value)


def test_the_cpu_preset_sets_two_hours(cpu_cfg):
    assert planning.budget_seconds(cpu_cfg["study"]["time_budget"]) == 2 * HOUR


def test_the_plan_fits_the_budget_with_one_fold_budget_for_every_network(cpu_cfg):
    m = made_up(cpu_cfg)
    plan, pred = planning.make_plan(cpu_cfg, m, 2, 2 * HOUR)
    assert plan["fits"] and plan["predicted_s"] <= 2 * HOUR
    # the config's fold budget (8 epochs on 50%) does not fit 2 h on this slow machine: scaled down
    e, f = plan["fold"]["epochs"], plan["fold"]["subsample"]
    assert e * f < 8 * 0.5
    planned = planning.apply_plan(cpu_cfg, plan)
    budgets = {
        (resolve_arch(planned, a)["training"]["epochs"], resolve_arch(planned, a)["training"]["subsample"])
        for a in cpu_cfg["study"]["architectures"]
    }
    assert budgets == {(e, f)}
    # the prediction of the planned study agrees (measurement included), whichever network is final
    for arch, epochs in plan["final_epochs"].items():
        chosen = planning.apply_plan(cpu_cfg, plan, arch)
        assert chosen["final"]["training"]["epochs"] == epochs
        before_final = plan["predicted_s"] - pred["final"]["predicted_job_s"]
        assert before_final + pred["final"]["per_arch_s"][arch] <= 2 * HOUR + 1
    # a network 3x slower gets fewer final epochs than the baseline, never more than the cap
    assert plan["final_epochs"]["filters_double"] <= plan["final_epochs"]["baseline"] <= 32
    assert "each fold model trained" in plan["sentence"].lower() and "2 h" in plan["sentence"]


def test_time_to_spare_goes_to_the_final_model(cpu_cfg):
    plan, _ = planning.make_plan(cpu_cfg, made_up(cpu_cfg, speed=4.0), 2, 2 * HOUR)
    assert plan["fold"] == {"epochs": 8, "subsample": 0.5} and plan["recheck_max"] == 6  # the config's: no more
    assert plan["final_epochs"]["baseline"] > 16  # the time left, up to the cap of 2 x 16
    assert max(plan["final_epochs"].values()) <= 32


def test_a_tight_budget_drops_rechecks_before_the_fold_budget_goes_below_its_floor(cpu_cfg):
    m = made_up(cpu_cfg)
    tight, _ = planning.make_plan(cpu_cfg, m, 2, 1.0 * HOUR)
    roomy, _ = planning.make_plan(cpu_cfg, m, 2, 2 * HOUR)
    assert tight["recheck_max"] <= roomy["recheck_max"]
    assert tight["fold"]["epochs"] * tight["fold"]["subsample"] <= roomy["fold"]["epochs"] * roomy["fold"]["subsample"]
    hopeless, _ = planning.make_plan(cpu_cfg, m, 2, 5 * 60)
    assert not hopeless["fits"] and "over" in hopeless["sentence"]


def test_a_value_the_user_set_wins_and_is_named(cpu_cfg):
    layers = [("config/config.yaml", {"training": {"epochs": 8}}), ("--config", {"study": {"recheck_max": 2}})]
    user = planning.user_settings(layers)
    assert user == {
        "training.epochs": {"value": 8, "layer": "config/config.yaml"},
        "study.recheck_max": {"value": 2, "layer": "--config"},
    }
    plan, _ = planning.make_plan(cpu_cfg, made_up(cpu_cfg), 2, 2 * HOUR, user)
    assert plan["fold"]["epochs"] == 8 and plan["recheck_max"] == 2
    assert plan["fold"]["subsample"] < 0.5  # the plan fits the budget with what the user left to it
    assert "training.epochs 8 (config/config.yaml)" in plan["sentence"]
    assert "study.recheck_max 2 (--config)" in plan["sentence"]


def test_a_busy_machine_is_detected_and_planned_conservatively(cpu_cfg):
    quiet = planning.busy_check(load=1.0, cores=2, reference_before=0.10, reference_after=0.105)
    assert not quiet["busy"] and quiet["factor"] == 1.0
    loaded = planning.busy_check(load=6.8, cores=2, reference_before=0.10, reference_after=0.11)
    assert loaded["busy"] and "load average 6.8 on 2 cores" in loaded["why"]
    changing = planning.busy_check(load=1.0, cores=2, reference_before=0.10, reference_after=0.16)
    assert changing["busy"] and changing["factor"] == pytest.approx(0.625)
    wild = planning.busy_check(load=1.0, cores=2, reference_before=0.002, reference_after=0.4)
    assert wild["busy"] and wild["factor"] == planning.BUSY_FACTOR_FLOOR  # bounded, not 200x
    assert 0.0 < planning.reference_kernel_s() < 5.0
    m = made_up(cpu_cfg, speed=2.0)
    calm, _ = planning.make_plan(cpu_cfg, m, 2, 2 * HOUR)
    careful, _ = planning.make_plan(cpu_cfg, planning.conservative(m, changing["factor"]), 2, 2 * HOUR, busy=changing)

    def size(p):
        return (p["fold"]["epochs"] * p["fold"]["subsample"], p["recheck_max"], p["final_epochs"]["baseline"])

    assert size(careful) < size(calm)
    assert "busy while measured" in careful["sentence"] and "conservative" in careful["sentence"]


def test_a_rerun_reuses_the_plan_without_measuring(cpu_cfg, tmp_path, monkeypatch):
    """onstart under a budget never measures; with plan.json there it says the plan is reused and
    records a whole run as not measured."""
    import subprocess

    from ferstudy.cost import study as cost_study

    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("measured again"))
    results = tmp_path / "results"
    plan, _ = planning.make_plan(cpu_cfg, made_up(cpu_cfg), 2, 2 * HOUR)
    results.mkdir()
    (results / "plan.json").write_text(json.dumps(plan))
    said = []
    cost_study.in_study_prediction(
        {}, cpu_cfg, 2, {"all": 1, "train_fold": 3}, 4, results=results, say=said.append, planned=True
    )
    assert any("reused: no new measurement" in s and plan["sentence"] in s for s in said)
    assert json.loads((results / "cost" / "run.json").read_text())["measured_this_run"] is False
    assert planning.load_plan(results / "plan.json") == plan  # the same budgets


def test_status_uses_the_finished_jobs_pace(tmp_path):
    """A prediction 12x too slow (a busy machine): the finished folds' own seconds predict the rest."""
    from ferstudy.status import Job, time_left

    def job(name, state, seconds=None):
        return Job(name, Path("x"), state=state, seconds=seconds, predicted_s=1200.0)

    jobs = [
        job("a fold 0", "done", 100.0),
        job("a fold 1", "done", 100.0),
        job("a fold 2", "not started"),
        job("b fold 0", "not started"),
    ]
    final = Job("final model", Path("y"), predicted_s=2400.0)
    left = time_left(jobs, final, {"phases_s": {}}, tmp_path, 1)
    assert left["pace"] == pytest.approx(100 / 1200)
    # a fold 2 at a's own 100 s, b fold 0 at 1200 x the pace (100 s), the final at 2400 x the pace
    assert left["seconds"] == pytest.approx(100 + 100 + 200)


def test_the_report_states_the_plan_with_the_chosen_network(cpu_cfg, tmp_path):
    from ferstudy.report.load import plan_context

    assert plan_context(tmp_path) is None  # no time budget: no plan, no sentence
    plan, _ = planning.make_plan(cpu_cfg, made_up(cpu_cfg, speed=2.0), 2, 2 * HOUR)
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    ctx = plan_context(tmp_path, "filters_double")
    n = plan["final_epochs"]["filters_double"]
    assert ctx["sentence"].startswith(
        f"Each fold model trained {plan['fold']['epochs']} epochs on {plan['fold']['subsample']:.0%} of its faces"
    )
    assert f"the final model (filters_double) {n} epochs, so that the study fits 2 h 00 min" in ctx["sentence"]
    # the prediction quoted is the study's with the chosen final, not with the assumed one (the baseline)
    from ferstudy.cost.study import clock

    with_chosen = plan["predicted_s"] - plan["phases_s"]["final"] + plan["final_predicted_s"]["filters_double"]
    assert plan["final_predicted_s"]["filters_double"] != plan["phases_s"]["final"]
    assert f"(predicted {clock(with_chosen)}, the measurement included)" in ctx["sentence"]
    assert f"(predicted {clock(plan['predicted_s'])}," in plan["sentence"]  # before the choice: the assumed


def test_settings_that_change_no_budget_do_not_replan(cpu_cfg):
    flat = {"study": {"alpha": 0.01, "time_budget": "2h", "recheck_max": 6}, "data": {"folds": 3, "ferplus": "x"}}
    assert planning.plan_relevant(flat) == {"study": {"time_budget": "2h", "recheck_max": 6}, "data": {"folds": 3}}
    assert flat["study"]["alpha"] == 0.01  # a copy


def test_status_says_a_prediction_from_a_busy_machine(tmp_path):
    from ferstudy.status import format_status, study_status

    pred = {
        "cores": 2,
        "predicted_total_s": 1000,
        "per_arch": {"a": {"jobs": 1, "predicted_job_s": 100.0}},
        "final": {"architecture": "a", "predicted_job_s": 300.0, "per_arch_s": {"a": 300.0}},
        "phases_s": {},
        "data": {"preset": "cpu"},
        "busy": planning.busy_check(6.8, 2, 0.1, 0.1),
    }
    (tmp_path / "results" / "cost").mkdir(parents=True)
    (tmp_path / "results" / "cost" / "prediction.json").write_text(json.dumps(pred))
    text = format_status(study_status(tmp_path), tmp_path)
    assert "measured on a busy machine (load average 6.8 on 2 cores)" in text, text
