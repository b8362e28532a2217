"""Study cost prediction: `ferstudy predict-cost` says, before a study runs, how many jobs it has,
how many training images x epochs each architecture costs, and how long it will take on
`--cores N` of this machine.

The model (every constant is measured on this machine when the command runs; none is fitted):

* data sizes: per-class Training counts from the prepared HDF5 if present (and made from the
  same dataset), else from the config (the demo generator's split rule for `demo_images`, or
  FER2013's 28,709 Training rows). Fold sizes follow scikit-learn's StratifiedKFold allocation
  (fold k holds every K-th row of the label-sorted Training set), and `training.subsample`
  keeps max(1, round(f * n_c)) images of each class, as `train.subsample` does: both exact.
* a cross-validation job (1 thread, N side by side) takes `job_overhead_s` + epochs x
  (steps x batch / training img/s + checkpoint save) + evaluations x held-out / eval img/s
  (evaluations: every `eval_every` epochs and after the last) + Snakemake's per-job cost. Training img/s: a few batches through the
  real training step (`bench.train_throughput`); eval img/s: `train.predict` with the
  architecture's TTA; both at 1 thread in N processes side by side, as the fold jobs run.
* `job_overhead_s` is measured by running the real command: N `ferstudy train` side by side
  for one epoch on a tiny HDF5 (process start, imports, torch set-up, model build, outputs,
  `config.environment()`), minus that tiny epoch's compute (from the measured rates), plus
  the load time of the real-size HDF5. Light jobs (evaluate_arch, aggregate, select,
  evaluate_final, figures, report, and rules the model does not know) cost what N real
  `ferstudy evaluate-arch` take (figures takes longer: an underestimate of some seconds). Snakemake's own per-job cost and its start-up come from a
  trivial workflow of no-op jobs whose Snakefile resolves this config as common.smk does.
  demo_csv and prepare are timed by doing the work (demo CSV, `data.prepare`, data summary).
* the final model: all of Training, `final.training` epochs, `--cores` threads, PublicTest
  evaluated every `eval_every` epochs, PublicTest + PrivateTest predicted at the end. Its architecture is
  chosen by cross-validation, so unless `final.architecture` names one the prediction assumes
  the study baseline and lists every candidate's time under `final.per_arch_s`.
* schedule: Snakemake start-up (DAG with the config resolved), demo_csv -> prepare, then the
  fold jobs (and evaluate_arch jobs) greedily list-scheduled longest first on N slots, then
  train_final and the light jobs after it (aggregate, select, evaluate_final, figures, report)
  in sequence.

Measured on a loaded machine, the prediction is for that load: the rates, probes and
Snakemake timings all slow down together with the study they predict.

The JSON (`--out`): {"cores", "jobs", "jobs_by_rule", "predicted_total_s", "per_arch": {arch:
{"images_x_epochs", "img_per_s", "predicted_job_s", ...}}, "final": {...}, "constants": {...}}.
"""

from __future__ import annotations

import copy
import heapq
import json
import logging
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

from .config import evaluation_epochs

log = logging.getLogger("ferstudy.cost")

N_CLASSES = 7
# Per-class row counts of the real FER2013 (angry, disgust, fear, happy, sad, surprise, neutral),
# counted from fer2013.csv.
FER2013_COUNTS = {"Training": [3995, 436, 4097, 7215, 4830, 3171, 4965],
                  "PublicTest": [467, 56, 496, 895, 653, 415, 607],
                  "PrivateTest": [491, 55, 528, 879, 594, 416, 626]}


# ---------------------------------------------------------------- data sizes

def demo_counts(n_images, class_weights=None):
    """Per-class counts per split of `demo.make_demo_faces(n_images)` (its split rule, no images)."""
    from .demo import DEFAULT_CLASS_WEIGHTS, SPLIT_FRACTIONS, _largest_remainder

    w = np.asarray(DEFAULT_CLASS_WEIGHTS if class_weights is None else class_weights, dtype=float)
    per_class = _largest_remainder(n_images, w / w.sum())
    out = {"Training": [], "PublicTest": [], "PrivateTest": []}
    for n_cls in per_class:
        n_test = [max(1, round(n_cls * f)) for f in SPLIT_FRACTIONS[1:]]
        out["Training"].append(int(n_cls - sum(n_test)))
        out["PublicTest"].append(int(n_test[0]))
        out["PrivateTest"].append(int(n_test[1]))
    return out


def data_counts(cfg, h5=None):
    """(per-class counts per split, source): from the HDF5 when it holds the dataset the config
    uses, else from the config. Returns (dict split -> list of 7 ints, description)."""
    from . import SPLIT_NAMES

    dataset = cfg["dataset"]["name"]
    if h5 and Path(h5).is_file():
        from .data import load_h5

        data = load_h5(h5)
        same = data.attrs.get("dataset") == dataset and (
            dataset != "demo" or len(data.labels) == cfg["data"]["demo_images"])
        if same:
            counts = {name: np.bincount(data.labels[data.split == s], minlength=N_CLASSES).tolist()
                      for s, name in enumerate(SPLIT_NAMES)}
            return counts, f"HDF5 {h5}"
        log.warning("%s holds %s data (%d rows), not what the config uses (%s): sizes from the config",
                    h5, data.attrs.get("dataset"), len(data.labels), dataset)
    if dataset == "demo":
        return demo_counts(cfg["data"]["demo_images"]), f"config (demo_images {cfg['data']['demo_images']})"
    return {k: list(v) for k, v in FER2013_COUNTS.items()}, "config (FER2013 row counts)"


def fold_held_out_counts(train_counts, folds):
    """(K, 7) per-class held-out counts of scikit-learn's StratifiedKFold on Training."""
    y_sorted = np.repeat(np.arange(N_CLASSES), train_counts)
    return np.array([np.bincount(y_sorted[k::folds], minlength=N_CLASSES) for k in range(folds)])


def subsampled(class_counts, fraction):
    """Images `train.subsample` keeps of a set with these per-class counts."""
    if fraction >= 1.0:
        return int(sum(class_counts))
    return int(sum(max(1, round(fraction * c)) for c in class_counts if c > 0))


def cv_workload(run_cfg, counts, folds):
    """Per fold job: training images (after subsample), held-out images, steps per epoch."""
    t = run_cfg["training"]
    train_counts = np.asarray(counts["Training"])
    held = fold_held_out_counts(train_counts, folds)
    jobs = []
    for k in range(folds):
        n = subsampled(train_counts - held[k], t.get("subsample", 1.0))
        bs = min(t["batch_size"], n)
        jobs.append({"fold": k, "n_train": n, "n_val": int(held[k].sum()), "steps": n // bs, "batch_size": bs})
    return {"epochs": t["epochs"], "evaluations": len(evaluation_epochs(t)), "tta": t.get("tta", "none"),
            "curve_images": 2 * int(t.get("curve_images", 0)),  # per epoch: held-out + trained-on subsets
            "jobs": jobs, "images_x_epochs": sum(j["n_train"] for j in jobs) * t["epochs"]}


def final_workload(final_cfg, counts):
    t = final_cfg["training"]
    n = subsampled(counts["Training"], t.get("subsample", 1.0))
    bs = min(t["batch_size"], n)
    return {"epochs": t["epochs"], "evaluations": len(evaluation_epochs(t)), "tta": t.get("tta", "none"),
            "n_train": n, "steps": n // bs, "batch_size": bs,
            "n_public": int(sum(counts["PublicTest"])), "n_private": int(sum(counts["PrivateTest"])),
            "images_x_epochs": n * t["epochs"]}


# ---------------------------------------------------------------- jobs and schedule

def count_jobs(cfg):
    """Jobs of a fresh study, by rule, as workflow/rules/*.smk define them (the `all` target
    included). Keep in step with the workflow; `predict-cost` compares it with
    `snakemake -n --forceall` and uses Snakemake's table when they differ."""
    a, k = len(cfg["study"]["architectures"]), cfg["data"]["folds"]
    jobs = {"demo_csv": 1 if cfg["dataset"]["name"] == "demo" else 0, "prepare": 1, "run_config": a,
            "final_config": 1, "train_fold": a * k, "evaluate_arch": a, "aggregate": 1, "select": 1,
            "train_final": 1, "evaluate_final": 1, "figures": 1, "report": 1, "report_html": 1, "all": 1}
    return {rule: n for rule, n in jobs.items() if n}


# Rules timed by their own model; every other rule (aggregate, select, evaluate_final, figures,
# report, report_html, and any rule added later) runs after the final model and costs one measured light job
# (figures renders a dozen plots and takes longer: an underestimate of some seconds).
OWN_MODEL_RULES = ("demo_csv", "prepare", "run_config", "final_config", "train_fold", "evaluate_arch",
                   "train_final", "all")
KNOWN_RULES = OWN_MODEL_RULES + ("aggregate", "select", "evaluate_final", "figures", "report", "report_html")


def dry_run_jobs(study_dir, config_path=None, configfiles=(), preset=None):
    """{rule: count} of a fresh study from Snakemake itself: `snakemake -n --forceall --nolock`
    in the study directory (writes nothing but Snakemake's log; takes a few seconds)."""
    from .bench import parse_job_stats, run_snakemake

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


def lpt_schedule(durations, slots):
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


def in_order_schedule(durations, slots):
    """List scheduling in the given order (roughly what Snakemake does): the makespan."""
    free = [0.0] * max(1, slots)
    for d in durations.values():
        i = free.index(min(free))
        free[i] += d
    return max(free)


# ---------------------------------------------------------------- measuring

def _env():
    """Environment for child processes: this checkout's `ferstudy` first on the path."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1]),
                                                                     os.environ.get("PYTHONPATH")]))}


def run_side_by_side(commands, cwd=None):
    """Start every command at once (as Snakemake starts jobs on free cores); mean wall seconds."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for c in commands]
    ends = []
    for proc, cmd in zip(procs, commands):
        _, err = proc.communicate()
        ends.append(time.perf_counter() - t0)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(map(str, cmd[:4]))} ... failed: "
                               f"{err.decode(errors='replace').strip()[-400:]}")
    return float(np.mean(ends))


def write_tiny_h5(path, folds, n_images=350, seed=0):
    """A small HDF5 (demo faces, every class in every split) for the job probes."""
    from . import SPLIT_NAMES
    from .data import write_h5
    from .demo import make_demo_faces

    images, labels, usage = make_demo_faces(n_images, seed)
    split = np.array([SPLIT_NAMES.index(u) for u in usage], dtype=np.uint8)
    write_h5(path, images, labels, split, np.arange(n_images), folds, 0, "demo", "probe", "")
    return n_images


def probe_jobs(cfg, run_cfg, parallel, tmp):
    """Wall seconds of the real commands, `parallel` side by side: `ferstudy train` (1 epoch on a
    tiny HDF5) and `ferstudy evaluate-arch` on its predictions. Returns a dict with the walls and
    the tiny workload (to subtract its compute)."""
    import yaml

    from .data import load_h5

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
    train = [py + ["train", "--h5", str(h5), "--run-config", str(rc), "--fold", "0", "--out-dir", str(tmp / f"o{i}"),
                   "--checkpoint", str(tmp / f"ck{i}.pt"), "--threads", "1"] for i in range(parallel)]
    train_s = run_side_by_side(train, cwd=tmp)
    light = [py + ["evaluate-arch", "--run-config", str(rc), "--predictions", str(tmp / f"o{i}" / "predictions.csv"),
                   "--out", str(tmp / f"m{i}.json")] for i in range(parallel)]
    light_s = run_side_by_side(light, cwd=tmp)
    data = load_h5(h5)
    tr, va = data.fold_indices(0)
    bs = min(probe_cfg["training"]["batch_size"], len(tr))
    return {"train_job_s": train_s, "light_job_s": light_s, "n_train": len(tr) // bs * bs, "n_val": len(va)}


def measure_snakemake(config_path, workdir, jobs=6):
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
    from .bench import snakemake_command

    with tempfile.TemporaryDirectory(prefix="ferstudy-cost-") as tmp:
        Path(tmp, "Snakefile").write_text(snakefile)
        env = _env()

        def run(args):
            t0 = time.perf_counter()
            subprocess.run(snakemake_command() + args, cwd=tmp, check=True, capture_output=True, env=env)
            return time.perf_counter() - t0

        startup = min(run(["-n", "--cores", "1"]) for _ in range(2))
        full = run(["--cores", "1", "--quiet"])
    return startup, max(0.0, (full - startup) / jobs)


def checkpoint_seconds(model):
    """Seconds to write one checkpoint (model + optimizer state), as `train.fit` does every epoch."""
    import torch

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        optimizer.state[p] = {"momentum_buffer": torch.zeros_like(p)}
    with tempfile.TemporaryDirectory(prefix="ferstudy-cost-") as tmp:
        t0 = time.perf_counter()
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, Path(tmp, "ck.pt"))
        return time.perf_counter() - t0


def measure_data_jobs(cfg, counts):
    """(demo_csv s or 0, prepare s, path of a temporary HDF5 of the right size, tmpdir) measured
    by doing the work: the demo CSV (demo data) and `data.prepare` + `data.write_summary`."""
    from .data import prepare, write_h5, write_summary

    tmp = tempfile.TemporaryDirectory(prefix="ferstudy-cost-")
    d = Path(tmp.name)
    demo_s = prepare_s = 0.0
    h5 = d / "dataset.h5"
    csv = cfg["dataset"]["csv"]
    if cfg["dataset"]["name"] == "demo":
        from .demo import write_demo_csv

        t0 = time.perf_counter()
        write_demo_csv(d / "demo.csv", n_images=cfg["data"]["demo_images"], seed=cfg["data"]["demo_seed"])
        demo_s = time.perf_counter() - t0
        csv = d / "demo.csv"
    elif not Path(csv).is_absolute():
        csv = Path(cfg.get("_workdir", ".")) / csv
    if Path(csv).is_file():
        t0 = time.perf_counter()
        data = prepare(csv, h5, folds=cfg["data"]["folds"], fold_seed=cfg["data"]["fold_seed"],
                       dataset=cfg["dataset"]["name"])
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


def measure_arch(run_cfg, images, labels, threads, batches, warmup, trials=1):
    """{img_per_s (training), eval_img_per_s (with the arch's TTA), checkpoint_s, mflops_forward}
    at `threads` threads. The training rate is all timed images over all timed seconds of at least
    `MEASURE_MIN_S` (not the best trial: a job's epochs run at their mean rate)."""
    import torch

    from .bench import eval_throughput, train_throughput
    from .train import use_channels_last

    r = train_throughput(run_cfg, images, labels, threads, batches=batches, warmup=warmup, trials=trials,
                         min_seconds=MEASURE_MIN_S)
    t = run_cfg["training"]
    crop = t["augment"].get("crop", 48)
    ev, _ = eval_throughput(r["model"], images, threads, crop, t.get("tta", "none"),
                            use_channels_last(t, torch.device("cpu")), trials=trials, n_images=512, amp=r["amp"])
    return {"img_per_s": r["img_per_s_mean"], "eval_img_per_s": ev, "checkpoint_s": checkpoint_seconds(r["model"]),
            "mflops_forward": r["forward_flops"] / 1e6, "bf16": float(r["amp"])}


PROGRESS = "measured network"  # starts the line printed per network (in_study_prediction shows it)


def _measure_worker(cfg, names, batches, warmup, h5, report=False):
    """Runs in a fresh process: 1-thread rates of every architecture in `names`; with `report`, one
    line on stderr after each (a network takes seconds to a minute: the measurement is minutes)."""
    from .bench import bench_images
    from .config import resolve_arch

    bs = max(resolve_arch(cfg, a)["training"]["batch_size"] for a in names)
    images, labels = bench_images(min(bs * (batches + warmup), 2048), h5)
    rates = {}
    for i, name in enumerate(names, 1):
        rates[name] = measure_arch(resolve_arch(cfg, name), images, labels, 1, batches, warmup)
        if report:
            print(f"{PROGRESS} {i}/{len(names)}: {name}, {rates[name]['img_per_s']:.0f} img/s training (1 thread)",
                  file=sys.stderr, flush=True)
    return rates


def measure_side_by_side(cfg, names, batches, warmup, h5, parallel):
    """Per-architecture 1-thread rates measured in `parallel` fresh processes side by side, as
    the fold jobs run (they share caches, memory bandwidth and whatever else loads the machine);
    each process measures every architecture in the same order; rates are averaged."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    clean = {k: v for k, v in cfg.items() if not k.startswith("_")}
    with ProcessPoolExecutor(max_workers=parallel, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(_measure_worker, *zip(*[(clean, names, batches, warmup, h5, i == 0)
                                                         for i in range(parallel)])))
    return {name: {k: float(np.mean([r[name][k] for r in results])) for k in results[0][name]} for name in names}


def measure(cfg, cores, batches=3, warmup=1, h5=None, final_arch=None):
    """Every measured input of `predict` (see the module docstring): a few seconds per
    architecture on the demo preset, more for wide networks at batch 128."""
    from .bench import bench_images
    from .config import resolve_arch
    from .data import load_h5

    counts, source = data_counts(cfg, h5)
    archs = cfg["study"]["architectures"]
    t0 = time.perf_counter()
    h5_data = str(h5) if h5 and Path(h5).is_file() and source.startswith("HDF5") else None
    per_arch = measure_side_by_side(cfg, archs, batches, warmup, h5_data, parallel=cores)
    for name, r in per_arch.items():
        log.info("%s: %.0f img/s training, %.0f img/s evaluation (1 thread, %d side by side)", name,
                 r["img_per_s"], r["eval_img_per_s"], cores)
    demo_s, prepare_s, full_h5, tmp = measure_data_jobs(cfg, counts)
    try:
        t1 = time.perf_counter()
        load_h5(h5_data or full_h5)
        h5_s = time.perf_counter() - t1
        baseline = cfg["study"]["baseline"]
        probe = probe_jobs(cfg, resolve_arch(cfg, baseline), cores, tmp.name)
        startup_s, smk_job_s = measure_snakemake(cfg["_config_path"], cfg.get("_workdir", "."))
    finally:
        tmp.cleanup()
    b = per_arch[baseline]
    probe_compute = (probe["n_train"] / b["img_per_s"] + 2 * probe["n_val"] / b["eval_img_per_s"]
                     + b["checkpoint_s"])
    final_name = final_arch or cfg["final"].get("architecture") or baseline
    final_cfg = resolve_arch(cfg, final_name, final=True)
    bs = final_cfg["training"]["batch_size"]
    images, labels = bench_images(min(bs * (batches + warmup), 2048), h5_data)
    f = measure_arch(final_cfg, images, labels, cores, batches, warmup, trials=2)
    log.info("final (%s): %.0f img/s training, %.0f img/s evaluation (%d threads)", final_name, f["img_per_s"],
             f["eval_img_per_s"], cores)
    return {"data_source": source, "counts": counts,
            "constants": {"job_probe_s": probe["train_job_s"], "job_probe_compute_s": probe_compute,
                          "h5_load_s": h5_s,
                          "job_overhead_s": max(0.0, probe["train_job_s"] - probe_compute) + h5_s,
                          "light_job_s": probe["light_job_s"],
                          "snakemake_job_s": smk_job_s, "snakemake_startup_s": startup_s,
                          "demo_csv_s": demo_s, "prepare_s": prepare_s},
            "per_arch": per_arch,
            "final": {"architecture": final_name, "img_per_s": f["img_per_s"], "eval_img_per_s": f["eval_img_per_s"],
                      "checkpoint_s": f["checkpoint_s"], "threads": cores},
            "measure_s": time.perf_counter() - t0}


# ---------------------------------------------------------------- prediction

def fold_job_seconds(w, job, rates, overhead):
    """Predicted seconds of one cross-validation job (eval img/s has the TTA views included; the
    last evaluation's predictions are the job's output, not predicted again)."""
    eval_s = job["n_val"] / rates["eval_img_per_s"]
    train_s = job["steps"] * job["batch_size"] / rates["img_per_s"]
    curve_s = min(w.get("curve_images", 0), job["n_train"] + job["n_val"]) / rates["eval_img_per_s"]
    return (overhead + w["epochs"] * (train_s + curve_s + rates.get("checkpoint_s", 0.0))
            + w["evaluations"] * eval_s)


def final_job_seconds(w, train_rate, eval_rate, overhead, checkpoint_s=0.0):
    train_s = w["steps"] * w["batch_size"] / train_rate
    public_s = w["n_public"] / eval_rate
    return (overhead + w["epochs"] * (train_s + checkpoint_s) + w["evaluations"] * public_s
            + (w["n_public"] + w["n_private"]) / eval_rate)


def predict(cfg, cores, m):
    """The prediction (JSON-ready dict) from a config and the measurements `m` of `measure`."""
    from .config import resolve_arch

    c = m["constants"]
    job_overhead = c["job_overhead_s"] + c["snakemake_job_s"]
    light_job = c["light_job_s"] + c["snakemake_job_s"]
    counts, folds = m["counts"], cfg["data"]["folds"]
    jobs = m.get("jobs_by_rule") or count_jobs(cfg)
    unmodelled = sorted(r for r in jobs if r not in KNOWN_RULES)  # rules added after this table
    per_arch, durations = {}, {}
    for name in cfg["study"]["architectures"]:
        w = cv_workload(resolve_arch(cfg, name), counts, folds)
        rates = m["per_arch"][name]
        times = [fold_job_seconds(w, j, rates, job_overhead) for j in w["jobs"]]
        for j, s in zip(w["jobs"], times):
            durations[f"train_fold[{name},{j['fold']}]"] = s
        durations[f"evaluate_arch[{name}]"] = light_job
        per_arch[name] = {"jobs": folds, "epochs": w["epochs"], "train_images": [j["n_train"] for j in w["jobs"]],
                          "images_x_epochs": w["images_x_epochs"], "img_per_s": rates["img_per_s"],
                          "eval_img_per_s": rates["eval_img_per_s"], "predicted_job_s": float(np.mean(times)),
                          "predicted_arch_s": float(sum(times))}
    cv_s, _ = lpt_schedule(durations, cores)
    cv_in_order_s = in_order_schedule(durations, cores)

    f = m["final"]
    final_name = f["architecture"]
    fw = final_workload(resolve_arch(cfg, final_name, final=True), counts)
    final_s = final_job_seconds(fw, f["img_per_s"], f["eval_img_per_s"], job_overhead, f.get("checkpoint_s", 0.0))
    # Every candidate's final time: its 1-thread rates scaled by the measured thread speed-up.
    base = m["per_arch"].get(final_name)
    speed_train = f["img_per_s"] / base["img_per_s"] if base else 1.0
    speed_eval = f["eval_img_per_s"] / base["eval_img_per_s"] if base else 1.0
    per_arch_final = {}
    for name, r in m["per_arch"].items():
        w = final_workload(resolve_arch(cfg, name, final=True), counts)
        per_arch_final[name] = final_job_seconds(w, r["img_per_s"] * speed_train, r["eval_img_per_s"] * speed_eval,
                                                 job_overhead, r.get("checkpoint_s", 0.0))
    pre_s = c["snakemake_startup_s"] + (c["demo_csv_s"] + light_job if "demo_csv" in jobs else 0.0) \
        + c["prepare_s"] + light_job
    post_s = light_job * sum(n for r, n in jobs.items() if r not in OWN_MODEL_RULES)
    total = pre_s + cv_s + final_s + post_s
    return {
        "cores": cores, "jobs": sum(jobs.values()), "jobs_by_rule": jobs,
        "jobs_from": m.get("jobs_from", "config (the rule table of cost.count_jobs)"),
        "unmodelled_rules": unmodelled,
        "predicted_total_s": total,
        "per_arch": per_arch,
        "final": {"architecture": final_name, "assumed": not cfg["final"].get("architecture"),
                  "threads": cores, "epochs": fw["epochs"], "train_images": fw["n_train"],
                  "images_x_epochs": fw["images_x_epochs"], "img_per_s": f["img_per_s"],
                  "eval_img_per_s": f["eval_img_per_s"], "predicted_job_s": final_s,
                  "per_arch_s": per_arch_final},
        "phases_s": {"startup_and_data": pre_s, "cross_validation": cv_s, "cross_validation_in_order": cv_in_order_s,
                     "final": final_s, "light_jobs_after": post_s},
        "constants": {**c, "job_overhead_with_snakemake_s": job_overhead, "light_job_with_snakemake_s": light_job},
        "data": {"source": m["data_source"], "counts": counts, "folds": folds,
                 "dataset": cfg["dataset"]["name"], "preset": cfg["preset"]},
        "measure_s": m.get("measure_s"),
    }


# ---------------------------------------------------------------- comparison with a finished study

def actual_times(study_dir):
    """Real seconds of a finished study: per fold job (Snakemake benchmarks, column `s`), the
    final job, and the whole run: `Elapsed time` of the newest Snakemake log of a successful run
    (plus, in `total_s_with_resumed_runs`, the failed runs it resumed)."""
    import re

    import pandas as pd

    d = Path(study_dir)
    per_arch = {}
    for tsv in sorted(d.glob("results/benchmarks/train/*/fold*.tsv")):
        per_arch.setdefault(tsv.parent.name, []).append(float(pd.read_csv(tsv, sep="\t")["s"].iloc[0]))
    final = d / "results/benchmarks/train_final.tsv"
    out = {"per_arch_job_s": {a: float(np.mean(v)) for a, v in per_arch.items()},
           "final_job_s": float(pd.read_csv(final, sep="\t")["s"].iloc[0]) if final.is_file() else None,
           "total_s": None, "log": None}
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
        out["total_s_with_resumed_runs"] = sum(r["elapsed_s"] for r in runs[start:runs.index(ok[-1]) + 1])
    return out


def compare(prediction, actual):
    rows = {a: {"predicted_job_s": p["predicted_job_s"], "actual_job_s": actual["per_arch_job_s"].get(a)}
            for a, p in prediction["per_arch"].items()}
    for r in rows.values():
        r["ratio"] = r["predicted_job_s"] / r["actual_job_s"] if r["actual_job_s"] else None
    total = actual.get("total_s")
    chosen = actual.get("final_architecture")
    return {"per_arch": rows, "final": {"predicted_job_s": prediction["final"]["predicted_job_s"],
                                        "actual_job_s": actual.get("final_job_s"),
                                        "actual_architecture": chosen,
                                        "predicted_job_s_for_actual_architecture":
                                            prediction["final"]["per_arch_s"].get(chosen)},
            "total": {"predicted_s": prediction["predicted_total_s"], "actual_s": total,
                      "ratio": prediction["predicted_total_s"] / total if total else None}}


# ---------------------------------------------------------------- inside a study (the Snakefile's onstart)

PREDICTION = Path("cost/prediction.json")   # under the study's results directory
WHOLE_RUN = Path("cost/run.json")           # the last run that built the whole study


def fingerprint(study_cfg, cores):
    """What a prediction depends on: the resolved config, the cores and the ferstudy version."""
    import hashlib

    from . import __version__

    blob = json.dumps({"config": study_cfg, "cores": cores, "version": __version__}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def in_study_prediction(raw_config, study_cfg, cores, jobs_by_rule, jobs_to_run, results="results",
                        started_at=None, snakemake_log=None, enabled=True, say=print):
    """Called by the Snakefile's onstart: `say`s the jobs to do and the predicted wall time.

    A run that builds the whole study (every job of the DAG to do, `all` among them) measures this
    machine with `ferstudy predict-cost` unless a prediction for the same config, cores and version
    exists, and records itself in results/cost/run.json so that the report can set the prediction
    against the real time. A partial run says how much of the study it redoes and repeats a
    matching prediction; if the config changed since the recorded run, that record goes (the report
    then compares nothing). The prediction is advice: if measuring fails the study goes on."""
    import yaml

    from .io import write_json, write_text

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
    pred = _read_json(pred_path)
    measured = False
    if pred is None or pred.get("fingerprint") != fp:
        pred = None
        if whole:
            config_path = results / "cost" / "study_config.yaml"
            write_text(config_path, yaml.safe_dump(raw_config, sort_keys=False))
            log_path = results / "logs" / "predict_cost.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            say(f"Measuring every network on this machine to predict the study's wall time "
                f"(log: {log_path}; `study: {{predict_cost: false}}` skips this)...")
            cmd = [sys.executable, "-m", "ferstudy", "predict-cost", "--config", str(config_path),
                   "--study-dir", os.getcwd(), "--cores", str(cores), "--no-dry-run",
                   "--jobs-by-rule", json.dumps(jobs_by_rule), "--out", str(pred_path)]
            with open(log_path, "w") as log_file, subprocess.Popen(
                    cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(), text=True) as done:
                for line in done.stdout:  # the log gets every line; the study's log each network's progress
                    log_file.write(line)
                    if line.startswith(PROGRESS):
                        say("  " + line.rstrip())
            if done.returncode == 0:
                pred = {**json.loads(pred_path.read_text()), "fingerprint": fp, "measured_in_study": True}
                write_json(pred_path, pred)
                measured = True
            else:
                say(f"Could not predict the study's cost (see {log_path}); the study goes on.")
    if whole and pred:
        if isinstance(snakemake_log, (list, tuple)):  # Snakemake hands onstart a list of log files
            snakemake_log = snakemake_log[0] if snakemake_log else None
        write_json(run_path, {"started_at": started_at or time.time(), "snakemake_log": snakemake_log,
                              "fingerprint": fp, "jobs": total, "cores": cores, "measured_this_run": measured})
    if pred:
        say(prediction_line(pred, measured))
    elif not whole:
        say("No cost prediction for this config yet: `ferstudy predict-cost --cores N` makes one.")


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def predicted_study_s(pred, measured_this_run):
    """Predicted wall time of the study, the measurement included when this run made it."""
    return pred["predicted_total_s"] + ((pred.get("measure_s") or 0.0) if measured_this_run else 0.0)


def prediction_line(pred, measured_this_run):
    fold_jobs = sum(p["jobs"] for p in pred["per_arch"].values())
    images = sum(p["images_x_epochs"] for p in pred["per_arch"].values()) + pred["final"]["images_x_epochs"]
    f = pred["final"]
    per_arch = sorted(f["per_arch_s"].values())
    measured = f" (this machine measured in {pred['measure_s']:.0f} s)" if measured_this_run else ""
    return (f"Predicted for the whole study on {pred['cores']} cores: "
            f"{clock(predicted_study_s(pred, measured_this_run))}{measured}: "
            f"{pred['jobs']} jobs, {fold_jobs} cross-validation jobs, {images:,} training images x epochs; "
            f"final model {f['architecture']}{' (assumed)' if f['assumed'] else ''} {clock(f['predicted_job_s'])}, "
            f"{clock(per_arch[0])}-{clock(per_arch[-1])} whichever architecture wins. Details: "
            f"results/{PREDICTION}.")


def clock(seconds):
    seconds = int(round(seconds))
    h, m, s = seconds // 3600, seconds % 3600 // 60, seconds % 60
    return f"{h} h {m:02d} min" if h else (f"{m} min {s:02d} s" if m else f"{s} s")


def predicted_vs_actual(results, now=None):
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
    rows = [{"what": "whole study", "predicted_s": predicted, "actual_s": total, "note": note}]
    jobs = compare(pred, actual)
    rows += [{"what": f"{name} fold job (mean)", "predicted_s": r["predicted_job_s"], "actual_s": r["actual_job_s"],
              "note": ""} for name, r in jobs["per_arch"].items() if r["actual_job_s"] is not None]
    final = jobs["final"]
    if final["actual_job_s"] and final["predicted_job_s_for_actual_architecture"] is not None:
        rows.append({"what": f"final model ({chosen})", "predicted_s": final["predicted_job_s_for_actual_architecture"],
                     "actual_s": final["actual_job_s"], "note": ""})
    for r in rows:
        r["error"] = r["predicted_s"] / r["actual_s"] - 1 if r["actual_s"] else None
    return {"rows": rows, "cores": pred["cores"], "measure_s": pred.get("measure_s"),
            "total_error": rows[0]["error"], "measured_in_study": bool(run.get("measured_this_run"))}


# ---------------------------------------------------------------- the command

def cmd_predict_cost(args):
    from .bench import all_cores, load_config
    from .io import write_json

    workdir = Path(args.study_dir or ".")
    cfg = load_config(args.config, args.configfile, args.preset, workdir)
    cfg["_config_path"], cfg["_workdir"] = args.config, str(workdir)
    cores = args.cores or all_cores()
    h5 = args.h5 or workdir / "results/data/dataset.h5"
    m = measure(cfg, cores, batches=args.batches, warmup=args.warmup, h5=h5, final_arch=args.final_arch)
    static = count_jobs(cfg)
    if args.jobs_by_rule:
        m["jobs_by_rule"], m["jobs_from"] = json.loads(args.jobs_by_rule), "the running study's DAG"
    elif args.dry_run and (workdir / "workflow" / "Snakefile").is_file():
        try:
            m["jobs_by_rule"] = dry_run_jobs(workdir, args.config, args.configfile, args.preset)
            m["jobs_from"] = f"snakemake -n --forceall in {workdir}"
        except (RuntimeError, subprocess.SubprocessError, OSError) as err:
            log.warning("could not count the jobs with Snakemake (%s): using the rule table", err)
        else:
            if m["jobs_by_rule"] != static:
                log.warning("Snakemake's job table %s differs from cost.count_jobs %s (update the table)",
                            m["jobs_by_rule"], static)
    result = predict(cfg, cores, m)
    if args.compare:
        result["actual"] = compare(result, actual_times(args.compare))
    text = json.dumps(result, indent=2, default=float)
    print(text)
    if args.out:
        write_json(args.out, result)
    for name, p in result["per_arch"].items():
        log.info("%-16s %9d images x epochs  %7.0f img/s  %7.1f s per fold job", name, p["images_x_epochs"],
                 p["img_per_s"], p["predicted_job_s"])
    log.info("%d jobs; predicted %.0f s (%.1f min) on %d cores; final %s %.0f s%s", result["jobs"],
             result["predicted_total_s"], result["predicted_total_s"] / 60, cores, result["final"]["architecture"],
             result["final"]["predicted_job_s"], " (assumed: chosen by cross-validation)"
             if result["final"]["assumed"] else "")


def register(subparsers):
    p = subparsers.add_parser("predict-cost", help="predict a study's jobs, training images x epochs and wall time",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="the study's config file, over the shipped defaults (default: "
                                    "config/config.yaml of the study directory, if there is one)")
    p.add_argument("--configfile", nargs="*", default=[], help="YAML files merged over --config, as Snakemake does")
    p.add_argument("--preset", help="override the config's preset")
    p.add_argument("--cores", type=int, default=0, help="Snakemake --cores of the run (default: all cores)")
    p.add_argument("--h5", help="prepared HDF5 for the data sizes (default: STUDY/results/data/dataset.h5 if present)")
    p.add_argument("--study-dir", help="directory the study runs in (default: the current one)")
    p.add_argument("--final-arch", help="architecture assumed for the final model (default: final.architecture, "
                                        "else the study baseline)")
    p.add_argument("--batches", type=int, default=3, help="timed batches per architecture (default 3)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--no-dry-run", dest="dry_run", action="store_false",
                   help="count jobs from the rule table only, without `snakemake -n --forceall`")
    p.add_argument("--jobs-by-rule", metavar="JSON", help="the study's jobs per rule (the Snakefile's onstart passes its DAG)")
    p.add_argument("--compare", metavar="STUDY_DIR", help="add the real times of a finished study")
    p.add_argument("--out", help="write the prediction JSON here")
    p.set_defaults(func=cmd_predict_cost)
    return p
