"""`ferstudy status`: the training jobs of a study and its time left, from log files made here."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import ferstudy.status as status
from ferstudy.cli import main
from ferstudy.status import format_status, study_status

NOW = 1_800_000_000.0
SNAKEMAKE = ["/venv/bin/python3", "/venv/bin/snakemake", "--cores", "2"]


@pytest.fixture()
def processes(monkeypatch):
    """This machine's processes in the study directory, as `study_status` sees them: a Snakemake by default."""
    running = [SNAKEMAKE]
    monkeypatch.setattr(status, "study_processes", lambda study: running)
    return running


def epoch_line(clock, e, n, acc, left, val=None):
    val_part = f"val loss 1.2 acc {val}" if val is not None else "val not evaluated"
    return (
        f"{clock} INFO epoch {e}/{n} lr 0.0400 train loss 1.500 acc {acc} | {val_part} | 500 img/s | "
        f"30.0 s/epoch, ~{left} s left"
    )


def write(path, lines, age):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    os.utime(path, (NOW - age, NOW - age))


def make_study(root, prediction=True):
    r = root / "results"
    if prediction:
        write(
            r / "cost" / "prediction.json",
            [
                json.dumps(
                    {
                        "cores": 2,
                        "predicted_total_s": 1000,
                        "per_arch": {
                            "a": {"jobs": 2, "predicted_job_s": 100.0},
                            "b": {"jobs": 2, "predicted_job_s": 200.0},
                        },
                        "final": {
                            "architecture": "a",
                            "predicted_job_s": 300.0,
                            "per_arch_s": {"a": 300.0, "b": 600.0},
                        },
                        "phases_s": {"startup_and_data": 10.0, "light_jobs_after": 20.0},
                        "data": {"preset": "cpu"},
                    }
                )
            ],
            2000,
        )
        write(r / "cost" / "run.json", [json.dumps({"started_at": NOW - 1500})], 1500)
    write(root / ".snakemake" / "locks" / "0.input.lock", ["x"], 1000)
    write(r / "data" / "dataset.h5", ["h5"], 1400)
    write(
        r / "logs" / "train" / "a" / "fold0.log",
        [
            "09:00:00 INFO training a on fold 0 of fer2013 data: 100 train / 50 held-out images, 1 thread(s), device cpu",
            epoch_line("09:01:00", 1, 2, "0.300", 60),
            epoch_line("09:02:00", 2, 2, "0.500", 0, val="0.480"),
            "09:02:30 INFO held-out accuracy 0.4800 (a fold 0), 150 s",
        ],
        900,
    )
    write(r / "cv" / "a" / "fold0" / "predictions.csv", ["row,label"], 900)
    write(
        r / "logs" / "train" / "a" / "fold1.log",
        [
            "09:03:00 INFO training a on fold 1 of fer2013 data: 100 train / 50 held-out images, 1 thread(s), device cpu",
            epoch_line("09:04:00", 3, 8, "0.400", 90),
        ],
        30,
    )
    write(
        r / "logs" / "train" / "b" / "fold0.log",
        [  # from an earlier run, killed after epoch 2
            "08:00:00 INFO training b on fold 0 of fer2013 data: 100 train / 50 held-out images, 1 thread(s), device cpu",
            epoch_line("08:01:00", 2, 8, "0.350", 300),
        ],
        4000,
    )
    for arch in ("a", "b"):
        write(r / "cv" / arch / "run_config.yaml", ["name: x", "data: {folds: 2, fold_seed: 0}"], 1400)
    return root


def test_status_lists_each_job_and_predicts_the_time_left(tmp_path, processes):
    st = study_status(make_study(tmp_path), now=NOW)
    jobs = {j.name: j for j in st["jobs"]}
    assert [j.state for j in st["jobs"]] == ["done", "running", "stopped", "not started"]
    assert jobs["a fold 0"].accuracy == "held-out acc 0.4800" and jobs["a fold 0"].seconds == 150
    assert (jobs["a fold 1"].epoch, jobs["a fold 1"].epochs, jobs["a fold 1"].left_s) == (3, 8, 60)
    assert jobs["a fold 1"].accuracy == "train acc 0.400"
    # pace 150 / 100 = 1.5; slots [60, 0] + b fold 0 and b fold 1 at 200 x 1.5 each, longest first:
    # [60 + 300, 300] -> 360; then the final model (a, 300 x 1.5) and the light jobs after it (20)
    assert st["left"]["pace"] == 1.5 and st["left"]["seconds"] == 360 + 450 + 20
    text = format_status(st, tmp_path)
    assert "1 done, 1 running, 1 stopped, 1 not started (4 jobs)" in text
    lines = text.splitlines()
    assert any(
        line.split()[:7] == ["a", "fold", "0", "done", "epoch", "2/2", "held-out"] and line.endswith("2 min 30 s")
        for line in lines
    ), text
    assert any(
        "a fold 1" in line and "running" in line and "3/8" in line and "~1 min 00 s left" in line for line in lines
    ), text
    assert any("b fold 0" in line and "stopped" in line and "resumes from its checkpoint" in line for line in lines), (
        text
    )
    assert "b fold 1" not in text  # not started: counted, not listed
    assert "final model (chosen by cross-validation): not started (predicted 5 min 00 s)" in text
    assert "Time left (predicted): ~13 min 50 s (the prediction x 1.50, the pace of the 1 finished job(s))" in text
    assert "Snakemake is running" in text and "Running for 25 min 00 s" in text
    assert f"tail -f {tmp_path}/results/logs/train/a/fold1.log" in text


def test_status_of_the_final_model(tmp_path, processes):
    root = make_study(tmp_path)
    log = root / "results" / "logs" / "train_final.log"
    head = [
        "10:00:00 INFO final model b: 300 Training images, checkpoint chosen on 50 PublicTest images",
        epoch_line("10:01:00", 4, 10, "0.600", 120, val="0.612"),
    ]
    write(log, head, 10)
    write(root / "results" / "final" / "selection.json", [json.dumps({"architecture": "b"})], 100)
    final = study_status(root, now=NOW)["final"]
    assert (final.name, final.state, final.epoch, final.accuracy, final.left_s) == (
        "final model (b)",
        "running",
        4,
        "val acc 0.612",
        110,
    )
    assert final.predicted_s == 600.0
    write(log, head + ["10:09:00 INFO final model: best PublicTest accuracy 0.6300 at epoch 9; 540 s"], 5)
    write(root / "results" / "final" / "model.pt", ["pt"], 5)
    final = study_status(root, now=NOW)["final"]
    assert (final.state, final.seconds, final.accuracy) == ("done", 540, "PublicTest acc 0.6300 (epoch 9)")


def test_status_without_a_prediction_or_a_running_snakemake(tmp_path, capsys, monkeypatch):
    root = make_study(tmp_path, prediction=False)
    (root / ".snakemake" / "locks" / "0.input.lock").unlink()
    failed = root / "results" / "logs" / "train" / "b" / "fold1.log"
    write(failed, ["08:00:00 INFO training b on fold 1", "Traceback (most recent call last):", "MemoryError"], 5000)
    monkeypatch.setattr(status, "study_processes", lambda study: None)  # no /proc: the logs' age decides
    st = study_status(root, now=NOW)
    assert [j.state for j in st["jobs"]] == ["done", "running", "stopped", "failed"]  # a fold 1: written 30 s ago
    monkeypatch.setattr(status, "study_processes", lambda study: [])  # nothing runs here
    assert [j.state for j in study_status(root, now=NOW)["jobs"]] == ["done", "stopped", "stopped", "failed"]
    assert st["left"] is None
    assert main(["status", "--dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "no Snakemake running here" in out and "no cost prediction here" in out and "MemoryError" in out


# ---------------------------------------------------------------- stale state (issue 24)
def test_a_killed_snakemake_leaves_a_stale_lock_and_stopped_jobs(tmp_path, processes):
    """After `kill -9` of Snakemake: "Snakemake is running" and a job "running ~2 s left" before,
    also after `--unlock`. Now: no Snakemake process, so the lock is stale and the jobs stopped."""
    root = make_study(tmp_path)
    processes.clear()
    st = study_status(root, now=NOW)
    jobs = {j.name: j for j in st["jobs"]}
    assert jobs["a fold 1"].state == "stopped" and st["running_since"] is None and st["stale_lock"]
    text = format_status(st, root)
    assert "no Snakemake running here (a stale lock in .snakemake/locks" in text and "snakemake --unlock" in text
    assert "Running for" not in text and "Follow a job" not in text
    assert any(
        "a fold 1" in line and "stopped" in line and "resumes from its checkpoint" in line for line in text.splitlines()
    )
    (root / ".snakemake" / "locks" / "0.input.lock").unlink()  # snakemake --unlock
    st = study_status(root, now=NOW)
    assert {j.name: j.state for j in st["jobs"]}["a fold 1"] == "stopped" and not st["stale_lock"]


def test_a_training_process_left_running_counts_as_running(tmp_path, processes):
    root = make_study(tmp_path)
    processes[:] = [
        [
            "python3",
            "-m",
            "ferstudy",
            "train",
            "--h5",
            "results/data/dataset.h5",
            "--run-config",
            "results/cv/b/run_config.yaml",
            "--fold",
            "0",
            "--out-dir",
            "results/cv/b/fold0",
        ]
    ]
    jobs = {j.name: j for j in study_status(root, now=NOW)["jobs"]}
    assert jobs["b fold 0"].state == "running" and jobs["a fold 1"].state == "stopped"  # b fold 0's log: 4000 s old


def test_outputs_older_than_their_run_config_are_outdated(tmp_path, processes):
    """During a run after a config change, the previous config's outputs counted as done."""
    root = make_study(tmp_path)
    write(root / "results" / "cv" / "a" / "run_config.yaml", ["name: x", "data: {folds: 2, fold_seed: 0}"], 100)
    st = study_status(root, now=NOW)
    jobs = {j.name: j for j in st["jobs"]}
    assert jobs["a fold 0"].state == "outdated" and jobs["a fold 1"].state == "running"
    assert st["left"]["finished"] == 0  # its seconds no longer set the pace
    text = format_status(st, root)
    assert "0 done" not in text and "1 running, 1 stopped, 1 outdated, 1 not started (4 jobs)" in text
    assert any("a fold 0" in line and "outdated" in line and "runs again" in line for line in text.splitlines()), text
    write(root / "results" / "data" / "dataset.h5", ["new data"], 50)
    assert {j.name: j.state for j in study_status(root, now=NOW)["jobs"]}["a fold 0"] == "outdated"


def test_processes_are_read_from_this_machine(tmp_path):
    """A real process named snakemake working in the study directory is a running Snakemake; killed
    with SIGKILL, its lock is stale."""
    root = make_study(tmp_path)
    fake = tmp_path / "bin" / "snakemake"
    fake.parent.mkdir()
    fake.write_text("import time\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, str(fake), "--cores", "2"], cwd=root)
    try:
        for _ in range(100):
            found = status.study_processes(root) or []
            if any(status.is_snakemake(argv) for argv in found):
                break
            time.sleep(0.05)
        assert [sys.executable, str(fake), "--cores", "2"] in found
        assert "Snakemake is running" in format_status(study_status(root, now=NOW), root)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert "a stale lock" in format_status(study_status(root, now=NOW), root)


def test_status_of_a_directory_that_does_not_exist_fails(tmp_path, capsys):
    assert main(["status", "--dir", str(tmp_path / "nonexistent")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"ferstudy: error: --dir {tmp_path / 'nonexistent'}: no such directory "
        f"(the study directory is where snakemake runs)"
    )


def test_status_into_a_pipe_that_closes_early_says_nothing_more(tmp_path):
    """`ferstudy status | head -1`: once the reader has gone, no BrokenPipeError traceback (here the
    pipe's reading end is closed before the command writes, so every write fails)."""
    root = make_study(tmp_path, prediction=False)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "ferstudy", "status", "--dir", str(root)], stdout=write_end, stderr=subprocess.PIPE
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 141 and b"Traceback" not in proc.stderr and b"BrokenPipe" not in proc.stderr, proc.stderr
