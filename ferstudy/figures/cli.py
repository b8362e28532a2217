"""Every figure from the result files (`make_all`) and the command `ferstudy figures`."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..probe import PICK_SEED
from . import FIGURES
from .cv import plot_accuracy_vs_compute, plot_confusion_cv, plot_cv_accuracy, plot_training_curves
from .final import plot_confusion_final, plot_examples, plot_final_history
from .inside import plot_activations, plot_channel_emotion, plot_filters_deeper, plot_filters_layer1, plot_saliency
from .plot import _need, _read_json

if TYPE_CHECKING:
    import argparse

log = logging.getLogger("ferstudy.figures")


def make_all(
    h5: Path | str,
    results: Path | str,
    out_dir: Path | str,
    archs: Sequence[str] | None = None,
    final_arch: str | None = None,
    baseline: str | None = None,
    threads: int = 1,
    seed: int = PICK_SEED,
    only: Sequence[str] | None = None,
) -> list[Path]:
    """Every figure of FIGURES (or those in `only`) from the results under `results`. Returns paths."""
    import pandas as pd
    import torch

    from ..checkpoint import load_model
    from ..config import load_yaml
    from ..data import load_h5

    torch.set_num_threads(max(1, int(threads)))
    results, out_dir = Path(results), Path(out_dir)
    data = load_h5(h5)
    dataset = data.attrs.get("dataset", "unknown")
    summary = pd.read_csv(_need(results / "tables" / "cv_summary.csv"))
    archs = list(archs or summary["architecture"])
    if final_arch is None:
        final_arch = _read_json(results / "final" / "selection.json")["architecture"]
    folds = int(data.attrs.get("folds", summary["folds"].max()))
    final = results / "final"
    wanted = list(only or FIGURES)
    unknown = [w for w in wanted if w not in FIGURES]
    if unknown:
        raise UserError(f"unknown figure(s) {', '.join(unknown)} (expected some of {', '.join(FIGURES)})")

    model: Any = None  # loaded below only when a wanted figure looks inside the model
    crop: Any = None
    if {"filters_layer1", "filters_deeper", "activations", "channel_emotion", "saliency"} & set(wanted):
        model, payload = load_model(_need(final / "model.pt"))
        crop = int(payload["input_size"])
    best_epoch, final_augmented = None, None
    if (final / "config.yaml").is_file():
        final_cfg = load_yaml(final / "config.yaml")
        best_epoch = final_cfg.get("best_epoch")
        final_augmented = _augmented(final_cfg.get("run_config"))

    makers = {
        **_cv_makers(results, summary, archs, folds, dataset, baseline, final_arch),
        "confusion_final": lambda p: plot_confusion_final(_read_json(final / "metrics.json"), p, dataset, final_arch),
        "final_history": lambda p: plot_final_history(
            pd.read_csv(_need(final / "history.csv")), p, dataset, final_arch, best_epoch, final_augmented
        ),
        "filters_layer1": lambda p: plot_filters_layer1(model, p, dataset, final_arch),
        "filters_deeper": lambda p: plot_filters_deeper(model, p, dataset, final_arch),
        "activations": lambda p: plot_activations(model, data, crop, p, dataset, final_arch, seed),
        "channel_emotion": lambda p: plot_channel_emotion(model, data, crop, p, dataset, final_arch, seed=seed),
        "saliency": lambda p: plot_saliency(model, data, crop, p, dataset, final_arch, seed=seed),
        "examples": lambda p: plot_examples(
            data, _need(final / "predictions_public.csv"), p, dataset, final_arch, seed=seed
        ),
    }
    written = []
    for name in wanted:
        t0 = time.perf_counter()
        path = out_dir / f"{name}.png"
        makers[name](path)
        written.append(path)
        log.info("%s (%.1f s)", path, time.perf_counter() - t0)
    return written


def _cv_makers(results, summary, archs, folds, dataset, baseline, final_arch):
    """`make_all`'s makers {figure name: function of the output path} of the cross-validation figures."""
    import pandas as pd

    from ..config import load_yaml

    def arch_metrics(arch):
        return _read_json(results / "cv" / arch / "metrics.json")

    def cv_augmented():
        paths = {a: results / "cv" / a / "run_config.yaml" for a in archs}
        return {a: _augmented(load_yaml(p)) for a, p in paths.items() if p.is_file()}

    return {
        "training_curves": lambda p: plot_training_curves(
            {
                a: [pd.read_csv(_need(results / "cv" / a / f"fold{k}" / "history.csv")) for k in range(folds)]
                for a in archs
            },
            p,
            dataset,
            baseline,
            final_arch,
            augmented=cv_augmented(),
        ),
        "cv_accuracy": lambda p: plot_cv_accuracy(
            summary[summary["architecture"].isin(archs)],
            p,
            dataset,
            baseline,
            final_arch,
            {a: arch_metrics(a)["aggregate"]["metrics"]["accuracy"]["folds"] for a in archs},
        ),
        "accuracy_vs_compute": lambda p: plot_accuracy_vs_compute(
            (lambda c: c[c["architecture"].isin(archs)])(pd.read_csv(_need(results / "tables" / "cost.csv"))),
            p,
            dataset,
            baseline,
            final_arch,
            summary,
        ),
        "confusion_cv": lambda p: plot_confusion_cv(arch_metrics(final_arch), p, dataset),
    }


def _augmented(run_cfg):
    """Whether a run config's training faces were augmented (None when it does not say)."""
    augment = ((run_cfg or {}).get("training") or {}).get("augment")
    return None if augment is None else bool(augment.get("enabled", True))


def cmd_figures(args: argparse.Namespace) -> None:
    written = make_all(
        args.h5,
        args.results,
        args.out_dir,
        archs=args.archs,
        final_arch=args.final_arch,
        baseline=args.baseline,
        threads=args.threads,
        seed=args.seed,
        only=args.only,
    )
    log.info("wrote %d figures to %s", len(written), args.out_dir)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("figures", help="all figures of the study (PNG) from its results")
    p.add_argument("--h5", required=True, help="prepared data (results/data/dataset.h5)")
    p.add_argument("--results", default="results", help="results directory (cv/, tables/, final/)")
    p.add_argument("--archs", nargs="*", help="architectures, in this order (default: all of cv_summary.csv)")
    p.add_argument("--baseline", help="architecture to highlight as the baseline")
    p.add_argument("--final-arch", help="final architecture (default: RESULTS/final/selection.json)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--only", nargs="*", metavar="NAME", help=f"only these figures ({', '.join(FIGURES)})")
    p.add_argument("--seed", type=int, default=PICK_SEED, help="seed of the example-face picks")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_figures)
