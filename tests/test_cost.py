"""Study cost prediction: job counts, training images x epochs (hand-computed), the greedy
schedule, and the prediction arithmetic on made-up measurements."""

from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold

from ferstudy.config import load_yaml, resolve_arch, resolve_config
from ferstudy.cost.predict import count_jobs, lpt_schedule, predict
from ferstudy.cost.study import (
    PREDICTION,
    WHOLE_RUN,
    _read_json,
    clock,
    fingerprint,
    in_study_prediction,
    predicted_vs_actual,
)
from ferstudy.cost.workload import FER2013_COUNTS, cv_workload, data_counts, final_workload, fold_held_out_counts
from ferstudy.train import subsample

REPO = Path(__file__).resolve().parents[1]

# The architectures and the demo preset pinned here, so edits to the shipped defaults do not move
# the hand-computed numbers (only the schema and the training defaults come from defaults.yaml).
ARCHS = {
    "baseline": {"blocks": {"filters": [8, 16], "convs": 1, "head_dropout": 0.3}},
    "wide": {"extends": "baseline", "blocks": {"filters": [16, 32]}},
    "half_data": {"extends": "baseline", "training": {"subsample": 0.5}},
}
DEMO = {
    "data": {"folds": 3, "demo_images": 2000},
    "training": {"epochs": 10, "batch_size": 32, "tta": "none"},
    "study": {"only": ["baseline", "wide", "half_data"]},
    "final": {"training": {"epochs": 12}},
}


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    raw = load_yaml(REPO / "ferstudy" / "defaults.yaml")
    raw["architectures"] = ARCHS
    raw["presets"] = {"demo": DEMO}
    raw["preset"] = "demo"
    raw["study"] = {**raw["study"], "baseline": "baseline", "only": [], "recheck": "off"}  # test_recheck_* turn it on
    raw["final"] = {"architecture": None, "training": {}}
    return resolve_config(raw, workdir=tmp_path_factory.mktemp("nodata"))  # no data/: the demo


def test_job_count_of_a_fresh_demo_study(cfg):
    jobs = count_jobs(cfg)
    # 3 architectures x 3 folds; demo data adds demo_csv
    assert jobs == {
        "demo_csv": 1,
        "prepare": 1,
        "run_config": 3,
        "final_config": 1,
        "train_fold": 9,
        "evaluate_arch": 3,
        "aggregate": 1,
        "select": 1,
        "train_final": 1,
        "evaluate_final": 1,
        "figures": 1,
        "report": 1,
        "report_html": 1,
        "all": 1,
    }
    assert sum(jobs.values()) == 26


def test_demo_sizes_and_images_x_epochs_by_hand(cfg):
    counts, source = data_counts(cfg)
    assert source.startswith("config")
    # 2000 demo faces, class weights .13 .06 .14 .22 .16 .12 .17 -> 260 120 280 440 320 240 340;
    # 10 % of each class to PublicTest and to PrivateTest, the rest Training.
    assert counts["Training"] == [208, 96, 224, 352, 256, 192, 272]
    assert sum(counts["Training"]) == 1600 and sum(counts["PublicTest"]) == 200
    base = cv_workload(resolve_arch(cfg, "baseline"), counts, 3)
    # 1600 Training rows in 3 folds: held out 534, 533, 533; trained on the other two
    assert [j["n_train"] for j in base["jobs"]] == [1066, 1067, 1067]
    assert [j["n_val"] for j in base["jobs"]] == [534, 533, 533]
    assert [j["steps"] for j in base["jobs"]] == [33, 33, 33]  # 1066 // 32, ragged batch dropped
    assert base["images_x_epochs"] == 1600 * 2 * 10
    half = cv_workload(resolve_arch(cfg, "half_data"), counts, 3)
    # subsample 0.5 of each class of each fold's training part, with the same rounding as
    # train.subsample: checked against scikit-learn's folds and the real function
    labels = np.repeat(np.arange(7), counts["Training"])
    skf = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
    real = [len(subsample(tr, labels, 0.5, seed=0)) for tr, _ in skf.split(np.zeros(len(labels)), labels)]
    assert [j["n_train"] for j in half["jobs"]] == real
    assert half["images_x_epochs"] == sum(real) * 10
    final = final_workload(resolve_arch(cfg, "baseline", final=True), counts)
    assert (final["n_train"], final["epochs"], final["images_x_epochs"]) == (1600, 12, 19200)
    assert (final["n_public"], final["n_private"]) == (200, 200)


def test_subsample_and_folds_by_hand_and_against_the_real_code():
    # Training labels: 10 of class 0, 5 of class 1, 3 of class 6; 3 folds.
    counts = {"Training": [10, 5, 0, 0, 0, 0, 3], "PublicTest": [1] * 7, "PrivateTest": [1] * 7}
    held = fold_held_out_counts(np.array(counts["Training"]), 3)
    # label-sorted rows dealt round-robin: fold 0 gets 4+1+1, folds 1 and 2 get 3+2+1
    assert held[:, [0, 1, 6]].tolist() == [[4, 1, 1], [3, 2, 1], [3, 2, 1]]
    run = {"training": {"epochs": 4, "batch_size": 5, "subsample": 0.5}}
    w = cv_workload(run, counts, 3)
    # fold 0 trains on 6+4+2 -> half: 3+2+1 = 6; folds 1, 2 on 7+3+2 -> round(3.5)=4 + round(1.5)=2 + 1 = 7
    assert [j["n_train"] for j in w["jobs"]] == [6, 7, 7]
    assert w["images_x_epochs"] == 20 * 4
    # the same numbers from scikit-learn's folds and ferstudy.train.subsample
    labels = np.repeat([0, 1, 6], [10, 5, 3])
    skf = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
    real = [len(subsample(tr, labels, 0.5, seed=0)) for tr, _ in skf.split(np.zeros(18), labels)]
    assert real == [6, 7, 7]


def test_fer2013_sizes_from_config():
    counts = {k: list(v) for k, v in FER2013_COUNTS.items()}
    assert [sum(v) for v in counts.values()] == [28709, 3589, 3589]
    w = cv_workload({"training": {"epochs": 4, "batch_size": 128, "subsample": 1.0}}, counts, 3)
    assert sum(j["n_train"] for j in w["jobs"]) == 28709 * 2
    assert [j["n_val"] for j in w["jobs"]] == [9570, 9570, 9569]


def test_greedy_longest_first_schedule_by_hand():
    makespan, placed = lpt_schedule({"a": 5, "b": 4, "c": 3, "d": 3, "e": 2}, 2)
    # a->slot0 [0,5); b->slot1 [0,4); c->slot1 [4,7); d->slot0 [5,8); e->slot1 [7,9)
    assert placed == {"a": (0, 0), "b": (1, 0), "c": (1, 4), "d": (0, 5), "e": (1, 7)}
    assert makespan == 9
    assert lpt_schedule({"x": 2, "y": 2, "z": 2}, 1)[0] == 6
    assert lpt_schedule({"x": 2, "y": 2, "z": 2}, 8)[0] == 2
    assert lpt_schedule({}, 2)[0] == 0


def made_up_measurements(cfg):
    counts, _ = data_counts(cfg)
    names = cfg["study"]["architectures"]
    return {
        "data_source": "config",
        "counts": counts,
        "constants": {
            "job_overhead_s": 3.0,
            "light_job_s": 2.0,
            "snakemake_job_s": 1.0,
            "snakemake_startup_s": 3.0,
            "demo_csv_s": 1.0,
            "prepare_s": 2.0,
        },
        "per_arch": {n: {"img_per_s": 1056.0, "eval_img_per_s": 533.0, "checkpoint_s": 0.0} for n in names},
        "final": {"architecture": "baseline", "img_per_s": 1600.0, "eval_img_per_s": 200.0, "threads": 2},
    }


def test_prediction_arithmetic(cfg):
    m = made_up_measurements(cfg)
    p = predict(cfg, 2, m)
    assert p["jobs"] == 26 and p["cores"] == 2
    # fold job: 4 s overhead + 10 epochs x (33*32/1056 = 1 s train + ~1 s held-out eval)
    job = p["per_arch"]["baseline"]["predicted_job_s"]
    assert job == pytest.approx(4 + 10 * 2, abs=0.05)
    assert p["per_arch"]["baseline"]["images_x_epochs"] == 32000
    # final: 4 + 12 x (1 s train + 1 s PublicTest) + 2 s (PublicTest + PrivateTest)
    assert p["final"]["predicted_job_s"] == pytest.approx(4 + 12 * 2 + 2)
    # flip at the final (eval rate measured with it): the epochs ranked on one view a face (2x the
    # rate), then PublicTest without (0.5 s) and with flip, PrivateTest with it (2 s)
    flip = {**cfg, "final": {**cfg["final"], "training": {**cfg["final"].get("training", {}), "tta": "flip"}}}
    assert predict(flip, 2, m)["final"]["predicted_job_s"] == pytest.approx(4 + 12 * (1 + 0.5) + 0.5 + 2)
    assert p["final"]["assumed"] is True
    total = (
        p["phases_s"]["startup_and_data"]
        + p["phases_s"]["cross_validation"]
        + p["final"]["predicted_job_s"]
        + p["phases_s"]["light_jobs_after"]
    )
    assert p["predicted_total_s"] == pytest.approx(total)
    # start-up 3 + demo_csv (1 + light 3) + prepare (2 + light 3); after the final model:
    # aggregate, select, evaluate_final, figures, report, report_html: 6 light jobs of 3 s
    assert p["phases_s"]["startup_and_data"] == pytest.approx(12)
    assert p["phases_s"]["light_jobs_after"] == pytest.approx(18)
    # 6 fold jobs of 24 s (baseline, wide), 3 of ~18.9 s (half_data: 16 steps, 512 images -> 0.485 s
    # per epoch) and 3 evaluate_arch jobs of 3 s on 2 slots, longest first: slot 0 gets 3 x 24 + 2 x 18.9
    assert p["per_arch"]["half_data"]["predicted_job_s"] == pytest.approx(4 + 10 * (512 / 1056 + 1), abs=0.05)
    assert p["phases_s"]["cross_validation"] == pytest.approx(3 * 24 + 2 * 18.86, abs=0.1)
    # held-out evaluated only after the last epoch (eval_every 0): 9 evaluations fewer per job
    cfg0 = {**cfg, "training": {**cfg["training"], "eval_every": 0}}
    cfg0["architectures"] = {
        n: {**a, "training": {**a.get("training", {}), "eval_every": 0}} for n, a in cfg["architectures"].items()
    }
    p0 = predict(cfg0, 2, m)
    assert p0["per_arch"]["baseline"]["predicted_job_s"] == pytest.approx(4 + 10 * 1 + 1, abs=0.05)
    for key in ("images_x_epochs", "img_per_s", "predicted_job_s"):
        assert all(key in a for a in p["per_arch"].values())


def test_recheck_jobs_are_predicted(cfg):
    """The recheck: its checkpoint is a DAG job; the variants the config tells of before training (a
    list; in auto mode the regularizer ones, more may come) and the baseline are predicted at twice
    the epochs on fold 0, after cross-validation."""
    import copy

    m = made_up_measurements(cfg)
    off = predict(cfg, 2, m)
    assert off["recheck"]["jobs"] == 0 and off["phases_s"]["recheck"] == 0
    listed = copy.deepcopy(cfg)
    listed["study"]["recheck"] = ["wide"]
    p = predict(listed, 2, m)
    assert count_jobs(listed)["recheck_plan"] == 1 and p["jobs"] == 27
    # a fold-0 job at 20 epochs: 4 s + 20 x (1 s train + 1 s held-out), the baseline and `wide` side by side
    assert p["recheck"]["per_job_s"] == {"baseline": pytest.approx(44, abs=0.1), "wide": pytest.approx(44, abs=0.1)}
    assert (p["recheck"]["variants"], p["recheck"]["bound"]) == (["wide"], "exact")
    assert p["phases_s"]["recheck"] == pytest.approx(44, abs=0.1)
    assert p["predicted_total_s"] == pytest.approx(off["predicted_total_s"] + 44 + 3, abs=0.2)  # + the plan's light job
    auto = copy.deepcopy(cfg)
    auto["study"]["recheck"] = "auto"
    auto["architectures"]["half_data"]["factor"] = "dropout"
    assert predict(auto, 2, m)["recheck"]["variants"] == ["half_data"]
    assert predict(auto, 2, m)["recheck"]["bound"] == "at least"


def _fake_prediction(cfg, cores=2):
    return predict(cfg, cores, {**made_up_measurements(cfg), "measure_s": 30.0})


def test_in_study_prediction_reuses_a_matching_prediction_and_records_whole_runs(cfg, tmp_path):
    """A matching prediction is repeated without measuring; a whole-study run is recorded for the
    report (Snakemake's list of log files kept as one path), a partial one is not; a changed config
    or core count no longer matches and drops the record."""
    from ferstudy.io import write_json

    results = tmp_path / "results"
    pred = {**_fake_prediction(cfg), "fingerprint": fingerprint(cfg, 2), "measured_in_study": True}
    write_json(results / PREDICTION, pred)
    jobs = count_jobs(cfg)
    lines = []
    in_study_prediction({}, cfg, 2, jobs, 5, results=results, started_at=100.0, say=lines.append)
    assert lines[0] == "This run: 5 of the study's 26 jobs."
    assert "Predicted for the whole study on 2 cores" in lines[1] and "26 jobs, 9 cross-validation jobs" in lines[1]
    assert clock(pred["predicted_total_s"]) in lines[1] and "measured in" not in lines[1]  # nothing measured
    assert not (results / WHOLE_RUN).exists()  # partial run: nothing to compare with later
    in_study_prediction(
        {},
        cfg,
        2,
        jobs,
        26,
        results=results,
        started_at=100.0,
        snakemake_log=["/x/.snakemake/log/a.snakemake.log"],
        say=lines.append,
    )
    run = _read_json(results / WHOLE_RUN)
    assert run["started_at"] == 100.0 and run["fingerprint"] == fingerprint(cfg, 2)
    assert run["snakemake_log"] == "/x/.snakemake/log/a.snakemake.log" and run["measured_this_run"] is False
    # a partial run under another core count: no prediction for it, no measuring, and the record goes
    lines = []
    in_study_prediction({}, cfg, 4, jobs, 5, results=results, say=lines.append)
    assert "No cost prediction for this config yet" in lines[1]
    assert not (results / WHOLE_RUN).exists()
    # a whole run that may not predict (Slurm, predict_cost: false) keeps no stale record either
    write_json(results / WHOLE_RUN, run)
    in_study_prediction({}, cfg, 2, jobs, 26, results=results, enabled=False, say=lines.append)
    assert not (results / WHOLE_RUN).exists()


def test_failed_measurement_does_not_stop_the_study(cfg, tmp_path):
    """predict-cost failing (here: a config it cannot read) is said and the study goes on."""
    lines = []
    in_study_prediction(
        {"not": "a study config"}, cfg, 2, count_jobs(cfg), 26, results=tmp_path / "results", say=lines.append
    )
    assert "Could not predict the study's cost" in lines[-1]
    assert not (tmp_path / "results" / WHOLE_RUN).exists()


def test_the_measurement_says_each_network_once_as_it_goes(cfg, capfd):
    """Side by side processes share out the networks; a line after each, numbered over all of them."""
    from ferstudy.cost.measure import PROGRESS, measure_side_by_side

    rates = measure_side_by_side(cfg, ["baseline", "wide"], batches=1, warmup=0, h5=None, parallel=2)
    lines = [line for line in capfd.readouterr().err.splitlines() if line.startswith(PROGRESS)]
    assert [line.split(":")[0] for line in lines] == [f"{PROGRESS} 1/2", f"{PROGRESS} 2/2"]
    assert sorted(line.split(",")[0].split(": ")[1] for line in lines) == ["baseline", "wide"]  # each once
    assert list(rates) == ["baseline", "wide"] and all(r["img_per_s"] > 0 for r in rates.values())


def test_the_study_log_shows_the_measurements_progress(cfg, tmp_path, monkeypatch):
    """in_study_prediction passes each network's line to the study's log as it comes, and the whole
    output of the measurement to its own log (here a stand-in that measures nothing and fails)."""
    fake = tmp_path / "fake_python"
    fake.write_text(
        "#!/bin/sh\necho 'loading'\necho 'measured network 1/2: a, 9 img/s' >&2\n"
        "echo 'measured network 2/2: b, 8 img/s' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    import ferstudy.cost.study as cost_study

    monkeypatch.setattr(cost_study.sys, "executable", str(fake))
    lines = []
    results = tmp_path / "results"
    in_study_prediction({}, cfg, 2, count_jobs(cfg), 26, results=results, say=lines.append)
    assert lines[1].startswith("Measuring every network") and "Could not predict" in lines[-1]
    assert lines[2:4] == ["  measured network 1/2: a, 9 img/s", "  measured network 2/2: b, 8 img/s"]
    assert "loading" in (results / "logs" / "predict_cost.log").read_text()


def _write_benchmarks(results, seconds_by_arch, folds=3):
    for arch, seconds in seconds_by_arch.items():
        for fold in range(folds):
            tsv = results / "benchmarks" / "train" / arch / f"fold{fold}.tsv"
            tsv.parent.mkdir(parents=True, exist_ok=True)
            tsv.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:20\t100\n")


def test_predicted_vs_actual_from_the_study_files(cfg, tmp_path):
    from ferstudy.io import write_json

    results = tmp_path / "results"
    pred = {**_fake_prediction(cfg), "fingerprint": "f00", "measured_in_study": True}
    write_json(results / PREDICTION, pred)
    logs = tmp_path / ".snakemake" / "log"
    logs.mkdir(parents=True)
    (logs / "2026-01-01T000000.snakemake.log").write_text("Execute 25 jobs...\n")  # the run, still going
    write_json(
        results / WHOLE_RUN,
        {
            "started_at": 1000.0,
            "fingerprint": "f00",
            "measured_this_run": True,
            "snakemake_log": str(logs / "2026-01-01T000000.snakemake.log"),
        },
    )
    _write_benchmarks(results, {"baseline": 20.0, "wide": 50.0})
    predicted = pred["predicted_total_s"] + 30.0  # the run measured for 30 s first
    cmp = predicted_vs_actual(results, now=1000.0 + predicted / 1.25)
    total = cmp["rows"][0]
    assert total["what"] == "whole study" and total["note"] == "up to the report"
    assert cmp["total_error"] == pytest.approx(0.25)  # predicted 25% above the real time
    rows = {r["what"]: r for r in cmp["rows"]}
    base = pred["per_arch"]["baseline"]["predicted_job_s"]
    assert rows["baseline fold job (mean)"]["error"] == pytest.approx(base / 20.0 - 1)
    assert rows["wide fold job (mean)"]["actual_s"] == 50.0 and "half_data fold job (mean)" not in rows
    # the run ended: its elapsed time from Snakemake's log counts, not the time since
    (logs / "2026-01-01T000000.snakemake.log").write_text("Execute 25 jobs...\nElapsed time: 0:01:40\n")
    assert predicted_vs_actual(results, now=1e9)["rows"][0]["actual_s"] == 100.0
    listed = {**_read_json(results / WHOLE_RUN)}
    listed["snakemake_log"] = [listed["snakemake_log"]]  # as Snakemake hands it to onstart
    write_json(results / WHOLE_RUN, listed)
    assert predicted_vs_actual(results, now=1e9)["rows"][0]["actual_s"] == 100.0
    # ... unless it failed: then no total is compared
    (logs / "2026-01-01T000000.snakemake.log").write_text(
        "Execute 25 jobs...\nExiting because a job execution failed.\nElapsed time: 0:01:40\n"
    )
    failed = predicted_vs_actual(results)
    assert failed["total_error"] is None and failed["rows"][0]["note"] == "the run failed"
    (logs / "2026-01-01T000000.snakemake.log").write_text("Execute 25 jobs...\nElapsed time: 0:01:40\n")
    # cross-validation chose `wide` for the final model: the total counts wide's predicted final time
    (results / "final").mkdir()
    (results / "final" / "selection.json").write_text('{"architecture": "wide"}')
    chosen = predicted_vs_actual(results)
    shift = pred["final"]["per_arch_s"]["wide"] - pred["final"]["predicted_job_s"]
    assert chosen["rows"][0]["predicted_s"] == pytest.approx(predicted + shift)
    # a later run's report: the recorded run is not the newest and has no end -> no total
    (logs / "2026-01-01T000000.snakemake.log").write_text("Execute 25 jobs...\n")
    (logs / "2026-01-02T000000.snakemake.log").write_text("Execute 3 jobs...\n")
    assert predicted_vs_actual(results)["total_error"] is None
    # the config changed after that run: nothing comparable
    write_json(results / WHOLE_RUN, {"started_at": 1000.0, "fingerprint": "other"})
    assert predicted_vs_actual(results) is None


def test_report_sentence_follows_the_prediction_error():
    from ferstudy.report.sections.costs import cost_prediction_sentence

    near = cost_prediction_sentence({"total_error": -0.08, "measured_in_study": True})
    far = cost_prediction_sentence({"total_error": 0.4, "measured_in_study": False})
    assert "8.0% below" in near and "within the 25%" in near and "measuring every network" in near
    assert "40.0% above" in far and "outside the 25%" in far and "earlier measurement" in far
    assert "No whole-study cost prediction" in cost_prediction_sentence(None)
    failed = cost_prediction_sentence({"total_error": None, "rows": [{"note": "the run failed"}]})
    assert "(the run failed)" in failed


def _log(events: list[tuple[str, str]]) -> str:
    """A Snakemake 9 log (its own layout) of (time, 'start rule' | 'end rule') events."""
    out = []
    for stamp, event in events:
        kind, rule = event.split()
        line = f"localrule {rule}:\n    jobid: 1" if kind == "start" else f"Finished jobid: 1 (Rule: {rule})"
        out.append(f"[Thu Dec  3 {stamp} 2026]\n{line}\n")
    return "Building DAG of jobs...\n" + "\n".join(out) + "Elapsed time: 0:10:00\n"


def test_real_phase_times_from_the_snakemake_log():
    from datetime import datetime

    from ferstudy.cost.actual import phase_times

    start = datetime(2026, 12, 3, 14, 0, 0).timestamp()  # local time, as Snakemake writes it
    events = [
        ("14:00:01", "start prepare"),
        ("14:00:05", "end prepare"),
        ("14:00:06", "start plan"),
        ("14:01:36", "end plan"),
        ("14:01:36", "start train_fold"),
        ("14:06:00", "end train_fold"),
        ("14:06:01", "start recheck_plan"),
        ("14:06:03", "end recheck_plan"),
        ("14:06:03", "start recheck"),
        ("14:07:00", "end recheck"),
        ("14:07:01", "start aggregate"),  # aggregate and select lead into the final: counted there
        ("14:07:03", "end aggregate"),
        ("14:07:04", "start train_final"),
        ("14:09:30", "end train_final"),
    ]
    got = phase_times(_log(events), start, 600.0)
    assert got == pytest.approx(
        {
            "startup_and_data": 6,
            "measurement": 90,
            "cross_validation": 267,
            "recheck": 57,
            "final": 150,
            "light_jobs_after": 30,
        }
    )
    assert sum(got.values()) == pytest.approx(600.0)
    # no budget (no plan job) and no recheck: those phases are absent, the rest still adds up
    plain = [e for e in events if "plan" not in e[1] and "recheck" not in e[1]]
    got = phase_times(_log(plain), start, 600.0)
    assert set(got) == {"startup_and_data", "cross_validation", "final", "light_jobs_after"}
    assert got["startup_and_data"] == 96 and got["cross_validation"] == 360 - 96
    assert got["final"] == pytest.approx(570 - 360)
    assert sum(got.values()) == pytest.approx(600.0)
