"""Model and checkpoint files: writing them, resuming a run from one, and loading them safely.

A checkpoint (`save_checkpoint`) is what `train.fit` resumes from when its fingerprint
(`run_fingerprint`) matches; a model file (`save_model`) is what predict, export and the report
rebuild the network from (`load_model`). Every file is read as data, never as code
(`load_torch_file`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .config import config_hash
from .errors import UserError
from .io import atomic_path
from .models import build_model

if TYPE_CHECKING:
    from torch.optim.lr_scheduler import LRScheduler

    from .data import FerData


def run_fingerprint(
    run_cfg: dict, data: FerData, train_idx: np.ndarray, val_idx: np.ndarray, init_seed: int | None = None
) -> str:
    """What a checkpoint must match to be resumed: the run config, the exact images, the seed the
    run started from, the code version."""
    import hashlib

    from . import __version__

    indices = hashlib.sha256(
        np.asarray(train_idx).astype(np.int64).tobytes() + b"|" + np.asarray(val_idx).astype(np.int64).tobytes()
    )
    return config_hash(
        {
            "run": run_cfg,
            "indices": indices.hexdigest(),
            "version": __version__,
            "data": data.attrs.get("source_sha256"),
            "init_seed": init_seed,
        }
    )


def resume_state(
    checkpoint_path: Path,
    fingerprint: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    device: torch.device | str,
    progress: Callable[[str], Any],
) -> dict:
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
                raise UserError(
                    f"{checkpoint_path}: a checkpoint of this run whose contents do not fit it "
                    f"({(str(err).splitlines() or [type(err).__name__])[0][:160]}); delete it and run "
                    f"the job again (it trains from the start)"
                ) from None
            progress(f"resuming from {checkpoint_path} after epoch {ckpt['epoch']}")
            return state
        progress(f"ignoring {checkpoint_path}: it belongs to another configuration")
    return {"epoch": 0, "history": [], "best": None}


def save_checkpoint(
    path: Path | str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    state: dict,
    run_cfg: dict,
    fingerprint: str,
) -> None:
    ckpt = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": state["epoch"],
        "history": state["history"],
        "best": state["best"],
        "config": run_cfg,
        "fingerprint": fingerprint,
        "amp": state["amp"],
        "precision_reason": state["precision_reason"],
    }
    _torch_save(ckpt, path)


def save_model(path: Path | str, model: torch.nn.Module, run_cfg: dict, extra: dict | None = None) -> None:
    """Weights plus what is needed to rebuild the network (`load_model`)."""
    crop = run_cfg["training"]["augment"].get("crop", 48)
    payload = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "spec": run_cfg["model"],
        "input_size": crop,
        "run_config": run_cfg,
        **(extra or {}),
    }
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
        raise UserError(
            f"{path}: not a ferstudy model: its weights do not fit its own layer spec "
            f"({str(err).splitlines()[0][:200]})"
        ) from None
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
        (
            type(crop) is not int or not 16 <= crop <= 48,
            f"input_size {crop!r} is not an evaluation crop (an integer from 16 to 48)",
        ),
        (tta not in TTA_MODES, f"training.tta {tta!r} is not one of {', '.join(TTA_MODES)}"),
        (not isinstance(spec, dict), f"its spec is a {type(spec).__name__}, not a mapping with layers or a backbone"),
    ):
        if failed:
            raise UserError(
                f"{path}: not a ferstudy model: {problem} (a file `ferstudy train` did not write, or an edited one)"
            )


# What a file must hold to be one of ours (save_model, save_checkpoint).
REQUIRED_KEYS = {
    "model": ("model", "spec", "input_size", "run_config"),
    "checkpoint": ("model", "optimizer", "scheduler", "epoch", "history", "fingerprint"),
}
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
            raise UserError(
                f"{path}: refused: not a plain ferstudy {kind} file: loading it would call the Python "
                f"object {unsafe} (files from untrusted sources can run code this way); nothing in it "
                f"was run" + (redo or f". A ferstudy {kind} of an older version: rerun the job that wrote it")
            ) from None
        raise UserError(f"{path}: not a ferstudy {kind} file (not a PyTorch file torch can read){redo}") from None
    except Exception as err:  # torch's legacy reader fails on arbitrary bytes in open-ended ways (KeyError, ...)
        first = (str(err).splitlines() or [type(err).__name__])[0][:160]
        first = first if isinstance(err, (RuntimeError, OSError, ValueError)) else f"{type(err).__name__}: {first}"
        raise UserError(f"{path}: not a ferstudy {kind} file ({first}){redo}") from None
    missing = [k for k in REQUIRED_KEYS[kind] if not isinstance(payload, dict) or k not in payload]
    if missing:
        raise UserError(
            f"{path}: not a ferstudy {kind} file (a PyTorch file without {', '.join(missing)}: "
            f"another project's?){redo}"
        )
    return payload
