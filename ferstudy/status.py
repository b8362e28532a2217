"""`ferstudy status`: where a study is, read from its files alone (running, stopped or finished).

One line per training job that runs or has run: architecture, fold, epoch n/N, the last accuracy
and the time left (the job's own estimate in its log, less the time since that line). Then the
study's predicted time left: the in-study cost prediction (results/cost/prediction.json, the
seconds of every job) for the jobs not started, scaled by the pace of the finished ones, and the
running jobs' own estimates, scheduled on the study's cores as Snakemake runs them.

Sources, all under the study directory: results/logs/train/{arch}/fold{k}.log and
results/logs/train_final.log (the epoch lines `ferstudy train` writes), the jobs' outputs
(results/cv/{arch}/fold{k}/predictions.csv, results/final/model.pt; one older than its inputs,
the run config or the data, is "outdated": Snakemake runs it again), their resume checkpoints
(results/checkpoints/), results/cv/{arch}/run_config.yaml, results/cost/prediction.json and
run.json, Snakemake's locks in .snakemake/locks, and this machine's processes working in the
study directory (/proc): a lock without a Snakemake process is a stale one (Snakemake was
killed), and a job runs only while a Snakemake or its own process does.
Nothing is written; nothing needs Snakemake or torch.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

EPOCH = re.compile(
    r"epoch (\d+)/(\d+) .*?train loss \S+ acc (\S+) \| (?:val not evaluated|val loss \S+ acc (\S+))"
    r" \|.*?([\d.]+) s/epoch, ~(\d+) s left"
)
CV_DONE = re.compile(r"held-out accuracy ([\d.]+) \(.*\), (\d+) s")
FINAL_DONE = re.compile(r"final model: best PublicTest accuracy (\S+) at epoch (\S+); (\d+) s")
FINAL_ARCH = re.compile(r"final model (\S+): \d+ Training images")
CLOCK = re.compile(r"^(\d\d):(\d\d):(\d\d) ")
FAILED = re.compile(r"Traceback|ferstudy: error:|\bERROR\b|Killed|MemoryError")
QUIET_S = 600  # a log silent this long (and longer than 3 epochs) belongs to no running job


@dataclass
class Job:
    name: str  # "baseline fold 0" or "final model (baseline)"
    log: Path
    state: str = "not started"  # done | running | stopped | failed | outdated | not started
    epoch: int = 0
    epochs: int = 0
    accuracy: str = ""  # "held-out acc 0.559", "train acc 0.556", ...
    left_s: float | None = None  # running: the job's own estimate
    seconds: float | None = None  # done: how long it took
    predicted_s: float | None = None
    finished_at: float = 0.0
    note: str = ""


def _read(path):
    try:
        return Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return None


def _json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _hms(line):
    m = CLOCK.match(line)
    return int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3]) if m else None


def lock_time(study: Path | str) -> float | None:
    """Creation time of the Snakemake lock of the study directory, None without one."""
    locks = list((Path(study) / ".snakemake" / "locks").glob("*.lock"))
    return min(p.stat().st_mtime for p in locks) if locks else None


def study_processes(study: Path | str) -> list[list[str]] | None:
    """The argument lists of this machine's processes working in `study` (Snakemake changes into its
    working directory; its local jobs run there), or None where /proc cannot tell (not Linux)."""
    proc, target = Path("/proc"), Path(study).resolve()
    if not (proc / "self" / "cwd").exists():
        return None
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) != target:
                continue
            argv = [a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
        except OSError:  # gone, or another user's
            continue
        if argv:
            found.append(argv)
    return found


def is_snakemake(argv: list[str]) -> bool:
    return any(Path(a).name == "snakemake" for a in argv[:2]) or argv[1:3] == ["-m", "snakemake"]


def training_jobs(processes: Iterable[list[str]]) -> set[str]:
    """Names (as `Job.name` starts) of the training jobs these processes run: "ARCH fold K", "final"."""
    names = set()
    for argv in processes:
        if "ferstudy" not in " ".join(argv[:3]):
            continue
        options = dict(zip(argv, argv[1:]))
        if "train" in argv and "--run-config" in options and "--fold" in options:
            names.add(f"{Path(options['--run-config']).parent.name} fold {options['--fold']}")
        elif "train-final" in argv:
            names.add("final")
    return names


def read_job(
    job: Job,
    done_output: Path | str,
    now: float,
    locked_since: float | None,
    final: bool = False,
    inputs: Iterable[Path | str] = (),
    live: bool | None = None,
) -> Job:
    """Fill `job` from its log: state, epoch, accuracy, time left. `inputs`: files its output must
    not be older than (else it is outdated). `live`: True when its process runs, False when
    nothing on this machine can be running it, None when unknown (the log's age decides)."""
    lines = _read(job.log)
    newest_input = max((Path(p).stat().st_mtime for p in inputs if Path(p).is_file()), default=0.0)
    if Path(done_output).is_file() and Path(done_output).stat().st_mtime < newest_input and not live:
        job.state, job.note = "outdated", "its run config or data changed since: runs again"
        return job
    if lines is None:
        return job
    mtime = job.log.stat().st_mtime
    epochs = [m for m in map(EPOCH.search, lines) if m]
    if epochs:
        last = epochs[-1]
        job.epoch, job.epochs = int(last[1]), int(last[2])
        val = last[4]
        job.accuracy = f"val acc {val}" if val and val != "nan" else f"train acc {last[3]}"
    done = next((m for m in map(FINAL_DONE.search if final else CV_DONE.search, lines) if m), None)
    if done and Path(done_output).is_file():
        job.state, job.seconds, job.finished_at = "done", float(done[3] if final else done[2]), mtime
        job.accuracy = f"PublicTest acc {done[1]} (epoch {done[2]})" if final else f"held-out acc {done[1]}"
        return job
    failed = next((line for line in reversed(lines) if FAILED.search(line)), None)
    epoch_s = float(epochs[-1][5]) if epochs else 0.0
    quiet = now - mtime
    recent = (locked_since is not None and mtime >= locked_since) or quiet < max(QUIET_S, 3 * epoch_s)
    if live or (live is None and recent and not failed):
        job.state = "running"
        if epochs:
            job.left_s = max(0.0, float(epochs[-1][6]) - quiet)
        elif job.predicted_s is not None:
            start, end = _hms(lines[0]) if lines else None, _hms(lines[-1]) if lines else None
            elapsed = ((end - start) % 86400 if start is not None and end is not None else 0) + quiet
            job.left_s = max(0.0, job.predicted_s - elapsed)
    elif failed:
        job.state, job.note = "failed", failed.strip()[-100:]
    else:
        job.state = "stopped"
        job.note = "resumes from its checkpoint when the study runs again" if job.epoch else ""
    return job


def study_status(study: Path | str = ".", cores: int | None = None, now: float | None = None) -> dict[str, Any]:
    """Every training job of the study with its state, and the predicted time left (a dict)."""
    study, now = Path(study), time.time() if now is None else now
    results = study / "results"
    pred = _json(results / "cost" / "prediction.json") or {}
    run = _json(results / "cost" / "run.json") or {}
    processes = study_processes(study)
    alive = None if processes is None else any(map(is_snakemake, processes))
    running = training_jobs(processes or [])
    locked = lock_time(study)
    locked_since = locked if alive is not False else None  # a lock nobody holds is stale
    per_arch = pred.get("per_arch") or {}
    archs = {a: p.get("jobs", 0) for a, p in per_arch.items()}
    if not archs:  # no prediction: the architectures whose run config this study wrote
        for rc in sorted((results / "cv").glob("*/run_config.yaml")):
            archs[rc.parent.name] = _folds(rc)
    jobs = []
    for arch, folds in archs.items():
        for fold in range(folds):
            job = Job(
                f"{arch} fold {fold}",
                results / "logs" / "train" / arch / f"fold{fold}.log",
                predicted_s=(per_arch.get(arch) or {}).get("predicted_job_s"),
            )
            inputs = [results / "cv" / arch / "run_config.yaml", results / "data" / "dataset.h5"]
            jobs.append(
                read_job(
                    job,
                    results / "cv" / arch / f"fold{fold}" / "predictions.csv",
                    now,
                    locked_since,
                    inputs=inputs,
                    live=_live(job.name, running, alive),
                )
            )
    final_pred = pred.get("final") or {}
    selection = _json(results / "final" / "selection.json") or {}
    final_arch = selection.get("architecture")
    final_lines = _read(results / "logs" / "train_final.log") or []
    final_arch = final_arch or next((m[1] for m in map(FINAL_ARCH.search, final_lines) if m), None)
    final_s = (final_pred.get("per_arch_s") or {}).get(final_arch, final_pred.get("predicted_job_s"))
    final = read_job(
        Job(
            f"final model ({final_arch or 'chosen by cross-validation'})",
            results / "logs" / "train_final.log",
            predicted_s=final_s,
        ),
        results / "final" / "model.pt",
        now,
        locked_since,
        final=True,
        inputs=[
            results / "final" / "selection.json",
            results / "final" / "final_config.yaml",
            results / "data" / "dataset.h5",
        ],
        live=_live("final", running, alive),
    )
    cores = cores or pred.get("cores") or 1
    return {
        "jobs": jobs,
        "final": final,
        "left": time_left(jobs, final, pred, results, cores),
        "cores": cores,
        "prediction": bool(pred),
        "busy": pred.get("busy"),
        "preset": (pred.get("data") or {}).get("preset"),
        "running_since": locked_since,
        "stale_lock": locked is not None and alive is False,
        "started_at": run.get("started_at"),
        "now": now,
    }


def _live(name, running, alive):
    """True: a process of this machine trains it; False: no Snakemake and no such process here;
    None: a Snakemake runs (its jobs may be on cluster nodes) or /proc cannot tell."""
    if name in running:
        return True
    return False if alive is False else None


def _folds(run_config):
    import yaml

    try:
        return int((yaml.safe_load(run_config.read_text()) or {}).get("data", {}).get("folds", 0))
    except (OSError, ValueError, yaml.YAMLError):
        return 0


PACE_BOUNDS = (0.05, 20.0)  # the finished jobs' seconds over their predicted seconds, bounded


def _arch_of(job: Job) -> str:
    return job.name.split(" fold ")[0]


def time_left(jobs: list[Job], final: Job, pred: dict[str, Any], results: Path, cores: int) -> dict[str, float] | None:
    """Predicted seconds to the end of the study: not-started jobs at their predicted seconds x the
    pace of the finished ones, running jobs at their own estimate, on `cores` slots (longest
    first), then the final model and the light jobs after it."""
    if not pred:
        return None
    finished = [j for j in jobs if j.state == "done" and j.seconds and j.predicted_s]
    # `or 0.0` for mypy only: `finished` holds jobs whose seconds and predicted_s are set
    pace = sum(j.seconds or 0.0 for j in finished) / sum(j.predicted_s or 0.0 for j in finished) if finished else 1.0
    # wide bounds: a prediction measured on a busy machine was off 13x (the finished jobs know better)
    pace = min(PACE_BOUNDS[1], max(PACE_BOUNDS[0], pace))
    own: dict[
        str, list[float]
    ] = {}  # architecture: seconds of its finished fold jobs, which predict its other folds best
    for j in finished:
        own.setdefault(_arch_of(j), []).append(j.seconds or 0.0)  # set: the job finished
    slots = sorted(j.left_s or 0.0 for j in jobs if j.state == "running")[-cores:]
    slots += [0.0] * (cores - len(slots))
    # stopped and failed jobs run again (from their checkpoints) when the study does
    waiting = sorted(
        (
            sum(own[_arch_of(j)]) / len(own[_arch_of(j)]) if _arch_of(j) in own else (j.predicted_s or 0.0) * pace
            for j in jobs
            if j.state in ("not started", "stopped", "failed", "outdated")
        ),
        reverse=True,
    )
    for seconds in waiting:
        i = slots.index(min(slots))
        slots[i] += seconds
    phases = pred.get("phases_s") or {}
    cv = max(slots) if slots else 0.0
    if final.state == "done":
        final_s = 0.0
    elif final.state == "running":
        final_s = final.left_s or 0.0
    else:
        final_s = (final.predicted_s or 0.0) * pace
    pre = 0.0 if (results / "data" / "dataset.h5").is_file() else phases.get("startup_and_data", 0.0)
    post = 0.0 if (results / "report" / "report.md").is_file() else phases.get("light_jobs_after", 0.0)
    return {"seconds": pre + cv + final_s + post, "pace": pace, "finished": len(finished)}


def format_status(st: dict[str, Any], study: Path | str = ".") -> str:
    from .cost.study import clock

    jobs, final = st["jobs"], st["final"]
    counts = {
        s: sum(j.state == s for j in jobs) for s in ("done", "running", "stopped", "failed", "outdated", "not started")
    }
    head = f"Study in {Path(study).resolve()}"
    if st["preset"]:
        head += f" (preset {st['preset']}, {st['cores']} cores)"
    head += ": Snakemake is running" if st["running_since"] else ": no Snakemake running here"
    if st.get("stale_lock"):
        head += (
            " (a stale lock in .snakemake/locks from a Snakemake that was stopped: run `snakemake --unlock` "
            "once, then the same command as before)"
        )
    lines = [
        head,
        "Cross-validation: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" ({len(jobs)} jobs)"
        if jobs
        else "Cross-validation: no training job found (results/logs/train/)",
    ]
    shown = sorted((j for j in jobs if j.state == "done"), key=lambda j: j.finished_at) + [
        j for j in jobs if j.state in ("running", "stopped", "failed", "outdated")
    ]
    if final.state != "not started":
        shown.append(final)
    width = max([len(j.name) for j in shown] + [10])
    for j in shown:
        progress = f"{j.epoch}/{j.epochs}" if j.epochs else "-"
        if j.state == "done":
            when = clock(j.seconds)
        elif j.state == "running":
            when = f"~{clock(j.left_s)} left" if j.left_s is not None else "starting"
        else:
            when = j.note
        lines.append(f"  {j.name:<{width}}  {j.state:<8} epoch {progress:<7} {j.accuracy:<24} {when}".rstrip())
    if final.state == "not started":
        lines.append(
            f"  {final.name}: not started" + (f" (predicted {clock(final.predicted_s)})" if final.predicted_s else "")
        )
    left = st["left"]
    if left is None:
        lines.append(
            "Time left: no cost prediction here (results/cost/prediction.json: a whole-study run makes "
            "it first, or `ferstudy predict-cost`)."
        )
    else:
        pace = (
            f"the prediction x {left['pace']:.2f}, the pace of the {left['finished']} finished job(s)"
            if left["finished"]
            else "the prediction, no job finished yet"
        )
        done = final.state == "done" and (Path(study) / "results" / "report" / "report.md").is_file()
        lines.append(
            "Time left: none, the study is done."
            if done
            else f"Time left (predicted): ~{clock(left['seconds'])} ({pace})."
        )
        busy = st.get("busy") or {}
        if busy.get("busy") and not done:  # the plan's measurement saw other work (ferstudy/plan.py)
            lines.append(
                f"  The prediction was measured on a busy machine ({busy['why']}): the finished jobs' "
                "pace corrects it as they finish."
            )
    if st["started_at"] and st["running_since"]:
        lines.append(f"Running for {clock(st['now'] - st['started_at'])}.")
    running = [j for j in jobs + [final] if j.state == "running"]
    if running:
        lines.append(f"Follow a job: tail -f {running[0].log}")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> None:
    from .errors import UserError

    if not Path(args.dir).is_dir():
        raise UserError(f"--dir {args.dir}: no such directory (the study directory is where snakemake runs)")
    st = study_status(args.dir, cores=args.cores)
    print(format_status(st, args.dir))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "status",
        help="where a running study is: its training jobs, epochs, time left",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--dir", default=".", help="the study directory (where Snakemake runs; default: here)")
    p.add_argument("--cores", type=int, help="cores of the run (default: those of the cost prediction)")
    p.set_defaults(func=cmd_status)
    return p
