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
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from . import CLASS_NAMES
from .augment import Augmenter, eval_views
from .checkpoint import resume_state, run_fingerprint, save_checkpoint
from .config import evaluation_epochs
from .errors import UserError
from .io import atomic_path
from .models import build_model
from .precision import shared_choose_amp

if TYPE_CHECKING:
    from torch.optim.lr_scheduler import LRScheduler

    from .data import FerData

log = logging.getLogger("ferstudy.train")
HISTORY_COLUMNS = [
    "epoch",
    "lr",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "curve_train_acc",
    "curve_val_acc",
    "seconds",
    "images_per_s",
]


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


class TrainingSetup(NamedTuple):
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    augmenter: Augmenter
    augment: dict  # the augmentation settings the augmenter was built from (without `enabled`)
    crop: int
    channels_last: bool


def training_setup(
    run_cfg: dict,
    device: torch.device,
    steps_per_epoch: int,
    weights: bool = True,
    channels_last: bool | None = None,
    init_seed: int | None = None,
) -> TrainingSetup:
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
    keep = [
        rng.permutation(indices[labels[indices] == c])[: max(1, round(fraction * (labels[indices] == c).sum()))]
        for c in range(len(CLASS_NAMES))
        if (labels[indices] == c).any()
    ]
    return np.sort(np.concatenate(keep))


def epoch_generator(device: torch.device | str, seed: int, epoch: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed * 1_000_003 + epoch)
    return g


# ---------------------------------------------------------------- one epoch, evaluation


def train_one_epoch(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    idx: torch.Tensor,
    augmenter: Augmenter,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    t: dict,
    epoch: int,
    channels_last: bool,
    amp: bool,
    seed: int | None = None,
) -> tuple[float, float, int]:
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
        batch = order[s * bs : (s + 1) * bs]
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
def predict(
    model: torch.nn.Module,
    images: torch.Tensor,
    idx: torch.Tensor,
    crop: int,
    tta: str = "none",
    channels_last: bool = True,
    amp: bool = False,
    batch_size: int = 512,
) -> np.ndarray:
    """Softmax probabilities (len(idx), 7) on numpy, averaged over the TTA views."""
    model.eval()
    out = []
    for s in range(0, len(idx), batch_size):
        views = eval_views(images[idx[s : s + batch_size]], crop, tta)  # (V, B, 1, crop, crop)
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


def fit(
    run_cfg: dict,
    data: FerData,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    checkpoint_path: Path | str,
    threads: int = 1,
    select_best: bool = False,
    progress: Callable[[str], Any] = log.info,
    precision_memo: Path | str | None = None,
    init_seed: int | None = None,
) -> tuple[torch.nn.Module, dict]:
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
    images, labels, train_t = _device_tensors(data, train_idx, device)
    val_np = np.asarray(val_idx)
    steps = max(1, len(train_idx) // min(t["batch_size"], len(train_idx)))
    setup = training_setup(run_cfg, device, steps, init_seed=init_seed)
    model, optimizer, scheduler, crop = setup.model, setup.optimizer, setup.scheduler, setup.crop

    fingerprint = run_fingerprint(run_cfg, data, train_idx, val_np, init_seed)
    checkpoint_path = Path(checkpoint_path)
    state = resume_state(checkpoint_path, fingerprint, model, optimizer, scheduler, device, progress)
    if "amp" not in state:  # a resumed run keeps the precision it started with
        state["amp"], state["precision_reason"] = shared_choose_amp(
            precision_memo, run_cfg, device, model, crop, threads
        )
    amp = state["amp"]
    progress(f"precision {'bf16 autocast' if amp else 'fp32'} ({state['precision_reason']})")

    val_labels = data.labels[val_np]
    eval_epochs = evaluation_epochs(t)
    curve = learning_curve_sets(t, data.labels, train_idx, val_np, device)
    probs = None
    for epoch in range(state["epoch"] + 1, t["epochs"] + 1):
        row, probs = _train_epoch(
            setup,
            images,
            labels,
            train_t,
            val_np,
            val_labels,
            curve,
            t,
            epoch,
            amp,
            init_seed,
            epoch in eval_epochs,
            select_best,
        )
        state["history"].append(row)
        if select_best and probs is not None:
            _keep_best(state, row, model)
        state["epoch"] = epoch
        save_checkpoint(checkpoint_path, model, optimizer, scheduler, state, run_cfg, fingerprint)
        eta = (t["epochs"] - epoch) * np.mean([h["seconds"] for h in state["history"][-3:]])
        progress(_epoch_line(row, t["epochs"], eta, probs is not None))
    if select_best and state["best"] is not None:
        model.load_state_dict(state["best"]["model"])
    elif probs is not None:
        state["val_probs"] = probs  # the last epoch's validation predictions: callers need not predict again
    return model, state


def _device_tensors(
    data: FerData, train_idx: np.ndarray, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images, labels, training indices) of `fit` on `device`."""
    images = torch.from_numpy(data.images).unsqueeze(1).to(device)  # uint8 in memory, read once
    labels = torch.from_numpy(data.labels.astype(np.int64)).to(device)
    train_t = torch.from_numpy(train_idx).to(device)
    return images, labels, train_t


def _keep_best(state: dict, row: dict, model: torch.nn.Module) -> None:
    """`state["best"]` becomes this epoch's weights when its validation accuracy beats the best so far."""
    if state["best"] is None or row["val_acc"] > state["best"]["val_acc"]:
        state["best"] = {
            "epoch": row["epoch"],
            "val_acc": row["val_acc"],
            "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        }


def _train_epoch(
    setup: TrainingSetup,
    images: torch.Tensor,
    labels: torch.Tensor,
    train_t: torch.Tensor,
    val_np: np.ndarray,
    val_labels: np.ndarray,
    curve: list[torch.Tensor] | None,
    t: dict,
    epoch: int,
    amp: bool,
    init_seed: int,
    evaluate: bool,
    select_best: bool,
) -> tuple[dict, np.ndarray | None]:
    """One epoch of `fit`: train, predict the held-out indices when `evaluate` and the learning-curve
    subsets, step a plateau schedule. Returns (history row, validation probabilities or None)."""
    model, scheduler, crop, channels_last = setup.model, setup.scheduler, setup.crop, setup.channels_last
    t0 = time.perf_counter()
    lr = setup.optimizer.param_groups[0]["lr"]
    train_loss, train_acc, n = train_one_epoch(
        model,
        images,
        labels,
        train_t,
        setup.augmenter,
        setup.optimizer,
        scheduler,
        t,
        epoch,
        channels_last,
        amp,
        init_seed,
    )
    train_seconds = time.perf_counter() - t0
    probs, val_loss, val_acc = None, math.nan, math.nan
    if evaluate:
        probs = predict(
            model, images, torch.from_numpy(val_np).to(images.device), crop, t.get("tta", "none"), channels_last, amp
        )
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
    return {
        "epoch": epoch,
        "lr": lr,
        "train_loss": train_loss,
        "train_acc": train_acc,
        "val_loss": val_loss,
        "val_acc": val_acc,
        "curve_train_acc": curve_train_acc,
        "curve_val_acc": curve_val_acc,
        "seconds": seconds,
        "images_per_s": n / train_seconds,
    }, probs


def _epoch_line(row: dict, epochs: int, eta: float, evaluated: bool) -> str:
    """The progress line of one epoch of `fit`."""
    return (
        f"epoch {row['epoch']}/{epochs} lr {row['lr']:.4f} train loss {row['train_loss']:.3f} "
        f"acc {row['train_acc']:.3f} | "
        + (f"val loss {row['val_loss']:.3f} acc {row['val_acc']:.3f} | " if evaluated else "val not evaluated | ")
        + f"{row['images_per_s']:.0f} img/s | "
        f"{row['seconds']:.1f} s/epoch, ~{eta:.0f} s left"
    )


def learning_curve_sets(
    t: dict, labels: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray, device: torch.device | str
) -> list[torch.Tensor] | None:
    """Fixed stratified subsets (`training.curve_images` each, 0: none) of the images trained on and
    of the held-out ones, predicted after every epoch without augmentation: a cheap learning curve
    and the train-vs-held-out gap (over- or under-fitting) along it."""
    n = int(t.get("curve_images", 0))
    if n <= 0:
        return None
    pick = [subsample(idx, labels, min(1.0, n / len(idx)), t["seed"] + 1) for idx in (train_idx, val_idx)]
    return [torch.from_numpy(idx).to(device) for idx in pick]


def curve_accuracies(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    curve: list[torch.Tensor] | None,
    crop: int,
    channels_last: bool,
    amp: bool,
) -> tuple[float, ...]:
    if curve is None:
        return math.nan, math.nan
    accs = []
    for idx in curve:
        probs = predict(model, images, idx, crop, "none", channels_last, amp)
        accs.append(float((probs.argmax(1) == labels[idx].cpu().numpy()).mean()))
    return tuple(accs)


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
