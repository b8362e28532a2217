#!/usr/bin/env python3
"""Check a verdict at a longer budget: retrain a variant and the baseline with N times the epochs.

The study labels each verdict `holds`, `budget-dependent` or `undecided` from its learning curve
(ferstudy/stability.py); this script is the direct test for the verdicts most at risk. It takes the
study's own run configs (results/cv/{arch}/run_config.yaml), multiplies `training.epochs`, trains
the chosen folds with the same CLI the workflow runs (`ferstudy train`, resumable), and prints the
paired difference at the study's budget and at the longer one, fold by fold, as JSON lines.

    python scripts/recheck_budget.py --pairs no_augment augment_full --factor 2 --folds 0 1

Outputs go under results/recheck/x{factor}/{arch}/fold{k}/ (git-ignored), beside the study's.
"""

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import yaml


def accuracy(predictions_csv):
    df = pd.read_csv(predictions_csv)
    return float((df["label"] == df["pred"]).mean())


def train_longer(results, arch, factor, fold, threads):
    out = results / "recheck" / f"x{factor:g}" / arch / f"fold{fold}"
    if (out / "predictions.csv").is_file():
        return out
    run_cfg = yaml.safe_load((results / "cv" / arch / "run_config.yaml").read_text())
    run_cfg["training"]["epochs"] = int(round(run_cfg["training"]["epochs"] * factor))
    out.mkdir(parents=True, exist_ok=True)
    (out / "run_config.yaml").write_text(yaml.safe_dump(run_cfg, sort_keys=False))
    cmd = [sys.executable, "-m", "ferstudy", "train", "--h5", str(results / "data" / "dataset.h5"),
           "--run-config", str(out / "run_config.yaml"), "--fold", str(fold), "--out-dir", str(out),
           "--checkpoint", str(results / "checkpoints" / "recheck" / f"x{factor:g}" / arch / f"fold{fold}.pt"),
           "--threads", str(threads)]
    with open(out / "train.log", "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default="results", help="the study's results directory")
    p.add_argument("--pairs", nargs="+", required=True, help="variants to recheck against the baseline")
    p.add_argument("--baseline", default="baseline")
    p.add_argument("--factor", type=float, default=2.0, help="epochs multiplier")
    p.add_argument("--folds", nargs="+", type=int, default=[0])
    p.add_argument("--jobs", type=int, default=2, help="trainings side by side (1 thread each)")
    args = p.parse_args(argv)
    results = Path(args.results)
    ablation = pd.read_csv(results / "tables" / "ablation.csv").set_index("arch")
    tasks = [(a, k) for a in [args.baseline, *args.pairs] for k in args.folds]
    with ThreadPoolExecutor(args.jobs) as pool:
        outs = dict(zip(tasks, pool.map(lambda t: train_longer(results, t[0], args.factor, t[1], 1), tasks)))
    for arch in args.pairs:
        row = ablation.loc[arch]
        for k in args.folds:
            short = 100 * (accuracy(results / "cv" / arch / f"fold{k}" / "predictions.csv")
                           - accuracy(results / "cv" / args.baseline / f"fold{k}" / "predictions.csv"))
            longer = 100 * (accuracy(outs[(arch, k)] / "predictions.csv")
                            - accuracy(outs[(args.baseline, k)] / "predictions.csv"))
            print(json.dumps({"arch": arch, "baseline": args.baseline, "fold": k, "factor": args.factor,
                              "diff_pp_study": round(short, 2), "diff_pp_longer": round(longer, 2),
                              "sign_kept": (short > 0) == (longer > 0), "verdict": row["verdict"],
                              "stability": row.get("stability"), "projected_2x_pp": row.get("projected_2x_pp")}))


if __name__ == "__main__":
    main()
