"""Which precision a training run uses: fp32, or bf16 autocast where it is native and faster.

`choose_amp` decides for one job (on a CPU with native bf16 by timing a few steps of the
network in both precisions, `time_precisions`); `shared_choose_amp` makes that decision once for
all the jobs that must train alike (the folds of one architecture) and publishes it in a file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from .config import config_hash, cpu_name


def cpu_has_bf16() -> bool:
    """Native bf16 on this CPU (AVX-512 BF16 or AMX on x86, BF16 on Arm), as torch's oneDNN sees it.
    Without it, bf16 autocast on a CPU is emulated and slower than fp32."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def use_amp(training: dict, device: torch.device) -> bool | None:
    """Autocast setting before any measurement: True/False when decided, None when `auto` on a
    bf16-capable CPU leaves it to `choose_amp`'s measurement."""
    setting = training.get("amp", "auto")
    if setting != "auto":
        return bool(setting)
    if device.type == "cuda":
        return True
    return None if cpu_has_bf16() else False


def choose_amp(
    training: dict,
    device: torch.device,
    model: torch.nn.Module,
    crop: int,
    probe: Callable[[torch.nn.Module, dict, int], tuple[float, float]] | None = None,
) -> tuple[bool, str]:
    """(amp, reason). `amp: auto` on a CPU with native bf16 times a few training steps of this
    network in both precisions (`probe`, by default `time_precisions`) and takes bf16 only when it
    is at least `BF16_MIN_GAIN` faster; the reason goes into the log and every result."""
    decided = use_amp(training, device)
    setting = training.get("amp", "auto")
    if decided is not None:
        if setting != "auto":
            return decided, f"amp: {setting} in the config"
        return decided, ("CUDA device" if device.type == "cuda" else "this CPU has no native bf16")
    fp32, bf16 = (probe or time_precisions)(model, training, crop)
    gain = bf16 / fp32
    if gain >= BF16_MIN_GAIN:
        return True, f"native bf16 CPU, measured {gain:.2f}x fp32 for this network ({bf16:.0f} vs {fp32:.0f} img/s)"
    return False, f"native bf16 CPU, but bf16 measured {gain:.2f}x fp32 for this network: fp32"


BF16_MIN_GAIN = 1.1  # a near tie stays fp32: the measurement is noisy, fp32 is the reference precision


def shared_choose_amp(
    memo_dir: Path | str | None, run_cfg: dict, device: torch.device, model: torch.nn.Module, crop: int, threads: int
) -> tuple[bool, str]:
    """`choose_amp`, decided once for every job that passes the same `memo_dir` (the folds of one
    architecture): the first verdict for a key (run config, threads, processor model, torch) is
    published as `memo_dir/precision-<key>.json` and every later job, and every rerun on that
    kind of machine, adopts it. A per-job measurement made the weights depend on the load of the
    moment: one fold of a study measured bf16 below the 1.1x bar beside busy cores, trained in
    fp32 and came out different from the same fold run quietly.

    On one machine a flock on `memo_dir` makes the others wait for the first measurement (and
    keeps two folds from timing each other); across machines (Slurm nodes on a shared
    filesystem, where flock may not reach) jobs that measured at the same time publish with an
    atomic link, first writer wins, and the others take its verdict. Delete the file to measure
    again (`--forcerun` does not: it is not a Snakemake output)."""
    training = run_cfg["training"]
    if memo_dir is None or use_amp(training, device) is not None:  # nothing to measure
        return choose_amp(training, device, model, crop)
    key = config_hash({"run": run_cfg, "threads": threads, "cpu": cpu_name(), "torch": torch.__version__})
    memo_dir = Path(memo_dir)
    memo_dir.mkdir(parents=True, exist_ok=True)
    memo = memo_dir / f"precision-{key}.json"
    lock = _lock_directory(memo_dir)
    try:
        known = _read_verdict(memo)
        if known is None:
            amp, reason = choose_amp(training, device, model, crop)
            if _publish_verdict(memo, {"amp": amp, "reason": reason}):
                return amp, reason
            known = _read_verdict(memo)
        return bool(known["amp"]), f"{known['reason']}; measured by the first of the jobs sharing {memo}"
    finally:
        if lock is not None:
            os.close(lock)  # releases the flock


def _lock_directory(directory):
    """An fd holding an exclusive flock on `directory`, or None where that cannot be had (no
    fcntl, or a filesystem without flock): the atomic publish still gives one verdict."""
    try:
        import fcntl

        fd = os.open(directory, os.O_RDONLY)
    except (ImportError, OSError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd
    except OSError:
        os.close(fd)
        return None


def _read_verdict(path):
    import json

    try:
        known = json.loads(Path(path).read_text())
        return known if isinstance(known, dict) and "amp" in known and "reason" in known else None
    except (OSError, ValueError):
        return None


def _publish_verdict(path, verdict):
    """Writes `verdict` to `path` unless a verdict is already there (a hard link of a complete
    temporary file: atomic, also on NFS); True when this one was published."""
    import json
    import threading

    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(verdict, indent=2) + "\n")
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return _read_verdict(path) is None  # an unreadable one does not count: ours stands
    except OSError:  # a filesystem without hard links: last writer wins, still atomic
        os.replace(tmp, path)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def time_precisions(
    model: torch.nn.Module, training: dict, crop: int, steps: int = 4, warmup: int = 2
) -> tuple[float, float]:
    """Training images/s of a throwaway copy of `model` in fp32 and in bf16 autocast, alternating
    trials (machine noise hits both alike). Touches no global RNG state and not `model` itself."""
    import copy

    bs = min(int(training["batch_size"]), 256)
    rates: dict[bool, list[float]] = {False: [], True: []}  # images/s of each trial, by amp
    with torch.random.fork_rng(devices=[]):
        probe = copy.deepcopy(model).train()
        opt = torch.optim.SGD(probe.parameters(), lr=1e-3, momentum=0.9)
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(bs, 1, crop, crop, generator=gen).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 7, (bs,), generator=gen)

        def run(amp, n):
            t0 = time.perf_counter()
            for _ in range(n):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                    loss = F.cross_entropy(probe(x).float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            return n * bs / (time.perf_counter() - t0)

        for amp in (False, True):
            run(amp, warmup)
        for _ in range(2):
            for amp in (False, True):
                rates[amp].append(run(amp, steps))
    return max(rates[False]), max(rates[True])
