"""1. The machine: its attainable matmul rate in each precision training uses (`matmul`) and its
theoretical peak from what it reports (`cpu_peak`)."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .context import base_context, set_threads

if TYPE_CHECKING:
    import argparse


def training_precisions() -> list[str]:
    """The precisions a training job on this CPU may use: fp32, and bf16 where it is native."""
    from ..precision import cpu_has_bf16

    return ["fp32", "bf16"] if cpu_has_bf16() else ["fp32"]


def matmul_rate(threads: int, n: int = 2048, reps: int = 3, trials: int = 5, precision: str = "fp32") -> dict[str, Any]:
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
        rates.append(2 * n**3 * reps / (time.perf_counter() - t0) / 1e9)
    return {
        "name": "matmul",
        "precision": precision,
        "gflops": max(rates),
        "gflops_median": statistics.median(rates),
        "n": n,
        "reps": reps,
        "trials": trials,
        "units": {"gflops": f"GFLOP/s {precision} (2 n^3 per n x n matmul), best trial"},
        "context": base_context(threads),
    }


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
        return max(mhz) / 1e3, (
            "/proc/cpuinfo `cpu MHz` (the clock now; under a hypervisor usually the "
            "nominal clock: turbo may run higher, AVX-512/AMX code lower)"
        )
    m = re.search(r"@\s*([\d.]+)\s*GHz", cpuinfo or "")
    if m:
        return float(m.group(1)), "the model name's nominal clock in /proc/cpuinfo"
    return None, "no clock reported (no cpufreq in sysfs, no `CPU max MHz` in lscpu, no `cpu MHz` in /proc/cpuinfo)"


def cpu_peak(
    threads: int,
    cpuinfo: str | None = None,
    lscpu: str | None = None,
    sysfs: Path | str = "/sys/devices/system/cpu",
    cpus: Iterable[int] | None = None,
) -> dict[str, Any]:
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
    fp32, fp32_source = _fp32_per_cycle(flags, fma_units, assumed)
    bf16, bf16_source = _bf16_per_cycle(flags, fp32, fma_units, assumed)

    def peak(per_cycle):
        return cores * per_cycle * clock if per_cycle and clock else None

    return {
        "name": "cpu_peak",
        "gflops_fp32": peak(fp32),
        "gflops_bf16": peak(bf16),
        "factors": {
            "cores": {
                "value": cores,
                "source": f"{physical} physical cores from {cores_source}; "
                f"the peak counts min(threads {threads}, that)",
            },
            "clock_ghz": {"value": clock, "source": clock_source},
            "fp32_flop_per_cycle_per_core": {"value": fp32, "source": fp32_source},
            "bf16_flop_per_cycle_per_core": {"value": bf16, "source": bf16_source},
        },
        "assumed": assumed,
        "flags": sorted(
            flags & {"sse2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "asimd", "bf16"}
        ),
        "units": {
            "gflops_fp32": "GFLOP/s, cores x fp32 FLOP/cycle/core x clock GHz (theoretical)",
            "gflops_bf16": "GFLOP/s, cores x bf16 FLOP/cycle/core x clock GHz (theoretical)",
        },
        "context": {"threads": threads},
    }


def _fp32_per_cycle(flags, fma_units, assumed):
    """(fp32 FLOP/cycle/core, its source) of `cpu_peak` from the vector extension in the CPU flags;
    what no file reports is appended to `assumed`."""
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
    fp32_source = (
        (
            f"{isa} x {'2 (fused multiply-add: the fma flag)' if fma else '1 (no fma flag)'} x "
            f"{fma_units} FMA units per core (ASSUMED: no file reports it; most server cores since "
            f"Skylake-SP and Zen 2 have 2; some Xeon Silver/Bronze have one 512-bit unit, and AMD Zen 4 "
            f"runs 512-bit FMAs on 256-bit units: halve it there)"
        )
        if lanes
        else isa
    )
    if lanes:
        assumed.append(f"{fma_units} FMA units per core")
    return fp32, fp32_source


def _bf16_per_cycle(flags, fp32, fma_units, assumed):
    """(bf16 FLOP/cycle/core or None without native bf16, its source) of `cpu_peak`; what no file
    reports is appended to `assumed`."""
    if "amx_bf16" in flags:
        bf16, bf16_source = (
            1024,
            (
                "amx_bf16: Intel AMX, one tile multiply unit per core, 1024 bf16 FLOP/cycle "
                "(Intel's figure for Sapphire Rapids; ASSUMED the same here)"
            ),
        )
        assumed.append("AMX: 1024 bf16 FLOP/cycle/core")
    elif "avx512_bf16" in flags and fp32:
        bf16, bf16_source = (
            2 * fp32,
            (
                "avx512_bf16: VDPBF16PS does 2 bf16 products per fp32 lane per FMA, "
                f"2 x the fp32 rate ({fma_units} FMA units ASSUMED as above)"
            ),
        )
    else:
        bf16, bf16_source = None, "no native bf16 (neither amx_bf16 nor avx512_bf16 in the flags)"
    return bf16, bf16_source


def _fraction(value, of):
    return value / of if of else None


def matmul_records(
    out: Callable[[dict], dict], args: argparse.Namespace, threads: int, precisions: Sequence[str]
) -> tuple[dict[str, float], dict[str, float | None]]:
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
