"""2. The project's training step (`train_step`, `thread_scaling`) and 5. its inference (`inference`,
`latency`): the real `train.train_one_epoch` and `train.predict`, set up as a training job sets up."""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .context import set_threads
from .machine import _fraction

if TYPE_CHECKING:
    import argparse

    import numpy as np
    from torch import nn

FLOPS_CONVENTION = (
    "training FLOPs per image = 3 x forward FLOPs of conv and linear layers "
    "(forward + backward; multiply-add = 2 FLOPs; norms, activations, pooling not counted)"
)


def _training_settings(run_cfg, batch_size=None):
    t = copy.deepcopy(run_cfg["training"])
    t["device"] = "cpu"
    if batch_size:
        t["batch_size"] = int(batch_size)
    return t


MAX_EXTRA_TRIALS = 200  # bounds `min_seconds` (and sizes the LR schedule, which must know its steps)


def train_throughput(
    run_cfg: dict,
    images: np.ndarray,
    labels: np.ndarray,
    threads: int,
    batches: int = 8,
    warmup: int = 1,
    trials: int = 3,
    batch_size: int | None = None,
    channels_last: bool | None = None,
    amp: bool | None = None,
    min_seconds: float = 0.0,
) -> dict[str, Any]:
    """Images/s of the real training step (`train.train_one_epoch`) on `batches` batches per trial.

    Model, optimizer, scheduler and augmentation are built by `train.training_setup`, as for `train.fit`. The indices
    repeat the given images as needed, so a few hundred images serve any number of batches.
    amp: bf16 autocast on/off; None decides as a training job would (`precision.choose_amp`).
    min_seconds: more trials until the timed ones add up to this (a few batches on this VM are
    noise: the cost prediction times each network for a while, see ferstudy/cost/).
    Returns a dict: img_per_s (best trial), img_per_s_median, img_per_s_mean (all timed images /
    all timed seconds), forward_flops, gflops, precision, ...
    """
    import torch

    from ..models import forward_flops
    from ..precision import choose_amp
    from ..train import train_one_epoch, training_setup

    set_threads(threads)
    device = torch.device("cpu")
    t = _training_settings(run_cfg, batch_size)
    bs = t["batch_size"]
    max_trials = trials + (MAX_EXTRA_TRIALS if min_seconds else 0)
    # as train.fit sets up, with a schedule as long as these batches; speed: any weights
    model, optimizer, scheduler, augmenter, aug_cfg, crop, channels_last = training_setup(
        {**run_cfg, "training": {**t, "epochs": 1}},
        device,
        warmup + max_trials * batches,
        weights=False,
        channels_last=channels_last,
    )
    flops = forward_flops(model, crop)
    reason = "given"
    if amp is None:
        amp, reason = choose_amp(t, device, model, crop)
    x = torch.from_numpy(images).unsqueeze(1)
    y = torch.from_numpy(labels)

    def run(n_batches, epoch):
        idx = torch.arange(n_batches * bs) % len(x)
        t0 = time.perf_counter()
        _, _, n = train_one_epoch(model, x, y, idx, augmenter, optimizer, scheduler, t, epoch, channels_last, amp)
        return n, time.perf_counter() - t0

    if warmup:
        run(warmup, 0)
    timed = [run(batches, e + 1) for e in range(trials)]
    while sum(dt for _, dt in timed) < min_seconds and len(timed) < max_trials:
        timed.append(run(batches, len(timed) + 1))
    rates = [n / dt for n, dt in timed]
    best = max(rates)
    return {
        "img_per_s": best,
        "img_per_s_median": statistics.median(rates),
        "img_per_s_mean": sum(n for n, _ in timed) / sum(dt for _, dt in timed),
        "forward_flops": flops,
        "gflops": 3 * flops * best / 1e9,
        "batch_size": bs,
        "batches": batches,
        "trials": len(timed),
        "channels_last": bool(channels_last),
        "augment": augmenter.enabled and aug_cfg,
        "precision": "bf16" if amp else "fp32",
        "precision_reason": reason,
        "amp": bool(amp),
        "model": model,
    }


def eval_throughput(
    model: nn.Module,
    images: np.ndarray,
    threads: int,
    crop: int,
    tta: str = "none",
    channels_last: bool = True,
    batch_size: int = 512,
    trials: int = 3,
    n_images: int | None = None,
    amp: bool = False,
) -> tuple[float, float]:
    """Source images/s of `train.predict` (evaluation crops, TTA views, softmax) over `images`."""
    import torch

    from ..train import predict

    set_threads(threads)
    x = torch.from_numpy(images).unsqueeze(1)
    n = n_images or len(x)
    idx = torch.arange(n) % len(x)
    model = model.eval()
    predict(model, x, idx[: min(n, batch_size)], crop, tta, channels_last, amp, batch_size)  # warm-up
    rates = []
    for _ in range(trials):
        t0 = time.perf_counter()
        predict(model, x, idx, crop, tta, channels_last, amp, batch_size)
        rates.append(n / (time.perf_counter() - t0))
    return max(rates), statistics.median(rates)


def train_records(
    out: Callable[[dict], dict],
    args: argparse.Namespace,
    cfg: dict,
    archs: Sequence[str],
    images: np.ndarray,
    labels: np.ndarray,
    threads: int,
    precisions: Sequence[str],
    matmul: dict[str, float],
    peak: dict[str, float | None],
) -> dict[str, float]:
    """Training throughput of each architecture in each precision (and memory layout asked for),
    then the thread scaling of one; returns {arch: fp32 img/s of the first layout}."""
    from ..config import resolve_arch

    project: dict[str, float] = {}
    by_setting: dict[str, list[bool | None]] = {"auto": [None], "on": [True], "off": [False], "both": [True, False]}
    layouts = by_setting[args.channels_last]
    for name in archs:
        run_cfg = resolve_arch(cfg, name)
        for cl in layouts:
            for precision in precisions:
                r = train_throughput(
                    run_cfg,
                    images,
                    labels,
                    threads,
                    args.batches,
                    args.warmup,
                    args.trials,
                    args.batch_size,
                    cl,
                    amp=precision == "bf16",
                )
                r.pop("model")
                if precision == "fp32":
                    project.setdefault(name, r["img_per_s"])
                out(_train_step_record(name, precision, r, matmul, peak))
    if threads > 1 and archs:  # thread scaling of the first architecture's training step (fp32)
        name = cfg["study"]["baseline"] if cfg["study"]["baseline"] in archs else archs[0]
        run_cfg = resolve_arch(cfg, name)
        one = train_throughput(
            run_cfg, images, labels, 1, args.batches, args.warmup, args.trials, args.batch_size, amp=False
        )["img_per_s"]
        out(
            {
                "name": "thread_scaling",
                "arch": name,
                "precision": "fp32",
                "img_per_s_1": one,
                "img_per_s_n": project[name],
                "speedup": project[name] / one,
                "units": {"speedup": f"img/s at {threads} threads / at 1 thread"},
                "context": {"batch_size": args.batch_size or run_cfg["training"]["batch_size"]},
            }
        )
    return project


def _train_step_record(name, precision, r, matmul, peak):
    """The `train_step` line of one architecture in one precision from `train_throughput`'s result `r`."""
    return {
        "name": "train_step",
        "arch": name,
        "precision": precision,
        "img_per_s": r["img_per_s"],
        "img_per_s_median": r["img_per_s_median"],
        "mflops_forward": r["forward_flops"] / 1e6,
        "gflops": r["gflops"],
        "fraction_of_matmul": _fraction(r["gflops"], matmul.get(precision)),
        "fraction_of_peak": _fraction(r["gflops"], peak.get(precision)),
        "units": {
            "img_per_s": "images/s, best trial",
            "mflops_forward": "MFLOP per image, forward",
            "gflops": "GFLOP/s achieved; " + FLOPS_CONVENTION,
            "fraction_of_matmul": f"gflops / matmul gflops in {precision}",
            "fraction_of_peak": f"gflops / cpu_peak gflops_{precision} (theoretical)",
        },
        "context": {
            "batch_size": r["batch_size"],
            "batches": r["batches"],
            "trials": r["trials"],
            "channels_last": r["channels_last"],
            "augment": r["augment"],
            "autocast": f"bf16 autocast {'on' if r['amp'] else 'off'}",
            "loop": "ferstudy.train.train_one_epoch",
        },
    }


def inference_records(cfg: dict, args: argparse.Namespace, images: np.ndarray, threads: int) -> list[dict]:
    import numpy as np
    import torch

    from ..checkpoint import load_model
    from ..config import resolve_arch
    from ..models import build_model
    from ..train import predict, use_channels_last

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
    rate, median = eval_throughput(
        model,
        images,
        threads,
        crop,
        "none",
        channels_last,
        batch_size=256,
        trials=args.trials,
        n_images=max(1024, 256 * 4),
    )
    x = torch.from_numpy(images).unsqueeze(1)
    one = torch.zeros(1, dtype=torch.long)
    lat = []
    for i in range(args.latency_reps + 5):
        one[0] = i % len(x)
        t0 = time.perf_counter()
        predict(model, x, one, crop, "none", channels_last, False, 1)
        lat.append(time.perf_counter() - t0)
    lat_ms = np.array(lat[5:]) * 1000
    ctx = {"model": source, "tta": "none", "channels_last": channels_last, "loop": "ferstudy.train.predict"}
    return [
        {
            "name": "inference",
            "img_per_s": rate,
            "img_per_s_median": median,
            "units": {"img_per_s": "images/s in batches of 256, best trial"},
            "context": {**ctx, "batch_size": 256, "trials": args.trials},
        },
        {
            "name": "latency",
            "ms_median": float(np.median(lat_ms)),
            "ms_p90": float(np.percentile(lat_ms, 90)),
            "reps": args.latency_reps,
            "units": {"ms_median": "ms per single image (median)", "ms_p90": "ms"},
            "context": {**ctx, "batch_size": 1},
        },
    ]
