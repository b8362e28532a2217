"""`ferstudy <command>`: the entry points the Snakemake rules call; usable without Snakemake.

Each command is a small function taking parsed arguments. User errors print one line
(`ferstudy: error: <file/key>: <problem>`) and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .errors import UserError

if TYPE_CHECKING:
    from pathlib import Path

log = logging.getLogger("ferstudy")


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import write_demo_csv

    t0 = time.perf_counter()
    write_demo_csv(args.out, n_images=args.images, seed=args.seed)
    log.info(
        "DEMO DATA: wrote %d synthetic faces to %s in %.1f s (seed %d). This is NOT FER2013: "
        "download the real data as the README says.",
        args.images,
        args.out,
        time.perf_counter() - t0,
        args.seed,
    )


def cmd_prepare(args: argparse.Namespace) -> None:
    from .data import prepare, write_summary
    from .io import refuse_overwrite

    refuse_overwrite([args.h5, args.summary_csv, args.summary_md, args.faces], [args.csv])
    t0 = time.perf_counter()
    data = prepare(args.csv, args.h5, folds=args.folds, fold_seed=args.fold_seed, dataset=args.dataset)
    log.info(
        "prepared %s (%s): %d images -> %s in %.2f s",
        args.csv,
        args.dataset,
        len(data.labels),
        args.h5,
        time.perf_counter() - t0,
    )
    if args.dataset == "demo":
        log.warning("DEMO DATA: these are synthetic faces, not FER2013; results say nothing about real faces.")
    if args.summary_csv or args.summary_md or args.faces:  # each written when asked for
        write_summary(data, args.summary_csv, args.summary_md, args.faces)


def _result_config(run_cfg, data, extra):
    """What is written beside every result: the run config, data identity, versions, hash."""
    from .config import config_hash, environment

    return {
        "run_config": run_cfg,
        "config_hash": config_hash(run_cfg),
        "data": {k: data.attrs.get(k) for k in ("dataset", "source_path", "source_sha256", "folds", "fold_seed")},
        **extra,
        "environment": environment(),
    }


def fold_init_seed(run_cfg: dict, fold: int) -> int:
    """The seed fold `fold`'s network starts from: `training.seed` + fold. Every architecture of a
    fold shares it, so each variant-baseline pair stays paired (same faces, same seed), while the
    spread over folds now holds initialisation noise as well as the data's (seeds alone moved the
    baseline by 0.6-1.0 pp, docs/PERFORMANCE.md)."""
    return int(run_cfg["training"]["seed"]) + int(fold)


def cmd_train(args: argparse.Namespace) -> None:
    """One cross-validation job: train on the other folds, predict the held-out fold."""
    from pathlib import Path

    from .checkpoint import save_model
    from .config import load_yaml
    from .data import load_h5
    from .io import write_text
    from .train import fit, pick_device, write_history, write_predictions
    from .validation import check_run_config
    import yaml

    run_cfg = load_yaml(args.run_config)
    check_run_config(run_cfg, args.run_config)
    out = Path(args.out_dir)
    _outputs_beside(out, [args.h5, args.run_config], args.checkpoint)
    data = load_h5(args.h5)
    if not 0 <= args.fold < int(data.attrs["folds"]):
        raise UserError(f"--fold {args.fold}: the data has folds 0-{int(data.attrs['folds']) - 1}")
    train_idx, val_idx = data.fold_indices(args.fold)
    t0 = time.perf_counter()
    log.info(
        "training %s on fold %d of %s data: %d train / %d held-out images, %d thread(s), device %s",
        run_cfg["name"],
        args.fold,
        data.attrs.get("dataset"),
        len(train_idx),
        len(val_idx),
        args.threads,
        pick_device(run_cfg["training"]),
    )
    init_seed = fold_init_seed(run_cfg, args.fold)
    # the folds of one architecture train in one precision (precision.shared_choose_amp)
    model, state = fit(
        run_cfg,
        data,
        train_idx,
        val_idx,
        args.checkpoint,
        threads=args.threads,
        precision_memo=out.parent,
        init_seed=init_seed,
    )
    probs = state.get("val_probs")
    if probs is None:  # resumed after the last epoch's checkpoint: nothing was predicted in this process
        probs = _predict_indices(model, run_cfg, data, val_idx, state["amp"])
    write_predictions(out / "predictions.csv", data.row[val_idx], data.labels[val_idx], probs)
    write_history(out / "history.csv", state["history"])
    extra = {
        "fold": args.fold,
        "init_seed": init_seed,
        "n_train": int(len(train_idx)),
        "n_val": int(len(val_idx)),
        "threads": args.threads,
        "seconds": time.perf_counter() - t0,
        **_precision(state),
    }
    save_model(out / "model.pt", model, run_cfg, {"fold": args.fold, "amp": state["amp"]})
    write_text(out / "config.yaml", yaml.safe_dump(_result_config(run_cfg, data, extra), sort_keys=False))
    Path(args.checkpoint).unlink(missing_ok=True)  # done: a forced rerun must train again, not reload
    log.info(
        "held-out accuracy %.4f (%s fold %d), %.0f s",
        float((probs.argmax(1) == data.labels[val_idx]).mean()),
        run_cfg["name"],
        args.fold,
        extra["seconds"],
    )


RESULT_FILES = (
    "model.pt",
    "history.csv",
    "config.yaml",
    "predictions.csv",
    "predictions_public.csv",
    "predictions_private.csv",
)


def _outputs_beside(out_dir, inputs, checkpoint):
    """A training job's outputs (and its checkpoint, read and rewritten) replace none of its inputs."""
    from .io import refuse_overwrite

    refuse_overwrite([out_dir / name for name in RESULT_FILES] + [checkpoint], inputs)
    refuse_overwrite([out_dir / name for name in RESULT_FILES], [checkpoint])


def _precision(state):
    """What every result records of the precision it was trained in."""
    return {"precision": "bf16" if state["amp"] else "fp32", "precision_reason": state["precision_reason"]}


def _predict_indices(model, run_cfg, data, idx, amp, tta=None):
    """Class probabilities of the rows `idx`, with the run's test-time augmentation or `tta`."""
    import torch

    from .train import predict, use_channels_last

    t = run_cfg["training"]
    device = next(model.parameters()).device
    images = torch.from_numpy(data.images).unsqueeze(1).to(device)
    return predict(
        model,
        images,
        torch.from_numpy(idx).to(device),
        t["augment"].get("crop", 48),
        tta or t.get("tta", "none"),
        use_channels_last(t, device),
        amp,
    )


def _choose_tta(model, run_cfg, data, public, amp):
    """(tta, PublicTest accuracy of each mode, PublicTest probabilities with the chosen one): the
    configured test-time augmentation is kept only where it beats none on PublicTest (a tie keeps
    the cheaper none). PublicTest chooses; PrivateTest is predicted afterwards, once."""
    labels = data.labels[public]
    modes = ("none", run_cfg["training"].get("tta", "none"))
    probs = {m: _predict_indices(model, run_cfg, data, public, amp, tta=m) for m in modes}
    accuracy = {m: float((p.argmax(1) == labels).mean()) for m, p in probs.items()}
    tta = max(accuracy, key=lambda m: (accuracy[m], m == "none"))
    return tta, accuracy, probs[tta]


def cmd_train_final(args: argparse.Namespace) -> None:
    """Retrain the chosen architecture (its run config: cross-validation's choice, or the one the
    config names) on all of Training; PublicTest chooses the checkpoint.

    The final model starts from `training.seed` itself, not a fold's seed + k: it is one model,
    compared with nothing in pairs, and the seed a user sets is the run they get (also the run
    that earlier versions of this study trained and whose numbers are committed)."""
    from pathlib import Path

    import yaml

    from .checkpoint import save_model
    from .config import final_training, load_yaml
    from .data import load_h5
    from .io import write_text
    from .train import fit, write_history, write_predictions
    from .validation import check_run_config

    run_cfg = load_yaml(args.run_config)
    check_run_config(run_cfg, args.run_config)
    arch = run_cfg["name"]
    final_cfg = load_yaml(args.final_config)
    run_cfg["training"] = final_training(run_cfg["training"], final_cfg)
    check_run_config(run_cfg, f"{args.run_config} with {args.final_config}")
    out = Path(args.out_dir)
    _outputs_beside(out, [args.h5, args.run_config, args.final_config], args.checkpoint)
    data = load_h5(args.h5)
    train_idx, public, private = data.indices("Training"), data.indices("PublicTest"), data.indices("PrivateTest")
    t0 = time.perf_counter()
    log.info(
        "final model %s: %d Training images, checkpoint chosen on %d PublicTest images",
        arch,
        len(train_idx),
        len(public),
    )
    # PublicTest ranks the epochs without test-time augmentation (it chooses a checkpoint, not a
    # recipe: one view per face instead of 2 or 10, every epoch); the TTA is measured once, at the end.
    ranking_cfg = {**run_cfg, "training": {**run_cfg["training"], "tta": "none"}}
    model, state = fit(ranking_cfg, data, train_idx, public, args.checkpoint, threads=args.threads, select_best=True)
    seconds = time.perf_counter() - t0
    configured_tta = run_cfg["training"].get("tta", "none")
    run_cfg["training"]["tta"], tta_accuracy, public_probs = _choose_tta(model, run_cfg, data, public, state["amp"])
    write_predictions(out / "predictions_public.csv", data.row[public], data.labels[public], public_probs)
    # PrivateTest is predicted once, here, with the checkpoint and TTA PublicTest chose; nothing reads it to choose.
    private_probs = _predict_indices(model, run_cfg, data, private, state["amp"])
    write_predictions(out / "predictions_private.csv", data.row[private], data.labels[private], private_probs)
    write_history(out / "history.csv", state["history"])
    best = state["best"] or {"epoch": state["epoch"], "val_acc": None}
    extra = {
        "architecture": arch,
        "best_epoch": best["epoch"],
        "best_public_acc": best["val_acc"],
        "n_train": int(len(train_idx)),
        "threads": args.threads,
        "seconds": seconds,
        "tta_configured": configured_tta,
        "tta_public_accuracy": tta_accuracy,
        **_precision(state),
    }
    save_model(out / "model.pt", model, run_cfg, {"best_epoch": best["epoch"], "amp": state["amp"]})
    write_text(out / "config.yaml", yaml.safe_dump(_result_config(run_cfg, data, extra), sort_keys=False))
    Path(args.checkpoint).unlink(missing_ok=True)
    log.info(
        "final model: best PublicTest accuracy %.4f at epoch %s; %.0f s; test-time augmentation %s (PublicTest %s)",
        best["val_acc"] or float("nan"),
        best["epoch"],
        seconds,
        run_cfg["training"]["tta"],
        ", ".join(f"{m} {a:.4f}" for m, a in tta_accuracy.items()),
    )


def cmd_evaluate_arch(args: argparse.Namespace) -> None:
    from .config import load_yaml
    from .io import refuse_overwrite, write_json
    from .study import evaluate_arch

    refuse_overwrite([args.out], [args.run_config, *args.predictions, *(args.benchmarks or ())])
    run_cfg = load_yaml(args.run_config)
    result = evaluate_arch(args.predictions, run_cfg, benchmark_files=args.benchmarks or ())
    write_json(args.out, result)
    m = result["aggregate"]["metrics"]["accuracy"]
    log.info("%s: accuracy %.4f +- %.4f over %d folds", run_cfg["name"], m["mean"], m["std"], len(args.predictions))


def fold_sizes(h5: Path | str) -> tuple[int, int]:
    """(training images of one fold, held-out images of one fold) of the prepared data."""
    from .data import load_h5

    data = load_h5(h5)
    k = int(data.attrs["folds"])
    n = int((data.split == 0).sum())
    return n * (k - 1) // k, n // k


def _recheck_results(files, metrics_files):
    """(plan, {arch: 1x and 2x differences}) from `--recheck PLAN [PREDICTIONS...]`, or None. The
    predictions must be the runs the plan names (recheck.run_dir beside the plan's results)."""
    import json
    from pathlib import Path

    from .recheck import rechecked_differences, run_dir
    from .study import load_results

    if not files:
        return None
    plan_path, given = Path(files[0]), {Path(f).resolve() for f in files[1:]}
    the_plan = json.loads(plan_path.read_text())
    results = plan_path.parent.parent  # results/recheck/plan.json
    wanted = {
        (run_dir(results, a, the_plan["factor"], the_plan["fold"]) / "predictions.csv").resolve()
        for a in the_plan["runs"]
    }
    if wanted != given:
        raise UserError(
            f"--recheck: the predictions given are not the runs {plan_path} names "
            f"({', '.join(sorted(map(str, wanted - given))) or 'extra files given'})"
        )
    scores = {a: m["aggregate"]["metrics"]["accuracy"]["folds"] for a, m in load_results(metrics_files).items()}
    return the_plan, rechecked_differences(the_plan, results, scores)


def cmd_aggregate(args: argparse.Namespace) -> None:
    from .io import refuse_overwrite
    from .study import aggregate, write_csv

    refuse_overwrite([args.summary, args.ablation, args.cost], [args.h5, *args.metrics])
    n_train, n_test = fold_sizes(args.h5)
    summary, ablation, cost = aggregate(
        args.metrics,
        args.baseline,
        args.alpha,
        n_train=n_train,
        n_test=n_test,
        recheck=_recheck_results(args.recheck, args.metrics),
    )
    write_csv(summary, args.summary)
    write_csv(ablation, args.ablation)
    write_csv(cost, args.cost)
    log.info("cross-validation summary of %d architectures -> %s", len(summary), args.summary)


def cmd_select(args: argparse.Namespace) -> None:
    import pandas as pd

    from .config import load_yaml
    from .io import refuse_overwrite, write_json
    from .study import select

    refuse_overwrite([args.out], [args.summary, args.final_config])
    forced = load_yaml(args.final_config).get("architecture")
    choice = select(pd.read_csv(args.summary), args.metric, forced)
    write_json(args.out, choice)
    log.info(
        "final architecture: %s (%s, %s %.4f)", choice["architecture"], choice["reason"], args.metric, choice["mean"]
    )


def cmd_predict(args: argparse.Namespace) -> None:
    """Predict every row of a FER2013-format CSV with a saved model (extra test sets)."""
    import numpy as np
    import torch

    from .checkpoint import load_model
    from .csvdata import parse_fer_csv
    from .io import refuse_overwrite
    from .precision import cpu_has_bf16
    from .train import predict, setup_torch, use_channels_last, write_predictions

    refuse_overwrite([args.out], [args.csv, args.model])
    images, labels, _, row = parse_fer_csv(args.csv)
    setup_torch(torch.device("cpu"), args.threads)
    model, payload = load_model(args.model)
    t = payload["run_config"]["training"]
    probs = predict(
        model,
        torch.from_numpy(images).unsqueeze(1),
        torch.from_numpy(np.arange(len(row))),
        payload["input_size"],
        t.get("tta", "none"),
        use_channels_last(t, torch.device("cpu")),
        amp=bool(payload.get("amp")) and cpu_has_bf16(),
    )  # the precision it was trained and chosen in
    write_predictions(args.out, row, labels, probs)
    log.info("%s: %d faces predicted, accuracy %.4f", args.csv, len(row), float((probs.argmax(1) == labels).mean()))


def cmd_evaluate_final(args: argparse.Namespace) -> None:
    from .io import refuse_overwrite, write_json
    from .study import evaluate_final

    extra = _extra_sets(args.extra or [])
    refuse_overwrite([args.out], [args.public, args.private, *extra.values()])
    result = evaluate_final(args.public, args.private, extra)
    write_json(args.out, result)
    log.info(
        "final model: PublicTest accuracy %.4f, PrivateTest accuracy %.4f",
        result["public"]["accuracy"],
        result["private"]["accuracy"],
    )


def _extra_sets(items):
    """{name: predictions.csv} of `--extra NAME=FILE`; FER2013's own names are refused (the extra
    set's numbers would replace PublicTest's or PrivateTest's)."""
    from .validation import RESERVED_TEST_SET_NAMES

    extra = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--extra {item!r}: give NAME=predictions.csv")
        if name.lower() in RESERVED_TEST_SET_NAMES or name in extra:
            raise UserError(
                f"--extra {item!r}: the name {name!r} is taken (public and private are FER2013's own "
                f"test sets; each extra set needs its own name)"
            )
        extra[name] = path
    return extra


MODULE_COMMANDS = {
    "figures": "all figures of the study (training curves, filters, activations, saliency, ...)",
    "report": "render the markdown report from the results",
    "bench": "benchmark harness: one JSON line per measurement",
    "predict-cost": "predict a study's jobs, training images x epochs and wall time before running it",
    "status": "where a running study is: its training jobs, epochs, accuracy and time left",
    "predict-image": "emotions of the faces in photos or videos (face detection + a study's model)",
    "export": "a saved model with its preprocessing contract as ONNX",
    "ferplus": "score the final model against the FER+ crowd majority (data.ferplus)",
    "report-html": "the markdown report and the tables as HTML pages",
    "handin": "the hand-in zip: code as committed, README, report (md, HTML, PDF), final metrics",
    "recheck-plan": "the pairs whose verdict is most at risk, to retrain at twice the fold budget",
    "plan": "measure this machine and plan the budgets that fit study.time_budget",
}
MODULE_OF_COMMAND = {
    "figures": "figures.cli",
    "report": "report.cli",
    "bench": "bench.cli",
    "predict-cost": "cost.cli",
    "predict-image": "photos",
    "report-html": "htmlreport",
    "recheck-plan": "recheck",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ferstudy", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_data_commands(sub)
    add_training_commands(sub)
    add_evaluation_commands(sub)

    # Stages in their own modules register their commands themselves; a module is imported only
    # when its command runs (training jobs do not pay for matplotlib).
    import importlib

    for name, help_text in MODULE_COMMANDS.items():
        if name == command:
            importlib.import_module(f"ferstudy.{MODULE_OF_COMMAND.get(name, name)}").register(sub)
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def add_data_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="write the built-in synthetic demo dataset as a FER2013-format CSV")
    p.add_argument("--out", required=True)
    p.add_argument("--images", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("prepare", help="validate a FER2013 CSV and write the HDF5 (+ data summary)")
    p.add_argument("--csv", required=True)
    p.add_argument("--h5", required=True)
    p.add_argument("--dataset", default="fer2013", choices=["fer2013", "demo"])
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--fold-seed", type=int, default=0)
    p.add_argument("--summary-csv")
    p.add_argument("--summary-md")
    p.add_argument("--faces")
    p.set_defaults(func=cmd_prepare)


def add_training_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("train", help="train one architecture on one cross-validation fold")
    p.add_argument("--h5", required=True)
    p.add_argument("--run-config", required=True, help="resolved architecture config (results/cv/ARCH/run_config.yaml)")
    p.add_argument("--fold", type=int, required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--checkpoint", required=True, help="resume file, kept outside the declared outputs")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("train-final", help="retrain the selected architecture on all of Training")
    p.add_argument("--h5", required=True)
    p.add_argument(
        "--run-config", required=True, help="the chosen architecture's run config (results/cv/ARCH/run_config.yaml)"
    )
    p.add_argument(
        "--final-config", required=True, help="the final retrain's settings (results/final/final_config.yaml)"
    )
    p.add_argument("--out-dir", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_train_final)


def add_evaluation_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("evaluate-arch", help="metrics of one architecture over its folds (+ cost)")
    p.add_argument("--run-config", required=True)
    p.add_argument("--predictions", nargs="+", required=True)
    p.add_argument("--benchmarks", nargs="*")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_evaluate_arch)

    p = sub.add_parser("aggregate", help="cross-validation summary, ablation and cost tables")
    p.add_argument("--h5", required=True)
    p.add_argument("--metrics", nargs="+", required=True)
    p.add_argument("--baseline", required=True)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--summary", required=True)
    p.add_argument("--ablation", required=True)
    p.add_argument("--cost", required=True)
    p.add_argument(
        "--recheck",
        nargs="*",
        default=[],
        help="the recheck plan (results/recheck/plan.json), then the predictions of the runs it names",
    )
    p.set_defaults(func=cmd_aggregate)

    p = sub.add_parser("select", help="choose the final architecture from cross-validation")
    p.add_argument("--summary", required=True)
    p.add_argument("--metric", default="accuracy")
    p.add_argument("--final-config", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("evaluate-final", help="PublicTest and PrivateTest metrics of the final model")
    p.add_argument("--public", required=True)
    p.add_argument("--private", required=True)
    p.add_argument("--extra", nargs="*", help="NAME=predictions.csv of extra test sets")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_evaluate_final)

    p = sub.add_parser("predict", help="predict a FER2013-format CSV with a saved model")
    p.add_argument("--model", required=True)
    p.add_argument("--csv", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_predict)


def main(argv: Sequence[str] | None = None) -> int:
    # Before torch loads: spinning OpenMP threads steal the core from the thread they wait for when
    # other jobs share the machine (measured: 2-thread training at 29 img/s instead of 524).
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    try:
        args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the try, not at the exit's flush
    except UserError as err:
        print(f"ferstudy: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `ferstudy status | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit would fail again
        return 141  # as a shell reports a command killed by SIGPIPE
    return 0


if __name__ == "__main__":
    sys.exit(main())
