"""The markdown report: every number from the result files, every finding a sentence computed
from those numbers.

- `collect(results_dir)` reads the results (tables, cross-validation and final metrics, the final
  model, the prepared data, benchmarks) into one dict of numbers, `ctx`. It raises `UserError`
  naming every missing file.
- `findings(ctx)` turns numbers into sentences: it merges one pure function of `ctx` per report
  section (`SECTIONS`: data, protocol, verdicts, fit, cost, budget, per-class effects, selection,
  final model, per class, other datasets (`data.extra_test_sets`), FER+ (`results/final/ferplus.json`,
  when `data.ferplus` is set), inside the model, reflections, reproducibility). A verdict is stated one
  way everywhere (`verdict_clause`): the corrected resampled t-test's verdict (p < `study.alpha`),
  its Holm-adjusted p over all comparisons and its budget-stability label from ablation.csv
  (ferstudy/stability.py); summaries lead with the verdicts that survive Holm and hold. The
  runner-up is compared by the same paired test; "within sampling noise" and the over- or
  under-fitting reading are computed, and a different result gives a different sentence. Nothing
  is claimed that the numbers do not support.
- `render(ctx, template_dir)` fills `report/report.md.j2` (Jinja2) with `ctx` and the findings.
- `register(subparsers)` adds `ferstudy report`.

How words are counted (`prose_words`): the rendered markdown minus fenced code blocks, table rows
(lines starting with `|`), image lines (`![...](...)`), headings (`#`), HTML comments and
horizontal rules; link targets and emphasis markers are dropped, link texts and inline code are
kept (`snake_case` names are one word); a word is a whitespace-separated token containing a letter
or a digit. The template aims at 1,500-3,000 such words (`PROSE_WORDS`); `ferstudy report` logs the
count and warns outside that range.
"""

import json
import logging
import math
import os
import re
from pathlib import Path

import numpy as np

from . import CLASS_NAMES, SPLIT_NAMES
from .errors import UserError
from .io import float_or_nan

log = logging.getLogger("ferstudy.report")

PROSE_WORDS = (1500, 3000)
FIGURE_NAMES = ("training_curves", "cv_accuracy", "accuracy_vs_compute", "confusion_cv", "confusion_final",
                "final_history", "filters_layer1", "filters_deeper", "activations", "channel_emotion",
                "saliency", "examples")
TEMPLATE = "report.md.j2"
CHANNEL_FACES_PER_CLASS = 150  # as figures.plot_channel_emotion, so the numbers describe that figure
SEED = 0


# ---------------------------------------------------------------- formatting (also Jinja filters)

def pct(x, digits=1):
    """0.6134 -> '61.3%'."""
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.{digits}f}%"


def pp(x, digits=1):
    """Percentage points with a sign: 4.06 -> '+4.1 pp'."""
    return "n/a" if x is None or not np.isfinite(x) else f"{x:+.{digits}f} pp"


def pval(p):
    """'p = 0.012', 'p < 0.001', or 'no p-value'."""
    if p is None or not np.isfinite(p):
        return "no p-value"
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}" if p < 0.1 else f"p = {p:.2f}"


def num(x):
    return f"{int(round(x)):,}"


def mflops(x):
    """MFLOPs: one decimal below 100 ('9.5', '36.8'), none above ('751', '2,192')."""
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.1f}" if x < 100 else f"{x:,.0f}"


def seconds(s):
    """Human wall time: '42 s', '12.5 min', '2.3 h'."""
    if s is None or not np.isfinite(s):
        return "n/a"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def code(name):
    return f"`{name}`"


def mean_std(metric, row):
    """'61.3% ± 1.2' from row['<metric>_mean'] and row['<metric>_std'] (fractions)."""
    return f"{pct(row[f'{metric}_mean'])} ± {100 * row[f'{metric}_std']:.1f}"


def extract(key, mapping):
    return mapping[key]


def md_table(headers, rows, align=None):
    """Markdown table; `align` one of 'l'/'r' per column (default: text left, numbers right)."""
    align = align or ["l"] + ["r"] * (len(headers) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "|".join(sep) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def and_join(items):
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def plural(n, word, many=None):
    return f"{n} {word if n == 1 else (many or word + 's')}"


# ---------------------------------------------------------------- counting words

_IMAGE_LINE = re.compile(r"^\s*!\[[^\]]*\]\([^)]*\)\s*$")


def prose_text(markdown):
    """The prose of a markdown document (see the module docstring for what is left out)."""
    markdown = re.sub(r"<!--.*?-->", " ", markdown, flags=re.S)
    kept, fenced = [], False
    for line in markdown.splitlines():
        s = line.strip()
        if s.startswith("```") or s.startswith("~~~"):
            fenced = not fenced
            continue
        if fenced or s.startswith("|") or s.startswith("#") or _IMAGE_LINE.match(s) or re.fullmatch(r"[-*_]{3,}", s):
            continue
        kept.append(line)
    text = "\n".join(kept)
    text = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"\1", text)   # inline images -> alt text
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)    # links -> their text
    text = re.sub(r"^\s*>", " ", text, flags=re.M)       # blockquote markers
    return re.sub(r"[*`]|(?<![A-Za-z0-9])_+|_+(?![A-Za-z0-9])", " ", text)  # emphasis, not snake_case


def prose_words(markdown):
    """Number of prose words (tokens with a letter or digit) in `markdown`."""
    return sum(1 for tok in prose_text(markdown).split() if re.search(r"[A-Za-z0-9]", tok))


def image_links(markdown):
    """Targets of every markdown image link, in order."""
    return re.findall(r"!\[[^\]]*\]\(([^)\s]+)[^)]*\)", markdown)


# ---------------------------------------------------------------- reading the results

def _required_files(r, archs, figures=True):
    files = [r / "data" / "dataset.h5", r / "data" / "faces.png",
             *(r / "tables" / f"{t}.csv" for t in ("cv_summary", "ablation", "cost")),
             *(r / "final" / f for f in ("selection.json", "metrics.json", "config.yaml", "history.csv", "model.pt"))]
    if figures:
        files += [r / "figures" / f"{name}.png" for name in FIGURE_NAMES]
    for arch in archs:
        files += [r / "cv" / arch / "metrics.json", r / "cv" / arch / "run_config.yaml"]
    return files


def _need_all(paths):
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise UserError(f"report: missing result file(s) {shown} (run `snakemake` first)")


def _read_yaml(path):
    import yaml

    return yaml.load(Path(path).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}


def _records(df):
    """DataFrame -> list of dicts with NaN turned into None-safe floats (kept as float nan)."""
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in df.to_dict("records")]


def collect(results_dir, report_path=None, preset=None, threads=1, allow_missing_figures=False):
    """All numbers the report needs, from the files under `results_dir` (see docs/DESIGN.md).

    Every figure must exist unless `allow_missing_figures` (then missing ones are not linked)."""
    import pandas as pd

    from .cost import predicted_vs_actual
    from .data import count_table, load_h5

    r = Path(results_dir)
    summary_path = r / "tables" / "cv_summary.csv"
    _need_all([summary_path])
    summary = pd.read_csv(summary_path)
    archs = list(summary["architecture"])
    _need_all(_required_files(r, archs, figures=not allow_missing_figures))

    data = load_h5(r / "data" / "dataset.h5")
    ablation = pd.read_csv(r / "tables" / "ablation.csv")
    cost = pd.read_csv(r / "tables" / "cost.csv").set_index("architecture")
    selection = json.loads((r / "final" / "selection.json").read_text())
    final_metrics = json.loads((r / "final" / "metrics.json").read_text())
    final_cfg = _read_yaml(r / "final" / "config.yaml")
    history = _records(pd.read_csv(r / "final" / "history.csv"))
    cv = {a: json.loads((r / "cv" / a / "metrics.json").read_text()) for a in archs}
    run_cfgs = {a: _read_yaml(r / "cv" / a / "run_config.yaml") for a in archs}

    baseline = str(ablation["baseline"].iloc[0]) if len(ablation) else archs[0]
    counts = count_table(data)
    n_train = int(counts.loc["Training", "total"])
    k = int(data.attrs.get("folds", summary["folds"].max()))
    class_counts = {s: [int(counts.loc[s, c]) for c in CLASS_NAMES] for s in SPLIT_NAMES}
    rows = [arch_row(rec, cost, cv[rec["architecture"]], run_cfgs, baseline, class_counts, k)
            for rec in _records(summary)]
    desc = {row["architecture"]: row["description"] for row in rows}
    abl = ablation_rows(_records(ablation), desc)
    chosen = selection["architecture"]
    report_dir = Path(report_path).parent if report_path else r / "report"

    def link(path):
        return Path(os.path.relpath(path, report_dir)).as_posix()

    by_name = {row["architecture"]: row for row in rows}
    ctx = {
        "dataset": data.attrs.get("dataset", "unknown"),
        "demo": data.attrs.get("dataset") == "demo",
        "data": data_context(data, counts, k),
        "baseline": baseline,
        "metric": selection.get("metric", "accuracy"),
        "alpha": float(ablation["alpha"].iloc[0]) if len(ablation) else 0.05,
        "archs": rows,
        "ablation": abl,
        "selection": selection,
        "selected_by_cv": str(selection.get("reason", "")).startswith("highest"),
        "chosen": by_name[chosen],
        "cv_chosen": cv[chosen]["aggregate"],
        "cv_training": run_cfgs[baseline]["training"],
        "chosen_training": run_cfgs[chosen]["training"],
        "runner_up_test": runner_up_test(selection, by_name, selection.get("metric", "accuracy"),
                                         n_train * (k - 1) // k, n_train // k),
        "final": final_context(final_metrics, final_cfg, history, class_counts),
        "precision": {"final": {"precision": final_cfg.get("precision"), "reason": final_cfg.get("precision_reason")},
                      "folds": fold_precisions(r, archs, k)},
        "environment": final_cfg.get("environment", {}),
        "config_hash": final_cfg.get("config_hash"),
        "threads": final_cfg.get("threads"),
        "preset": preset,
        "benchmarks": benchmark_times(r, archs),
        "cost_prediction": predicted_vs_actual(r),
        "ferplus": read_ferplus_scores(r),
        "inspect": inspect_model(r / "final" / "model.pt", data, threads=threads),
        "seed_picks": SEED,
        "figures": {name: link(r / "figures" / f"{name}.png") if (r / "figures" / f"{name}.png").is_file() else None
                    for name in FIGURE_NAMES},
        "faces": link(r / "data" / "faces.png"),
        "results_dir": r.as_posix(),
    }
    ctx["pretrained_pairs"] = pretrained_pairs(cv, run_cfgs, ctx["data"]["fold_train"], ctx["data"]["fold_test"],
                                               ctx["alpha"])
    return ctx


def final_context(final_metrics, final_cfg, history, class_counts):
    """The final model's section: its PublicTest, PrivateTest and extra test-set metrics, training
    settings and workload, the epoch PublicTest chose, time and history."""
    training = final_cfg.get("run_config", {}).get("training", {})
    return {"public": final_metrics["public"], "private": final_metrics["private"],
            "extra": {name: m for name, m in final_metrics.items()  # extra test sets, if any
                      if name not in ("public", "private") and isinstance(m, dict) and "accuracy" in m},
            "training": training, "model": final_cfg.get("run_config", {}).get("model", {}),
            "workload": final_workload_of(training, class_counts),
            "best_epoch": final_cfg.get("best_epoch"), "best_public_acc": final_cfg.get("best_public_acc"),
            "seconds": final_cfg.get("seconds"), "history": history, "n_train": final_cfg.get("n_train")}


def data_context(data, counts, k):
    """The data section's numbers: counts per split and class, source, folds and fold sizes."""
    n_train = int(counts.loc["Training", "total"])
    return {"counts": {s: {c: int(counts.loc[s, c]) for c in [*CLASS_NAMES, "total"]} for s in [*SPLIT_NAMES, "total"]},
            "n_train": n_train, "n_public": int(counts.loc["PublicTest", "total"]),
            "n_private": int(counts.loc["PrivateTest", "total"]),
            "source_path": data.attrs.get("source_path"), "source_sha256": data.attrs.get("source_sha256"),
            "folds": k, "fold_seed": data.attrs.get("fold_seed"),
            "fold_train": n_train * (k - 1) // k, "fold_test": n_train // k}


def arch_row(rec, cost, cv_metrics, run_cfgs, baseline, class_counts, k):
    """One architecture's row of the report: its cv_summary.csv record with its cost, fold scores,
    layers, training settings, per-class recall, fit and what differs from the baseline's training."""
    a = rec["architecture"]
    c = cost.loc[a].to_dict() if a in cost.index else {}
    model, training, agg = run_cfgs[a]["model"], run_cfgs[a]["training"], cv_metrics["aggregate"]
    return {**rec, "params": c.get("params"), "mflops": c.get("mflops"),
            "train_seconds_per_fold": c.get("train_seconds_per_fold"), "peak_rss_mb": c.get("peak_rss_mb"),
            "fold_scores": agg["metrics"], "fold_accuracy": agg["metrics"]["accuracy"]["folds"],
            "layers": layer_summary(model), "conv_filters": conv_filters(model), "activations": activations(model),
            "subsample": float(training.get("subsample", 1.0)), "dropout": has_dropout(model),
            "augmented": bool(training.get("augment", {}).get("enabled", True)),
            "recall": {cl: v["recall"]["mean"] for cl, v in agg["per_class"].items()},
            "support": {cl: v["support"]["mean"] for cl, v in agg["per_class"].items()},
            "fit": curve_fit(cv_metrics.get("curve")),
            "workload": fold_workload(run_cfgs[a], class_counts, k),
            "training_changes": training_changes(run_cfgs[baseline]["training"], training)
            if a != baseline and baseline in run_cfgs else []}


def pretrained_pairs(cv, run_cfgs, fold_train, fold_test, alpha):
    """Each pretrained backbone against its from-scratch twin: the studied architecture with the same
    backbone and `pretrained: null` (one with the same training settings first). Judged by the
    ablation's own rule with the twin in the baseline's place: `metrics.compare_to_baseline` (the
    corrected resampled t-test on fold accuracy, verdict at p < alpha) and `study.budget_checked`
    (the stability label from the paired learning curves). One planned comparison per pair, outside
    the ablation's Holm family, so no Holm p. [{arch, twin (None when none was studied), row (an
    ablation row), changes (training settings that differ from the twin's)}]."""
    from .metrics import compare_to_baseline
    from .study import budget_checked

    out = []
    for a, rc in run_cfgs.items():
        spec = rc.get("model") or {}
        if "backbone" not in spec or not spec.get("pretrained"):
            continue
        twins = sorted((b for b, rb in run_cfgs.items() if rb.get("model") == {"backbone": spec["backbone"],
                                                                                "pretrained": None}),
                       key=lambda b: run_cfgs[b]["training"] != rc["training"])
        scores = {n: cv[n]["aggregate"]["metrics"]["accuracy"]["folds"] for n in [a, *twins[:1]]}
        if not twins or len(scores[a]) != len(scores[twins[0]]):
            out.append({"arch": a, "twin": None, "backbone": spec["backbone"], "row": None, "changes": []})
            continue
        b = twins[0]
        trained = {n: max(1, round(fold_train * float(run_cfgs[n]["training"].get("subsample", 1.0)))) for n in (a, b)}
        comparison = compare_to_baseline({b: scores[b], a: scores[a]}, b, trained, fold_test, alpha=alpha)
        row = budget_checked(comparison, cv, b, trained, fold_test)[0]
        row = ablation_rows([{**row, "factor": cv[a].get("factor", ""), "p_holm": math.nan, "holm": False}], {})[0]
        out.append({"arch": a, "twin": b, "backbone": spec["backbone"], "row": row,
                    "changes": training_changes(run_cfgs[b]["training"], rc["training"])})
    return out


def read_ferplus_scores(r):
    """results/final/ferplus.json (rule ferplus_scores, data.ferplus set) if it scores the current final
    predictions, else None (not run, or left from an earlier final model)."""
    from .data import sha256_of

    path = r / "final" / "ferplus.json"
    if not path.is_file():
        return None
    scores = json.loads(path.read_text())
    now = {key: sha256_of(r / "final" / f"predictions_{key}.csv") for key in ("public", "private")}
    if scores.get("predictions_sha256") != now:
        log.warning("%s scores other predictions than results/final/ (an earlier final model): left out of the "
                    "report", path)
        return None
    return scores


ABLATION_DEFAULTS = {"factor": "", "p_holm": math.nan, "holm": False, "n_train": None, "n_test": None, "gap_pp": math.nan,
                     "baseline_gap_pp": math.nan, "stability": "unchecked", "stability_rule": "",
                     "stability_reason": "ablation.csv has no stability label (written by an older ferstudy)",
                     "stability_basis": "", "p_pooled": math.nan, "fragile": False, "detectable_pp": math.nan,
                     "compute_ratio": math.nan, "compute_mixed": False, "recheck_status": "", "recheck_reason": "",
                     "recheck_1x_pp": math.nan, "recheck_2x_pp": math.nan}
ABLATION_FLOATS = ("p", "p_holm", "diff_pp", "std_pp", "t", "gap_pp", "baseline_gap_pp", "mean", "baseline_mean",
                   "p_pooled", "detectable_pp", "compute_ratio", "recheck_1x_pp", "recheck_2x_pp")


def ablation_rows(records, descriptions):
    """ablation.csv rows with clean types: floats (NaN for missing), `holm` a bool, text never NaN;
    the columns an older ablation.csv lacks get `ABLATION_DEFAULTS` (Holm p computed here)."""
    from .stability import holm_adjusted

    rows = [{**ABLATION_DEFAULTS, **{key: v for key, v in rec.items() if not _missing(v)}} for rec in records]
    if rows and "p_holm" not in records[0]:
        for row, p_holm in zip(rows, holm_adjusted([float_or_nan(rw.get("p")) for rw in rows])):
            row["p_holm"] = p_holm
            row["holm"] = bool(p_holm < float_or_nan(row["alpha"])) and row["verdict"] != "no measurable difference"
    for row in rows:
        row["description"] = descriptions.get(row["arch"], "")
        for key in ABLATION_FLOATS:
            row[key] = float_or_nan(row.get(key))
        for key in ("holm", "fragile", "compute_mixed"):
            row[key] = str(row[key]).lower() == "true"
        row["note"] = row["note"] if isinstance(row.get("note"), str) else None
    return rows


def _missing(v):
    return v is None or (isinstance(v, float) and math.isnan(v))


def curve_fit(curve):
    """The last epoch of a learning curve, mean over folds: held-out and trained-on accuracy (fixed
    subsets, un-augmented), the accuracy on the training batches (as trained) and the gap (pp)."""
    from .stability import last_gap_pp

    if not curve:
        return None

    def last(key):
        values = [fold[-1] for fold in curve.get(key) or [] if fold and np.isfinite(fold[-1])]
        return float(np.mean(values)) if values else math.nan

    return {"epoch": int(curve["epochs"][-1]), "val": last("val_acc"), "train": last("train_acc"),
            "batches": last("train_acc_augmented"), "gap_pp": last_gap_pp(curve)}


def fold_workload(run_cfg, class_counts, folds):
    """Images, batch, SGD steps and epochs of one fold job (mean over folds), as `cost.cv_workload`."""
    from .cost import cv_workload

    w = cv_workload(run_cfg, {"Training": class_counts["Training"]}, folds)
    n = float(np.mean([j["n_train"] for j in w["jobs"]]))
    steps = float(np.mean([j["steps"] for j in w["jobs"]]))
    return {"n_train": n, "batch_size": w["jobs"][0]["batch_size"], "steps_per_epoch": steps,
            "epochs": int(w["epochs"]), "steps": steps * w["epochs"]}


def final_workload_of(training, class_counts):
    """The same numbers for the final model (`cost.final_workload`); None without its settings."""
    from .cost import final_workload

    if not training.get("epochs") or not training.get("batch_size"):
        return None
    w = final_workload({"training": training}, class_counts)
    return {"n_train": w["n_train"], "batch_size": w["batch_size"], "steps_per_epoch": w["steps"],
            "epochs": int(w["epochs"]), "steps": w["steps"] * w["epochs"]}


def runner_up_test(selection, rows, metric, fold_train, fold_test):
    """The chosen architecture against the runner-up, paired by fold: the corrected resampled t-test
    with the pair's images (the smaller subsample of the two, as `study.aggregate` does)."""
    from .metrics import corrected_resampled_ttest

    runner = selection.get("runner_up")
    if not runner or runner["architecture"] not in rows:
        return None
    a, b = rows[selection["architecture"]], rows[runner["architecture"]]
    fa, fb = a["fold_scores"][metric]["folds"], b["fold_scores"][metric]["folds"]
    if len(fa) != len(fb) or len(fa) < 2:
        return None
    n_train = min(max(1, round(fold_train * row["subsample"])) for row in (a, b))
    test = corrected_resampled_ttest(np.subtract(fa, fb), n_train, fold_test)
    return {"architecture": runner["architecture"], **test, "diff_pp": 100 * test["mean_diff"]}


def fold_precisions(results, archs, folds):
    """[{arch, fold, precision, reason}] from each fold job's config.yaml (None where not recorded)."""
    out = []
    for a in archs:
        for k in range(folds):
            path = Path(results) / "cv" / a / f"fold{k}" / "config.yaml"
            cfg = _read_yaml(path) if path.is_file() else {}
            out.append({"arch": a, "fold": k, "precision": cfg.get("precision"), "reason": cfg.get("precision_reason")})
    return out


def layer_summary(model_spec):
    """The layer list in one line: 'conv3x3 16 > BN > relu > maxpool2 > ...' (or the backbone)."""
    if "backbone" in model_spec:
        pretrained = model_spec.get("pretrained")
        return f"torchvision {model_spec['backbone']}" + (
            " (ImageNet-pretrained)" if pretrained == "imagenet" else " (pretrained)" if pretrained else "")
    out = []
    for item in model_spec.get("layers", []):
        kind, opts = (item, None) if isinstance(item, str) else next(iter(item.items()))
        if kind == "conv":
            o = opts if isinstance(opts, dict) else {"filters": opts}
            kk = o.get("kernel", 3)
            out.append(f"conv{kk}x{kk} {o['filters']}" + (f" /{o['stride']}" if o.get("stride", 1) != 1 else ""))
        elif kind == "batchnorm":
            out.append("BN")
        elif kind in ("maxpool", "avgpool"):
            size = opts.get("size", 2) if isinstance(opts, dict) else opts
            out.append(f"{kind}{size}")
        elif opts is None or opts == {}:
            out.append(kind)
        else:
            value = ",".join(f"{a}={b}" for a, b in opts.items()) if isinstance(opts, dict) else opts
            out.append(f"{kind} {value}")
    return " > ".join(out) + " > fc 7"


def conv_filters(model_spec):
    """'16-32-64': the filters of the conv layers in order ('torchvision resnet18' for a backbone)."""
    if "backbone" in model_spec:
        return f"torchvision {model_spec['backbone']}"
    widths = []
    for item in model_spec.get("layers", []):
        if isinstance(item, dict) and "conv" in item:
            opts = item["conv"]
            widths.append(str(opts["filters"] if isinstance(opts, dict) else opts))
    return "-".join(widths)


ACTIVATIONS = ("relu", "leakyrelu", "elu", "gelu")


def _layer_kinds(model_spec):
    return [item if isinstance(item, str) else next(iter(item)) for item in model_spec.get("layers", [])]


def activations(model_spec):
    """The activation layers a network uses, in first-use order: ['relu'] ('relu' for a backbone)."""
    if "backbone" in model_spec:
        return ["relu"]
    kinds = _layer_kinds(model_spec)
    return [a for a in dict.fromkeys(kinds) if a in ACTIVATIONS]


def has_dropout(model_spec):
    return any(kind == "dropout" for kind in _layer_kinds(model_spec))


def training_changes(base, other, prefix=""):
    """['lr 0.1 -> 0.02', ...]: training settings of `other` that differ from `base`."""
    out = []
    for key in sorted(set(base) | set(other)):
        a, b = base.get(key), other.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += training_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} {a} -> {b}")
    return out


STAGE_NAMES = {"prepare": "data preparation", "train": "cross-validation training", "train_final": "final model",
               "figures": "figures"}


def benchmark_times(results_dir, archs):
    """Wall seconds and peak memory per stage from Snakemake's benchmark files (column `s`, `max_rss`).

    The stage is the first path component under benchmarks/ (prepare, train, train_final, figures, ...);
    fold jobs of architectures no longer in the study, and the report's own benchmark, are left out.
    """
    import pandas as pd

    root = Path(results_dir) / "benchmarks"
    stages = {}
    for path in sorted(root.rglob("*.tsv")) if root.is_dir() else []:
        parts = path.relative_to(root).with_suffix("").parts
        stage = parts[0]
        if stage == "report" or (stage == "train" and len(parts) > 1 and parts[1] not in archs):
            continue
        try:
            b = pd.read_csv(path, sep="\t")
            s, rss = float(b["s"].iloc[0]), float(pd.to_numeric(b["max_rss"], errors="coerce").iloc[0])
        except (KeyError, IndexError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
            continue
        st = stages.setdefault(stage, {"stage": STAGE_NAMES.get(stage, stage), "jobs": 0, "seconds": 0.0,
                                       "max_rss_mb": 0.0})
        st["jobs"] += 1
        st["seconds"] += s
        if np.isfinite(rss):
            st["max_rss_mb"] = max(st["max_rss_mb"], rss)
    rows = sorted(stages.values(), key=lambda st: -st["seconds"])
    return {"stages": rows, "total_seconds": sum(st["seconds"] for st in rows), "jobs": sum(st["jobs"] for st in rows)}


# ---------------------------------------------------------------- looking inside the final model

def kernel_shapes(kernels):
    """Classify k x k kernels (N, k, k) by two simple measures.

    dc: |sum w| / sum |w| (1: all weights one sign, a blob / smoothing filter; 0: they cancel).
    ramp: share of the kernel's variance (around its mean) explained by a plane a*x + b*y, i.e. by
    a linear intensity gradient in one direction (an oriented edge detector has a high share).
    edge-like: ramp >= 0.5 and dc < 0.5; blob-like: dc >= 0.5. The gradient direction gives the
    edge orientation: a gradient along y responds to horizontal edges.
    """
    kernels = np.asarray(kernels, dtype=np.float64)
    n, kh, kw = kernels.shape
    yy, xx = np.mgrid[0:kh, 0:kw]
    basis = np.stack([(xx - (kw - 1) / 2).ravel(), (yy - (kh - 1) / 2).ravel()], axis=1)  # orthogonal columns
    w = kernels.reshape(n, -1)
    dc = np.abs(w.sum(1)) / np.maximum(np.abs(w).sum(1), 1e-12)
    wc = w - w.mean(1, keepdims=True)
    coef = wc @ basis / (basis ** 2).sum(0)  # (n, 2): a, b
    fit = coef @ basis.T
    ramp = 1 - ((wc - fit) ** 2).sum(1) / np.maximum((wc ** 2).sum(1), 1e-24)
    edge = (ramp >= 0.5) & (dc < 0.5)
    blob = dc >= 0.5
    angle = np.degrees(np.arctan2(coef[:, 1], coef[:, 0])) % 180  # gradient direction
    horizontal = edge & (np.abs(angle - 90) <= 22.5)                # gradient along y: horizontal edges
    vertical = edge & ((angle <= 22.5) | (angle >= 157.5))
    return {"n": int(n), "size": int(kh), "edge": int(edge.sum()), "blob": int(blob.sum()),
            "other": int(n - edge.sum() - blob.sum()), "horizontal": int(horizontal.sum()),
            "vertical": int(vertical.sum()), "diagonal": int(edge.sum() - horizontal.sum() - vertical.sum())}


def chance_kernel_shapes(size, n=20000, seed=SEED):
    """The same measures on random Gaussian kernels (what an untrained layer would give)."""
    rng = np.random.default_rng(seed)
    return kernel_shapes(rng.standard_normal((n, size, size)))


def eta_squared(features, labels, n_classes=len(CLASS_NAMES)):
    """Per channel: mean feature per class (n_classes, C) and the share of its variance the class explains."""
    f = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    grand = f.mean(axis=0)
    means = np.full((n_classes, f.shape[1]), np.nan)
    between = np.zeros(f.shape[1])
    for c in range(n_classes):
        sel = labels == c
        if sel.any():
            means[c] = f[sel].mean(axis=0)
            between += sel.sum() * (means[c] - grand) ** 2
    total = ((f - grand) ** 2).sum(axis=0)
    return means, np.divide(between, total, out=np.zeros_like(total), where=total > 0)


def inspect_model(model_path, data, threads=1, per_class=CHANNEL_FACES_PER_CLASS, seed=SEED):
    """Simple facts about the final model: the shapes of its first-layer kernels (against random
    kernels) and which emotion each channel of its last feature map prefers on PublicTest faces
    (against the same faces with shuffled labels). PrivateTest is not read."""
    import torch
    from scipy import stats

    from . import figures
    from .train import load_model

    torch.set_num_threads(max(1, int(threads)))
    model, payload = load_model(model_path)
    crop = int(payload["input_size"])
    out = {"filters": None, "channels": None}

    name, kernels = figures.first_layer_filters(model)
    if name is not None and kernels.shape[1] >= 2:
        shapes = kernel_shapes(kernels)
        chance = chance_kernel_shapes(shapes["size"])
        p_edge = chance["edge"] / chance["n"]
        shapes.update(layer=name, chance_edge=p_edge, chance_blob=chance["blob"] / chance["n"],
                      p_edge=float(stats.binomtest(shapes["edge"], shapes["n"], p_edge, alternative="greater").pvalue))
        out["filters"] = shapes

    taps = figures.stage_taps(model, crop)
    if taps:
        tap_name, module, (c_all, h, w) = taps[-1]
        idx = np.concatenate(list(figures.pick_faces(data, per_class, seed).values()))
        feats = []
        for s in range(0, len(idx), 256):
            (a,), _ = figures.capture(model, figures.model_input(data.images[idx[s:s + 256]], crop), [module])
            feats.append(a.float().mean(dim=(2, 3)).cpu().numpy())
        f = np.concatenate(feats).astype(np.float64)
        labels = data.labels[idx]
        means, eta = eta_squared(f, labels)
        means_null, eta_null = eta_squared(f, np.random.default_rng(seed).permutation(labels))
        live = f.var(axis=0) > 0
        present = ~np.isnan(means[:, 0])
        prefer = np.nanargmax(np.where(present[:, None], means, -np.inf), axis=0)
        counts = np.bincount(prefer[live], minlength=len(CLASS_NAMES))
        prefer_null = np.nanargmax(np.where(present[:, None], means_null, -np.inf), axis=0)
        counts_null = np.bincount(prefer_null[live], minlength=len(CLASS_NAMES))
        threshold = float(np.quantile(eta_null[live], 0.95)) if live.any() else math.nan
        out["channels"] = {
            "layer": tap_name, "channels": int(c_all), "size": f"{h}x{w}", "faces": int(len(idx)),
            "dead": int((~live).sum()), "live": int(live.sum()),
            "prefer": {CLASS_NAMES[c]: int(counts[c]) for c in range(len(CLASS_NAMES))},
            "prefer_null": {CLASS_NAMES[c]: int(counts_null[c]) for c in range(len(CLASS_NAMES))},
            "eta_median": float(np.median(eta[live])) if live.any() else math.nan,
            "eta_null_median": float(np.median(eta_null[live])) if live.any() else math.nan,
            "null_threshold": threshold,
            "selective": int((eta[live] > threshold).sum()) if live.any() else 0,
        }
    return out


# ---------------------------------------------------------------- findings: numbers -> sentences
#
# One function per report section, each a pure function of `ctx` returning {key: text}; `findings`
# merges them. A verdict is stated one way everywhere (`verdict_clause`): the verdict of the raw
# corrected t-test (p < alpha), its Holm-adjusted p over all comparisons, and its budget-stability
# label (ferstudy/stability.py). Summaries lead with the verdicts that survive Holm and hold.

SIGNIFICANT = ("helped", "hurt")
HARD_CLASSES = ("fear", "disgust")  # recognised worst by FER2013 networks: does an operation lift them?
OVERFIT_CLEAR_PP = 10.0  # a train-minus-held-out gap from which a network clearly over-fits
LABEL_WORDS = {"holds": ("holds", "hold"), "budget-dependent": ("is budget-dependent", "are budget-dependent"),
               "undecided": ("is undecided", "are undecided"), "unchecked": ("is unchecked", "are unchecked")}


def _significant(row):
    return row["verdict"] in SIGNIFICANT


def _label(row):
    return row.get("stability") or "unchecked"


def _verdict_phrase(row):
    v = row["verdict"]
    if v in SIGNIFICANT:
        return v
    if row["p"] is None or not np.isfinite(row["p"]):
        return "could not be tested"
    return "made no measurable difference"


def _effect(row):
    """'+4.1 pp, p = 0.012, Holm p = 0.13' (and the test's note when there is one)."""
    holm_p = f", Holm {pval(row['p_holm'])}" if np.isfinite(row.get("p_holm", math.nan)) else ""
    note = f"; {row['note']}" if row.get("note") else ""
    compute = (f"; at {row['compute_ratio']:.1f}x the baseline's compute, a verdict on the operation and compute "
               f"together" if row.get("compute_mixed") else "")
    return f"{pp(row['diff_pp'])}, {pval(row['p'])}{holm_p}{note}{compute}"


def verdict_clause(row, reason=False):
    """How every verdict is stated: 'helped (+4.9 pp, p = 0.024, Holm p = 0.29; budget-dependent)',
    and with `reason` the label's reason after a colon."""
    why = f": {row['stability_reason']}" if reason and row.get("stability_reason") else ""
    return f"{_verdict_phrase(row)} ({_effect(row)}; {_label(row)}{why})"


def variant_sentence(row, reason=True):
    return f"{code(row['arch'])} {verdict_clause(row, reason)}."


def _code_effect(row):
    return f"{code(row['arch'])} ({_effect(row)})"


def factor_sentence(frows):
    """The verdicts of one factor: each significant, budget-dependent or rechecked one in its own
    sentence with the label's reason; the other undecided null verdicts together."""
    undecided = [r for r in frows if not _significant(r) and _label(r) == "undecided"
                 and r.get("stability_basis") != "measured"]
    out = [variant_sentence(r) for r in frows if r not in undecided]
    if undecided:
        out.append(f"{and_join(_code_effect(r) for r in undecided)} made no measurable difference (undecided; "
                   f"not rechecked at a longer budget).")
    return " ".join(out)


def _short_clause(row):
    """The In-short form of a verdict: '`a` hurt (-15.1 pp; holds)'."""
    return f"{code(row['arch'])} {_verdict_phrase(row)} ({pp(row['diff_pp'])}; {_label(row)})"


def _strength(row):
    """Sort key: significant verdicts that survive Holm first, those that hold before the others, then by p."""
    p = row["p"] if np.isfinite(row["p"]) else 1.0
    return (not (_significant(row) and row["holm"]), not _significant(row), _label(row) != "holds", p)


def label_counts(rows):
    """{label: count} in the order holds, budget-dependent, undecided (unchecked last), zeros left out."""
    counts = {lab: sum(_label(r) == lab for r in rows) for lab in LABEL_WORDS}
    return {lab: n for lab, n in counts.items() if n}


def counts_text(counts):
    """'3 hold, 1 is budget-dependent and 7 are undecided'."""
    return and_join(f"{n} {LABEL_WORDS[lab][n != 1]}" for lab, n in counts.items())


def min_detectable_pp(ctx):
    """(k, df, critical t, {arch: the difference that would have reached p < alpha, pp}) from each
    comparison's own spread and n_train/n_test; None without comparisons."""
    from scipy import stats

    abl = ctx["ablation"]
    if not abl or int(abl[0]["k"]) < 2:
        return None
    k, df = int(abl[0]["k"]), int(abl[0]["df"])
    t_crit = float(stats.t.ppf(1 - ctx["alpha"] / 2, df))
    mdd = {r["arch"]: t_crit * math.sqrt(1 / k + _n_test(r, ctx) / _n_train(r, ctx)) * r["std_pp"]
           for r in abl if np.isfinite(r["std_pp"])}
    return k, df, t_crit, mdd


def _n_train(row, ctx):
    return float(row["n_train"]) if row.get("n_train") else ctx["data"]["fold_train"]


def _n_test(row, ctx):
    return float(row["n_test"]) if row.get("n_test") else ctx["data"]["fold_test"]


OPERATIONS = {
    "depth": "More layers add non-linearity and widen the receptive field.",
    "filters": "Width sets the parameters and compute of every stage.",
    "kernel size": "Larger kernels see more of the face per layer, at a higher cost.",
    "pooling": "Pooling downsamples by the window's maximum or mean; a strided convolution learns it.",
    "normalization": "Batch normalization standardises each channel over the mini-batch.",
    "dropout": "Dropout zeroes random activations in training, against memorising faces.",
    "augmentation": "Augmentation varies every training face at random, against memorising faces.",
    "capacity": "A much larger VGG-style network tests whether capacity is the bottleneck.",
    "backbone": "Torchvision backbones adapted to one grey channel test off-the-shelf designs.",
    "pretraining": ("Fine-tuning from torchvision's ImageNet weights (the first convolution's RGB kernels summed to "
                    "one grey channel, the faces kept at 48x48) tests whether features learned on natural images "
                    "help."),
}
ACTIVATION_NAMES = {"relu": "ReLU", "leakyrelu": "Leaky ReLU", "elu": "ELU", "gelu": "GELU"}
ACTIVATION_TEXT = {"elu": "ELU is smooth and lets negative values through, saturating at -1",
                   "gelu": "GELU is a smooth ReLU that lets small negative values through",
                   "leakyrelu": "Leaky ReLU keeps a small slope for them"}


def operation_text(factor, ctx):
    """What the operation does; for activations, only those that ran."""
    if factor != "activation":
        return OPERATIONS.get(factor, "")
    base = next(r for r in ctx["archs"] if r["architecture"] == ctx["baseline"])["activations"]
    ran = [a for r in ctx["archs"] if r["factor"] == "activation" for a in r["activations"] if a not in base]
    ran = list(dict.fromkeys(ran))
    if base == ["relu"] and ran and all(a in ACTIVATION_TEXT for a in ran):
        return f"Where the baseline's ReLU zeroes negative inputs, {and_join(ACTIVATION_TEXT[a] for a in ran)}."
    names = lambda acts: and_join(ACTIVATION_NAMES.get(a, a) for a in acts)  # noqa: E731
    return f"The baseline uses {names(base)}; the variants use {names(ran) or 'the same'}."


# Training settings that are the operation itself for a factor (not a confound when they differ).
OPERATION_SETTINGS = {"augmentation": ("augment.",)}


def augmentation_text(aug):
    """What the augmentation settings do, in words (only the active ones)."""
    if not aug.get("enabled", True):
        return "No augmentation is used."
    crop = aug.get("crop", 48)
    ops = [f"randomly cropped to {crop}x{crop}" if crop < 48 else None, "flipped" if aug.get("flip") else None,
           f"rotated by up to {aug['rotate']} degrees" if aug.get("rotate") else None,
           "scaled" if aug.get("scale") else None, "shifted" if aug.get("translate") else None,
           "partly erased" if aug.get("erase") else None,
           "changed in brightness and contrast" if aug.get("brightness") or aug.get("contrast") else None]
    ops = [o for o in ops if o]
    return (f"The baseline's training faces are {and_join(ops)}" if ops else
            "Augmentation is on but every operation is off") + ("; evaluation uses the centre crop." if crop < 48 else ".")


def findings(ctx):
    """All generated sentences, keyed by topic: the merged dicts of the section functions."""
    f = {}
    for section in SECTIONS:
        f.update(section(ctx))
    return f


# -- 1. data and protocol

def data_findings(ctx):
    train = ctx["data"]["counts"]["Training"]
    big = max(CLASS_NAMES, key=lambda c: train[c])
    small = min(CLASS_NAMES, key=lambda c: train[c])
    private = ctx["data"]["counts"]["PrivateTest"]
    major = max(CLASS_NAMES, key=lambda c: private[c])
    return {"augment": augmentation_text(ctx["cv_training"].get("augment", {})),
            "data_balance": (
                f"The classes are unbalanced: {big} is the largest Training class ({num(train[big])} faces, "
                f"{pct(train[big] / train['total'])}) and {small} the smallest ({num(train[small])}, "
                f"{pct(train[small] / train['total'])}), a ratio of {train[big] / max(train[small], 1):.1f} to 1. "
                f"Always answering {major} would score {pct(private[major] / private['total'])} on PrivateTest, "
                f"and guessing uniformly {pct(1 / len(CLASS_NAMES))}.")}


def protocol_findings(ctx):
    abl, k = ctx["ablation"], ctx["data"]["folds"]
    df = int(abl[0]["df"]) if abl else k - 1
    return {"tests": (
        f"A variant \"helped\" or \"hurt\" only when p < {ctx['alpha']:g}; with k = {k} folds each test has "
        f"{df} degrees of freedom. Each verdict also gives its Holm-adjusted p over the "
        f"{plural(len(abl), 'comparison')} and a budget-stability label (section 4); summaries lead with the "
        f"verdicts that survive Holm (Holm p < {ctx['alpha']:g}) and hold.")}


# -- 3. results: verdicts, the test's power, fit

def verdict_findings(ctx):
    abl, alpha = ctx["ablation"], ctx["alpha"]
    f = {"variants": {row["arch"]: variant_sentence(row) for row in abl}, "factors": []}
    if not abl:
        return f
    by_factor = {}
    for row in abl:
        by_factor.setdefault(row["factor"], []).append(row)
    f["factors"] = [{"factor": factor, "explain": operation_text(factor, ctx),
                     "sentence": factor_sentence(frows)} for factor, frows in by_factor.items()]
    add_pretrained_sentences(f, ctx)
    f["short_ablation"] = short_ablation(ctx)
    f["multiple"] = multiple_text(abl, alpha)
    f["power"] = power_text(ctx)
    confounds = []
    for r in ctx["archs"]:
        own = OPERATION_SETTINGS.get(r["factor"], ())
        extra = [c for c in r["training_changes"] if not c.startswith(own)] if own else r["training_changes"]
        if extra:
            confounds.append((r["architecture"], extra))
    if confounds:
        f["confounds"] = ("Some variants change more than the architecture: " + "; ".join(
            f"{code(a)} also trains with {and_join(ch)}" for a, ch in confounds) + ". Their differences mix both changes.")
    return f


def pretrained_sentence(pair):
    """A pretrained backbone against its from-scratch twin, its verdict stated as every verdict is
    (`verdict_clause`, the twin in the baseline's place)."""
    a, b = code(pair["arch"]), code(pair["twin"]) if pair["twin"] else None
    if not b:
        return (f"{a} has no from-scratch twin in this study (`{pair['backbone']}` with `pretrained: null`), "
                f"so only its comparison with the baseline is reported.")
    row = pair["row"]
    same = (f"the same network, also trained with {and_join(pair['changes'])}" if pair["changes"]
            else "the same network and training")
    return (f"Against its from-scratch twin {b} ({same}, random initial weights), {a} reached "
            f"{pct(row['mean'])} against {pct(row['baseline_mean'])} mean cross-validation accuracy: ImageNet "
            f"pretraining {verdict_clause(row, reason=True)}, one planned comparison outside the Holm correction.")


def add_pretrained_sentences(f, ctx):
    """Each pretrained backbone's twin comparison (`pretrained_pairs`) closes its factor's paragraph
    (a paragraph of its own when its factor has none); also f["pretrained"] = {arch: sentence}."""
    f["pretrained"] = {}
    for pair in ctx.get("pretrained_pairs") or []:
        sentence = f["pretrained"][pair["arch"]] = pretrained_sentence(pair)
        factor = next((r["factor"] for r in ctx["ablation"] if r["arch"] == pair["arch"]), "pretraining")
        entry = next((fac for fac in f["factors"] if fac["factor"] == factor), None)
        if entry is None:
            f["factors"].append({"factor": factor, "explain": operation_text(factor, ctx), "sentence": sentence})
        else:
            entry["sentence"] = f"{entry['sentence']} {sentence}"


def short_ablation(ctx):
    """The In-short verdicts: those surviving Holm first (holding ones first), then the rest."""
    abl = ctx["ablation"]
    sig = sorted([r for r in abl if _significant(r)], key=_strength)
    lead, rest = [r for r in sig if r["holm"]], [r for r in sig if not r["holm"]]
    null = [r for r in abl if not _significant(r)]
    tests = plural(len(abl), "test")
    text = (f"Surviving the Holm correction for {tests}, {and_join(_short_clause(r) for r in lead)} against the "
            f"baseline." if lead else f"No difference from the baseline survives the Holm correction for {tests}.")
    if rest:
        text += f" Before the correction (p < {ctx['alpha']:g}), {and_join(_short_clause(r) for r in rest)}."
    if null:
        text += f" {plural(len(null), 'variant')} made no measurable difference."
    epochs = ctx["cv_training"].get("epochs")
    return text + f" Of all {len(abl)} verdicts at {epochs} epochs per fold, {counts_text(label_counts(abl))}."


def multiple_text(abl, alpha):
    from scipy import stats

    n = len(abl)
    sig = [r for r in abl if _significant(r)]
    survivors = sorted([r for r in sig if r["holm"]], key=_strength)
    chance_p = float(stats.binom.sf(len(sig) - 1, n, alpha)) if sig else 1.0
    text = (f"If no operation mattered, about {n * alpha:.1f} of these {n} uncorrected tests would come out "
            f"significant by chance; {len(sig)} did")
    if not sig:
        return text + ", so no operation showed a measurable effect at this budget."
    if chance_p < alpha:
        text += f", more than chance explains (binomial {pval(chance_p)})."
    else:
        text += (f", which chance could produce (binomial {pval(chance_p)}), so treat "
                 f"{'it' if len(sig) == 1 else 'them'} as tentative.")
    if survivors:
        return text + (f" After the Holm correction for the {n} tests, "
                       + and_join(f"{code(r['arch'])} ({r['verdict']}; {_label(r)})" for r in survivors)
                       + f" {'remains' if len(survivors) == 1 else 'remain'} significant.")
    return text + f" After the Holm correction for the {n} tests, none remains significant."


def power_text(ctx):
    found = min_detectable_pp(ctx)
    if not found or not found[3]:
        return ""
    k, df, t_crit, mdd = found
    abl = [r for r in ctx["ablation"] if r["arch"] in mdd]
    n_train = sorted({_n_train(r, ctx) for r in abl})
    n_test = _n_test(abl[0], ctx)
    factors = [1 / k + n_test / n for n in n_train]
    if len(n_train) == 1:
        ratio = f"1/{k} + {num(n_test)}/{num(n_train[0])} = {factors[0]:.2f}"
    else:
        ratio = f"{min(factors):.2f} to {max(factors):.2f} (n_train varies with the subsample)"
    median_std = float(np.median([r["std_pp"] for r in abl]))
    return (f"With k = {k} folds each corrected t-test has {df} degrees of freedom (critical t = {t_crit:.2f}). "
            f"The correction multiplies the variance of the mean difference by 1/k + n_test/n_train = {ratio} "
            f"(n_train: the faces each fold model of the pair trained on; n_test: its held-out faces), where a "
            f"naive paired test would use 1/k. With the median spread of the paired differences, {median_std:.1f} pp, a "
            f"difference needed about {float(np.median(list(mdd.values()))):.1f} pp to reach p < {ctx['alpha']:g}; "
            f"smaller real effects are invisible here, so \"no measurable difference\" is not evidence of no effect."
            + pooled_text(ctx))


def pooled_text(ctx: dict) -> str:
    """The smallest difference found with 80% power and the verdicts the pooled-variance test disputes."""
    abl = ctx["ablation"]
    power = [r["detectable_pp"] for r in abl if np.isfinite(r.get("detectable_pp", math.nan))]
    if not power:
        return ""
    fragile = [r for r in abl if r.get("fragile")]
    text = (f" At the spread pooled over all pairs the study finds a true difference of "
            f"{float(np.median(power)):.1f} pp with 80% power")
    if fragile:
        text += (f"; the same test with that pooled variance disagrees on "
                 f"{and_join(code(r['arch']) + ' (pooled ' + pval(r['p_pooled']) + ')' for r in fragile)}, so "
                 f"{'that verdict is' if len(fragile) == 1 else 'those verdicts are'} fragile")
    return text + "."


def fit_reading(gap_pp):
    """'under-fitting' | 'beginning to over-fit' | 'over-fitting' from a train-minus-held-out gap (pp)."""
    from .stability import MIN_OVERFIT_GAP_PP

    if gap_pp < MIN_OVERFIT_GAP_PP:
        return "under-fitting"
    return "beginning to over-fit" if gap_pp < OVERFIT_CLEAR_PP else "over-fitting"


def fit_findings(ctx):
    """Per network: the train-vs-held-out gap at the last epoch on the learning-curve faces."""
    fits = sorted([r for r in ctx["archs"] if r["fit"] and np.isfinite(r["fit"]["gap_pp"])],
                  key=lambda r: -r["fit"]["gap_pp"])
    if not fits:
        return {"fit_rows": [], "fit": (
            "No learning curve was recorded (`training.curve_images` is 0), so how much better each network "
            "fits its training faces than new ones is not known.")}
    rows = [[code(r["architecture"]), pct(r["fit"]["val"]), pct(r["fit"]["train"]), pp(r["fit"]["gap_pp"]),
             pct(r["fit"]["batches"]) + ("" if r["augmented"] else " (not augmented)"), fit_reading(r["fit"]["gap_pp"])]
            for r in fits]
    faces = int(ctx["cv_training"].get("curve_images") or 0)
    text = (f"At the last epoch ({fits[0]['fit']['epoch']}), on {num(faces) + ' ' if faces else ''}trained-on "
            f"and as many held-out faces per fold without augmentation, {fit_groups_text(fits)}."
            + batches_note(next(r for r in ctx["archs"] if r["architecture"] == ctx["baseline"])))
    return {"fit": text, "fit_rows": rows}


def fit_groups_text(fits):
    """'12 of the 14 networks fit ... under-fitting; `a` (+7.0 pp) is beginning to over-fit ...'."""
    from .stability import MIN_OVERFIT_GAP_PP

    groups = {}
    for r in fits:
        groups.setdefault(fit_reading(r["fit"]["gap_pp"]), []).append(r)

    def names(rs):
        return (and_join(f"{code(r['architecture'])} ({pp(r['fit']['gap_pp'])})" for r in rs) if len(rs) <= 4 else
                f"{len(rs)} networks")

    parts = []
    under, begin, over = (groups.get(g, []) for g in ("under-fitting", "beginning to over-fit", "over-fitting"))
    if under:
        who = f"all {len(fits)}" if len(under) == len(fits) else f"{len(under)} of the {len(fits)}"
        parts.append(f"{who} networks fit their training faces less than {MIN_OVERFIT_GAP_PP:g} pp better than new "
                     f"ones" + (f" ({names(under)})" if len(under) <= 4 else "")
                     + ": they are under-fitting, so more epochs or capacity should pay before more regularization")
    if begin:
        parts.append(f"{names(begin)} {'is' if len(begin) == 1 else 'are'} beginning to over-fit "
                     f"({MIN_OVERFIT_GAP_PP:g}-{OVERFIT_CLEAR_PP:g} pp)")
    if over:
        parts.append(f"{names(over)} {'over-fits' if len(over) == 1 else 'over-fit'} (a gap of {OVERFIT_CLEAR_PP:g} "
                     f"pp or more), where regularization can pay off")
    return "; ".join(parts)


def batches_note(base):
    """Why the accuracy on the augmented training batches is not the fit, with the baseline's numbers."""
    fit = base["fit"]
    if not (fit and base["augmented"] and np.isfinite(fit["batches"]) and np.isfinite(fit["train"])):
        return ""
    harder = "the harder task trained on" if fit["batches"] < fit["train"] else "the task trained on"
    return (f" Accuracy on the training batches during the epoch (augmented{', dropout on' if base['dropout'] else ''}) "
            f"measures {harder}, not the fit: {code(base['architecture'])} scored "
            f"{pct(fit['batches'])} on its batches against {pct(fit['train'])} on un-augmented trained-on faces.")


def cost_findings(ctx):
    metric, rows = ctx["metric"], ctx["archs"]
    base = next(r for r in rows if r["architecture"] == ctx["baseline"])
    best = max(rows, key=lambda r: r[f"{metric}_mean"])
    if not all(r["mflops"] is not None and np.isfinite(r["mflops"]) for r in rows):
        return {}
    close = [r for r in rows if r[f"{metric}_mean"] >= best[f"{metric}_mean"] - best[f"{metric}_std"]]
    cheapest = min(close, key=lambda r: r["mflops"])
    text = (f"The best network by cross-validation {metric.replace('_', ' ')}, {code(best['architecture'])}, costs "
            f"{mflops(best['mflops'])} MFLOPs per face and {num(best['params'])} parameters "
            f"({best['mflops'] / base['mflops']:.1f}x the baseline's compute).")
    if cheapest["architecture"] != best["architecture"]:
        text += (f" {code(cheapest['architecture'])} comes within one standard deviation of it "
                 f"({pct(cheapest[f'{metric}_mean'])} against {pct(best[f'{metric}_mean'])}) with "
                 f"{mflops(cheapest['mflops'])} MFLOPs, {best['mflops'] / cheapest['mflops']:.1f}x less compute.")
    else:
        text += " No cheaper network comes within one standard deviation of it."
    return {"cost": text}


# -- 4. what this budget can and cannot show

BUDGET_RULE = ("a rechecked verdict holds when its difference at twice the epochs keeps its sign and more than "
               "half its size, and is budget-dependent otherwise (a null one when a difference beyond one fold's "
               "noise appears); a verdict not rechecked keeps a heuristic label: budget-dependent when the "
               "variant-minus-baseline curve changed sign over the last half of the epochs, when a regularizer "
               "(dropout, augmentation) lost while the less regularized network was not yet over-fitting (a gap "
               "under {gap:g} pp), or did not win while that network's gap kept growing; else it holds when "
               "significant and is undecided otherwise")


def budget_findings(ctx):
    from .stability import MIN_OVERFIT_GAP_PP

    base = next(r for r in ctx["archs"] if r["architecture"] == ctx["baseline"])
    w, fw, tr = base["workload"], ctx["final"]["workload"], ctx["cv_training"]
    share = tr.get("subsample", 1.0)
    text = (f"Each fold model trained {w['epochs']} epochs on about {num(w['n_train'])} faces"
            + (f" ({pct(share, 0)} of its {num(ctx['data']['fold_train'])})" if share < 1 else "")
            + f" at batch {w['batch_size']}: {num(w['steps'])} SGD steps ({num(w['steps_per_epoch'])} per epoch)")
    if fw:
        text += (f"; the final model {fw['epochs']} epochs on {num(fw['n_train'])} faces at batch {fw['batch_size']}, "
                 f"{num(fw['steps'])} steps ({fw['steps'] / max(w['steps'], 1):.1f}x)")
    found = min_detectable_pp(ctx)
    mdd = float(np.median(list(found[3].values()))) if found and found[3] else math.nan
    text += (f". Such a budget can show which operations matter early in training, after each face was seen "
             f"{plural(w['epochs'], 'time')}; it cannot show which would win at convergence"
             + (f", and differences under about {mdd:.1f} pp stay invisible" if np.isfinite(mdd) else "") + ".")
    abl = ctx["ablation"]
    if abl:
        text += " " + recheck_text(abl) + " " + counts_text(label_counts(abl)) + ". The rule: " \
            + BUDGET_RULE.format(gap=MIN_OVERFIT_GAP_PP) + "."
    return {"budget": text}


def recheck_text(abl: list[dict]) -> str:
    """Which verdicts the study retrained at twice the budget, and which at-risk ones it left."""
    done = [r for r in abl if r.get("stability_basis") == "measured"]
    left = [r for r in abl if str(r.get("recheck_status", "")).startswith("at risk")]
    text = (f"The study retrained {and_join(code(r['arch']) for r in done)} and the baseline at twice the epochs "
            f"on one fold, so {'its label is' if len(done) == 1 else 'their labels are'} measured"
            if done else "No verdict was retrained at a longer budget (`study.recheck`), so every label is a heuristic")
    if left:
        text += f"; at risk but not rechecked: {and_join(code(r['arch']) for r in left)}"
    return text + ". Labels:"


# -- 4. per-class effect of each operation

def class_effect_findings(ctx):
    """Recall per class of each variant against the baseline's (mean over folds, descriptive)."""
    abl = ctx["ablation"]
    rows = {r["architecture"]: r for r in ctx["archs"]}
    base = rows[ctx["baseline"]]
    if not abl:
        return {"class_effect_rows": []}

    def diff(arch, c):
        return 100 * (rows[arch]["recall"][c] - base["recall"][c])

    table = [[f"{code(ctx['baseline'])} (recall)", "baseline", *(pct(base["recall"][c], 0) for c in CLASS_NAMES),
              pct(base["accuracy_mean"], 1)]]
    table += [[code(r["arch"]), r["factor"], *(f"{diff(r['arch'], c):+.1f}" for c in CLASS_NAMES), pp(r["diff_pp"])]
              for r in abl]
    text = "Per class, " + "; ".join(hard_class_extremes(abl, c, diff, base["recall"][c]) for c in HARD_CLASSES) + "."
    aug = [r for r in abl if r["factor"] == "augmentation"]
    if aug:
        def moved(arch):
            return and_join(f"{c} by {pp(diff(arch, c))}" for c in HARD_CLASSES)

        text += (" Does augmentation lift the hard classes? " + "; ".join(
            f"{code(r['arch'])} moved {moved(r['arch'])}, against {pp(r['diff_pp'])} in accuracy" for r in aug) + ".")
    rare = min(HARD_CLASSES, key=lambda c: base["support"][c])
    text += (f" These are differences of mean recall over the folds, not tested: one {rare} face moves a fold's "
             f"{rare} recall by {100 / max(base['support'][rare], 1):.1f} pp.")
    return {"class_effect_rows": table, "class_effects": text}


def hard_class_extremes(abl, c, diff, base_recall):
    """'fear (baseline recall 22%) gained most with `a` (+5.9 pp) and lost most with `b` (-13.2 pp)'."""
    up = max(abl, key=lambda r: diff(r["arch"], c))
    down = min(abl, key=lambda r: diff(r["arch"], c))
    moves = [f"gained most with {code(up['arch'])} ({pp(diff(up['arch'], c))})" if diff(up["arch"], c) > 0 else
             "no variant raised it",
             f"lost most with {code(down['arch'])} ({pp(diff(down['arch'], c))})" if diff(down["arch"], c) < 0 else
             "no variant lowered it"]
    return f"{c} (baseline recall {pct(base_recall, 0)}) {and_join(moves)}"


# -- 5. the final architecture and why

def selection_findings(ctx):
    sel, runner, test = ctx["selection"], ctx["selection"].get("runner_up"), ctx.get("runner_up_test")
    chosen, by_cv, alpha = ctx["chosen"], ctx["selected_by_cv"], ctx["alpha"]
    base = next(r for r in ctx["archs"] if r["architecture"] == ctx["baseline"])
    mname = ctx["metric"].replace("_", " ")
    tie = bool(runner) and runner["mean"] == sel["mean"] and by_cv
    text = (f"The final architecture is {code(sel['architecture'])}, {'chosen by ' if by_cv else ''}{sel['reason']}"
            f"{' (a tie, broken by name)' if tie else ''}: "
            f"{pct(sel['mean'])} ± {pct(sel['std'])} over {plural(int(chosen['folds']), 'fold')}.")
    paired = ""
    if runner:
        margin = 100 * (sel["mean"] - runner["mean"])
        text += (f" {'The runner-up' if by_cv else 'The best other architecture'} {code(runner['architecture'])} "
                 f"reached {pct(runner['mean'])}, "
                 + (f"{abs(margin):.1f} pp {'behind' if margin >= 0 else 'ahead'}" if margin else "a tie"))
        if test and np.isfinite(test["p"]):
            paired = f"; paired t-test {pval(test['p'])}"
            text += (f". Paired by fold, the corrected resampled t-test of the two gives t = {test['t']:.2f} "
                     f"(df = {test['df']}), {pval(test['p'])}"
                     + (f": a measurable difference at α = {alpha:g}." if test["p"] < alpha else
                        ", so these folds do not settle which of the two is better."))
        else:
            text += "."
    row = next((r for r in ctx["ablation"] if r["arch"] == sel["architecture"]), None)
    if sel["architecture"] == ctx["baseline"] and by_cv:
        text += " No variant had a higher mean than the baseline, so the baseline itself was retrained."
    elif row is not None:
        text += f" Against the baseline it {verdict_clause(row, reason=True)}."
    if sel["architecture"] != ctx["baseline"] and chosen["mflops"] and base["mflops"]:
        text += (f" It costs {chosen['mflops'] / base['mflops']:.1f}x the baseline's compute and "
                 f"{chosen['params'] / base['params']:.1f}x its parameters.")
    order = ("" if not runner else "tied with" if runner["mean"] == sel["mean"] else
             "ahead of" if sel["mean"] > runner["mean"] else "behind")
    short = ((f"Cross-validation chose {code(sel['architecture'])}" if by_cv else
              f"The config named {code(sel['architecture'])} as the final architecture")
             + f" ({pct(sel['mean'])} ± {100 * sel['std']:.1f} mean {mname})"
             + (f", {order} {code(runner['architecture'])} ({pct(runner['mean'])}{paired})" if runner else "") + ".")
    return {"selection": text, "short_selection": short}


def final_findings(ctx):
    fin = ctx["final"]
    pub, prv = fin["public"], fin["private"]
    f = {"final_budget": final_budget_text(ctx), "cv_gap": cv_gap_text(ctx)}
    se = math.sqrt(sum(m["accuracy"] * (1 - m["accuracy"]) / m["n"] for m in (pub, prv)))  # of the difference
    gap = 100 * (pub["accuracy"] - prv["accuracy"])
    text = f"The final model scores {pct(prv['accuracy'])} on PrivateTest and {pct(pub['accuracy'])} on PublicTest. "
    if abs(gap) <= 2 * 100 * se:
        text += f"The {abs(gap):.1f} pp gap is within sampling noise (two standard errors: {200 * se:.1f} pp)."
    else:
        text += (f"PublicTest is {abs(gap):.1f} pp {'higher' if gap > 0 else 'lower'}, more than two standard "
                 f"errors ({200 * se:.1f} pp)" + (", as expected when a set chooses the checkpoint." if gap > 0 else "."))
    f["final"] = text
    if fin["extra"]:
        f["extra"] = ("On the extra test set" + ("s" if len(fin["extra"]) > 1 else "") + " it scores " + and_join(
            f"{pct(m['accuracy'])} on {code(name)} ({num(m['n'])} faces)" for name, m in sorted(fin["extra"].items()))
            + f", against {pct(prv['accuracy'])} on PrivateTest.")
    f["short_final"] = (f"Retrained on all of Training, it scores {pct(prv['accuracy'])} on the untouched "
                        f"PrivateTest set (macro F1 {prv['macro_f1']:.3f}).")
    f["history"] = final_history_text(ctx)
    f["protocol"] = (
        f"PrivateTest was predicted once, after cross-validation had chosen the architecture and PublicTest the "
        f"epoch{'' if fin['best_epoch'] is None else ' (' + str(fin['best_epoch']) + ')'}; nothing read it to "
        f"choose anything, so {pct(prv['accuracy'])} is an unbiased estimate, while the PublicTest score is optimistic.")
    return f


def final_budget_text(ctx):
    """How the final budget was set, against a fold model's."""
    fw, cw = ctx["final"]["workload"], ctx["chosen"]["workload"]
    if not fw:
        return ""
    preset = f"`{ctx['preset']}` preset" if ctx.get("preset") else "preset"
    text = (f"The final budget comes from `final.training` in the config: {fw['epochs']} epochs on all "
            f"{num(fw['n_train'])} Training faces at batch {fw['batch_size']}, {num(fw['steps'])} SGD steps, "
            f"{fw['steps'] / max(cw['steps'], 1):.1f}x a fold model's {num(cw['steps'])} ({cw['epochs']} epochs on "
            f"about {num(cw['n_train'])} faces at batch {cw['batch_size']}). It was set so that the whole study fits "
            f"the {preset}'s time budget")
    cp = ctx.get("cost_prediction")
    whole = cp["rows"][0] if cp and cp.get("rows") else None
    if whole and whole.get("predicted_s") and whole.get("actual_s"):
        text += f" (predicted {seconds(whole['predicted_s'])} when the study started; it took {seconds(whole['actual_s'])})"
    return text + "."


def cv_gap_text(ctx):
    """Why PrivateTest differs from the cross-validation mean: what the final model had that a fold model had not."""
    fin, chosen = ctx["final"], ctx["chosen"]
    fw, cw = fin["workload"], chosen["workload"]
    ft, ct = fin["training"], ctx["chosen_training"]
    gap = 100 * (fin["private"]["accuracy"] - chosen["accuracy_mean"])
    had = []
    if fw:
        if fw["n_train"] != round(cw["n_train"]):
            had.append(f"{num(fw['n_train'])} training faces against about {num(cw['n_train'])} "
                       f"({fw['n_train'] / max(cw['n_train'], 1):.1f}x)")
        if fw["epochs"] != cw["epochs"]:
            had.append(f"{fw['epochs']} epochs against {cw['epochs']}")
        had.append(f"{num(fw['steps'])} SGD steps against {num(cw['steps'])}")
    for key, what in (("batch_size", "batch size"), ("lr", "learning rate"), ("schedule", "schedule")):
        if key in ft and ft.get(key) != ct.get(key):
            had.append(f"{what} {ft[key]} against {ct.get(key)}")
    if ft.get("tta", "none") != ct.get("tta", "none"):
        had.append(f"test-time augmentation {ft.get('tta', 'none')} against {ct.get('tta', 'none')}")
    if fin["best_epoch"] is not None:
        had.append(f"the checkpoint PublicTest chose (epoch {fin['best_epoch']})")
    text = (f"PrivateTest accuracy is {abs(gap):.1f} pp {'above' if gap >= 0 else 'below'} the cross-validation "
            f"mean of {code(chosen['architecture'])} ({pct(chosen['accuracy_mean'])}).")
    if had:
        text += f" A fold model is not the final model: the final one had {and_join(had)}."
    p = fin["private"]["accuracy"]
    noise = 200 * math.sqrt(p * (1 - p) / fin["private"]["n"])
    if abs(gap) <= noise:
        text += f" The difference is within PrivateTest's sampling noise (two standard errors: {noise:.1f} pp)."
    elif gap > 0:
        text += (" Each of these usually raises accuracy, so the cross-validation means compare networks at the fold "
                 "budget and do not estimate the final accuracy.")
    else:
        text += f" It scored lower despite them, by more than PrivateTest's sampling noise (two standard errors: {noise:.1f} pp)."
    return text


def final_history_text(ctx):
    fin = ctx["final"]
    hist = fin["history"]
    if not hist:
        return ""
    last = hist[-1]
    epochs, be = int(last["epoch"]), fin["best_epoch"]
    text = "" if be is None else (f"PublicTest accuracy peaked at epoch {be} of {epochs}" +
                                  (", the last, so the model had not clearly stopped improving"
                                   if be == epochs else "") + ". ")
    augment = fin["training"].get("augment")
    augmented = None if augment is None else bool(augment.get("enabled", True))
    dropout = has_dropout(fin["model"])
    measured = {True: "augmented faces", False: "un-augmented training faces", None: "training batches"}[augmented]
    gap = 100 * (last["train_acc"] - last["val_acc"])
    text += (f"At the last epoch training accuracy ({measured}) was {pct(last['train_acc'])}, measured during the "
             f"epoch{' with dropout on' if dropout else ''}, against {pct(last['val_acc'])} on PublicTest")
    if gap > 10:
        text += ": the network fits its training faces much better than new ones."
    elif gap <= 3:
        text += (": little sign of over-fitting" + (", though augmented faces are harder than the faces themselves, "
                                                     "so the gap understates it." if augmented else "."))
    else:
        text += "."
    return text


# -- 6. per class

def top_confusions(cm, n=3):
    """The n largest off-diagonal counts: [(true, predicted, count, share of the true class)]."""
    cm = np.asarray(cm, dtype=float)
    off = cm.copy()
    np.fill_diagonal(off, -1)
    order = np.argsort(-off, axis=None, kind="stable")[:n]
    out = []
    for flat in order:
        i, j = np.unravel_index(flat, cm.shape)
        if off[i, j] > 0:
            out.append((CLASS_NAMES[i], CLASS_NAMES[j], int(cm[i, j]), float(cm[i, j] / cm[i].sum())))
    return out


def per_class_findings(ctx):
    prv = ctx["final"]["private"]
    train = ctx["data"]["counts"]["Training"]
    big = max(CLASS_NAMES, key=lambda c: train[c])
    small = min(CLASS_NAMES, key=lambda c: train[c])
    pc = prv["per_class"]
    present = [c for c in CLASS_NAMES if pc[c]["support"] > 0]
    best_c = max(present, key=lambda c: pc[c]["f1"])
    worst_c = min(present, key=lambda c: pc[c]["f1"])
    text = (f"On PrivateTest {best_c} is recognised best (F1 {pc[best_c]['f1']:.2f}, "
            f"recall {pct(pc[best_c]['recall'], 0)}) "
            f"and {worst_c} worst (F1 {pc[worst_c]['f1']:.2f}, recall {pct(pc[worst_c]['recall'], 0)}).")
    if worst_c == small:
        text += f" {worst_c.capitalize()} is also the rarest Training class, consistent with too few examples."
    elif best_c == big:
        text += f" {best_c.capitalize()} is also the most frequent Training class."
    cvpc = ctx["cv_chosen"]["per_class"]
    cv_worst = min(present, key=lambda c: cvpc[c]["f1"]["mean"])
    cv_best = max(present, key=lambda c: cvpc[c]["f1"]["mean"])
    if (cv_best, cv_worst) == (best_c, worst_c):
        text += " Cross-validation ranks the same classes best and worst."
    else:
        text += (f" In cross-validation {cv_best} is best and {cv_worst} worst (by mean F1), so the ranking "
                 f"is not stable across these evaluations.")
    pairs = top_confusions(prv["confusion_matrix"])
    if pairs:
        text += (f" The {'most frequent confusions are' if len(pairs) > 1 else 'most frequent confusion is'} "
                 + and_join(f"{a} taken for {b} ({n} of the {int(pc[a]['support'])} {a} faces, {pct(share, 0)})"
                            for a, b, n, share in pairs) + ".")
    few = [c for c in present if pc[c]["support"] < 30]
    if few:
        tiny = min(few, key=lambda c: pc[c]["support"])
        text += (f" Per-class scores rest on few faces ({plural(len(few), 'class', 'classes')} under 30): one "
                 f"{tiny} face moves its recall by {100 / pc[tiny]['support']:.0f} pp.")
    return {"per_class": text}


def cross_dataset_findings(ctx):
    """The extra test sets (data.extra_test_sets) beside PrivateTest: table rows (faces, accuracy,
    balanced accuracy, recall per emotion; '–' where a set has no face of that emotion) and what the
    difference from PrivateTest does and does not mean."""
    extra, prv = ctx["final"]["extra"], ctx["final"]["private"]
    if not extra:
        return {}

    def recall(m, c):
        return m["per_class"][c]["recall"] if m["per_class"][c]["support"] else None

    def row(name, m):
        return [name, num(m["n"]), pct(m["accuracy"]), pct(m["balanced_accuracy"]),
                *("–" if recall(m, c) is None else pct(recall(m, c), 0) for c in CLASS_NAMES)]

    rows = [row("PrivateTest (FER2013)", prv)] + [row(code(name), m) for name, m in sorted(extra.items())]
    diffs = {name: 100 * (m["accuracy"] - prv["accuracy"]) for name, m in sorted(extra.items())}
    lower = [n for n, d in diffs.items() if d < 0]
    higher = [n for n, d in diffs.items() if d >= 0]
    parts = []
    if lower:
        parts.append("lower on " + and_join(f"{code(n)} ({pp(diffs[n])})" for n in lower))
    if higher:
        parts.append(("higher" if all(diffs[n] > 0 for n in higher) else "no lower") + " on "
                     + and_join(f"{code(n)} ({pp(diffs[n])})" for n in higher))
    text = f"Against PrivateTest's {pct(prv['accuracy'])}, accuracy is {' and '.join(parts)}."
    falls = [(100 * (recall(m, c) - recall(prv, c)), n, c) for n, m in extra.items() for c in CLASS_NAMES
             if recall(m, c) is not None and recall(prv, c) is not None]
    worst = min(falls) if falls else None
    if worst and worst[0] < 0:
        text += f" The largest fall in recall is {worst[2]} on {code(worst[1])} ({pp(worst[0])})."
    text += (" A difference like this measures domain shift, not a model that got worse: another camera, another "
             "population and another labelling protocol (posed or spontaneous faces, who chose the label and how) "
             "change the task itself, so it reads as \"the same model, worse\" only where a set's labels follow "
             "FER2013's protocol.")
    return {"cross_dataset_rows": rows, "cross_dataset": text}


FERPLUS_REASONS = {"dropped": "dropped by FER+", "tie": "tied for the most votes", "not_a_face": "voted not a face",
                   "unknown": "voted unknown", "contempt": "voted contempt"}


def ferplus_findings(ctx):
    """FER+ as a second opinion (results/final/ferplus.json): how many faces the crowd labels and why
    the others are left out, the accuracy against the crowd's majority, and per emotion how many of
    the model's errors against FER2013 the crowd agrees with."""
    fp = ctx.get("ferplus")
    if not fp:
        return {}
    splits = [("PublicTest", fp["public"]), ("PrivateTest", fp["private"])]
    summary = [[name, num(s["faces"]), num(s["scored"]), *(num(s["excluded"][k]) for k in FERPLUS_REASONS),
                pct(s["accuracy_fer2013"]), pct(s["accuracy_ferplus"]), pct(s["label_agreement"])]
               for name, s in splits]

    def share(agrees, errors):
        return f"{agrees} of {errors}" + (f" ({pct(agrees / errors, 0)})" if errors else "")

    per_class = [[c, *(share(s["per_class"][c]["crowd_agrees"], s["per_class"][c]["errors"]) for _, s in splits)]
                 for c in CLASS_NAMES]
    per_class.append(["**all**", *(share(s["crowd_agrees"], s["errors"]) for _, s in splits)])
    prv, pub = fp["private"], fp["public"]
    out_counts = {k: prv["excluded"][k] + pub["excluded"][k] for k in FERPLUS_REASONS}
    left = prv["faces"] + pub["faces"] - prv["scored"] - pub["scored"]
    text = (f"FER+ gives a crowd label (the most-voted of its categories) to {num(pub['scored'])} of the "
            f"{num(pub['faces'])} PublicTest and {num(prv['scored'])} of the {num(prv['faces'])} PrivateTest faces; "
            f"the other {num(left)} are left out and counted: "
            + and_join(f"{num(n)} {FERPLUS_REASONS[k]}" for k, n in out_counts.items() if n) + ". "
            f"The FER2013 label is the crowd's on {pct(prv['label_agreement'])} of the labelled PrivateTest faces. "
            f"Against the crowd the final model scores {pct(prv['accuracy_ferplus'])} on PrivateTest and "
            f"{pct(pub['accuracy_ferplus'])} on PublicTest ({pct(prv['accuracy_fer2013'])} and "
            f"{pct(pub['accuracy_fer2013'])} against FER2013 on the same faces).")
    rate = {c: v["crowd_agrees"] / v["errors"] for c, v in prv["per_class"].items() if v["errors"] >= 10}
    if prv["errors"]:
        text += (f" Of its {num(prv['errors'])} PrivateTest errors against FER2013 the crowd sides with the model on "
                 f"{num(prv['crowd_agrees'])} ({pct(prv['crowd_agrees'] / prv['errors'], 0)}) and with the FER2013 "
                 f"label on {num(prv['crowd_keeps_label'])}")
        if len(rate) >= 2:
            hi, lo = max(rate, key=rate.get), min(rate, key=rate.get)
            text += f"; most often for {hi} faces ({pct(rate[hi], 0)}), least for {lo} ({pct(rate[lo], 0)})"
        text += "."
    diff = 100 * (prv["accuracy_ferplus"] - prv["accuracy_fer2013"])
    agreed = pct(prv["crowd_agrees"] / prv["errors"], 0) if prv["errors"] else "none"
    if diff > 1:
        text += (f" So many of the model's \"errors\" are likely label noise in FER2013 ({agreed} of them by the "
                 f"crowd's vote), and against the crowd it scores {pp(diff)} higher.")
    else:
        text += (f" So {agreed} of its \"errors\" are likely label noise, yet the crowd also overturns "
                 f"{num(prv['crowd_overturns_match'])} FER2013 labels the model had matched (it learnt those labels, "
                 f"noise included): against the crowd it scores {abs(diff):.1f} pp {'lower' if diff < 0 else 'higher'} "
                 f"than against FER2013 on the same faces, so label noise moves the score both ways.")
    text += " FER+ entered nothing the study chose: it was read only after PrivateTest had been predicted."
    return {"ferplus_summary_rows": summary, "ferplus_class_rows": per_class, "ferplus": text}


# -- 7. inside the model

def model_findings(ctx):
    alpha = ctx["alpha"]
    f = {}
    fl = ctx["inspect"]["filters"]
    if fl:
        frac = fl["edge"] / fl["n"]
        text = (f"By a simple measure (a linear ramp explains at least half of the kernel's variance and its "
                f"weights nearly cancel), {fl['edge']} of the {fl['n']} first-layer kernels ({pct(frac, 0)}) are "
                f"oriented edge detectors, against {pct(fl['chance_edge'], 0)} of random kernels of that size; "
                f"{fl['blob']} are blobs (mostly one sign).")
        if fl["p_edge"] < alpha:
            orient = max(("horizontal", "vertical", "diagonal"), key=lambda o: fl[o])
            text += (f" That is more than random kernels give ({pval(fl['p_edge'])}); by orientation, "
                     f"{fl['horizontal']} horizontal, {fl['vertical']} vertical and {fl['diagonal']} diagonal"
                     + (f", mostly {orient}." if fl[orient] > fl["edge"] / 2 else "."))
        else:
            text += (f" That is no more than chance ({pval(fl['p_edge'])}): by this measure the first layer has not "
                     f"clearly become a bank of edge detectors.")
        f["filters"] = text
    else:
        f["filters"] = "The final model has no first-layer kernels larger than 1x1 to classify."
    ch = ctx["inspect"]["channels"]
    if not ch:
        f["channels"] = "The final model has no spatial feature maps to inspect."
        return f
    from scipy import stats

    fav = max(ch["prefer"], key=ch["prefer"].get)
    none = [e for e, v in ch["prefer"].items() if v == 0]
    text = (f"In the last feature map ({ch['layer']}, {ch['channels']} channels of {ch['size']}), measured on "
            f"{num(ch['faces'])} PublicTest faces, " + (f"{plural(ch['dead'], 'channel')} never changed; of the "
            f"other {ch['live']}, " if ch["dead"] else "") +
            f"{ch['prefer'][fav]} respond most to {fav} ({ch['prefer_null'][fav]} with shuffled labels)"
            + (f" and none prefers {and_join(none)}" if none else "") + ". ")
    expected = 0.05 * ch["live"]
    text += (f"The emotion explains a median {pct(ch['eta_median'])} of a channel's variance (η²), against "
             f"{pct(ch['eta_null_median'])} with shuffled labels; {ch['selective']} of {ch['live']} channels "
             f"exceed the shuffled 95th percentile (about {expected:.0f} would by chance)")
    p_sel = float(stats.binom.sf(ch["selective"] - 1, ch["live"], 0.05)) if ch["live"] else 1.0
    text += (f": more than chance ({pval(p_sel)}), so the deep channels carry emotion information." if p_sel < alpha
             else f": no more than chance ({pval(p_sel)}).")
    f["channels"] = text
    return f


# -- 8. reflections and limitations, generated from the same numbers

def reflection_findings(ctx):
    refl = [means_reflection(ctx), regularizer_reflection(ctx), underfit_reflection(ctx), final_gap_reflection(ctx),
            literature_reflection(ctx), hindsight_reflection(ctx)]
    return {"reflections": " ".join(r for r in refl if r), "limitations": limitations_text(ctx)}


def means_reflection(ctx):
    abl, metric = ctx["ablation"], ctx["metric"]
    n = len(abl)
    if not n:
        return ""
    means = [r[f"{metric}_mean"] for r in ctx["archs"]]
    quiet = sum(not _significant(r) for r in abl)
    held = sum(_significant(r) and r["holm"] and _label(r) == "holds" for r in abl)
    spread = 100 * (max(means) - min(means))
    folds = plural(int(abl[0]["k"]), "fold")
    text = (f"A table of means invites over-reading: here the means span {spread:.1f} pp and look like a ranking, yet "
            f"{quiet} of the {n} differences from the baseline are not measurable with {folds}")
    if quiet == n:
        return text + ", so no single operation can be said to matter at this budget."
    one = held == 1 or not held
    held_text = "none of the others" if not held else f"only {held} of the other {n - quiet}"
    return text + (f", and {held_text} both {'survives' if one else 'survive'} the Holm correction and "
                   f"{'holds' if one else 'hold'} at twice the budget: the verdicts and their labels, not the order "
                   f"of the means, say which operations made a difference.")


REGULARIZER_REASON = "the regularizer lost"  # how stability.stability words its rule (c)


def decided_by_regularizer_rule(row):
    """Whether the regularizer rule gave the row its label (`stability_rule`; an ablation.csv from
    before that column: the wording of its reason)."""
    rule = row.get("stability_rule")
    if isinstance(rule, str) and rule:
        return rule == "regularizer"
    return str(row.get("stability_reason", "")).startswith(REGULARIZER_REASON)


def regularizer_reflection(ctx):
    """The verdicts that ablation.csv labelled budget-dependent by the regularizer rule."""
    from .stability import MIN_OVERFIT_GAP_PP

    early = [r for r in ctx["ablation"] if _label(r) == "budget-dependent" and decided_by_regularizer_rule(r)]
    if not early:
        return ""
    kinds = list(dict.fromkeys(r["factor"] for r in early))
    factors = and_join(kinds)
    return (f"The regularizer lost in {and_join(code(r['arch']) for r in early)} ({_label(early[0])}) while the "
            f"less regularized network was not yet over-fitting (a train-minus-held-out gap under {MIN_OVERFIT_GAP_PP:g} pp): "
            f"{factors} can pay off only once there is over-fitting to prevent, so "
            f"{'this verdict describes' if len(early) == 1 else 'these verdicts describe'} the short budget, "
            f"not {factors} {'itself' if len(kinds) == 1 else 'themselves'}.")


def underfit_reflection(ctx):
    from .stability import MIN_OVERFIT_GAP_PP

    fits = [r for r in ctx["archs"] if r["fit"] and np.isfinite(r["fit"]["gap_pp"])]
    under = [r for r in fits if r["fit"]["gap_pp"] < MIN_OVERFIT_GAP_PP]
    if not fits or 2 * len(under) < len(fits):
        return ""
    who = f"All {len(fits)}" if len(under) == len(fits) else f"{len(under)} of the {len(fits)}"
    return (f"{who} networks were still under-fitting at the last epoch, so the budget more "
            f"than the architecture limited what they learnt, and a short budget favours networks that learn fast.")


def final_gap_reflection(ctx):
    fin, chosen = ctx["final"], ctx["chosen"]
    gap = 100 * (fin["private"]["accuracy"] - chosen["accuracy_mean"])
    effects = [r for r in ctx["ablation"] if np.isfinite(r["diff_pp"])]
    if not effects or not fin["workload"]:
        return ""
    top = max(effects, key=lambda r: abs(r["diff_pp"]))
    if gap <= abs(top["diff_pp"]):
        return ""
    return (f"More faces and epochs mattered more than any single operation: the final model is {gap:.1f} pp above "
            f"its cross-validation mean, while the largest difference from the baseline was "
            f"{abs(top['diff_pp']):.1f} pp ({code(top['arch'])}).")


def literature_reflection(ctx):
    prv = ctx["final"]["private"]
    if ctx["demo"] or prv["accuracy"] >= 0.70:
        return ""
    return (f"At {pct(prv['accuracy'])} the model stays below the 73% reported for a VGG-style network trained for "
            f"hundreds of GPU epochs (Khaireddin and Chen, 2021); this study trained each fold for "
            f"{ctx['cv_training'].get('epochs')} epochs.")


def hindsight_reflection(ctx):
    abl = ctx["ablation"]
    counts = label_counts(abl)
    found = min_detectable_pp(ctx)
    ideas = []
    guessed = sum(_label(r) == "budget-dependent" and r.get("stability_basis") != "measured" for r in abl)
    if guessed:
        one = guessed == 1
        ideas.append(f"the {'' if one else str(guessed) + ' '}heuristically budget-dependent "
                     f"{'verdict deserves' if one else 'verdicts deserve'} a longer run of {'its pair' if one else 'their pairs'} "
                     f"(`study.recheck`)")
    if found and found[3] and 2 * counts.get("undecided", 0) >= len(abl):
        mdd = float(np.median(list(found[3].values())))
        ideas.append(f"with {found[0]} folds a difference needed about {mdd:.1f} pp to be seen, so more folds could "
                     f"settle some of the {counts['undecided']} undecided verdicts")
    good = [r for r in abl if r["verdict"] == "helped" and _label(r) == "holds"]
    if len(good) >= 2:
        ideas.append(f"a second round combining {and_join(code(r['arch']) for r in good)} could reveal interactions")
    return f"In hindsight, {'; '.join(ideas)}." if ideas else ""


def limitations_text(ctx):
    tr, abl = ctx["cv_training"], ctx["ablation"]
    text = ("Each network was trained once per fold, fold k from seed s + k (every network of a fold from the same "
            "one), so the fold spread mixes data and initialisation noise.")
    if tr.get("epochs", 0) < 30:
        share = tr.get("subsample", 1.0)
        text += (f" The budget was small ({tr['epochs']} epochs per fold"
                 + (f" on {pct(share, 0)} of each fold's training faces" if share < 1 else "")
                 + "); section 4 says what it can and cannot show.")
    if abl:
        kept = sum(_significant(r) and r["holm"] for r in abl)
        text += (f" Verdicts use the uncorrected p; {kept} of the {len(abl)} {'survives' if kept == 1 else 'survive'} "
                 f"the Holm correction, and every variant is compared with one baseline only.")
    text += (" The demo faces are synthetic: nothing here transfers to real faces." if ctx["demo"] else
             " FER2013 faces are small web images with noisy labels; results need not transfer to video or "
             "spontaneous expressions.")
    return text


# -- 10. reproducibility

PRECISION_NAMES = {"bf16": "bf16 autocast", "fp32": "fp32"}


def precision_text(ctx):
    """The precision of the final model and of the fold jobs (grouped by precision), with the reasons
    their config.yaml recorded."""
    fin, folds = ctx["precision"]["final"], ctx["precision"]["folds"]

    def name(p):
        return PRECISION_NAMES.get(p, "an unrecorded precision")

    def why(items):
        reasons = list(dict.fromkeys(fo["reason"] for fo in items if fo["reason"]))
        gains = [float(m.group(1)) for m in (re.search(r"measured ([0-9.]+)x fp32", r) for r in reasons) if m]
        if len(reasons) > 1 and len(gains) == len(reasons):
            return f" (native bf16 CPU; bf16 measured {min(gains):.2f}x-{max(gains):.2f}x fp32, network by network)"
        return f" ({reasons[0]})" if len(reasons) == 1 else f" (reasons per network, e.g. {reasons[0]})" if reasons else ""

    text = f"The final model trained in {name(fin['precision'])}" + (f" ({fin['reason']})" if fin["reason"] else "")
    groups = {}
    for fo in folds:
        groups.setdefault(fo["precision"], []).append(fo)
    if len(groups) == 1:
        (p, items), = groups.items()
        same = p == fin["precision"] and why(items) == (f" ({fin['reason']})" if fin["reason"] else "")
        text += f"; so did all {len(items)} fold jobs" if same else f"; all {len(items)} fold jobs in {name(p)}{why(items)}"
    elif groups:
        def who(items):
            archs = list(dict.fromkeys(fo["arch"] for fo in items))
            return and_join(code(a) for a in archs) if len(archs) <= 4 else plural(len(archs), "network")

        text += f"; of the {plural(len(folds), 'fold job')}, " + and_join(
            f"{len(items)} in {name(p)} ({who(items)}){why(items)}" for p, items in groups.items())
    text += "."
    if "bf16" in (fin["precision"], *groups):
        text += (" In bf16 autocast the convolutions and matrix products run in bfloat16; weights, batch-norm "
                 "statistics, the loss and the optimizer stay fp32.")
    return text


def reproducibility_findings(ctx):
    return {"precision": precision_text(ctx), "cost_prediction": cost_prediction_sentence(ctx.get("cost_prediction"))}


def cost_prediction_sentence(cp):
    """How far the prediction made when the study started was from its real wall time."""
    if not cp or cp["total_error"] is None:
        why = f" ({cp['rows'][0]['note']})" if cp else ""
        return (f"No whole-study cost prediction can be set against this study's real wall time{why}; a local "
                "run that builds the whole study with `study.predict_cost` on makes one.")
    err = cp["total_error"]
    how = ("made by measuring every network on this machine when the run started" if cp["measured_in_study"]
           else "repeated from an earlier measurement of the same config on this machine")
    return (f"The prediction of the whole study's wall time, {how}, was {pct(abs(err))} "
            f"{'above' if err > 0 else 'below'} the real time, {'within' if abs(err) <= 0.25 else 'outside'} "
            f"the 25% this tool aims at.")


SECTIONS = (data_findings, protocol_findings, verdict_findings, fit_findings, cost_findings, budget_findings,
            class_effect_findings, selection_findings, final_findings, per_class_findings, cross_dataset_findings,
            ferplus_findings, model_findings,
            reflection_findings, reproducibility_findings)


# ---------------------------------------------------------------- rendering

def environment(template_dir):
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir)), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
    env.filters.update(pct=pct, pp=pp, pval=pval, num=num, mflops=mflops, seconds=seconds, code=code, mean_std=mean_std,
                       extract=extract)
    env.globals.update(table=md_table, and_join=and_join, CLASS_NAMES=CLASS_NAMES, isfinite=lambda x: x is not None
                       and np.isfinite(x))
    return env


def render(ctx, template_dir, template=TEMPLATE):
    """The report as markdown text."""
    import jinja2

    template_dir = Path(template_dir)
    if not (template_dir / template).is_file():
        raise UserError(f"{template_dir / template}: report template not found")
    try:
        tpl = environment(template_dir).get_template(template)
        text = tpl.render(ctx=ctx, f=findings(ctx))
    except jinja2.TemplateError as err:
        where = f"{template_dir / template}" + (f", line {err.lineno}" if getattr(err, "lineno", None) else "")
        raise UserError(f"{where}: {err.message if hasattr(err, 'message') else err}") from None
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text)


# ---------------------------------------------------------------- CLI

def cmd_report(args):
    from .io import write_text

    template = Path(args.template)
    ctx = collect(args.results, report_path=args.out, preset=args.preset, threads=args.threads,
                  allow_missing_figures=args.allow_missing_figures)
    text = render(ctx, template.parent, template.name)
    write_text(args.out, text)
    words = prose_words(text)
    lo, hi = PROSE_WORDS
    (log.info if lo <= words <= hi else log.warning)(
        "wrote %s: %d prose words (target %d-%d)%s", args.out, words, lo, hi,
        " -- DEMO DATA" if ctx["demo"] else "")


def register(sub):
    p = sub.add_parser("report", help="render the markdown report from the results")
    p.add_argument("--results", default="results", help="results directory (data/, tables/, cv/, final/, figures/)")
    p.add_argument("--out", default="results/report/report.md", help="markdown file to write")
    p.add_argument("--template", default="report/report.md.j2", help="Jinja2 template")
    p.add_argument("--preset", help="preset the study ran with (shown in the rebuild command)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the look inside the final model")
    p.add_argument("--allow-missing-figures", action="store_true",
                   help="write the report without the figures that do not exist (default: they are required)")
    p.set_defaults(func=cmd_report)
