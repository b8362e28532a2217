"""The one training loop: cross-validation folds, the final model and the benchmark all use it.

`fit()` trains a model from a run config (see `config.resolve_arch`) on given indices of the
prepared data and evaluates on others every `eval_every` epochs and after the last. A checkpoint
dict {model, optimizer, scheduler, epoch, history, best, config} is written atomically after
every epoch, so a killed job started again resumes where it stopped and ends with the same
weights as an uninterrupted run: all randomness of epoch e comes from generators seeded with
(seed, e), not from state carried across epochs.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from . import CLASS_NAMES
from .augment import Augmenter, eval_views
from .config import config_hash, cpu_name, evaluation_epochs
from .errors import UserError
from .io import atomic_path
from .models import build_model

if TYPE_CHECKING:
    from torch.optim.lr_scheduler import LRScheduler

    from .data import FerData

log = logging.getLogger("ferstudy.train")
HISTORY_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "curve_train_acc",
                   "curve_val_acc", "seconds", "images_per_s"]


# ---------------------------------------------------------------- set-up

def pick_device(training: dict) -> torch.device:
    want = training.get("device", "auto")
    if want == "cuda" and not torch.cuda.is_available():
        raise UserError("config key training.device: cuda requested but torch sees no CUDA device")
    return torch.device("cuda" if want in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


def setup_torch(device: torch.device, threads: int) -> None:
    if device.type == "cpu":
        # CPU kernels used here are deterministic without torch's deterministic mode, which would
        # fill every new tensor (8-20% of a step) and import the compiler stack (tested bit-for-bit).
        torch.set_num_threads(max(1, int(threads)))
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def use_channels_last(training: dict, device: torch.device) -> bool:
    setting = training.get("channels_last", "auto")
    return bool(setting) if setting != "auto" else True  # measured faster for these convnets on CPU and GPU


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


def choose_amp(training: dict, device: torch.device, model: torch.nn.Module, crop: int,
               probe: Callable[[torch.nn.Module, dict, int], tuple[float, float]] | None = None) -> tuple[bool, str]:
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


def shared_choose_amp(memo_dir: Path | str | None, run_cfg: dict, device: torch.device, model: torch.nn.Module,
                      crop: int, threads: int) -> tuple[bool, str]:
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


def time_precisions(model: torch.nn.Module, training: dict, crop: int, steps: int = 4,
                    warmup: int = 2) -> tuple[float, float]:
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


class TrainingSetup(NamedTuple):
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    augmenter: Augmenter
    augment: dict  # the augmentation settings the augmenter was built from (without `enabled`)
    crop: int
    channels_last: bool


def training_setup(run_cfg: dict, device: torch.device, steps_per_epoch: int, weights: bool = True,
                   channels_last: bool | None = None, init_seed: int | None = None) -> TrainingSetup:
    """Model, optimizer, scheduler and augmentation of a training run, built one way for `fit` and
    the benchmark's training step (`bench.training.train_throughput`). weights=False: no pretrained
    weights are loaded (speed measurements); channels_last None: as the config says; init_seed
    seeds the initial weights (None: training.seed)."""
    t = run_cfg["training"]
    if channels_last is None:
        channels_last = use_channels_last(t, device)
    aug_cfg = {k: v for k, v in t["augment"].items() if k != "enabled"}
    augmenter = Augmenter(aug_cfg, enabled=t["augment"].get("enabled", True))
    crop = aug_cfg.get("crop", 48)
    torch.manual_seed(int(t["seed"] if init_seed is None else init_seed))
    model = build_model(run_cfg["model"], input_size=crop, weights=weights).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, t)
    scheduler = make_scheduler(optimizer, t, steps_per_epoch)
    return TrainingSetup(model, optimizer, scheduler, augmenter, aug_cfg, crop, channels_last)


def make_optimizer(model: torch.nn.Module, t: dict) -> torch.optim.Optimizer:
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for p in model.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)  # no weight decay on batch-norm and biases
    groups = [{"params": decay, "weight_decay": t["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    if t["optimizer"] == "adamw":
        return torch.optim.AdamW(groups, lr=t["lr"])
    return torch.optim.SGD(groups, lr=t["lr"], momentum=t.get("momentum", 0.9), nesterov=True)


def make_scheduler(optimizer: torch.optim.Optimizer, t: dict, steps_per_epoch: int) -> LRScheduler:
    """Per-step schedulers (onecycle, cosine, constant) or per-epoch reduce-on-plateau."""
    total = t["epochs"] * steps_per_epoch
    warmup = int(t.get("warmup_fraction", 0.2) * total)
    kind = t["schedule"]
    if kind == "onecycle" and total >= 4:
        # At least one step in each phase (OneCycleLR divides by the phase lengths).
        pct = min(max(t.get("warmup_fraction", 0.2), 1.5 / total), 1 - 2.5 / total)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=t["lr"], total_steps=total, pct_start=pct)
    if kind == "cosine":
        def factor(step):
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if kind == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=2)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def subsample(indices: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A stratified, seeded subset of training indices (for CPU budgets)."""
    if fraction >= 1.0:
        return indices
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(indices[labels[indices] == c])[: max(1, round(fraction * (labels[indices] == c).sum()))]
            for c in range(len(CLASS_NAMES)) if (labels[indices] == c).any()]
    return np.sort(np.concatenate(keep))


def epoch_generator(device: torch.device | str, seed: int, epoch: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed * 1_000_003 + epoch)
    return g


# ---------------------------------------------------------------- one epoch, evaluation

def train_one_epoch(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor,
                    augmenter: Augmenter, optimizer: torch.optim.Optimizer, scheduler: LRScheduler, t: dict,
                    epoch: int, channels_last: bool, amp: bool, seed: int | None = None) -> tuple[float, float, int]:
    """One pass over `idx` (a device tensor of indices into `images`) in shuffled batches; the
    shuffling, augmentation and dropout come from `seed` (default `t["seed"]`) and `epoch`."""
    model.train()
    device = images.device
    seed = t["seed"] if seed is None else seed
    g = epoch_generator(device, seed, epoch)
    torch.manual_seed(seed * 7919 + epoch)  # dropout draws from the global generator
    order = idx[torch.randperm(len(idx), generator=g, device=device)]
    bs = min(t["batch_size"], len(order))
    steps = len(order) // bs  # drop the ragged last batch: batch norm dislikes tiny batches
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    per_step = not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    for s in range(steps):
        batch = order[s * bs:(s + 1) * bs]
        x = augmenter(images[batch], g)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = labels[batch]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=t["label_smoothing"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if per_step:
            scheduler.step()
        loss_sum += loss.detach() * len(batch)
        correct += (logits.argmax(1) == y).sum()
    n = steps * bs
    return loss_sum.item() / n, correct.item() / n, n


@torch.inference_mode()
def predict(model: torch.nn.Module, images: torch.Tensor, idx: torch.Tensor, crop: int, tta: str = "none",
            channels_last: bool = True, amp: bool = False, batch_size: int = 512) -> np.ndarray:
    """Softmax probabilities (len(idx), 7) on numpy, averaged over the TTA views."""
    model.eval()
    out = []
    for s in range(0, len(idx), batch_size):
        views = eval_views(images[idx[s:s + batch_size]], crop, tta)  # (V, B, 1, crop, crop)
        v, b = views.shape[:2]
        x = views.reshape(v * b, *views.shape[2:])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp):
            probs = model(x).float().softmax(1)
        out.append(probs.reshape(v, b, -1).mean(0))
    return torch.cat(out).cpu().numpy().astype(np.float64)


def probs_loss_acc(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    p = probs[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(p, 1e-12, None)).mean()), float((probs.argmax(1) == labels).mean())


# ---------------------------------------------------------------- the loop

def fit(run_cfg: dict, data: FerData, train_idx: np.ndarray, val_idx: np.ndarray, checkpoint_path: Path | str,
        threads: int = 1, select_best: bool = False, progress: Callable[[str], Any] = log.info,
        precision_memo: Path | str | None = None, init_seed: int | None = None) -> tuple[torch.nn.Module, dict]:
    """Train with resume. Returns (model, history rows, best-or-last state info).

    init_seed: seeds the initial weights and every epoch's shuffling, augmentation and dropout
    (default `training.seed`). Cross-validation passes seed + fold (`cli.cmd_train`), so the fold
    spread samples initialisation noise too; which faces are trained on (`training.subsample`) and
    the learning-curve subsets stay on `training.seed`.

    select_best: keep the weights of the epoch with the best validation accuracy (the final model
    chooses its checkpoint on PublicTest); otherwise the last epoch's weights are the result
    (cross-validation folds: choosing on the held-out fold would bias its score).
    precision_memo: a directory shared by the jobs that must train in one precision (`amp: auto`'s
    measurement is made once for them: `shared_choose_amp`); None measures for this job alone.
    """
    t = run_cfg["training"]
    device = pick_device(t)
    setup_torch(device, threads)
    init_seed = int(t["seed"] if init_seed is None else init_seed)
    train_idx = subsample(np.asarray(train_idx), data.labels, t.get("subsample", 1.0), t["seed"])
    images = torch.from_numpy(data.images).unsqueeze(1).to(device)  # uint8 in memory, read once
    labels = torch.from_numpy(data.labels.astype(np.int64)).to(device)
    train_t = torch.from_numpy(train_idx).to(device)
    val_np = np.asarray(val_idx)
    steps = max(1, len(train_idx) // min(t["batch_size"], len(train_idx)))
    model, optimizer, scheduler, augmenter, _, crop, channels_last = training_setup(
        run_cfg, device, steps, init_seed=init_seed)

    fingerprint = run_fingerprint(run_cfg, data, train_idx, val_np, init_seed)
    checkpoint_path = Path(checkpoint_path)
    state = resume_state(checkpoint_path, fingerprint, model, optimizer, scheduler, device, progress)
    if "amp" not in state:  # a resumed run keeps the precision it started with
        state["amp"], state["precision_reason"] = shared_choose_amp(precision_memo, run_cfg, device, model, crop,
                                                                    threads)
    amp = state["amp"]
    progress(f"precision {'bf16 autocast' if amp else 'fp32'} ({state['precision_reason']})")

    val_labels = data.labels[val_np]
    eval_epochs = evaluation_epochs(t)
    curve = learning_curve_sets(t, data.labels, train_idx, val_np, device)
    probs = None
    for epoch in range(state["epoch"] + 1, t["epochs"] + 1):
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        train_loss, train_acc, n = train_one_epoch(model, images, labels, train_t, augmenter, optimizer,
                                                   scheduler, t, epoch, channels_last, amp, init_seed)
        train_seconds = time.perf_counter() - t0
        probs, val_loss, val_acc = None, math.nan, math.nan
        if epoch in eval_epochs:
            probs = predict(model, images, torch.from_numpy(val_np).to(device), crop, t.get("tta", "none"),
                            channels_last, amp)
            val_loss, val_acc = probs_loss_acc(probs, val_labels)
        curve_train_acc, curve_val_acc = curve_accuracies(model, images, labels, curve, crop, channels_last, amp)
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            # Only the final model may let its validation set (PublicTest) steer the schedule; a
            # cross-validation fold steps on its training loss, or the held-out fold would leak in.
            if not select_best:
                scheduler.step(train_loss)
            elif probs is not None:
                scheduler.step(val_loss)
        seconds = time.perf_counter() - t0
        state["history"].append({"epoch": epoch, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
                                 "val_loss": val_loss, "val_acc": val_acc, "curve_train_acc": curve_train_acc,
                                 "curve_val_acc": curve_val_acc, "seconds": seconds,
                                 "images_per_s": n / train_seconds})
        if select_best and probs is not None and (state["best"] is None or val_acc > state["best"]["val_acc"]):
            state["best"] = {"epoch": epoch, "val_acc": val_acc,
                             "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
        state["epoch"] = epoch
        save_checkpoint(checkpoint_path, model, optimizer, scheduler, state, run_cfg, fingerprint)
        eta = (t["epochs"] - epoch) * np.mean([h["seconds"] for h in state["history"][-3:]])
        progress(f"epoch {epoch}/{t['epochs']} lr {lr:.4f} train loss {train_loss:.3f} acc {train_acc:.3f} | "
                 + (f"val loss {val_loss:.3f} acc {val_acc:.3f} | " if probs is not None else "val not evaluated | ")
                 + f"{n / train_seconds:.0f} img/s | "
                 f"{seconds:.1f} s/epoch, ~{eta:.0f} s left")
    if select_best and state["best"] is not None:
        model.load_state_dict(state["best"]["model"])
    elif probs is not None:
        state["val_probs"] = probs  # the last epoch's validation predictions: callers need not predict again
    return model, state


def run_fingerprint(run_cfg: dict, data: FerData, train_idx: np.ndarray, val_idx: np.ndarray,
                    init_seed: int | None = None) -> str:
    """What a checkpoint must match to be resumed: the run config, the exact images, the seed the
    run started from, the code version."""
    import hashlib

    from . import __version__

    indices = hashlib.sha256(np.asarray(train_idx).astype(np.int64).tobytes() + b"|"
                             + np.asarray(val_idx).astype(np.int64).tobytes())
    return config_hash({"run": run_cfg, "indices": indices.hexdigest(), "version": __version__,
                        "data": data.attrs.get("source_sha256"), "init_seed": init_seed})


def resume_state(checkpoint_path: Path, fingerprint: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: LRScheduler, device: torch.device | str, progress: Callable[[str], Any]) -> dict:
    """The training state to go on from: the checkpoint's (loaded into model, optimizer and
    scheduler) when it belongs to this run, else a fresh one."""
    if checkpoint_path.is_file():
        ckpt = load_torch_file(checkpoint_path, "checkpoint", device)
        if ckpt.get("fingerprint") == fingerprint:
            try:
                model.load_state_dict(ckpt["model"])
                optimizer.load_state_dict(ckpt["optimizer"])
                scheduler.load_state_dict(ckpt["scheduler"])
                state = {k: ckpt[k] for k in ("epoch", "history", "best", "amp", "precision_reason")}
            except (RuntimeError, KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
                raise UserError(f"{checkpoint_path}: a checkpoint of this run whose contents do not fit it "
                                f"({(str(err).splitlines() or [type(err).__name__])[0][:160]}); delete it and run "
                                f"the job again (it trains from the start)") from None
            progress(f"resuming from {checkpoint_path} after epoch {ckpt['epoch']}")
            return state
        progress(f"ignoring {checkpoint_path}: it belongs to another configuration")
    return {"epoch": 0, "history": [], "best": None}


def learning_curve_sets(t: dict, labels: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray,
                        device: torch.device | str) -> list[torch.Tensor] | None:
    """Fixed stratified subsets (`training.curve_images` each, 0: none) of the images trained on and
    of the held-out ones, predicted after every epoch without augmentation: a cheap learning curve
    and the train-vs-held-out gap (over- or under-fitting) along it."""
    n = int(t.get("curve_images", 0))
    if n <= 0:
        return None
    pick = [subsample(idx, labels, min(1.0, n / len(idx)), t["seed"] + 1) for idx in (train_idx, val_idx)]
    return [torch.from_numpy(idx).to(device) for idx in pick]


def curve_accuracies(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                     curve: list[torch.Tensor] | None, crop: int, channels_last: bool, amp: bool) -> tuple[float, ...]:
    if curve is None:
        return math.nan, math.nan
    accs = []
    for idx in curve:
        probs = predict(model, images, idx, crop, "none", channels_last, amp)
        accs.append(float((probs.argmax(1) == labels[idx].cpu().numpy()).mean()))
    return tuple(accs)


def save_checkpoint(path: Path | str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: LRScheduler,
                    state: dict, run_cfg: dict, fingerprint: str) -> None:
    ckpt = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "epoch": state["epoch"], "history": state["history"], "best": state["best"], "config": run_cfg,
            "fingerprint": fingerprint, "amp": state["amp"], "precision_reason": state["precision_reason"]}
    _torch_save(ckpt, path)


def save_model(path: Path | str, model: torch.nn.Module, run_cfg: dict, extra: dict | None = None) -> None:
    """Weights plus what is needed to rebuild the network (`load_model`)."""
    crop = run_cfg["training"]["augment"].get("crop", 48)
    payload = {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "spec": run_cfg["model"],
               "input_size": crop, "run_config": run_cfg, **(extra or {})}
    _torch_save(payload, path)


def _torch_save(obj, path):
    """torch.save through memory, the file written by Python: a full disk or `ulimit -f` is then an
    OSError naming the file (`io.atomic_path`), where torch's own writer raises RuntimeErrors that
    say nothing of the cause ("unexpected pos", "iostream error")."""
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(buffer.getbuffer())


def write_history(path: Path | str, history: list[dict]) -> None:
    import pandas as pd

    with atomic_path(path) as tmp:
        pd.DataFrame(history, columns=HISTORY_COLUMNS).to_csv(tmp, index=False)


def write_predictions(path: Path | str, rows: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> None:
    """The predictions CSV contract (docs/DESIGN.md): row, label, pred, p_<class>..."""
    import pandas as pd

    df = pd.DataFrame({"row": rows, "label": labels, "pred": probs.argmax(1)})
    for c, name in enumerate(CLASS_NAMES):
        df[f"p_{name}"] = probs[:, c]
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")


def load_model(path: Path | str, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    """(model, payload) of a file `save_model` wrote; whatever is in it is checked before it is used."""
    payload = load_torch_file(path, "model", device)
    check_model_payload(path, payload)
    try:
        model = build_model(payload["spec"], input_size=payload["input_size"], weights=False)  # its own follow
    except UserError as err:
        raise UserError(f"{path}: not a ferstudy model: its layer spec is not one ferstudy builds ({err})") from None
    try:
        model.load_state_dict(payload["model"])
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise UserError(f"{path}: not a ferstudy model: its weights do not fit its own layer spec "
                        f"({str(err).splitlines()[0][:200]})") from None
    return model.to(device).eval(), payload


def check_model_payload(path: Path | str, payload: dict) -> None:
    """What predict, predict-image and export read from a model file besides its weights: a run
    config with training settings, the evaluation crop (`input_size`) and test-time augmentation."""
    from .augment import TTA_MODES

    run_cfg, spec, crop = payload["run_config"], payload["spec"], payload["input_size"]
    training = run_cfg.get("training") if isinstance(run_cfg, dict) else None
    tta = training.get("tta", "none") if isinstance(training, dict) else "none"
    for failed, problem in (
            (not isinstance(training, dict), "its run_config has no training settings"),
            (type(crop) is not int or not 16 <= crop <= 48,
             f"input_size {crop!r} is not an evaluation crop (an integer from 16 to 48)"),
            (tta not in TTA_MODES, f"training.tta {tta!r} is not one of {', '.join(TTA_MODES)}"),
            (not isinstance(spec, dict), f"its spec is a {type(spec).__name__}, not a mapping with layers or a backbone")):
        if failed:
            raise UserError(f"{path}: not a ferstudy model: {problem} (a file `ferstudy train` did not write, or an "
                            f"edited one)")


# What a file must hold to be one of ours (save_model, save_checkpoint).
REQUIRED_KEYS = {"model": ("model", "spec", "input_size", "run_config"),
                 "checkpoint": ("model", "optimizer", "scheduler", "epoch", "history", "fingerprint")}
# torch's weights-only unpickler names the object it refused: "Unsupported global: GLOBAL builtins.open
# was not an allowed global" or, for blocked modules (os, subprocess, ...), "Trying to load
# unsupported GLOBAL posix.system whose module posix is blocked" (torch 2.6-2.14).
_REFUSED_GLOBAL = re.compile(r"[Uu]nsupported (?:global: )?GLOBAL (\S+)")


def _first_global(path, max_ops=100_000):
    """The first Python object a raw pickle names (GLOBAL, or STACK_GLOBAL after its two strings),
    read with pickletools, which decodes opcodes and runs nothing; None for anything else."""
    import pickletools

    strings = []
    try:
        with open(path, "rb") as f:
            for n, (op, arg, _) in enumerate(pickletools.genops(f)):
                if op.name == "GLOBAL":
                    return str(arg).replace(" ", ".")
                if op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    return f"{strings[-2]}.{strings[-1]}"
                if isinstance(arg, str) and "UNICODE" in op.name:
                    strings.append(arg)
                if n >= max_ops:
                    break
    except Exception:  # not a pickle at all, or a damaged one: nothing to name
        return None
    return None


def load_torch_file(path: Path | str, kind: str, device: torch.device | str = "cpu") -> dict:
    """A model or checkpoint file read as data, never as code: torch's weights-only unpickler
    accepts tensors, plain containers, numbers and strings, which is all ferstudy writes; a file
    that names any other Python object (which unpickling would call) is refused before anything in
    it runs. Every problem is one UserError line naming the file (a checkpoint's says to delete it:
    the job then trains from the start)."""
    import pickle
    import warnings

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {kind} file not found")
    redo = "; delete it and run the job again (it trains from the start)" if kind == "checkpoint" else ""
    try:
        with warnings.catch_warnings():  # a raw pickle makes torch warn about its protocol before refusing it
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _REFUSED_GLOBAL.search(str(err))
        unsafe = refused.group(1) if refused else _first_global(path)  # a raw pickle torch stops reading early
        if unsafe:
            raise UserError(f"{path}: refused: not a plain ferstudy {kind} file: loading it would call the Python "
                            f"object {unsafe} (files from untrusted sources can run code this way); nothing in it "
                            f"was run" + (redo or f". A ferstudy {kind} of an older version: rerun the job that "
                                                  f"wrote it")) from None
        raise UserError(f"{path}: not a ferstudy {kind} file (not a PyTorch file torch can read){redo}") from None
    except Exception as err:  # torch's legacy reader fails on arbitrary bytes in open-ended ways (KeyError, ...)
        first = (str(err).splitlines() or [type(err).__name__])[0][:160]
        first = first if isinstance(err, (RuntimeError, OSError, ValueError)) else f"{type(err).__name__}: {first}"
        raise UserError(f"{path}: not a ferstudy {kind} file ({first}){redo}") from None
    missing = [k for k in REQUIRED_KEYS[kind] if not isinstance(payload, dict) or k not in payload]
    if missing:
        raise UserError(f"{path}: not a ferstudy {kind} file (a PyTorch file without {', '.join(missing)}: "
                        f"another project's?){redo}")
    return payload
