"""Benchmark harness: `ferstudy bench` prints one JSON line per measurement (and writes them to
`--out`). See docs/PERFORMANCE.md for what each line means and the targets.

Measurements, in the order they run (each line: `name`, the numbers, `units`, `context`):

1. `matmul`      the machine's attainable rate in each precision training uses: an n x n matmul
                 (default 2048) repeated, best trial, with the configured threads; fp32 always,
                 bf16 too on a CPU with native bf16 (`train.cpu_has_bf16`). Every
                 `fraction_of_matmul` below divides by the matmul of its own precision.
   `cpu_peak`    the processor's theoretical peak (cores x FLOP/cycle/core x clock) per precision,
                 from what the machine reports (/proc/cpuinfo flags, sysfs, lscpu); each factor
                 says where it came from, the ones not reported (FMA units per core) are listed
                 under `assumed`. `fraction_of_peak` on the matmul and training lines divides by it.
2. `train_step`  per architecture and precision (fp32; bf16 too where the CPU has it): images/s
                 through the project's real training step (`train.train_one_epoch` with the real
                 `Augmenter`, `make_optimizer`, `make_scheduler`) on a fixed number of batches;
                 achieved GFLOP/s counts 3 x forward FLOPs per image (forward + backward, a
                 multiply-add = 2 FLOPs; the first conv's unneeded input gradient is counted too,
                 so this slightly flatters).
3. `train_pil`   the same model and batch size trained the way most public FER2013 code does it:
                 a per-image `Dataset` of PIL images, torchvision RandomCrop + RandomHorizontalFlip
                 + ToTensor + Normalize, a `DataLoader` (0 and 2 workers), a plain loop, NCHW, fp32.
                 `train_vs_pil` sets against it the project as it would really train (`amp: auto`
                 decides the precision as a training job does: `ratio`) and the project in fp32
                 (`ratio_fp32`), with the target (>= 2x on a CPU with native bf16, >= 1.5x without).
                 The loops run in alternating rounds (`--pil-rounds`); each ratio is the median of
                 the rounds' ratios, so the machine's drift over minutes cancels.
4. `ingest`, `h5_load`  `data.prepare` of a real CSV (`--csv`) in a fresh Python process (its time,
                 CPU time and peak resident memory) and `data.load_h5` of the result.
5. `inference`, `latency`  `train.predict` in batches of 256, and one image at a time (median).
6. `snakemake_dry_run`, `snakemake_change`  `snakemake -n` in a finished study (`--study-dir`),
                 and the jobs a change to one architecture's spec triggers.

A measurement that cannot run (no CSV, no study dir) prints a line with `skipped` saying why.
Times are the best of `--trials` (the machine's attainable speed; medians are given beside).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("ferstudy.bench")

GROUPS = ("matmul", "train", "pil", "ingest", "inference", "snakemake")
PIL_TARGET = {True: 2.0, False: 1.5}  # train_vs_pil ratio wanted: CPU with native bf16 / without
FLOPS_CONVENTION = ("training FLOPs per image = 3 x forward FLOPs of conv and linear layers "
                    "(forward + backward; multiply-add = 2 FLOPs; norms, activations, pooling not counted)")


# ---------------------------------------------------------------- config and context

def load_config(config_path=None, configfiles=(), preset=None, workdir=None):
    """The resolved study config, layered as the workflow layers it (`config.load_study`: the
    shipped defaults, the preset, then the study's config file, default config/config.yaml, each
    `--configfile` and the `--preset` choice); resolved relative to `workdir` (the study
    directory; default the current one)."""
    from .config import load_study

    return load_study(config_path, configfiles, preset, workdir)


def all_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def base_context(threads):
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    from .config import cpu_name

    return {"threads": threads, "torch": torch.__version__, "cpu": cpu_name(), "cores": all_cores(),
            "loadavg_1m": round(load, 2) if load is not None else None,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}


def set_threads(threads):
    import torch

    from .train import setup_torch

    setup_torch(torch.device("cpu"), threads)  # exactly what a training job does


# ---------------------------------------------------------------- data

def bench_images(n, h5=None, seed=0):
    """(images uint8 (n, 48, 48), labels int64 (n,)): Training rows of a prepared HDF5, or the
    built-in demo faces (real-looking pixel statistics; the content does not change the speed)."""
    import numpy as np

    if h5:
        from .data import load_h5

        data = load_h5(h5)
        train = data.indices("Training")
        pick = np.random.default_rng(seed).permutation(train)[:n]
        pick = np.resize(pick, n)  # repeat when the file is smaller than n
        return data.images[pick], data.labels[pick].astype(np.int64)
    from .demo import make_demo_faces

    images, labels, _ = make_demo_faces(max(n, 100), seed)
    return images[:n], labels[:n].astype(np.int64)


# ---------------------------------------------------------------- 1. matmul

def training_precisions():
    """The precisions a training job on this CPU may use: fp32, and bf16 where it is native."""
    from .train import cpu_has_bf16

    return ["fp32", "bf16"] if cpu_has_bf16() else ["fp32"]


def matmul_rate(threads, n=2048, reps=3, trials=5, precision="fp32"):
    """Attainable GFLOP/s in `precision` (fp32 or bf16): best of `trials` timings of `reps` n x n
    matmuls (bf16: bf16 inputs and output, as autocast runs a layer; fp32 accumulation inside)."""
    import torch

    set_threads(threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    c = torch.empty(n, n, dtype=dtype)
    torch.mm(a, b, out=c)  # warm-up: thread pool, caches
    rates = []
    for _ in range(trials):
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b, out=c)
        rates.append(2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9)
    return {"name": "matmul", "precision": precision, "gflops": max(rates), "gflops_median": statistics.median(rates),
            "n": n, "reps": reps, "trials": trials,
            "units": {"gflops": f"GFLOP/s {precision} (2 n^3 per n x n matmul), best trial"},
            "context": base_context(threads)}


def _read(path):
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _lscpu():
    try:
        return subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def _physical_cores(cpus, cpuinfo, sysfs):
    """(physical cores among `cpus`, where that came from)."""
    cores = set()
    for cpu in cpus:
        topo = Path(sysfs) / f"cpu{cpu}" / "topology"
        package, core = _read(topo / "physical_package_id"), _read(topo / "core_id")
        if package is None or core is None:
            break
        cores.add((package.strip(), core.strip()))
    else:
        if cores:
            return len(cores), f"{sysfs}/cpu*/topology (package, core_id) of the {len(cpus)} CPUs this process may use"
    pairs, package = set(), None
    for line in (cpuinfo or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "physical id":
            package = value.strip()
        elif key.strip() == "core id":
            pairs.add((package, value.strip()))
    if pairs:
        return min(len(pairs), len(cpus)), "/proc/cpuinfo (physical id, core id) pairs"
    return len(cpus), "logical CPUs this process may use (ASSUMED one hardware thread per core)"


def _clock_ghz(cpuinfo, lscpu, sysfs):
    """(GHz, where it came from): the highest clock the machine reports."""
    khz = _read(Path(sysfs) / "cpu0" / "cpufreq" / "cpuinfo_max_freq")
    if khz and khz.strip().isdigit():
        return int(khz) / 1e6, f"{sysfs}/cpu0/cpufreq/cpuinfo_max_freq (the highest, turbo clock)"
    m = re.search(r"^CPU max MHz:\s*([\d.]+)", lscpu or "", re.M)
    if m and float(m.group(1)) > 0:
        return float(m.group(1)) / 1e3, "lscpu `CPU max MHz`"
    mhz = [float(v) for v in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", cpuinfo or "", re.M)]
    if mhz:
        return max(mhz) / 1e3, ("/proc/cpuinfo `cpu MHz` (the clock now; under a hypervisor usually the "
                                "nominal clock: turbo may run higher, AVX-512/AMX code lower)")
    m = re.search(r"@\s*([\d.]+)\s*GHz", cpuinfo or "")
    if m:
        return float(m.group(1)), "the model name's nominal clock in /proc/cpuinfo"
    return None, "no clock reported (no cpufreq in sysfs, no `CPU max MHz` in lscpu, no `cpu MHz` in /proc/cpuinfo)"


def cpu_peak(threads, cpuinfo=None, lscpu=None, sysfs="/sys/devices/system/cpu", cpus=None):
    """The processor's theoretical peak GFLOP/s per precision for `threads` threads:
    cores x FLOP/cycle/core x clock, each factor from what the machine reports (the texts can be
    given, for tests). Returns the `cpu_peak` record: gflops_fp32, gflops_bf16 (None without
    native bf16), `factors` {value, source} and `assumed` (what no file reports)."""
    cpuinfo = _read("/proc/cpuinfo") if cpuinfo is None else cpuinfo
    lscpu = _lscpu() if lscpu is None else lscpu
    if cpus is None:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cpus = list(cpus)
    m = re.search(r"^(?:flags|Features)\s*:(.*)$", cpuinfo or "", re.M)
    flags = set(m.group(1).split()) if m else set()
    assumed = []

    physical, cores_source = _physical_cores(cpus, cpuinfo, sysfs)
    cores = min(int(threads), physical)
    if "ASSUMED" in cores_source:
        assumed.append("one hardware thread per core")
    clock, clock_source = _clock_ghz(cpuinfo, lscpu, sysfs)
    if clock and "cpuinfo_max_freq" not in clock_source and "CPU max MHz" not in clock_source:
        assumed.append("the reported clock is the clock the vector units run at (no maximum clock reported)")

    fma_units = 2
    if "avx512f" in flags:
        lanes, isa = 16, "avx512f: 512-bit vectors, 16 fp32 lanes"
    elif "avx2" in flags or "avx" in flags:
        lanes, isa = 8, ("avx2" if "avx2" in flags else "avx") + ": 256-bit vectors, 8 fp32 lanes"
    elif "sse2" in flags or "asimd" in flags:
        lanes, isa = 4, ("sse2" if "sse2" in flags else "asimd") + ": 128-bit vectors, 4 fp32 lanes"
    else:
        lanes, isa = None, "no known vector extension in the flags"
    fma = "fma" in flags or "avx512f" in flags or "asimd" in flags
    fp32 = lanes * (2 if fma else 1) * fma_units if lanes else None
    fp32_source = (f"{isa} x {'2 (fused multiply-add: the fma flag)' if fma else '1 (no fma flag)'} x "
                   f"{fma_units} FMA units per core (ASSUMED: no file reports it; most server cores since "
                   f"Skylake-SP and Zen 2 have 2; some Xeon Silver/Bronze have one 512-bit unit, and AMD Zen 4 "
                   f"runs 512-bit FMAs on 256-bit units: halve it there)") if lanes else isa
    if lanes:
        assumed.append(f"{fma_units} FMA units per core")

    if "amx_bf16" in flags:
        bf16, bf16_source = 1024, ("amx_bf16: Intel AMX, one tile multiply unit per core, 1024 bf16 FLOP/cycle "
                                   "(Intel's figure for Sapphire Rapids; ASSUMED the same here)")
        assumed.append("AMX: 1024 bf16 FLOP/cycle/core")
    elif "avx512_bf16" in flags and fp32:
        bf16, bf16_source = 2 * fp32, ("avx512_bf16: VDPBF16PS does 2 bf16 products per fp32 lane per FMA, "
                                       f"2 x the fp32 rate ({fma_units} FMA units ASSUMED as above)")
    else:
        bf16, bf16_source = None, "no native bf16 (neither amx_bf16 nor avx512_bf16 in the flags)"

    def peak(per_cycle):
        return cores * per_cycle * clock if per_cycle and clock else None

    return {"name": "cpu_peak", "gflops_fp32": peak(fp32), "gflops_bf16": peak(bf16),
            "factors": {"cores": {"value": cores, "source": f"{physical} physical cores from {cores_source}; "
                                                          f"the peak counts min(threads {threads}, that)"},
                        "clock_ghz": {"value": clock, "source": clock_source},
                        "fp32_flop_per_cycle_per_core": {"value": fp32, "source": fp32_source},
                        "bf16_flop_per_cycle_per_core": {"value": bf16, "source": bf16_source}},
            "assumed": assumed,
            "flags": sorted(flags & {"sse2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile",
                                     "asimd", "bf16"}),
            "units": {"gflops_fp32": "GFLOP/s, cores x fp32 FLOP/cycle/core x clock GHz (theoretical)",
                      "gflops_bf16": "GFLOP/s, cores x bf16 FLOP/cycle/core x clock GHz (theoretical)"},
            "context": {"threads": threads}}


# ---------------------------------------------------------------- 2. the project's training step

def _training_settings(run_cfg, batch_size=None):
    t = copy.deepcopy(run_cfg["training"])
    t["device"] = "cpu"
    if batch_size:
        t["batch_size"] = int(batch_size)
    return t


MAX_EXTRA_TRIALS = 200  # bounds `min_seconds` (and sizes the LR schedule, which must know its steps)


def train_throughput(run_cfg, images, labels, threads, batches=8, warmup=1, trials=3, batch_size=None,
                     channels_last=None, amp=None, min_seconds=0.0):
    """Images/s of the real training step (`train.train_one_epoch`) on `batches` batches per trial.

    Model, optimizer, scheduler and augmentation are built as `train.fit` builds them. The indices
    repeat the given images as needed, so a few hundred images serve any number of batches.
    amp: bf16 autocast on/off; None decides as a training job would (`train.choose_amp`).
    min_seconds: more trials until the timed ones add up to this (a few batches on this VM are
    noise: the cost prediction times each network for a while, see ferstudy/cost.py).
    Returns a dict: img_per_s (best trial), img_per_s_median, img_per_s_mean (all timed images /
    all timed seconds), forward_flops, gflops, precision, ...
    """
    import torch

    from .augment import Augmenter
    from .models import build_model, forward_flops
    from .train import choose_amp, make_optimizer, make_scheduler, train_one_epoch, use_channels_last

    set_threads(threads)
    device = torch.device("cpu")
    t = _training_settings(run_cfg, batch_size)
    bs = t["batch_size"]
    if channels_last is None:
        channels_last = use_channels_last(t, device)
    aug_cfg = {k: v for k, v in t["augment"].items() if k != "enabled"}
    augmenter = Augmenter(aug_cfg, enabled=t["augment"].get("enabled", True))
    crop = aug_cfg.get("crop", 48)

    torch.manual_seed(t["seed"])
    model = build_model(run_cfg["model"], input_size=crop, weights=False)  # speed: any weights
    flops = forward_flops(model, crop)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    reason = "given"
    if amp is None:
        amp, reason = choose_amp(t, device, model, crop)
    optimizer = make_optimizer(model, t)
    max_trials = trials + (MAX_EXTRA_TRIALS if min_seconds else 0)
    scheduler = make_scheduler(optimizer, {**t, "epochs": 1}, warmup + max_trials * batches)
    x = torch.from_numpy(images).unsqueeze(1)
    y = torch.from_numpy(labels)

    def run(n_batches, epoch):
        idx = torch.arange(n_batches * bs) % len(x)
        t0 = time.perf_counter()
        _, _, n = train_one_epoch(model, x, y, idx, augmenter, optimizer, scheduler, t, epoch, channels_last,
                                  amp)
        return n, time.perf_counter() - t0

    if warmup:
        run(warmup, 0)
    timed = [run(batches, e + 1) for e in range(trials)]
    while sum(dt for _, dt in timed) < min_seconds and len(timed) < max_trials:
        timed.append(run(batches, len(timed) + 1))
    rates = [n / dt for n, dt in timed]
    best = max(rates)
    return {"img_per_s": best, "img_per_s_median": statistics.median(rates),
            "img_per_s_mean": sum(n for n, _ in timed) / sum(dt for _, dt in timed), "forward_flops": flops,
            "gflops": 3 * flops * best / 1e9, "batch_size": bs, "batches": batches, "trials": len(timed),
            "channels_last": bool(channels_last), "augment": augmenter.enabled and aug_cfg,
            "precision": "bf16" if amp else "fp32", "precision_reason": reason, "amp": bool(amp), "model": model}


def eval_throughput(model, images, threads, crop, tta="none", channels_last=True, batch_size=512, trials=3,
                    n_images=None, amp=False):
    """Source images/s of `train.predict` (evaluation crops, TTA views, softmax) over `images`."""
    import torch

    from .train import predict

    set_threads(threads)
    x = torch.from_numpy(images).unsqueeze(1)
    n = n_images or len(x)
    idx = torch.arange(n) % len(x)
    model = model.eval()
    predict(model, x, idx[:min(n, batch_size)], crop, tta, channels_last, amp, batch_size)  # warm-up
    rates = []
    for _ in range(trials):
        t0 = time.perf_counter()
        predict(model, x, idx, crop, tta, channels_last, amp, batch_size)
        rates.append(n / (time.perf_counter() - t0))
    return max(rates), statistics.median(rates)


# ---------------------------------------------------------------- 3. the public-code way

class _PilFaces:
    """Per-image Dataset returning (PIL image, label) through torchvision transforms."""

    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i], mode="L")), int(self.labels[i])


def pil_loop_throughput(run_cfg, images, labels, threads, workers, batches=8, warmup=1, trials=3,
                        batch_size=None):
    """Images/s of the usual public FER2013 training loop (see the module docstring), same model
    and batch size. Worker start-up is excluded (warm-up batches of a fresh iterator per trial),
    which flatters this loop a little."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader
    from torchvision import transforms

    from .augment import MEAN, STD
    from .models import build_model

    set_threads(threads)
    t = _training_settings(run_cfg, batch_size)
    bs = t["batch_size"]
    crop = t["augment"].get("crop", 48)
    transform = transforms.Compose([transforms.RandomCrop(crop), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])
    n = bs * (warmup + batches)
    pick = np.resize(np.arange(len(images)), n)  # repeat the images when fewer than n
    dataset = _PilFaces(images[pick], labels[pick], transform)
    torch.manual_seed(t["seed"])
    model = build_model(run_cfg["model"], input_size=crop, weights=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=t["lr"], momentum=0.9, weight_decay=t["weight_decay"])
    loader = DataLoader(dataset, batch_size=bs, shuffle=True, num_workers=workers, drop_last=True)

    rates = []
    model.train()
    for _ in range(trials):
        it = iter(loader)
        done, t0 = 0, None
        for step, (x, y) in enumerate(it):
            if step == warmup:
                t0 = time.perf_counter()
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            if step >= warmup:
                done += len(x)
        rates.append(done / (time.perf_counter() - t0))
        del it
    return {"img_per_s": max(rates), "img_per_s_median": statistics.median(rates), "workers": workers,
            "batch_size": bs, "batches": batches, "trials": trials,
            "augment": f"RandomCrop({crop}), RandomHorizontalFlip, ToTensor, Normalize"}


# ---------------------------------------------------------------- 4. ingest

_INGEST_CHILD = """
import json, resource, sys, time
from ferstudy.errors import UserError
from ferstudy import data


def peak_mib():
    # VmHWM: this process's own high-water mark. (ru_maxrss of a child also counts the parent's
    # memory that the fork copied before the exec, here a process with torch loaded.)
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024, "VmHWM in /proc/self/status"
    except OSError:
        pass
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform == "darwin" else 1)
    return kib / 1024, "getrusage ru_maxrss"


before, _ = peak_mib()
c0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
try:
    d = data.prepare(sys.argv[1], sys.argv[2], folds=int(sys.argv[3]), fold_seed=int(sys.argv[4]))
except UserError as err:
    print(err, file=sys.stderr)
    sys.exit(2)
seconds, c1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
peak, how = peak_mib()
print(json.dumps({"rows": int(len(d.labels)), "seconds": seconds,
                  "cpu_s": c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime,
                  "peak_rss_mb": peak, "rss_after_import_mb": before, "rss_source": how,
                  "chunk_bytes": data.CHUNK_BYTES}))
"""


def ingest_in_subprocess(csv, h5, folds=5, fold_seed=0, timeout=600):
    """`data.prepare(csv, h5)` in a fresh Python process, as `ferstudy prepare` runs it: {rows,
    seconds, cpu_s (user + system of all its threads), peak_rss_mb (the process's high-water mark,
    MiB), rss_after_import_mb (before the ingest: Python, numpy, h5py), chunk_bytes}."""
    from .errors import UserError

    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-c", _INGEST_CHILD, str(csv), str(h5), str(folds), str(fold_seed)],
                          capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit code {proc.returncode}"
        raise UserError(f"ingest of {csv} failed: {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ingest_times(csv, folds=5, fold_seed=0, trials=3):
    from .data import load_h5

    with tempfile.TemporaryDirectory(prefix="ferstudy-bench-") as tmp:
        h5 = Path(tmp) / "bench.h5"
        child = ingest_in_subprocess(csv, h5, folds, fold_seed)
        loads = []
        for _ in range(trials):
            t0 = time.perf_counter()
            load_h5(h5)
            loads.append(time.perf_counter() - t0)
        h5_bytes = h5.stat().st_size
    return {**child, "csv_bytes": Path(csv).stat().st_size,
            "h5_load_s": min(loads), "h5_load_s_median": statistics.median(loads), "h5_bytes": h5_bytes}


# ---------------------------------------------------------------- 6. Snakemake

def snakemake_command():
    exe = Path(sys.executable).with_name("snakemake")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "snakemake"]


def run_snakemake(study_dir, args, timeout=600):
    """(seconds, combined output) of `snakemake <args>` run in `study_dir`."""
    env = dict(os.environ)
    t0 = time.perf_counter()
    proc = subprocess.run(snakemake_command() + list(args), cwd=study_dir, capture_output=True, text=True,
                          timeout=timeout, env=env)
    seconds = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        last = out.strip().splitlines()[-1] if out.strip() else ""
        raise RuntimeError(f"snakemake {' '.join(args)} in {study_dir} failed ({proc.returncode}): {last}")
    return seconds, out


def parse_job_stats(text):
    """{rule: count} from a Snakemake `Job stats:` table (without the `total` row); {} if none."""
    counts, inside = {}, False
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("Job stats"):
            inside, counts = True, {}
            continue
        if not inside:
            continue
        if not s or s.startswith("job ") or set(s) <= set("- "):
            if not s and counts:
                inside = False
            continue
        m = re.fullmatch(r"(\S+)\s+(\d+)", s)
        if not m:
            inside = False
            continue
        if m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


def parse_dry_run_jobs(text):
    """['rule[wildcards]', ...] from a Snakemake dry run's job listing."""
    jobs, rule = [], None
    for line in text.splitlines():
        m = re.match(r"^(?:local)?(?:checkpoint|rule) (\w+):\s*$", line.strip())
        if m:
            if rule is not None:
                jobs.append(rule)
            rule = m.group(1)
            continue
        if rule is not None and line.strip().startswith("wildcards:"):
            jobs.append(f"{rule}[{line.strip()[len('wildcards:'):].strip()}]")
            rule = None
    if rule is not None:
        jobs.append(rule)
    return jobs


def default_change_arch(cfg, change):
    """A studied architecture that no other extends and that `change` really alters."""
    from .config import resolve_arch

    names = cfg["study"]["architectures"]
    extended = {e.get("extends") for e in cfg["architectures"].values()}
    for name in names:
        if name in extended or name == cfg["study"]["baseline"]:
            continue
        if "backbone" in resolve_arch(cfg, name)["model"]:
            continue
        if changed_archs(cfg, name, change) == [name]:
            return name
    return None


def changed_archs(cfg, arch, change):
    """Studied architectures whose resolved run config differs after `change` to `arch`."""
    from .config import deep_merge, resolve_arch

    changed = copy.deepcopy(cfg)
    changed["architectures"][arch] = deep_merge(changed["architectures"][arch], change)
    return [n for n in cfg["study"]["architectures"] if resolve_arch(cfg, n) != resolve_arch(changed, n)]


def snakemake_times(study_dir, cfg, arch=None, change=None, trials=3):
    """Dry-run time of a finished study and the jobs one architecture change triggers."""
    import yaml

    change = change or {"blocks": {"kernel": 5}}
    times = []
    for _ in range(trials):
        seconds, out = run_snakemake(study_dir, ["-n"])
        times.append(seconds)
    pending = parse_job_stats(out)
    arch = arch or default_change_arch(cfg, change)
    result = {"dry_run_s": min(times), "dry_run_s_median": statistics.median(times), "trials": trials,
              "pending_jobs": sum(pending.values()), "pending_by_rule": pending}
    if arch is None:
        return result, None
    expected = changed_archs(cfg, arch, change)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="ferstudy-bench-", delete=False) as f:
        yaml.safe_dump({"architectures": {arch: change}}, f)
        override = f.name
    try:
        seconds, out = run_snakemake(study_dir, ["-n", "--configfile", override])
    finally:
        os.unlink(override)
    jobs = parse_dry_run_jobs(out)
    by_rule = parse_job_stats(out)
    trained = sorted({m.group(1) for j in jobs for m in [re.search(r"arch=([\w-]+)", j)] if m
                      and j.startswith("train_fold")})
    change_line = {"arch": arch, "change": change, "dry_run_s": seconds, "jobs": sum(by_rule.values()),
                   "jobs_by_rule": by_rule, "job_list": jobs, "expected_archs": expected,
                   "retrained_archs": trained, "only_expected": trained == sorted(expected)}
    return result, change_line


# ---------------------------------------------------------------- the command

class Recorder:
    """Prints each measurement as one JSON line and keeps it for the output file."""

    def __init__(self, stream=None):
        self.lines, self.stream = [], stream or sys.stdout

    def __call__(self, record):
        line = json.dumps(record, default=_jsonable)
        self.lines.append(line)
        print(line, file=self.stream, flush=True)
        return record


def _jsonable(obj):
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def run_bench(args, emit=None):
    """Run every measurement `args` asks for; returns the list of records."""
    emit = emit or Recorder()
    threads = args.threads or all_cores()
    cfg = load_config(args.config, args.configfile, args.preset, args.study_dir)
    archs = _bench_archs(args, cfg)
    pil_archs = args.pil_archs if args.pil_archs is not None else [cfg["study"]["baseline"]]
    ctx = {**base_context(threads), "preset": cfg["preset"], "dataset": cfg["dataset"]["name"],
           "data": f"HDF5 {args.h5}" if args.h5 else "demo faces"}
    records = []

    def out(record):
        record.setdefault("context", {})
        record["context"] = {**ctx, **record["context"], "loadavg_1m": base_context(threads)["loadavg_1m"]}
        records.append(emit(record))
        return record

    only = set(args.only or GROUPS)
    if "train" in only:
        only.add("matmul")  # the training lines divide by it
    archs = archs if "train" in only else []
    pil_archs = pil_archs if "pil" in only else []
    precisions = training_precisions()
    ctx["cpu_native_bf16"] = "bf16" in precisions
    matmul, peak = matmul_records(out, args, threads, precisions) if "matmul" in only else ({}, {})
    max_bs = max([args.batch_size or _batch_size(cfg, a) for a in archs + pil_archs] + [64])
    images, labels = bench_images(min(max_bs * (args.batches + args.warmup), args.max_images), args.h5)
    train_records(out, args, cfg, archs, images, labels, threads, precisions, matmul, peak)
    pil_records(out, args, cfg, pil_archs, images, labels, threads, precisions)
    if "ingest" in only:
        ingest_records(out, args, cfg)
    if "inference" in only:
        for r in inference_records(cfg, args, images, threads):
            out(r)
    if "snakemake" in only:
        snakemake_records(out, args, cfg)
    return records


def _bench_archs(args, cfg):
    archs = args.archs or list(cfg["architectures"])
    for name in archs:
        if name not in cfg["architectures"]:
            from .errors import UserError
            raise UserError(f"--archs: unknown architecture {name!r} (config has {', '.join(cfg['architectures'])})")
    return archs


def _batch_size(cfg, arch):
    from .config import resolve_arch

    return resolve_arch(cfg, arch)["training"]["batch_size"]


def matmul_records(out, args, threads, precisions):
    """The machine's attainable rate in each precision training uses, and the theoretical peak:
    ({precision: matmul GFLOP/s}, {precision: peak GFLOP/s})."""
    matmul = {}
    pk = out(cpu_peak(threads))
    peak = {"fp32": pk["gflops_fp32"], "bf16": pk["gflops_bf16"]}
    for precision in precisions:
        mm = matmul_rate(threads, n=args.matmul_size, trials=args.trials + 2, precision=precision)
        mm["fraction_of_peak"] = _fraction(mm["gflops"], peak.get(precision))
        mm["units"]["fraction_of_peak"] = f"gflops / cpu_peak gflops_{precision} (theoretical)"
        matmul[precision] = mm["gflops"]
        out(mm)
    return matmul, peak


def train_records(out, args, cfg, archs, images, labels, threads, precisions, matmul, peak):
    """Training throughput of each architecture in each precision (and memory layout asked for),
    then the thread scaling of one; returns {arch: fp32 img/s of the first layout}."""
    from .config import resolve_arch

    project = {}
    layouts = {"auto": [None], "on": [True], "off": [False], "both": [True, False]}[args.channels_last]
    for name in archs:
        run_cfg = resolve_arch(cfg, name)
        for cl in layouts:
            for precision in precisions:
                r = train_throughput(run_cfg, images, labels, threads, args.batches, args.warmup, args.trials,
                                     args.batch_size, cl, amp=precision == "bf16")
                r.pop("model")
                if precision == "fp32":
                    project.setdefault(name, r["img_per_s"])
                out({"name": "train_step", "arch": name, "precision": precision, "img_per_s": r["img_per_s"],
                     "img_per_s_median": r["img_per_s_median"], "mflops_forward": r["forward_flops"] / 1e6,
                     "gflops": r["gflops"], "fraction_of_matmul": _fraction(r["gflops"], matmul.get(precision)),
                     "fraction_of_peak": _fraction(r["gflops"], peak.get(precision)),
                     "units": {"img_per_s": "images/s, best trial", "mflops_forward": "MFLOP per image, forward",
                               "gflops": "GFLOP/s achieved; " + FLOPS_CONVENTION,
                               "fraction_of_matmul": f"gflops / matmul gflops in {precision}",
                               "fraction_of_peak": f"gflops / cpu_peak gflops_{precision} (theoretical)"},
                     "context": {"batch_size": r["batch_size"], "batches": r["batches"], "trials": r["trials"],
                                 "channels_last": r["channels_last"], "augment": r["augment"],
                                 "autocast": f"bf16 autocast {'on' if r['amp'] else 'off'}",
                                 "loop": "ferstudy.train.train_one_epoch"}})
    if threads > 1 and archs:  # thread scaling of the first architecture's training step (fp32)
        name = cfg["study"]["baseline"] if cfg["study"]["baseline"] in archs else archs[0]
        run_cfg = resolve_arch(cfg, name)
        one = train_throughput(run_cfg, images, labels, 1, args.batches, args.warmup, args.trials,
                               args.batch_size, amp=False)["img_per_s"]
        out({"name": "thread_scaling", "arch": name, "precision": "fp32", "img_per_s_1": one,
             "img_per_s_n": project[name], "speedup": project[name] / one,
             "units": {"speedup": f"img/s at {threads} threads / at 1 thread"},
             "context": {"batch_size": args.batch_size or run_cfg["training"]["batch_size"]}})
    return project


def pil_records(out, args, cfg, pil_archs, images, labels, threads, precisions):
    """The plain PIL + DataLoader loop that most public code uses, beside the project as it trains.

    The two are measured in alternating rounds (project as it trains, project in fp32, the PIL
    loop with each worker count, then again): on these VMs the rate drifts by tens of percent
    over a minute, so two measurements taken minutes apart compare the minutes, not the loops.
    Each ratio is the median of the rounds' own ratios."""
    from .config import resolve_arch

    for name in pil_archs:
        run_cfg = resolve_arch(cfg, name)
        steps = dict(threads=threads, batches=args.batches, warmup=args.warmup, trials=args.trials,
                     batch_size=args.batch_size)
        # the precision a training job would pick: amp from the config, `auto` measured by train.choose_amp
        # (only the decision is kept: one trial, the rounds below do the timing)
        decided = train_throughput(run_cfg, images, labels, amp=None, **{**steps, "trials": 1})
        rounds = []
        for _ in range(max(1, args.pil_rounds)):
            trained = train_throughput(run_cfg, images, labels, amp=decided["amp"], **steps)["img_per_s"]
            fp32 = trained if not decided["amp"] else train_throughput(run_cfg, images, labels, amp=False,
                                                                       **steps)["img_per_s"]
            pil = {w: pil_loop_throughput(run_cfg, images, labels, threads, w, args.batches, args.warmup,
                                          args.trials, args.batch_size) for w in args.pil_workers}
            rounds.append({"project": trained, "project_fp32": fp32,
                           "pil": {w: r["img_per_s"] for w, r in pil.items()}})
        for workers, r in pil.items():
            out({"name": "train_pil", "arch": name, "workers": workers, "precision": "fp32",
                 "img_per_s": statistics.median(x["pil"][workers] for x in rounds),
                 "units": {"img_per_s": "images/s, median over rounds of the best trial (DataLoader start-up "
                                        "excluded)"},
                 "context": {"batch_size": r["batch_size"], "batches": r["batches"], "trials": r["trials"],
                             "rounds": len(rounds), "channels_last": False, "augment": r["augment"],
                             "loop": "Dataset of PIL images + torchvision transforms + DataLoader + plain loop"}})
        out(_vs_pil_record(name, rounds, decided, precisions, run_cfg, args))


def _vs_pil_record(name, rounds, decided, precisions, run_cfg, args):
    """The `train_vs_pil` line from alternating rounds: medians of per-round ratios (drift cancels)."""
    def median(key):
        return statistics.median(x[key] / max(x["pil"].values()) for x in rounds)

    pil_best = [max(x["pil"].values()) for x in rounds]
    best_workers = statistics.mode(max(x["pil"], key=x["pil"].get) for x in rounds)
    target = PIL_TARGET["bf16" in precisions]
    ratio = median("project")
    return {"name": "train_vs_pil", "arch": name,
            "project_img_per_s": statistics.median(x["project"] for x in rounds),
            "project_precision": decided["precision"], "project_precision_reason": decided["precision_reason"],
            "project_fp32_img_per_s": statistics.median(x["project_fp32"] for x in rounds),
            "pil_best_img_per_s": statistics.median(pil_best), "pil_best_workers": best_workers, "pil_precision": "fp32",
            "ratio": ratio, "ratio_fp32": median("project_fp32"), "rounds": rounds,
            "target_ratio": target, "meets_target": ratio >= target,
            "target": f">= {PIL_TARGET[True]:g}x on a CPU with native bf16, >= {PIL_TARGET[False]:g}x without "
                      f"(this CPU: {'with' if 'bf16' in precisions else 'without'}); judged on `ratio`",
            "units": {"ratio": "median over rounds of (project img/s as it trains, project_precision / best "
                               "PIL+DataLoader img/s of the same round, fp32)",
                      "ratio_fp32": "the same with the project in fp32",
                      "pil_best_img_per_s": "median over rounds of each round's best worker count (the worker "
                                            "counts may differ between rounds; pil_best_workers: the most frequent)",
                      "rounds": "per round: best-trial img/s of the project as it trains, in fp32, and of the PIL "
                                "loop per DataLoader worker count, measured one after the other"},
            "context": {"batch_size": args.batch_size or run_cfg["training"]["batch_size"], "rounds": len(rounds),
                        "amp_setting": run_cfg["training"].get("amp", "auto")}}


def ingest_records(out, args, cfg):
    """Ingest (time, CPU, peak memory) of --csv and the HDF5 load of it and of --h5."""
    if not (args.csv and Path(args.csv).is_file()):
        out({"name": "ingest", "skipped": f"no CSV ({args.csv or 'give --csv'} not found)", "context": {}})
    else:
        r = ingest_times(args.csv, cfg["data"]["folds"], cfg["data"]["fold_seed"])
        out({"name": "ingest", "csv": str(args.csv), "rows": r["rows"], "seconds": r["seconds"],
             "rows_per_s": r["rows"] / r["seconds"], "mb_per_s": r["csv_bytes"] / 1e6 / r["seconds"],
             "cpu_s": r["cpu_s"], "peak_rss_mb": r["peak_rss_mb"], "rss_after_import_mb": r["rss_after_import_mb"],
             "units": {"seconds": "s for ferstudy.data.prepare (parse, validate, folds, sha256, HDF5 write)",
                       "mb_per_s": "MB of the CSV file (as stored, compressed or not) per s",
                       "cpu_s": "CPU s (user + system, all threads) of the same; above `seconds`: a second core worked",
                       "peak_rss_mb": "MiB, the ingest process's peak resident memory (its high-water mark)",
                       "rss_after_import_mb": "MiB resident before the ingest (Python, numpy, h5py imported)"},
             "context": {"csv_bytes": r["csv_bytes"], "chunk_bytes": r["chunk_bytes"], "rss_source": r["rss_source"],
                         "process": "a fresh Python process running ferstudy.data.prepare"}})
        out({"name": "h5_load", "path": "(written by ingest)", "rows": r["rows"], "seconds": r["h5_load_s"],
             "seconds_median": r["h5_load_s_median"], "mb_per_s": r["h5_bytes"] / 1e6 / r["h5_load_s"],
             "units": {"seconds": "s for ferstudy.data.load_h5, best of 3"}, "context": {"h5_bytes": r["h5_bytes"]}})
    if args.h5:
        from .data import load_h5

        loads = []
        for _ in range(3):
            t0 = time.perf_counter()
            data = load_h5(args.h5)
            loads.append(time.perf_counter() - t0)
        out({"name": "h5_load", "path": str(args.h5), "rows": int(len(data.labels)), "seconds": min(loads),
             "seconds_median": statistics.median(loads), "units": {"seconds": "s for ferstudy.data.load_h5, best of 3"},
             "context": {"h5_bytes": Path(args.h5).stat().st_size}})


def snakemake_records(out, args, cfg):
    """`snakemake -n` on a finished study, and the jobs one architecture's change triggers."""
    if not args.study_dir:
        out({"name": "snakemake_dry_run", "skipped": "no --study-dir (a finished study directory)", "context": {}})
        return
    import yaml

    change = yaml.safe_load(args.change) if args.change else None
    dry, chg = snakemake_times(args.study_dir, cfg, args.change_arch, change, trials=args.trials)
    out({"name": "snakemake_dry_run", "seconds": dry["dry_run_s"], "seconds_median": dry["dry_run_s_median"],
         "pending_jobs": dry["pending_jobs"], "pending_by_rule": dry["pending_by_rule"],
         "units": {"seconds": "s wall of `snakemake -n`, best trial"},
         "context": {"study_dir": str(args.study_dir), "trials": dry["trials"]}})
    if chg is None:
        out({"name": "snakemake_change", "skipped": "no architecture that the change alters alone", "context": {}})
    else:
        out({"name": "snakemake_change", **{k: v for k, v in chg.items()},
             "units": {"dry_run_s": "s wall of `snakemake -n --configfile <override>`",
                       "jobs": "jobs the change triggers"},
             "context": {"study_dir": str(args.study_dir)}})


def _fraction(value, of):
    return value / of if of else None


def inference_records(cfg, args, images, threads):
    import numpy as np
    import torch

    from .config import resolve_arch
    from .models import build_model
    from .train import load_model, predict, use_channels_last

    set_threads(threads)
    if args.model and Path(args.model).is_file():
        model, payload = load_model(args.model)
        crop, source = payload["input_size"], str(args.model)
        t = payload.get("run_config", {}).get("training", {})
    else:
        run_cfg = resolve_arch(cfg, cfg["study"]["baseline"])
        torch.manual_seed(0)
        crop = run_cfg["training"]["augment"].get("crop", 48)
        model, t = build_model(run_cfg["model"], input_size=crop).eval(), run_cfg["training"]
        source = f"{run_cfg['name']} (fresh weights; no --model)"
    channels_last = use_channels_last(t, torch.device("cpu"))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    rate, median = eval_throughput(model, images, threads, crop, "none", channels_last, batch_size=256,
                                   trials=args.trials, n_images=max(1024, 256 * 4))
    x = torch.from_numpy(images).unsqueeze(1)
    one = torch.zeros(1, dtype=torch.long)
    lat = []
    for i in range(args.latency_reps + 5):
        one[0] = i % len(x)
        t0 = time.perf_counter()
        predict(model, x, one, crop, "none", channels_last, False, 1)
        lat.append(time.perf_counter() - t0)
    lat = np.array(lat[5:]) * 1000
    ctx = {"model": source, "tta": "none", "channels_last": channels_last, "loop": "ferstudy.train.predict"}
    return [{"name": "inference", "img_per_s": rate, "img_per_s_median": median,
             "units": {"img_per_s": "images/s in batches of 256, best trial"},
             "context": {**ctx, "batch_size": 256, "trials": args.trials}},
            {"name": "latency", "ms_median": float(np.median(lat)), "ms_p90": float(np.percentile(lat, 90)),
             "reps": args.latency_reps, "units": {"ms_median": "ms per single image (median)", "ms_p90": "ms"},
             "context": {**ctx, "batch_size": 1}}]


def cmd_bench(args):
    from .io import atomic_path

    records = run_bench(args)
    if args.out:
        with atomic_path(args.out) as tmp:
            Path(tmp).write_text("".join(json.dumps(r, default=_jsonable) + "\n" for r in records))
        log.info("wrote %d measurements to %s", len(records), args.out)


def add_arguments(p):
    p.add_argument("--only", nargs="+", choices=GROUPS, help="run only these groups of measurements "
                                                             "(default: all; train implies matmul)")
    p.add_argument("--config", help="the study's config file, over the shipped defaults (default: "
                                    "config/config.yaml of the study directory, if there is one)")
    p.add_argument("--configfile", nargs="*", default=[], help="YAML files merged over --config, as Snakemake does")
    p.add_argument("--preset", help="override the config's preset (e.g. cpu: full-width networks, batch 128)")
    p.add_argument("--archs", nargs="*", help="architectures to time (default: every one in the config)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    p.add_argument("--batch-size", type=int, help="override every architecture's batch size")
    p.add_argument("--batches", type=int, default=8, help="timed batches per trial (default 8)")
    p.add_argument("--warmup", type=int, default=1, help="untimed batches first (default 1)")
    p.add_argument("--trials", type=int, default=3, help="repetitions; the best is reported (default 3)")
    p.add_argument("--channels-last", choices=["auto", "on", "off", "both"], default="auto",
                   help="memory format of the training step (auto: as the config says)")
    p.add_argument("--pil-archs", nargs="*", help="architectures for the PIL+DataLoader comparison "
                                                  "(default: the study baseline; the option without names skips it)")
    p.add_argument("--pil-workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers to try")
    p.add_argument("--pil-rounds", type=int, default=3, help="alternating rounds of project and PIL loop; "
                                                             "train_vs_pil is the median of their ratios (default 3)")
    p.add_argument("--matmul-size", type=int, default=2048)
    p.add_argument("--max-images", type=int, default=2048, help="distinct images generated or read")
    p.add_argument("--h5", help="prepared HDF5 to train on (default: demo faces)")
    p.add_argument("--csv", help="FER2013 CSV (.csv or .csv.gz) to time the ingest of")
    p.add_argument("--model", help="saved model for the inference lines (default: the baseline, fresh)")
    p.add_argument("--latency-reps", type=int, default=100)
    p.add_argument("--study-dir", help="finished study directory for the Snakemake lines")
    p.add_argument("--change-arch", help="architecture to alter for snakemake_change (default: a leaf one)")
    p.add_argument("--change", help="YAML of the change (default: '{blocks: {kernel: 5}}')")
    p.add_argument("--out", help="also write the JSON lines here (e.g. results/bench.jsonl)")


def register(subparsers):
    p = subparsers.add_parser("bench", help="benchmark harness: one JSON line per measurement",
                              description=__doc__.split("\n\n")[0])
    add_arguments(p)
    p.set_defaults(func=cmd_bench)
    return p
