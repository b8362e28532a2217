#!/usr/bin/env python3
"""Accuracy parity of bf16 autocast and fp32 training on the real FER2013 (issue #13, item 2).

Trains the same network with the same recipe and seed (`--seed`) twice, `amp: true` and `amp: false`, on
all of Training with the final retrain's command (`ferstudy train-final`), side by side (1 thread
each, so both see the same machine), and prints one JSON line per precision and one with the
difference: PublicTest accuracy after the last epoch and at the best epoch, and the seconds.
PrivateTest is never read here (train-final writes its predictions; this script ignores them).

    python scripts/precision_parity.py --h5 results/data/dataset.h5 --cv-dir results/cv \\
        --arch baseline --epochs 10 --seed 1 --out results/parity    # -> results/parity/seed1/{bf16,fp32}

Needs a study's prepared data and the architecture's run config (results/cv/{arch}/run_config.yaml).
"""

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import yaml


def train(args, precision):
    out = Path(args.out) / f"seed{args.seed}" / precision
    out.mkdir(parents=True, exist_ok=True)
    final = {
        "training": {
            "epochs": args.epochs,
            "subsample": args.subsample,
            "eval_every": 1,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "tta": "flip",
            "curve_images": 0,
            "amp": precision == "bf16",
            "seed": args.seed,
        }
    }
    (out / "final_config.yaml").write_text(yaml.safe_dump(final, sort_keys=False))
    cmd = [
        sys.executable,
        "-m",
        "ferstudy",
        "train-final",
        "--h5",
        args.h5,
        "--run-config",
        str(Path(args.cv_dir) / args.arch / "run_config.yaml"),
        "--final-config",
        str(out / "final_config.yaml"),
        "--out-dir",
        str(out),
        "--checkpoint",
        str(out / "checkpoint.pt"),
        "--threads",
        str(args.threads),
    ]
    t0 = time.perf_counter()
    with open(out / "train.log", "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    history = pd.read_csv(out / "history.csv")
    result = yaml.safe_load((out / "config.yaml").read_text())
    return {
        "precision": precision,
        "arch": args.arch,
        "epochs": args.epochs,
        "seed": args.seed,
        "public_acc_last": float(history["val_acc"].iloc[-1]),
        "public_acc_best": float(history["val_acc"].max()),
        "best_epoch": int(history["val_acc"].idxmax()) + 1,
        "train_acc_last": float(history["train_acc"].iloc[-1]),
        "seconds": time.perf_counter() - t0,
        "recorded_precision": result.get("precision"),
        "threads": args.threads,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--h5", default="results/data/dataset.h5")
    p.add_argument("--cv-dir", default="results/cv")
    p.add_argument("--arch", default="baseline")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--subsample", type=float, default=1.0, help="fraction of Training (< 1: a smoke test)")
    p.add_argument("--threads", type=int, default=1, help="threads of each of the two trainings")
    p.add_argument("--seed", type=int, default=0, help="training seed of both runs (weights, batches, augmentation)")
    p.add_argument("--out", default="results/parity")
    args = p.parse_args(argv)
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda precision: train(args, precision), ["bf16", "fp32"]))
    for r in runs:
        print(json.dumps(r))
    bf16, fp32 = runs
    print(
        json.dumps(
            {
                "name": "precision_parity",
                "arch": args.arch,
                "epochs": args.epochs,
                "seed": args.seed,
                "diff_last_pp": 100 * (bf16["public_acc_last"] - fp32["public_acc_last"]),
                "diff_best_pp": 100 * (bf16["public_acc_best"] - fp32["public_acc_best"]),
                "speedup": fp32["seconds"] / bf16["seconds"],
                "target": "|diff| <= 0.5 pp on PublicTest",
            }
        )
    )


if __name__ == "__main__":
    main()
