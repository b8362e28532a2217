"""The measured recheck: the verdicts most at risk, retrained at twice the fold budget. (No torch.)

After cross-validation, `plan` picks the pairs whose verdict is most at risk (`at_risk`):
- every regularizer verdict (dropout, augmentation: a regularizer pays off only once there is
  over-fitting, which a short budget may not reach), and
- every significant verdict whose difference is within `RISK_SE` pooled standard errors of zero
  (the standard error of a mean difference with the variance pooled over all pairs,
  `metrics.pooled_resampled_ttests`).
Riskiest first: the significant verdicts by their margin (|difference| / pooled standard error,
smallest first), then the null regularizer verdicts, largest difference first. `study.recheck`
says which pairs: `auto` (these), `off`, or a list of variants; `study.recheck_max` caps how many
(the riskiest first; the others are listed as `unchecked`, so the report can name them).

Snakemake (workflow/rules/recheck.smk) runs `plan` as a checkpoint (`ferstudy recheck-plan`), then
for each chosen variant and the baseline (one 2x run shared by all pairs) `ferstudy train` on fold
`RECHECK_FOLD` with `longer_run_config` (epochs x `RECHECK_FACTOR`, the same faces, seed and
precision as that fold's study run). `rechecked_differences` reads the results for `aggregate`,
which labels each rechecked verdict from them (`stability.recheck_label`).

`scripts/recheck_budget.py` uses the same functions for other factors and folds by hand.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UserError
from .stability import REGULARIZER_FACTORS, SIGNIFICANT

if TYPE_CHECKING:
    import argparse

RECHECK_FACTOR = 2.0  # "twice the budget": epochs x 2 on the same faces
RECHECK_FOLD = 0
RISK_SE = 2.0  # a significant verdict within this many pooled standard errors of zero is at risk


def run_dir(results: Path | str, arch: str, factor: float = RECHECK_FACTOR, fold: int = RECHECK_FOLD) -> Path:
    """Where the longer run of `arch` lives: results/recheck/x{factor}/{arch}/fold{fold}."""
    return Path(results) / "recheck" / f"x{factor:g}" / arch / f"fold{fold}"


def longer_run_config(run_cfg: dict, factor: float = RECHECK_FACTOR, precision: str | None = None) -> dict:
    """The study's run config with `factor` x the epochs; everything else (subsample, schedule shape,
    seed) kept. `precision` ("bf16" | "fp32", what that fold's study run trained in) pins `amp`, so
    the longer run differs from the study's only in its budget."""
    import copy

    out = copy.deepcopy(run_cfg)
    out["training"]["epochs"] = int(round(run_cfg["training"]["epochs"] * factor))
    if precision in ("bf16", "fp32"):
        out["training"]["amp"] = precision == "bf16"
    return out


def at_risk(rows: list[dict], risk_se: float = RISK_SE) -> list[dict]:
    """[{arch, reason, margin_se}] of the ablation rows (dicts with arch, factor, verdict, diff_pp,
    se_pooled_pp) whose verdict is at risk, riskiest first (module docstring)."""
    claims: list[tuple[dict, dict]] = []  # (entry, ablation row)
    nulls: list[tuple[dict, dict]] = []
    for r in rows:
        margin = float(abs(r["diff_pp"]) / r["se_pooled_pp"]) if r["se_pooled_pp"] > 0 else math.inf
        regularizer = r["factor"] in REGULARIZER_FACTORS
        significant = r["verdict"] in SIGNIFICANT
        near_zero = significant and margin < risk_se
        if not (regularizer or near_zero):
            continue
        why = [f"a regularizer verdict ({r['factor']})"] if regularizer else []
        if near_zero:
            why.append(f"significant but within {risk_se:g} pooled standard errors of zero ({margin:.2f})")
        entry = {
            "arch": r["arch"],
            "reason": "; ".join(why),
            "margin_se": margin if math.isfinite(margin) else None,
        }  # JSON has no Infinity
        (claims if significant else nulls).append((entry, r))
    claims.sort(key=lambda e: (math.inf if e[0]["margin_se"] is None else e[0]["margin_se"], e[0]["arch"]))
    nulls.sort(key=lambda e: (-abs(e[1]["diff_pp"]), e[0]["arch"]))
    return [entry for entry, _ in claims + nulls]


def plan(
    rows: list[dict],
    baseline: str,
    mode: str | list[str] | tuple[str, ...] = "auto",
    cap: int | None = None,
    fold: int = RECHECK_FOLD,
    factor: float = RECHECK_FACTOR,
) -> dict:
    """The recheck plan (JSON-ready): which pairs are at risk, which are rechecked, which are left.

    mode: "auto" | "off" | a list of variant names (rechecked in that order, uncapped: the user chose
    them). cap: at most this many pairs in auto mode (None: all at risk)."""
    names = {r["arch"] for r in rows}
    risky = at_risk(rows)
    if mode == "off":
        chosen, unchecked = [], []
    elif isinstance(mode, (list, tuple)):
        unknown = [a for a in mode if a not in names]
        if unknown:
            raise UserError(
                f"config key study.recheck: {', '.join(map(repr, unknown))} is no variant of this study "
                f"(variants: {', '.join(sorted(names))})"
            )
        chosen, unchecked = list(dict.fromkeys(mode)), [e["arch"] for e in risky if e["arch"] not in mode]
    elif mode == "auto":
        order = [e["arch"] for e in risky]
        keep = len(order) if cap is None else max(0, int(cap))
        chosen, unchecked = order[:keep], order[keep:]
    else:
        raise UserError(f"config key study.recheck: {mode!r} is not auto, off or a list of variants")
    return {
        "mode": mode if isinstance(mode, str) else "list",
        "factor": factor,
        "fold": fold,
        "cap": cap,
        "baseline": baseline,
        "at_risk": risky,
        "rechecked": chosen,
        "unchecked": unchecked,
        "runs": [baseline, *chosen] if chosen else [],
    }


def workflow_inputs(checkpoints: Any, mode: str | list[str], results: str) -> list[str]:
    """Snakemake input of rule aggregate: the plan (the checkpoint `recheck_plan`'s output; reading it
    makes Snakemake wait for it), then the predictions of every run it names; [] when mode is off."""
    import json

    if mode == "off":
        return []
    plan_file = checkpoints.recheck_plan.get().output[0]
    with open(plan_file) as f:
        runs = json.load(f)["runs"]
    return [plan_file] + [str(run_dir(results, a) / "predictions.csv") for a in runs]


def fold_accuracy(predictions_csv: Path | str) -> float:
    """Accuracy of one predictions CSV (the prediction is the argmax of its probabilities)."""
    from .metrics import read_predictions

    labels, probs, _ = read_predictions(predictions_csv)
    return float((probs.argmax(1) == labels).mean())


def rechecked_differences(the_plan: dict, results: Path | str, fold_scores: dict) -> dict:
    """{arch: {"recheck_1x_pp", "recheck_2x_pp"}} for every rechecked pair: the paired difference on
    the plan's fold at the study's budget (`fold_scores[arch][fold]`, from metrics.json) and at the
    longer one (the recheck runs' predictions under `results`)."""
    fold, factor, baseline = the_plan["fold"], the_plan["factor"], the_plan["baseline"]
    if not the_plan["rechecked"]:
        return {}
    base_2x = fold_accuracy(run_dir(results, baseline, factor, fold) / "predictions.csv")
    out = {}
    for arch in the_plan["rechecked"]:
        longer = fold_accuracy(run_dir(results, arch, factor, fold) / "predictions.csv")
        out[arch] = {
            "recheck_1x_pp": 100 * (fold_scores[arch][fold] - fold_scores[baseline][fold]),
            "recheck_2x_pp": 100 * (longer - base_2x),
        }
    return out


def predicted_pairs(study_cfg: dict) -> tuple[list[str], str]:
    """(variants, bound) the recheck will retrain, as far as the config tells before any training:
    a list: exactly those; auto: at least the regularizer variants (the significant verdicts near
    zero are known only after cross-validation), at most `recheck_max`; off: none."""
    from .config import resolve_arch

    study = study_cfg["study"]
    mode, cap = study.get("recheck", "auto"), study.get("recheck_max")
    variants = [a for a in study["architectures"] if a != study["baseline"]]
    if mode == "off" or cap == 0:
        return [], "exact"
    if isinstance(mode, list):
        return list(mode), "exact"
    regularizers = [a for a in variants if resolve_arch(study_cfg, a).get("factor") in REGULARIZER_FACTORS]
    if cap is not None and len(regularizers) >= cap:
        return regularizers[:cap], "exact"
    return regularizers, "at least"


# ---------------------------------------------------------------- the command (checkpoint recheck_plan)


def cmd_recheck_plan(args: argparse.Namespace) -> None:
    import logging

    from .cli import fold_sizes
    from .io import write_json
    from .study import comparisons_with_pooled

    n_train, n_test = fold_sizes(args.h5)
    rows, _ = comparisons_with_pooled(args.metrics, args.baseline, args.alpha, n_train, n_test)
    mode = args.recheck[0] if args.recheck in (["auto"], ["off"]) else list(args.recheck)
    cap = args.max
    if args.plan:  # study.time_budget: the plan's recheck_max (ferstudy/plan.py)
        from .plan import load_plan

        cap = (load_plan(args.plan[0]) or {}).get("recheck_max", cap)
    result = plan(rows, args.baseline, mode, cap)
    write_json(args.out, result)
    logging.getLogger("ferstudy.recheck").info(
        "recheck at %gx the epochs on fold %d: %s%s",
        result["factor"],
        result["fold"],
        ", ".join(result["rechecked"]) or "none",
        f"; at risk but not rechecked (study.recheck_max {cap}): {', '.join(result['unchecked'])}"
        if result["unchecked"]
        else "",
    )


def _cap(value):
    return None if str(value).lower() in ("", "none", "null") else int(value)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "recheck-plan",
        help="the pairs whose verdict is most at risk, to retrain at 2x",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--h5", required=True)
    p.add_argument("--metrics", nargs="+", required=True)
    p.add_argument("--baseline", required=True)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--recheck", nargs="+", default=["auto"], help="auto | off | the variants to recheck")
    p.add_argument("--max", type=_cap, default=None, help="at most this many pairs in auto mode (none: all)")
    p.add_argument("--plan", nargs="*", default=[], help="results/plan.json: its recheck_max replaces --max")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_recheck_plan)
    return p
