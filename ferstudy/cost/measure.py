"""Measuring this machine for the prediction: the training and evaluation rates of every network
(1 thread, N processes side by side, as the fold jobs run; the benchmark's training step), the
real commands' overhead, Snakemake's own costs, and the data jobs done for real."""

from __future__ import annotations

import copy
import itertools
import logging
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..bench.context import child_env
from .workload import N_CLASSES, data_counts

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger("ferstudy.cost")


def run_side_by_side(commands: Sequence[Sequence[str]], cwd: Path | str | None = None) -> float:
    """Start every command at once (as Snakemake starts jobs on free cores); mean wall seconds."""
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(c, cwd=cwd, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for c in commands
    ]
    ends = []
    for proc, cmd in zip(procs, commands):
        _, err = proc.communicate()
        ends.append(time.perf_counter() - t0)
        if proc.returncode:
            raise RuntimeError(
                f"{' '.join(map(str, cmd[:4]))} ... failed: {err.decode(errors='replace').strip()[-400:]}"
            )
    return float(np.mean(ends))


def write_tiny_h5(path: Path | str, folds: int, n_images: int = 350, seed: int = 0) -> int:
    """A small HDF5 (demo faces, every class in every split) for the job probes."""
    from .. import SPLIT_NAMES
    from ..data import write_h5
    from ..demo import make_demo_faces

    images, labels, usage = make_demo_faces(n_images, seed)
    split = np.array([SPLIT_NAMES.index(u) for u in usage], dtype=np.uint8)
    write_h5(path, images, labels, split, np.arange(n_images), folds, 0, "demo", "probe", "")
    return n_images


def probe_jobs(cfg: dict, run_cfg: dict, parallel: int, tmp: Path | str) -> dict:
    """Wall seconds of the real commands, `parallel` side by side: `ferstudy train` (1 epoch on a
    tiny HDF5) and `ferstudy evaluate-arch` on its predictions. Returns a dict with the walls and
    the tiny workload (to subtract its compute)."""
    import yaml

    from ..data import load_h5

    tmp = Path(tmp)
    h5 = tmp / "tiny.h5"
    write_tiny_h5(h5, cfg["data"]["folds"])
    probe_cfg = copy.deepcopy(run_cfg)
    probe_cfg["training"]["epochs"] = 1
    probe_cfg["training"]["subsample"] = 1.0
    probe_cfg["training"]["batch_size"] = 16  # >= 10 steps: OneCycleLR fails on fewer than ~1/warmup steps
    rc = tmp / "probe_run_config.yaml"
    rc.write_text(yaml.safe_dump(probe_cfg, sort_keys=False))
    py = [sys.executable, "-m", "ferstudy"]
    train = [
        py
        + [
            "train",
            "--h5",
            str(h5),
            "--run-config",
            str(rc),
            "--fold",
            "0",
            "--out-dir",
            str(tmp / f"o{i}"),
            "--checkpoint",
            str(tmp / f"ck{i}.pt"),
            "--threads",
            "1",
        ]
        for i in range(parallel)
    ]
    train_s = run_side_by_side(train, cwd=tmp)
    light = [
        py
        + [
            "evaluate-arch",
            "--run-config",
            str(rc),
            "--predictions",
            str(tmp / f"o{i}" / "predictions.csv"),
            "--out",
            str(tmp / f"m{i}.json"),
        ]
        for i in range(parallel)
    ]
    light_s = run_side_by_side(light, cwd=tmp)
    data = load_h5(h5)
    tr, va = data.fold_indices(0)
    bs = min(probe_cfg["training"]["batch_size"], len(tr))
    return {"train_job_s": train_s, "light_job_s": light_s, "n_train": len(tr) // bs * bs, "n_val": len(va)}


def measure_snakemake(
    config_path: Path | str | None, workdir: Path | str, jobs: int = 6, repeats: int = 2
) -> tuple[float, float]:
    """(start-up s, per-job s) of Snakemake here: a dry run of a workflow that resolves this config
    as common.smk does, and a real run of `jobs` no-op shell jobs."""
    snakefile = textwrap.dedent(f"""
        from ferstudy.config import load_study
        STUDY = load_study({str(Path(config_path).resolve()) if config_path else None!r}, workdir={str(workdir)!r})
        rule all:
            input: expand("o/{{i}}.txt", i=range({jobs}))
        rule one:
            output: "o/{{i}}.txt"
            shell: "true > {{output}}"
        """)
    from ..bench.dryrun import snakemake_command

    with tempfile.TemporaryDirectory(prefix="ferstudy-cost-") as tmp:
        Path(tmp, "Snakefile").write_text(snakefile)
        env = child_env()

        def run(args):
            t0 = time.perf_counter()
            subprocess.run(snakemake_command() + args, cwd=tmp, check=True, capture_output=True, env=env)
            return time.perf_counter() - t0

        startup = min(run(["-n", "--cores", "1"]) for _ in range(repeats))
        full = run(["--cores", "1", "--quiet"])
    return startup, max(0.0, (full - startup) / jobs)


def checkpoint_seconds(model: nn.Module) -> float:
    """Seconds to write one checkpoint (model + optimizer state), as `train.fit` does every epoch."""
    import torch

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        optimizer.state[p] = {"momentum_buffer": torch.zeros_like(p)}
    with tempfile.TemporaryDirectory(prefix="ferstudy-cost-") as tmp:
        t0 = time.perf_counter()
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, Path(tmp, "ck.pt"))
        return time.perf_counter() - t0


def measure_data_jobs(
    cfg: dict, counts: dict[str, list[int]]
) -> tuple[float, float, Path, tempfile.TemporaryDirectory[str]]:
    """(demo_csv s or 0, prepare s, path of a temporary HDF5 of the right size, tmpdir) measured
    by doing the work: the demo CSV (demo data) and `data.prepare` + `data.write_summary`."""
    from ..data import prepare, write_h5, write_summary

    tmp = tempfile.TemporaryDirectory(prefix="ferstudy-cost-")
    d = Path(tmp.name)
    demo_s = prepare_s = 0.0
    h5 = d / "dataset.h5"
    csv = cfg["dataset"]["csv"]
    if cfg["dataset"]["name"] == "demo":
        from ..demo import write_demo_csv

        t0 = time.perf_counter()
        write_demo_csv(d / "demo.csv", n_images=cfg["data"]["demo_images"], seed=cfg["data"]["demo_seed"])
        demo_s = time.perf_counter() - t0
        csv = d / "demo.csv"
    elif not Path(csv).is_absolute():
        csv = Path(cfg.get("_workdir", ".")) / csv
    if Path(csv).is_file():
        t0 = time.perf_counter()
        data = prepare(
            csv, h5, folds=cfg["data"]["folds"], fold_seed=cfg["data"]["fold_seed"], dataset=cfg["dataset"]["name"]
        )
        write_summary(data, d / "s.csv", d / "s.md", d / "faces.png")
        prepare_s = time.perf_counter() - t0
    else:  # cannot time the ingest: write an HDF5 of the right size for the load time
        n = {k: int(sum(v)) for k, v in counts.items()}
        total = sum(n.values())
        labels = np.concatenate([np.repeat(np.arange(N_CLASSES), counts[s]) for s in counts]).astype(np.uint8)
        split = np.repeat(np.arange(3), [n["Training"], n["PublicTest"], n["PrivateTest"]]).astype(np.uint8)
        images = np.random.default_rng(0).integers(0, 256, (total, 48, 48), dtype=np.uint8)
        write_h5(h5, images, labels, split, np.arange(total), cfg["data"]["folds"], 0, "fer2013", str(csv), "")
        log.warning("%s not found: the prepare job's time is not measured (counted as 0)", csv)
    return demo_s, prepare_s, h5, tmp


MEASURE_MIN_S = 1.0  # seconds of timed training per network: 3 batches alone were noise on the VMs here
# The plan's quick measurement (study.time_budget, <= 90 s on 2 cores for the cpu preset): half the
# timed training, a quarter of the evaluation faces, the final's threads timed per candidate briefly.
QUICK = {"min_seconds": 0.5, "eval_images": 256, "final_min_seconds": 0.3}


def measure_arch(
    run_cfg: dict,
    images: np.ndarray,
    labels: np.ndarray,
    threads: int,
    batches: int,
    warmup: int,
    trials: int = 1,
    min_seconds: float | None = None,
    eval_images: int = 512,
    amp: bool | None = None,
) -> dict[str, float]:
    """{img_per_s (training), eval_img_per_s (with the arch's TTA), checkpoint_s, mflops_forward}
    at `threads` threads. The training rate is all timed images over all timed seconds of at least
    `MEASURE_MIN_S` (not the best trial: a job's epochs run at their mean rate)."""
    import torch

    from ..bench.training import eval_throughput, train_throughput
    from ..train import use_channels_last

    r = train_throughput(
        run_cfg,
        images,
        labels,
        threads,
        batches=batches,
        warmup=warmup,
        trials=trials,
        min_seconds=MEASURE_MIN_S if min_seconds is None else min_seconds,
        amp=amp,
    )
    t = run_cfg["training"]
    crop = t["augment"].get("crop", 48)
    ev, _ = eval_throughput(
        r["model"],
        images,
        threads,
        crop,
        t.get("tta", "none"),
        use_channels_last(t, torch.device("cpu")),
        trials=trials,
        n_images=eval_images,
        amp=r["amp"],
    )
    return {
        "img_per_s": r["img_per_s_mean"],
        "eval_img_per_s": ev,
        "checkpoint_s": checkpoint_seconds(r["model"]),
        "mflops_forward": r["forward_flops"] / 1e6,
        "bf16": float(r["amp"]),
    }


PROGRESS = "measured network"  # starts the line printed per network (in_study_prediction shows it)


_SHARED = None  # (networks measured, workers done): set in each worker process by _init_worker


def _init_worker(shared: tuple) -> None:
    global _SHARED
    _SHARED = shared


def _measure_worker(cfg, names, total, parallel, batches, warmup, h5, quick=False):
    """Runs in a fresh process: 1-thread rates of the architectures in `names` (this worker's
    share), one line on stderr after each, numbered over all `total` networks of all workers (a
    network takes seconds: the measurement is a minute or more). A worker that is done keeps
    measuring its own networks again, results unused, until every worker is done: the last
    network of the others is then timed beside a busy core too, as the fold jobs run.
    `quick`: the plan's shorter timing (QUICK)."""
    from ..bench.context import bench_images
    from ..config import resolve_arch

    counted, finished = _SHARED
    bs = max(resolve_arch(cfg, a)["training"]["batch_size"] for a in names)
    images, labels = bench_images(min(bs * (batches + warmup), 2048), h5)
    short = {"min_seconds": QUICK["min_seconds"], "eval_images": QUICK["eval_images"]} if quick else {}

    def timed(name):
        return measure_arch(resolve_arch(cfg, name), images, labels, 1, batches, warmup, **short)

    rates = {}
    try:
        for name in names:
            rates[name] = timed(name)
            with counted.get_lock():
                counted.value += 1
                line = f"{PROGRESS} {counted.value}/{total}: {name}, {rates[name]['img_per_s']:.0f} img/s training"
            print(f"{line} (1 thread)", file=sys.stderr, flush=True)
    finally:  # a worker that failed must not keep the others waiting
        with finished.get_lock():
            finished.value += 1
    for name in itertools.cycle(names):  # keep the machine as loaded as the others see it
        if finished.value >= parallel:
            break
        timed(name)
    return rates


def measure_side_by_side(
    cfg: dict, names: Sequence[str], batches: int, warmup: int, h5: str | None, parallel: int, quick: bool = False
) -> dict[str, dict[str, float]]:
    """Per-architecture 1-thread rates measured in `parallel` fresh processes side by side, as
    the fold jobs run (they share caches, memory bandwidth and whatever else loads the machine).
    The networks are dealt out in turn: each is measured once, by one of the processes, while
    the others measure theirs (half the time on 2 cores of every process measuring every one:
    the plan's measurement must fit 90 s)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    clean = {k: v for k, v in cfg.items() if not k.startswith("_")}
    ctx = multiprocessing.get_context("spawn")
    shared = (ctx.Value("i", 0), ctx.Value("i", 0))
    shares = [list(names[i::parallel]) for i in range(parallel) if names[i::parallel]]
    with ProcessPoolExecutor(
        max_workers=len(shares), mp_context=ctx, initializer=_init_worker, initargs=(shared,)
    ) as pool:
        futures = [
            pool.submit(_measure_worker, clean, share, len(names), len(shares), batches, warmup, h5, quick)
            for share in shares
        ]
        measured = {name: r for f in futures for name, r in f.result().items()}
    return {name: measured[name] for name in names}


def measure_finals(
    cfg: dict,
    names: Sequence[str],
    cores: int,
    batches: int,
    warmup: int,
    h5: Path | str | None,
    quick: bool = False,
    amps: dict[str, bool] | None = None,
) -> dict[str, dict[str, float]]:
    """{arch: rates} of every candidate of the final model at the final's `cores` threads, its final
    settings (the prediction of the final model used to scale one network's thread speed-up to the
    others: off by -43% for depth_2convs). Briefly timed: QUICK's seconds per network. `amps`:
    {arch: bf16 or not} decided by the 1-thread measurement, reused (deciding again timed both
    precisions per network: 5-15 s each on a busy 2-core machine)."""
    from ..bench.context import bench_images
    from ..config import resolve_arch

    configs = {name: resolve_arch(cfg, name, final=True) for name in names}
    bs = max(c["training"]["batch_size"] for c in configs.values())
    images, labels = bench_images(min(bs * (batches + warmup), 2048), h5)
    eval_images = int(QUICK["eval_images"]) if quick else 512
    out = {}
    for name, final_cfg in configs.items():
        out[name] = measure_arch(
            final_cfg,
            images,
            labels,
            cores,
            batches,
            warmup,
            min_seconds=QUICK["final_min_seconds"],
            eval_images=eval_images,
            amp=_final_amp(final_cfg, (amps or {}).get(name)),
        )
        log.info(
            "final candidate %s: %.0f img/s training, %.0f img/s evaluation (%d threads)",
            name,
            out[name]["img_per_s"],
            out[name]["eval_img_per_s"],
            cores,
        )
    return out


def _final_amp(final_cfg, decided):
    """The final's pinned precision (training.amp true/false), else the one decided at 1 thread."""
    pinned = final_cfg["training"].get("amp")
    return pinned if isinstance(pinned, bool) else decided


def measure_job_overheads(
    cfg: dict, counts: dict[str, list[int]], h5_data: str | None, cores: int, quick: bool
) -> tuple[float, float, float, dict, float, float]:
    """The costs around the networks: the data jobs (demo CSV, prepare), loading the HDF5, a probe
    training job of the baseline, and Snakemake's startup and per-job time.

    Returns (demo_csv_s, prepare_s, h5_load_s, probe, snakemake_startup_s, snakemake_job_s)."""
    from ..config import resolve_arch
    from ..data import load_h5

    if quick and h5_data:  # the study's own prepare made this HDF5: nothing left to time there
        demo_s = prepare_s = 0.0
        full_h5, tmp = Path(h5_data), tempfile.TemporaryDirectory(prefix="ferstudy-cost-")
    else:
        demo_s, prepare_s, full_h5, tmp = measure_data_jobs(cfg, counts)
    try:
        t1 = time.perf_counter()
        load_h5(h5_data or full_h5)
        h5_s = time.perf_counter() - t1
        baseline = cfg["study"]["baseline"]
        probe = probe_jobs(cfg, resolve_arch(cfg, baseline), cores, tmp.name)
        startup_s, smk_job_s = measure_snakemake(
            cfg["_config_path"], cfg.get("_workdir", "."), repeats=1 if quick else 2
        )
    finally:
        tmp.cleanup()
    return demo_s, prepare_s, h5_s, probe, startup_s, smk_job_s


def measure(
    cfg: dict,
    cores: int,
    batches: int = 3,
    warmup: int = 1,
    h5: Path | str | None = None,
    final_arch: str | None = None,
    quick: bool = False,
) -> dict:
    """Every measured input of `predict` (see the module docstring): a few seconds per
    architecture on the demo preset, more for wide networks at batch 128. `quick` (the plan's:
    the study's HDF5 exists, so its prepare job is not timed again): QUICK's shorter timings."""
    counts, source = data_counts(cfg, h5)
    archs = cfg["study"]["architectures"]
    t0 = time.perf_counter()
    h5_data = str(h5) if h5 and Path(h5).is_file() and source.startswith("HDF5") else None
    per_arch = measure_side_by_side(cfg, archs, batches, warmup, h5_data, parallel=cores, quick=quick)
    for name, r in per_arch.items():
        log.info(
            "%s: %.0f img/s training, %.0f img/s evaluation (1 thread, %d side by side)",
            name,
            r["img_per_s"],
            r["eval_img_per_s"],
            cores,
        )
    baseline = cfg["study"]["baseline"]
    demo_s, prepare_s, h5_s, probe, startup_s, smk_job_s = measure_job_overheads(cfg, counts, h5_data, cores, quick)
    b = per_arch[baseline]
    probe_compute = probe["n_train"] / b["img_per_s"] + 2 * probe["n_val"] / b["eval_img_per_s"] + b["checkpoint_s"]
    final_name = final_arch or cfg["final"].get("architecture") or baseline
    finals = measure_finals(
        cfg,
        [final_name] + [a for a in archs if a != final_name] if not cfg["final"].get("architecture") else [final_name],
        cores,
        batches,
        warmup,
        h5_data,
        quick,
        amps={name: r["bf16"] >= 0.5 for name, r in per_arch.items() if "bf16" in r},
    )
    f = finals[final_name]
    return {
        "data_source": source,
        "counts": counts,
        "constants": {
            "job_probe_s": probe["train_job_s"],
            "job_probe_compute_s": probe_compute,
            "h5_load_s": h5_s,
            "job_overhead_s": max(0.0, probe["train_job_s"] - probe_compute) + h5_s,
            "light_job_s": probe["light_job_s"],
            "snakemake_job_s": smk_job_s,
            "snakemake_startup_s": startup_s,
            "demo_csv_s": demo_s,
            "prepare_s": prepare_s,
        },
        "per_arch": per_arch,
        "final": {
            "architecture": final_name,
            "img_per_s": f["img_per_s"],
            "eval_img_per_s": f["eval_img_per_s"],
            "checkpoint_s": f["checkpoint_s"],
            "threads": cores,
        },
        "final_per_arch": {
            name: {k: r[k] for k in ("img_per_s", "eval_img_per_s", "checkpoint_s")} for name, r in finals.items()
        },
        "measure_s": time.perf_counter() - t0,
    }
