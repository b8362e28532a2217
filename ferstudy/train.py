"""The one training loop: cross-validation folds, the final model and the benchmark all use it.

`fit()` trains a model from a run config (see `config.resolve_arch`) on given indices of the
prepared data and evaluates on others every `eval_every` epochs and after the last. A checkpoint
dict {model, optimizer, scheduler, epoch, history, best, config} is written atomically after
every epoch, so a killed job started again resumes where it stopped and ends with the same
weights as an uninterrupted run: all randomness of epoch e comes from generators seeded with
(seed, e), not from state carried across epochs.
"""

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import CLASS_NAMES
from .augment import Augmenter, eval_views
from .config import config_hash, evaluation_epochs
from .io import atomic_path
from .models import build_model

log = logging.getLogger("ferstudy.train")
HISTORY_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds", "images_per_s"]


# ---------------------------------------------------------------- set-up

def pick_device(training):
    want = training.get("device", "auto")
    if want == "cuda" and not torch.cuda.is_available():
        from .errors import UserError
        raise UserError("config key training.device: cuda requested but torch sees no CUDA device")
    return torch.device("cuda" if want in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


def setup_torch(device, threads):
    if device.type == "cpu":
        # CPU kernels used here are deterministic without torch's deterministic mode, which would
        # fill every new tensor (8-20% of a step) and import the compiler stack (tested bit-for-bit).
        torch.set_num_threads(max(1, int(threads)))
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def use_channels_last(training, device):
    setting = training.get("channels_last", "auto")
    return bool(setting) if setting != "auto" else True  # measured faster for these convnets on CPU and GPU


def use_amp(training, device):
    setting = training.get("amp", "auto")
    return device.type == "cuda" if setting == "auto" else bool(setting) and device.type == "cuda"


def make_optimizer(model, t):
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)  # no weight decay on batch-norm and biases
    groups = [{"params": decay, "weight_decay": t["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    if t["optimizer"] == "adamw":
        return torch.optim.AdamW(groups, lr=t["lr"])
    return torch.optim.SGD(groups, lr=t["lr"], momentum=t.get("momentum", 0.9), nesterov=True)


def make_scheduler(optimizer, t, steps_per_epoch):
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


def subsample(indices, labels, fraction, seed):
    """A stratified, seeded subset of training indices (for CPU budgets)."""
    if fraction >= 1.0:
        return indices
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(indices[labels[indices] == c])[: max(1, round(fraction * (labels[indices] == c).sum()))]
            for c in range(len(CLASS_NAMES)) if (labels[indices] == c).any()]
    return np.sort(np.concatenate(keep))


def epoch_generator(device, seed, epoch):
    g = torch.Generator(device=device)
    g.manual_seed(seed * 1_000_003 + epoch)
    return g


# ---------------------------------------------------------------- one epoch, evaluation

def train_one_epoch(model, images, labels, idx, augmenter, optimizer, scheduler, t, epoch, channels_last, amp):
    """One pass over `idx` (a device tensor of indices into `images`) in shuffled batches."""
    model.train()
    device = images.device
    g = epoch_generator(device, t["seed"], epoch)
    torch.manual_seed(t["seed"] * 7919 + epoch)  # dropout draws from the global generator
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
def predict(model, images, idx, crop, tta="none", channels_last=True, amp=False, batch_size=512):
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


def probs_loss_acc(probs, labels):
    p = probs[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(p, 1e-12, None)).mean()), float((probs.argmax(1) == labels).mean())


# ---------------------------------------------------------------- the loop

def fit(run_cfg, data, train_idx, val_idx, checkpoint_path, threads=1, select_best=False, progress=log.info):
    """Train with resume. Returns (model, history rows, best-or-last state info).

    select_best: keep the weights of the epoch with the best validation accuracy (the final model
    chooses its checkpoint on PublicTest); otherwise the last epoch's weights are the result
    (cross-validation folds: choosing on the held-out fold would bias its score).
    """
    t = run_cfg["training"]
    device = pick_device(t)
    setup_torch(device, threads)
    channels_last, amp = use_channels_last(t, device), use_amp(t, device)
    aug_cfg = {k: v for k, v in t["augment"].items() if k != "enabled"}
    augmenter = Augmenter(aug_cfg, enabled=t["augment"].get("enabled", True))
    crop = aug_cfg.get("crop", 48)

    train_idx = subsample(np.asarray(train_idx), data.labels, t.get("subsample", 1.0), t["seed"])
    images = torch.from_numpy(data.images).unsqueeze(1).to(device)  # uint8 in memory, read once
    labels = torch.from_numpy(data.labels.astype(np.int64)).to(device)
    train_t = torch.from_numpy(train_idx).to(device)
    val_np = np.asarray(val_idx)

    torch.manual_seed(t["seed"])
    model = build_model(run_cfg["model"], input_size=crop).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, t)
    steps = max(1, len(train_idx) // min(t["batch_size"], len(train_idx)))
    scheduler = make_scheduler(optimizer, t, steps)

    # What a checkpoint must match to be resumed: the run config, the exact images, the code version.
    import hashlib

    from . import __version__

    indices = hashlib.sha256(train_idx.astype(np.int64).tobytes() + b"|" + val_np.astype(np.int64).tobytes())
    fingerprint = config_hash({"run": run_cfg, "indices": indices.hexdigest(), "version": __version__,
                               "data": data.attrs.get("source_sha256")})
    state = {"epoch": 0, "history": [], "best": None}
    checkpoint_path = Path(checkpoint_path)
    if checkpoint_path.is_file():
        ckpt = torch.load(checkpoint_path, map_location=device, weights_only=False)
        if ckpt.get("fingerprint") == fingerprint:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            state = {k: ckpt[k] for k in ("epoch", "history", "best")}
            progress(f"resuming from {checkpoint_path} after epoch {state['epoch']}")
        else:
            progress(f"ignoring {checkpoint_path}: it belongs to another configuration")

    val_labels = data.labels[val_np]
    eval_epochs = evaluation_epochs(t)
    probs = None
    for epoch in range(state["epoch"] + 1, t["epochs"] + 1):
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        train_loss, train_acc, n = train_one_epoch(model, images, labels, train_t, augmenter, optimizer,
                                                   scheduler, t, epoch, channels_last, amp)
        train_seconds = time.perf_counter() - t0
        probs, val_loss, val_acc = None, math.nan, math.nan
        if epoch in eval_epochs:
            probs = predict(model, images, torch.from_numpy(val_np).to(device), crop, t.get("tta", "none"),
                            channels_last, amp)
            val_loss, val_acc = probs_loss_acc(probs, val_labels)
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            # Only the final model may let its validation set (PublicTest) steer the schedule; a
            # cross-validation fold steps on its training loss, or the held-out fold would leak in.
            if not select_best:
                scheduler.step(train_loss)
            elif probs is not None:
                scheduler.step(val_loss)
        seconds = time.perf_counter() - t0
        state["history"].append({"epoch": epoch, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
                                 "val_loss": val_loss, "val_acc": val_acc, "seconds": seconds,
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


def save_checkpoint(path, model, optimizer, scheduler, state, run_cfg, fingerprint):
    ckpt = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "epoch": state["epoch"], "history": state["history"], "best": state["best"], "config": run_cfg,
            "fingerprint": fingerprint}
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def save_model(path, model, run_cfg, extra=None):
    """Weights plus what is needed to rebuild the network (`load_model`)."""
    crop = run_cfg["training"]["augment"].get("crop", 48)
    payload = {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "spec": run_cfg["model"],
               "input_size": crop, "run_config": run_cfg, **(extra or {})}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def write_history(path, history):
    import pandas as pd

    with atomic_path(path) as tmp:
        pd.DataFrame(history, columns=HISTORY_COLUMNS).to_csv(tmp, index=False)


def write_predictions(path, rows, labels, probs):
    """The predictions CSV contract (docs/DESIGN.md): row, label, pred, p_<class>..."""
    import pandas as pd

    df = pd.DataFrame({"row": rows, "label": labels, "pred": probs.argmax(1)})
    for c, name in enumerate(CLASS_NAMES):
        df[f"p_{name}"] = probs[:, c]
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")


def load_model(path, device="cpu"):
    payload = torch.load(path, map_location=device, weights_only=False)
    model = build_model(payload["spec"], input_size=payload["input_size"])
    model.load_state_dict(payload["model"])
    return model.to(device).eval(), payload
