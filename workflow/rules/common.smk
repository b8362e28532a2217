# Shared helpers: the resolved study config, target lists and wildcard constraints.
import os
import sys

import yaml

from ferstudy.config import resolve_config, resolve_arch
from ferstudy.errors import UserError

try:
    STUDY = resolve_config(config, source="config (config.yaml and --configfile/--config)")
except UserError as err:
    raise WorkflowError(str(err)) from None

DATASET = STUDY["dataset"]["name"]
ARCHS = STUDY["study"]["architectures"]
FOLDS = list(range(STUDY["data"]["folds"]))
# Extra test sets (FER2013-format CSVs) are evaluated with the final model only.
EXTRA_TEST_SETS = STUDY["data"].get("extra_test_sets") or {}
R = "results"
# Rules call the package's CLI (`ferstudy ...`); put the interpreter's bin directory first on PATH
# so that `.venv/bin/snakemake` finds the venv's `ferstudy` without an activated venv.
envvars:
    "PATH",


os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")


wildcard_constraints:
    arch="|".join(ARCHS),
    fold=r"\d+",


def announce_dataset():
    if DATASET == "demo":
        logger.warning(
            "\n" + "=" * 78 + "\nDEMO DATA: no data/fer2013.csv found, so this study runs on the built-in "
            "synthetic faces\n(preset %r). Its numbers say nothing about real faces. Download FER2013 as the "
            "README\nsays and put it at data/fer2013.csv to run the real study.\n" % STUDY["preset"] + "=" * 78
        )
    else:
        logger.info(f"Dataset: {STUDY['dataset']['csv']} (preset {STUDY['preset']!r})")


def announce_cost(log):
    """First lines of the study's log: the jobs to do and the predicted wall time (ferstudy/cost.py).
    Local runs only: on a cluster the submitting host's speed predicts nothing."""
    if not STUDY["study"].get("predict_cost", True) or not workflow.local_exec:
        return
    from collections import Counter

    from ferstudy.cost import in_study_prediction

    jobs = dict(Counter(job.rule.name for job in workflow.dag.jobs))
    to_run = sum(1 for _ in workflow.dag.needrun_jobs())
    started = workflow.start_time.timestamp() if hasattr(workflow, "start_time") else None
    for line in in_study_prediction(config, STUDY, workflow.cores, jobs, to_run, results=R,
                                    started_at=started, snakemake_log=log):
        logger.info(line)


def write_yaml(path, obj):
    from ferstudy.io import write_text

    write_text(path, yaml.safe_dump(obj, sort_keys=False))


def data_targets():
    return [f"{R}/data/dataset.h5", f"{R}/data/summary.csv", f"{R}/data/summary.md", f"{R}/data/faces.png"]


FIGURE_NAMES = [
    "training_curves",
    "cv_accuracy",
    "accuracy_vs_compute",
    "confusion_cv",
    "confusion_final",
    "final_history",
    "filters_layer1",
    "filters_deeper",
    "activations",
    "channel_emotion",
    "saliency",
    "examples",
]


def figure_targets():
    return [f"{R}/figures/{name}.png" for name in FIGURE_NAMES]


def all_targets():
    return data_targets() + [
        f"{R}/tables/cv_summary.csv",
        f"{R}/final/selection.json",
        f"{R}/final/metrics.json",
        *figure_targets(),
        f"{R}/report/report.md",
    ]


# ---------------------------------------------------------------- resources (local and cluster)
# Every rule declares threads and resources (mem_mb, runtime in minutes), so the Slurm profile
# (profiles/slurm) needs no numbers per rule. Training jobs are sized from the preset in use -
# runtime = start-up + epochs x (training + held-out images) x seconds per image, x a safety
# factor; seconds per image come from the architecture's FLOPs and a throughput estimate
# (measured here: a 2-core CPU trains the demo CNNs at 10-37 GFLOP/s per thread, counting 3x the
# forward FLOPs; an H200 trains the full vgg_deep at ~15,000 images/s, ~27 TFLOP/s in bf16).
# Memory = interpreter + images + model state + activations of a batch, x a safety factor.
# Training asks for a GPU (resource `gpu`, `sbatch --gpus=1` under Slurm) when the config says
# `training: {device: cuda}`. A retried job (`retries:` in the profile) gets `attempt` x runtime
# and memory and resumes from its per-epoch checkpoint. Override any value:
# --set-resources train_fold:runtime=600 train_fold:mem_mb=8000 --set-threads train_final=8.
import functools
import math
import os

FER2013_SPLIT_SIZES = (28709, 3589, 3589)  # Training, PublicTest, PrivateTest
CSV_KB_PER_IMAGE = 8.4  # one FER2013 CSV row (2304 pixels as text)
CPU_FLOPS_PER_THREAD = 20e9  # training FLOP/s of one CPU thread (measured 10-37e9)
CPU_SECONDS_PER_IMAGE = 1e-3  # augmentation, batching, optimizer step
GPU_FLOPS = 4e12  # one GPU, conservative for older cards and small networks
GPU_SECONDS_PER_IMAGE = 2e-5
STARTUP_SECONDS = 60  # Snakemake + torch start-up inside the job, data loading
RUNTIME_SAFETY = 3
MEMORY_SAFETY = 1.5
TTA_VIEWS = {"none": 1, "flip": 2, "tencrop": 10}
CLUSTER_FINAL_THREADS = 4  # threads of train_final on a cluster (locally: every core given)


def split_sizes():
    """(Training, PublicTest, PrivateTest) image counts: the demo's from its size, else FER2013's."""
    if DATASET == "demo":
        n = STUDY["data"]["demo_images"]
        return (n - 2 * round(0.1 * n), round(0.1 * n), round(0.1 * n))
    return FER2013_SPLIT_SIZES


# Backbones at 44x44, measured once with torch: forward FLOPs, activation values (all layers,
# largest layer), parameters. FLOPs and activations scale with the image area.
BACKBONE_COST = {"resnet18": (2.19e9, 3.54e6, 123904, 11.17e6), "vgg11_bn": (5.02e8, 8.88e5, 123904, 9.23e6)}


@functools.lru_cache(maxsize=None)
def arch_cost(arch, final=False):
    """Per image: forward FLOPs, activation values (all layers, largest layer), parameters; and
    the training settings. From the layer plan, without torch (dry runs stay torch-free)."""
    from ferstudy.spec import plan_layers

    run_cfg = resolve_arch(STUDY, arch, final=final)
    t, spec = run_cfg["training"], run_cfg["model"]
    crop = t["augment"].get("crop", 48)
    if "backbone" in spec:
        flops, acts, peak, params = BACKBONE_COST[spec["backbone"]]
        area = (crop / 44) ** 2
        return flops * area, acts * area, peak * area, params, t
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
    return flops, sum(sizes) + 7, max(sizes), params, t


def final_archs():
    return [STUDY["final"]["architecture"]] if STUDY["final"].get("architecture") else ARCHS


def uses_gpu(arch, final=False):
    """The user's config asks for a GPU (training.device: cuda) for this architecture."""
    return arch_cost(arch, final)[-1].get("device") == "cuda"


def seconds_per_image(arch, final, threads):
    """(training, evaluation) seconds per image, evaluation with all its TTA views."""
    flops, _, _, _, t = arch_cost(arch, final)
    if t.get("device") == "cuda":
        rate, overhead = GPU_FLOPS, GPU_SECONDS_PER_IMAGE
    else:
        rate, overhead = CPU_FLOPS_PER_THREAD * threads, CPU_SECONDS_PER_IMAGE
    views = TTA_VIEWS.get(t.get("tta", "none"), 10)
    return 3 * flops / rate + overhead, views * (flops / rate + overhead / 3)


def job_mem_mb(arch, final, n_images):
    """Host memory of a job that holds n_images and trains (or predicts with) one network."""
    _, acts, peak, params, t = arch_cost(arch, final)
    gpu = t.get("device") == "cuda"
    views = TTA_VIEWS.get(t.get("tta", "none"), 10)
    images = n_images * 48 * 48 * 2  # uint8 images, held twice while loading
    state = params * 4 * 6  # weights, gradients, momentum, checkpoint and best copies
    batch = 0 if gpu else t["batch_size"] * acts * 4 * 3  # forward values, gradients, augmentation
    evaluation = 0 if gpu else 512 * views * peak * 4 * 2  # inference: a layer's input and output
    base = 3000 if gpu else 1000  # interpreter + torch (+ CUDA libraries)
    return base + MEMORY_SAFETY * (images + state + batch + evaluation) / 2**20


def train_estimate(arch, final=False, threads=1):
    """(runtime minutes, mem_mb) of one training job, before the retry multiplier."""
    t = arch_cost(arch, final)[-1]
    n_train, n_public, n_private = split_sizes()
    k = STUDY["data"]["folds"]
    sub = t.get("subsample", 1.0)
    if final:  # all of Training; PublicTest every epoch; PublicTest + PrivateTest at the end
        fit_n, val_n, end_n = n_train * sub, n_public, n_public + n_private
    else:  # k-1 folds; the held-out fold every epoch
        fit_n, val_n, end_n = n_train * (k - 1) / k * sub, n_train / k, 0
    train_s, eval_s = seconds_per_image(arch, final, threads)
    seconds = STARTUP_SECONDS + t["epochs"] * (fit_n * train_s + val_n * eval_s) + end_n * eval_s
    return math.ceil(RUNTIME_SAFETY * seconds / 60), job_mem_mb(arch, final, sum(split_sizes()))


def mb(value):
    return int(math.ceil(value / 256) * 256)


def train_fold_runtime(wildcards, threads, attempt):
    return attempt * train_estimate(wildcards.arch, threads=threads)[0]


def train_fold_mem_mb(wildcards, threads, attempt):
    return mb(attempt * train_estimate(wildcards.arch, threads=threads)[1])


def train_fold_gpu(wildcards):
    return int(uses_gpu(wildcards.arch))


def train_final_runtime(wildcards, threads, attempt):
    # The architecture is chosen by cross-validation later: size for the most expensive one.
    return attempt * max(train_estimate(a, final=True, threads=threads)[0] for a in final_archs())


def train_final_mem_mb(wildcards, threads, attempt):
    return mb(attempt * max(train_estimate(a, final=True, threads=threads)[1] for a in final_archs()))


def train_final_gpu(wildcards):
    return int(any(uses_gpu(a, final=True) for a in final_archs()))


def train_final_threads(wildcards):
    """Every core of a local run (--cores N); CLUSTER_FINAL_THREADS for a cluster job."""
    if workflow.non_local_exec or workflow.remote_exec:
        return CLUSTER_FINAL_THREADS
    return workflow.cores


def csv_mb(path):
    """Size of a FER2013-format CSV (.gz unpacks ~3.5x); the demo's from its image count."""
    if path == STUDY["dataset"]["csv"] and DATASET == "demo":
        return STUDY["data"]["demo_images"] * CSV_KB_PER_IMAGE / 1024
    size = os.path.getsize(path) / 2**20 if os.path.exists(path) else 300
    return size * 3.5 if str(path).endswith(".gz") else size


def prepare_mem_mb(wildcards, attempt):
    return mb(attempt * (1000 + 4 * csv_mb(STUDY["dataset"]["csv"])))


def prepare_runtime(wildcards, attempt):
    # ~5 MB/s parsed and checked, x the safety factor
    return attempt * (5 + math.ceil(RUNTIME_SAFETY * csv_mb(STUDY["dataset"]["csv"]) / 5 / 60))


def extra_images(wildcards):
    return csv_mb(EXTRA_TEST_SETS[wildcards.name]) * 1024 / CSV_KB_PER_IMAGE


def predict_extra_runtime(wildcards, attempt):
    n = extra_images(wildcards)
    seconds = STARTUP_SECONDS + n * max(seconds_per_image(a, True, 1)[1] for a in final_archs())
    return attempt * math.ceil(RUNTIME_SAFETY * seconds / 60)


def predict_extra_mem_mb(wildcards, attempt):
    n = extra_images(wildcards)
    return mb(attempt * (4 * csv_mb(EXTRA_TEST_SETS[wildcards.name]) + max(job_mem_mb(a, True, n) for a in final_archs())))
