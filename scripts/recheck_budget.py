#!/usr/bin/env python3
"""Check verdicts at a longer budget by hand: retrain variants and the baseline with N times the epochs.

The study itself rechecks the verdicts most at risk at twice the budget on fold 0 (rule `recheck`,
`study.recheck`; ferstudy/recheck.py); this script uses the same functions for other pairs, factors
or folds. It takes the study's own run configs (results/cv/{arch}/run_config.yaml), multiplies
`training.epochs` (same faces, seed and precision as the fold's study run), trains the chosen folds
with the CLI the workflow runs (`ferstudy train`, resumable), and prints the paired difference at
the study's budget and at the longer one with the label the study would give it, as JSON lines.

    python scripts/recheck_budget.py --pairs no_augment augment_full --factor 2 --folds 0 1

Outputs go under results/recheck/x{factor}/{arch}/fold{k}/ (git-ignored), where the study's own
recheck puts its runs: a run the study made is reused, not trained again.
"""

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ferstudy.recheck import fold_accuracy, longer_run_config, run_dir  # noqa: E402
from ferstudy.stability import recheck_label  # noqa: E402


def train_longer(results, arch, factor, fold, threads):
    out = run_dir(results, arch, factor, fold)
    if (out / "predictions.csv").is_file():
        return out
    run_cfg = yaml.safe_load((results / "cv" / arch / "run_config.yaml").read_text())
    study_run = results / "cv" / arch / f"fold{fold}" / "config.yaml"
    precision = yaml.safe_load(study_run.read_text()).get("precision") if study_run.is_file() else None
    out.mkdir(parents=True, exist_ok=True)
    config = out.parent / "run_config.yaml"
    config.write_text(yaml.safe_dump(longer_run_config(run_cfg, factor, precision), sort_keys=False))
    cmd = [
        sys.executable,
        "-m",
        "ferstudy",
        "train",
        "--h5",
        str(results / "data" / "dataset.h5"),
        "--run-config",
        str(config),
        "--fold",
        str(fold),
        "--out-dir",
        str(out),
        "--checkpoint",
        str(results / "checkpoints" / "recheck" / f"x{factor:g}" / arch / f"fold{fold}.pt"),
        "--threads",
        str(threads),
    ]
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
            short = 100 * (
                fold_accuracy(results / "cv" / arch / f"fold{k}" / "predictions.csv")
                - fold_accuracy(results / "cv" / args.baseline / f"fold{k}" / "predictions.csv")
            )
            longer = 100 * (
                fold_accuracy(outs[(arch, k)] / "predictions.csv")
                - fold_accuracy(outs[(args.baseline, k)] / "predictions.csv")
            )
            label, reason = recheck_label(
                row["verdict"], row["diff_pp"], short, longer, row.get("std_pooled_pp", row["std_pp"]), k, args.factor
            )
            print(
                json.dumps(
                    {
                        "arch": arch,
                        "baseline": args.baseline,
                        "fold": k,
                        "factor": args.factor,
                        "diff_pp_study": round(short, 2),
                        "diff_pp_longer": round(longer, 2),
                        "sign_kept": (short > 0) == (longer > 0),
                        "verdict": row["verdict"],
                        "label": label,
                        "reason": reason,
                        "study_label": row.get("stability"),
                    }
                )
            )


if __name__ == "__main__":
    main()
