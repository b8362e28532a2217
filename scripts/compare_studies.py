#!/usr/bin/env python3
"""Two collected studies side by side (markdown on stdout): the plan each made, predicted and real
seconds per phase, the final model's accuracies and the verdicts that differ.

    python scripts/compare_studies.py docs/measurements/cpu_preset docs/measurements/cpu_preset_fp32

Reads what scripts/collect_study.py wrote: plan.json, study_run.json (its `phases_s`),
final_metrics.json, selection.json and ablation.csv.
"""

import argparse
import json
from pathlib import Path

import pandas as pd

from ferstudy.cost.study import clock as study_clock

VERDICT_COLUMNS = ["diff_pp", "p", "p_pooled", "p_holm", "fragile", "verdict", "stability"]


def _json(d: Path, name: str) -> dict:
    path = d / name
    return json.loads(path.read_text()) if path.is_file() else {}


def clock(seconds: float | None) -> str:
    return "-" if seconds is None else study_clock(seconds)


def plan_line(d: Path) -> str:
    plan, run = _json(d, "plan.json"), _json(d, "study_run.json")
    chosen = run.get("final", {}).get("architecture")
    if not plan:
        return "no plan (fixed budgets)"
    f = plan["fold"]
    return (
        f"folds {f['epochs']} epochs on {f['subsample']:.0%}; recheck cap {plan['recheck_max']}; "
        f"final {chosen} {plan['final_epochs'].get(chosen, '?')} epochs (candidates "
        f"{min(plan['final_epochs'].values())}-{max(plan['final_epochs'].values())})"
    )


def phases_table(dirs: list[Path]) -> list[str]:
    runs = [_json(d, "study_run.json").get("phases_s", {}) for d in dirs]
    names = list(dict.fromkeys(k for r in runs for k in r))
    head = "| phase | " + " | ".join(f"{d.name} predicted | real | error" for d in dirs) + " |"
    lines = [head, "|---|" + "---:|---:|---:|" * len(dirs)]
    for name in names:
        cells = []
        for r in runs:
            p, a = (r.get(name) or {}).get("predicted_s"), (r.get(name) or {}).get("real_s")
            err = f"{p / a - 1:+.0%}" if p is not None and a else "-"
            cells.append(f"{clock(p)} | {clock(a)} | {err}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def finals_table(dirs: list[Path]) -> list[str]:
    lines = ["| study | final | PublicTest | PrivateTest | macro F1 (Private) |", "|---|---|---:|---:|---:|"]
    for d in dirs:
        m, run = _json(d, "final_metrics.json"), _json(d, "study_run.json")
        pub, priv = m.get("public", {}), m.get("private", {})
        right = round(priv.get("accuracy", 0) * priv.get("n", 0))
        lines.append(
            f"| {d.name} | {run.get('final', {}).get('architecture')} | {pub.get('accuracy', 0):.2%} | "
            f"{priv.get('accuracy', 0):.2%} ({right}/{priv.get('n')}) | {priv.get('macro_f1', 0):.3f} |"
        )
    return lines


def verdicts_table(dirs: list[Path], all_rows: bool) -> list[str]:
    tables = [pd.read_csv(d / "ablation.csv").set_index("arch") for d in dirs]
    archs = [a for a in tables[0].index if all(a in t.index for t in tables)]
    head = "| variant | " + " | ".join(f"{d.name}: diff pp, p, verdict, label" for d in dirs) + " |"
    lines = [head, "|---|" + "---|" * len(dirs)]
    for a in archs:
        rows = [t.loc[a] for t in tables]
        same = len({(r["verdict"], r["stability"]) for r in rows}) == 1
        if same and not all_rows:
            continue
        cells = [f"{r['diff_pp']:+.2f}, {r['p']:.3f}, {r['verdict']}, {r['stability']}" for r in rows]
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("studies", nargs=2, type=Path, help="two directories written by collect_study.py")
    p.add_argument("--all", action="store_true", help="every variant, not only those whose verdict or label differ")
    args = p.parse_args(argv)
    out = ["## Plans", *(f"- {d.name}: {plan_line(d)}" for d in args.studies), "", "## Time per phase"]
    out += [*phases_table(args.studies), "", "## Final model", *finals_table(args.studies), ""]
    out += ["## Verdicts" + ("" if args.all else " that differ (verdict or label)")]
    out += verdicts_table(args.studies, args.all)
    print("\n".join(out))


if __name__ == "__main__":
    main()
