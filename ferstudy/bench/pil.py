"""3. The public-code way (`train_pil`, `train_vs_pil`): a per-image `Dataset` of PIL images,
torchvision transforms and a `DataLoader`, beside the project as it trains."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .context import set_threads
from .training import _training_settings, train_throughput

if TYPE_CHECKING:
    import argparse

    import numpy as np

PIL_TARGET = {True: 2.0, False: 1.5}  # train_vs_pil ratio wanted: CPU with native bf16 / without


class _PilFaces:
    """Per-image Dataset returning (PIL image, label) through torchvision transforms."""

    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i], mode="L")), int(self.labels[i])


def pil_loop_throughput(
    run_cfg: dict,
    images: np.ndarray,
    labels: np.ndarray,
    threads: int,
    workers: int,
    batches: int = 8,
    warmup: int = 1,
    trials: int = 3,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Images/s of the usual public FER2013 training loop (see the module docstring), same model
    and batch size. Worker start-up is excluded (warm-up batches of a fresh iterator per trial),
    which flatters this loop a little."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader
    from torchvision import transforms

    from ..augment import MEAN, STD
    from ..models import build_model

    set_threads(threads)
    t = _training_settings(run_cfg, batch_size)
    bs = t["batch_size"]
    crop = t["augment"].get("crop", 48)
    transform = transforms.Compose(
        [
            transforms.RandomCrop(crop),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize((MEAN,), (STD,)),
        ]
    )
    n = bs * (warmup + batches)
    pick = np.resize(np.arange(len(images)), n)  # repeat the images when fewer than n
    dataset = _PilFaces(images[pick], labels[pick], transform)
    torch.manual_seed(t["seed"])
    model = build_model(run_cfg["model"], input_size=crop, weights=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=t["lr"], momentum=0.9, weight_decay=t["weight_decay"])
    # DataLoader takes any map-style dataset (__len__, __getitem__); its stubs want a Dataset subclass
    loader = DataLoader(  # type: ignore[var-annotated]
        dataset,  # type: ignore[arg-type]
        batch_size=bs,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
    )

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
        assert t0 is not None  # set at step `warmup`: every trial runs warmup + batches steps
        rates.append(done / (time.perf_counter() - t0))
        del it
    return {
        "img_per_s": max(rates),
        "img_per_s_median": statistics.median(rates),
        "workers": workers,
        "batch_size": bs,
        "batches": batches,
        "trials": trials,
        "augment": f"RandomCrop({crop}), RandomHorizontalFlip, ToTensor, Normalize",
    }


def pil_records(
    out: Callable[[dict], dict],
    args: argparse.Namespace,
    cfg: dict,
    pil_archs: Sequence[str],
    images: np.ndarray,
    labels: np.ndarray,
    threads: int,
    precisions: Sequence[str],
) -> None:
    """The plain PIL + DataLoader loop that most public code uses, beside the project as it trains.

    The two are measured in alternating rounds (project as it trains, project in fp32, the PIL
    loop with each worker count, then again): on these VMs the rate drifts by tens of percent
    over a minute, so two measurements taken minutes apart compare the minutes, not the loops.
    Each ratio is the median of the rounds' own ratios."""
    from ..config import resolve_arch

    for name in pil_archs:
        run_cfg = resolve_arch(cfg, name)
        steps = dict(
            threads=threads, batches=args.batches, warmup=args.warmup, trials=args.trials, batch_size=args.batch_size
        )
        # the precision a training job would pick: amp from the config, `auto` measured by precision.choose_amp
        # (only the decision is kept: one trial, the rounds below do the timing)
        decided = train_throughput(run_cfg, images, labels, amp=None, **{**steps, "trials": 1})
        rounds = []
        for _ in range(max(1, args.pil_rounds)):
            trained = train_throughput(run_cfg, images, labels, amp=decided["amp"], **steps)["img_per_s"]
            fp32 = (
                trained
                if not decided["amp"]
                else train_throughput(run_cfg, images, labels, amp=False, **steps)["img_per_s"]
            )
            pil = {
                w: pil_loop_throughput(
                    run_cfg, images, labels, threads, w, args.batches, args.warmup, args.trials, args.batch_size
                )
                for w in args.pil_workers
            }
            rounds.append(
                {"project": trained, "project_fp32": fp32, "pil": {w: r["img_per_s"] for w, r in pil.items()}}
            )
        for workers, r in pil.items():
            out(
                {
                    "name": "train_pil",
                    "arch": name,
                    "workers": workers,
                    "precision": "fp32",
                    "img_per_s": statistics.median(x["pil"][workers] for x in rounds),
                    "units": {
                        "img_per_s": "images/s, median over rounds of the best trial (DataLoader start-up excluded)"
                    },
                    "context": {
                        "batch_size": r["batch_size"],
                        "batches": r["batches"],
                        "trials": r["trials"],
                        "rounds": len(rounds),
                        "channels_last": False,
                        "augment": r["augment"],
                        "loop": "Dataset of PIL images + torchvision transforms + DataLoader + plain loop",
                    },
                }
            )
        out(_vs_pil_record(name, rounds, decided, precisions, run_cfg, args))


def _vs_pil_record(name, rounds, decided, precisions, run_cfg, args):
    """The `train_vs_pil` line from alternating rounds: medians of per-round ratios (drift cancels)."""

    def median(key):
        return statistics.median(x[key] / max(x["pil"].values()) for x in rounds)

    pil_best = [max(x["pil"].values()) for x in rounds]
    best_workers = statistics.mode(max(x["pil"], key=x["pil"].get) for x in rounds)
    target = PIL_TARGET["bf16" in precisions]
    ratio = median("project")
    return {
        "name": "train_vs_pil",
        "arch": name,
        "project_img_per_s": statistics.median(x["project"] for x in rounds),
        "project_precision": decided["precision"],
        "project_precision_reason": decided["precision_reason"],
        "project_fp32_img_per_s": statistics.median(x["project_fp32"] for x in rounds),
        "pil_best_img_per_s": statistics.median(pil_best),
        "pil_best_workers": best_workers,
        "pil_precision": "fp32",
        "ratio": ratio,
        "ratio_fp32": median("project_fp32"),
        "rounds": rounds,
        "target_ratio": target,
        "meets_target": ratio >= target,
        "target": f">= {PIL_TARGET[True]:g}x on a CPU with native bf16, >= {PIL_TARGET[False]:g}x without "
        f"(this CPU: {'with' if 'bf16' in precisions else 'without'}); judged on `ratio`",
        "units": {
            "ratio": "median over rounds of (project img/s as it trains, project_precision / best "
            "PIL+DataLoader img/s of the same round, fp32)",
            "ratio_fp32": "the same with the project in fp32",
            "pil_best_img_per_s": "median over rounds of each round's best worker count (the worker "
            "counts may differ between rounds; pil_best_workers: the most frequent)",
            "rounds": "per round: best-trial img/s of the project as it trains, in fp32, and of the PIL "
            "loop per DataLoader worker count, measured one after the other",
        },
        "context": {
            "batch_size": args.batch_size or run_cfg["training"]["batch_size"],
            "rounds": len(rounds),
            "amp_setting": run_cfg["training"].get("amp", "auto"),
        },
    }
