"""Resource requests of the jobs (memory, runtime, GPU) estimated from the config alone.

Every rule declares threads and resources, so the Slurm profile needs no numbers per rule; the
rules in workflow/rules/*.smk call these functions through thin wrappers in common.smk. Unlike
`ferstudy predict-cost` (which measures this machine), nothing here runs a network: dry runs and
cluster submission stay fast and torch-free. Sizes (images per fold, subsampling, epochs) come
from the same workload functions as the prediction (ferstudy/cost/workload.py).

runtime = start-up + (epochs x training images + evaluations x held-out images) x seconds per
image, x a safety factor (evaluations: every `eval_every` epochs and after the last);
seconds per image come from the architecture's FLOPs and a throughput estimate (measured here: a
2-core CPU trains the demo CNNs at 10-37 GFLOP/s per thread, counting 3x the forward FLOPs; an
H200 trains the full vgg_deep at ~15,000 images/s, ~27 TFLOP/s in bf16).
memory = interpreter + images + model state + activations of a batch, x a safety factor.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .config import resolve_arch
from .cost.workload import cv_workload, data_counts, final_workload

if TYPE_CHECKING:
    from pathlib import Path

TTA_VIEWS = {"none": 1, "flip": 2, "tencrop": 10}  # images predicted per face (augment.eval_views)

CSV_KB_PER_IMAGE = 8.4  # one FER2013 CSV row (2304 pixels as text)
CPU_FLOPS_PER_THREAD = 20e9  # training FLOP/s of one CPU thread (measured 10-37e9)
CPU_SECONDS_PER_IMAGE = 1e-3  # augmentation, batching, optimizer step
GPU_FLOPS = 4e12  # one GPU, conservative for older cards and small networks
GPU_SECONDS_PER_IMAGE = 2e-5
STARTUP_SECONDS = 60  # process + torch start-up inside the job, data loading
RUNTIME_SAFETY = 3
MEMORY_SAFETY = 1.5

# Backbones at 44x44, measured once with torch: forward FLOPs, activation values (all layers,
# largest layer), parameters. FLOPs and activations scale with the image area.
BACKBONE_COST = {"resnet18": (2.19e9, 3.54e6, 123904, 11.17e6), "vgg11_bn": (5.02e8, 8.88e5, 123904, 9.23e6)}


def arch_cost(run_cfg: dict[str, Any]) -> tuple[float, float, float, float]:
    """Per image: forward FLOPs, activation values (all layers, largest layer), parameters."""
    from .spec import plan_layers

    spec, crop = run_cfg["model"], run_cfg["training"]["augment"].get("crop", 48)
    if "backbone" in spec:
        flops, acts, peak, params = BACKBONE_COST[spec["backbone"]]
        area = (crop / 44) ** 2
        return flops * area, acts * area, peak * area, params
    flops = params = 0
    sizes = []
    for p in plan_layers(spec["layers"], 1, crop):
        sizes.append(math.prod(p.shape))
        if p.kind == "conv":
            fan_in = p.args["in_channels"] * p.args["kernel_size"] ** 2
            flops += 2 * fan_in * sizes[-1]
            params += (fan_in + p.args["bias"]) * p.args["out_channels"]
        elif p.kind == "fc":
            flops += 2 * p.args["in_features"] * p.args["out_features"]
            params += (p.args["in_features"] + 1) * p.args["out_features"]
        elif p.kind == "batchnorm":
            params += 2 * p.args["num_features"]
    flops += 2 * sizes[-1] * 7  # the 7-way output layer the builder appends
    params += (sizes[-1] + 1) * 7
    return flops, sum(sizes) + 7, max(sizes), params


def uses_gpu(run_cfg: dict[str, Any]) -> bool:
    """The user's config asks for a GPU (training.device: cuda)."""
    return run_cfg["training"].get("device") == "cuda"


def seconds_per_image(run_cfg: dict[str, Any], threads: int) -> tuple[float, float]:
    """(training, evaluation) seconds per image, evaluation with all its TTA views."""
    flops = arch_cost(run_cfg)[0]
    t = run_cfg["training"]
    if uses_gpu(run_cfg):
        rate, overhead = GPU_FLOPS, GPU_SECONDS_PER_IMAGE
    else:
        rate, overhead = CPU_FLOPS_PER_THREAD * threads, CPU_SECONDS_PER_IMAGE
    views = TTA_VIEWS.get(t.get("tta", "none"), 10)
    return 3 * flops / rate + overhead, views * (flops / rate + overhead / 3)


def job_mem_mb(run_cfg: dict[str, Any], n_images: float) -> float:
    """Host memory (MB) of a job that holds n_images and trains (or predicts with) one network."""
    _, acts, peak, params = arch_cost(run_cfg)
    t, gpu = run_cfg["training"], uses_gpu(run_cfg)
    views = TTA_VIEWS.get(t.get("tta", "none"), 10)
    images = n_images * 48 * 48 * 2  # uint8 images, held twice while loading
    state = params * 4 * 6  # weights, gradients, momentum, checkpoint and best copies
    batch = 0 if gpu else t["batch_size"] * acts * 4 * 3  # forward values, gradients, augmentation
    evaluation = 0 if gpu else 512 * views * peak * 4 * 2  # inference: a layer's input and output
    base = 3000 if gpu else 1000  # interpreter + torch (+ CUDA libraries)
    return base + MEMORY_SAFETY * (images + state + batch + evaluation) / 2**20


def train_estimate(cfg: dict[str, Any], arch: str, final: bool = False, threads: int = 1) -> tuple[int, float]:
    """(runtime minutes, mem_mb) of one training job (the slowest fold), before retries."""
    run_cfg = resolve_arch(cfg, arch, final=final)
    counts, _ = data_counts(cfg)
    train_s, eval_s = seconds_per_image(run_cfg, threads)
    if final:  # all of Training; PublicTest every `eval_every` epochs; PublicTest + PrivateTest at the end
        w = final_workload(run_cfg, counts)
        seconds = (
            w["epochs"] * w["n_train"] * train_s
            + w["evaluations"] * w["n_public"] * eval_s
            + (w["n_public"] + w["n_private"]) * eval_s
        )
    else:  # k-1 folds; the held-out fold every `eval_every` epochs
        w = cv_workload(run_cfg, counts, cfg["data"]["folds"])
        seconds = max(
            w["epochs"] * (j["n_train"] * train_s + w["curve_images"] * eval_s)  # curve: TTA-free, bounded
            + w["evaluations"] * j["n_val"] * eval_s
            for j in w["jobs"]
        )
    n_images = sum(sum(v) for v in counts.values())
    return math.ceil(RUNTIME_SAFETY * (STARTUP_SECONDS + seconds) / 60), job_mem_mb(run_cfg, n_images)


def csv_mb(cfg: dict[str, Any], path: Path | str) -> float:
    """Size (MB) of a FER2013-format CSV (.gz unpacks ~3.5x); the demo's from its image count."""
    if path == cfg["dataset"]["csv"] and cfg["dataset"]["name"] == "demo":
        return cfg["data"]["demo_images"] * CSV_KB_PER_IMAGE / 1024
    size = os.path.getsize(path) / 2**20 if os.path.exists(path) else 300
    return size * 3.5 if str(path).endswith(".gz") else size


def prepare_estimate(cfg: dict[str, Any]) -> tuple[int, float]:
    """(runtime minutes, mem_mb) of `prepare`: ~5 MB/s parsed and checked."""
    size = csv_mb(cfg, cfg["dataset"]["csv"])
    return 5 + math.ceil(RUNTIME_SAFETY * size / 5 / 60), 1000 + 4 * size


def on_cpu(run_cfg: dict[str, Any]) -> dict[str, Any]:
    """The run config as a CPU job runs it (`ferstudy predict` predicts on the CPU)."""
    return {**run_cfg, "training": {**run_cfg["training"], "device": "cpu"}}


def predict_extra_estimate(cfg: dict[str, Any], archs: Iterable[str], path: Path | str) -> tuple[int, float]:
    """(runtime minutes, mem_mb) of predicting an extra test set with the final model, on one CPU
    thread: `ferstudy predict` runs on the CPU whatever device trained the model."""
    size = csv_mb(cfg, path)
    n = size * 1024 / CSV_KB_PER_IMAGE
    runs = [on_cpu(resolve_arch(cfg, a, final=True)) for a in archs]
    seconds = STARTUP_SECONDS + n * max(seconds_per_image(r, 1)[1] for r in runs)
    return math.ceil(RUNTIME_SAFETY * seconds / 60), 4 * size + max(job_mem_mb(r, n) for r in runs)
