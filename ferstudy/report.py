"""The markdown report: every number from the result files, every finding a sentence computed
from those numbers.

- `collect(results_dir)` reads the results (tables, cross-validation and final metrics, the final
  model, the prepared data, benchmarks) into one dict of numbers, `ctx`. It raises `UserError`
  naming every missing file.
- `findings(ctx)` turns numbers into sentences. Each finding is a small pure function of `ctx`:
  significance comes from the ablation verdicts (corrected resampled t-test, `study.alpha`),
  "within one standard deviation" and "within sampling noise" are computed, and a different
  result gives a different sentence. Nothing is claimed that the numbers do not support.
- `render(ctx, template_dir)` fills `report/report.md.j2` (Jinja2) with `ctx` and the findings.
- `register(subparsers)` adds `ferstudy report`.

How words are counted (`prose_words`): the rendered markdown minus fenced code blocks, table rows
(lines starting with `|`), image lines (`![...](...)`), headings (`#`), HTML comments and
horizontal rules; link targets and emphasis markers are dropped, link texts and inline code are
kept (`snake_case` names are one word); a word is a whitespace-separated token containing a letter
or a digit. The template aims at 1,200-1,500 such words (`PROSE_WORDS`); `ferstudy report` logs the
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

log = logging.getLogger("ferstudy.report")

PROSE_WORDS = (1200, 1500)
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
    rows = []
    for rec in _records(summary):
        a = rec["architecture"]
        c = cost.loc[a].to_dict() if a in cost.index else {}
        rows.append({**rec, "params": c.get("params"), "mflops": c.get("mflops"),
                     "train_seconds_per_fold": c.get("train_seconds_per_fold"), "peak_rss_mb": c.get("peak_rss_mb"),
                     "fold_accuracy": cv[a]["aggregate"]["metrics"]["accuracy"]["folds"],
                     "layers": layer_summary(run_cfgs[a]["model"]),
                     "conv_filters": conv_filters(run_cfgs[a]["model"]),
                     "training_changes": training_changes(run_cfgs[baseline]["training"], run_cfgs[a]["training"])
                     if a != baseline and baseline in run_cfgs else []})
    abl = _records(ablation)
    desc = {row["architecture"]: row["description"] for row in rows}
    for row in abl:
        row["description"] = desc.get(row["arch"], "")
        row["p"] = float(row["p"]) if row["p"] is not None else math.nan

    counts = count_table(data)
    n_train = int(counts.loc["Training", "total"])
    k = int(data.attrs.get("folds", summary["folds"].max()))
    chosen = selection["architecture"]
    report_dir = Path(report_path).parent if report_path else r / "report"

    def link(path):
        return Path(os.path.relpath(path, report_dir)).as_posix()

    final_run = final_cfg.get("run_config", {})
    ctx = {
        "dataset": data.attrs.get("dataset", "unknown"),
        "demo": data.attrs.get("dataset") == "demo",
        "data": {"counts": {s: {c: int(counts.loc[s, c]) for c in [*CLASS_NAMES, "total"]}
                            for s in [*SPLIT_NAMES, "total"]},
                 "n_train": n_train, "n_public": int(counts.loc["PublicTest", "total"]),
                 "n_private": int(counts.loc["PrivateTest", "total"]),
                 "source_path": data.attrs.get("source_path"), "source_sha256": data.attrs.get("source_sha256"),
                 "folds": k, "fold_seed": data.attrs.get("fold_seed"),
                 "fold_train": n_train * (k - 1) // k, "fold_test": n_train // k},
        "baseline": baseline,
        "metric": selection.get("metric", "accuracy"),
        "alpha": float(ablation["alpha"].iloc[0]) if len(ablation) else 0.05,
        "archs": rows,
        "ablation": abl,
        "selection": selection,
        "selected_by_cv": str(selection.get("reason", "")).startswith("highest"),
        "chosen": next(row for row in rows if row["architecture"] == chosen),
        "cv_chosen": cv[chosen]["aggregate"],
        "cv_training": run_cfgs[baseline]["training"],
        "final": {"public": final_metrics["public"], "private": final_metrics["private"],
                  "extra": {name: m for name, m in final_metrics.items()  # extra test sets, if any
                            if name not in ("public", "private") and isinstance(m, dict) and "accuracy" in m},
                  "training": final_run.get("training", {}), "model": final_run.get("model", {}),
                  "best_epoch": final_cfg.get("best_epoch"), "best_public_acc": final_cfg.get("best_public_acc"),
                  "seconds": final_cfg.get("seconds"), "history": history, "n_train": final_cfg.get("n_train")},
        "environment": final_cfg.get("environment", {}),
        "config_hash": final_cfg.get("config_hash"),
        "threads": final_cfg.get("threads"),
        "preset": preset,
        "benchmarks": benchmark_times(r, archs),
        "cost_prediction": predicted_vs_actual(r),
        "inspect": inspect_model(r / "final" / "model.pt", data, threads=threads),
        "seed_picks": SEED,
        "figures": {name: link(r / "figures" / f"{name}.png") if (r / "figures" / f"{name}.png").is_file() else None
                    for name in FIGURE_NAMES},
        "faces": link(r / "data" / "faces.png"),
        "results_dir": r.as_posix(),
    }
    return ctx


def layer_summary(model_spec):
    """The layer list in one line: 'conv3x3 16 > BN > relu > maxpool2 > ...' (or the backbone)."""
    if "backbone" in model_spec:
        return f"torchvision {model_spec['backbone']}" + (" (pretrained)" if model_spec.get("pretrained") else "")
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

def _effect(row):
    """'+4.1 pp, p = 0.012' (and the test's note when there is one)."""
    note = f"; {row['note']}" if row.get("note") and isinstance(row["note"], str) else ""
    return f"{pp(row['diff_pp'])}, {pval(row['p'])}{note}"


def _verdict_phrase(row):
    v = row["verdict"]
    if v in ("helped", "hurt"):
        return v
    if row["p"] is None or not np.isfinite(row["p"]):
        return "could not be tested"
    return "made no measurable difference"


def _factor_sentence(frows):
    """Variants of one factor grouped by verdict: '`a` (+4.1 pp, p = 0.01) helped; `b` (...) and ...'."""
    groups = {}
    for row in frows:
        groups.setdefault(_verdict_phrase(row), []).append(f"{code(row['arch'])} ({_effect(row)})")
    order = ("helped", "hurt", "made no measurable difference", "could not be tested")
    return "; ".join(f"{and_join(groups[v])} {v}" for v in order if v in groups) + "."


def holm(pvalues, alpha):
    """Holm step-down: which p-values stay significant after correcting for their number."""
    p = np.asarray([x if x is not None and np.isfinite(x) else 1.0 for x in pvalues])
    order = np.argsort(p, kind="stable")
    keep = np.zeros(len(p), dtype=bool)
    for rank, i in enumerate(order):
        if p[i] <= alpha / (len(p) - rank):
            keep[i] = True
        else:
            break
    return keep


OPERATIONS = {
    "depth": "More layers add non-linearity and widen the receptive field.",
    "filters": "Width sets the parameters and compute of every stage.",
    "kernel size": "Larger kernels see more of the face per layer, at a higher cost.",
    "pooling": "Pooling downsamples by the window's maximum or mean; a strided convolution learns it.",
    "normalization": "Batch normalization standardises each channel over the mini-batch.",
    "activation": "ELU and GELU are smooth and let small negative values through.",
    "dropout": "Dropout zeroes random activations in training, against memorising faces.",
    "augmentation": "Augmentation varies every training face at random.",
    "capacity": "A much larger VGG-style network tests whether capacity is the bottleneck.",
    "backbone": "Torchvision backbones adapted to one grey channel test off-the-shelf designs.",
}


# Training settings that are the operation itself for a factor (not a confound when they differ).
OPERATION_SETTINGS = {"augmentation": ("augment.",)}


def augmentation_text(aug):
    """What the augmentation settings do, in words (only the active ones)."""
    if not aug.get("enabled", False):
        return "No augmentation is used."
    crop = aug.get("crop", 48)
    ops = [f"randomly cropped to {crop}x{crop}" if crop < 48 else None, "flipped" if aug.get("flip") else None,
           f"rotated by up to {aug['rotate']} degrees" if aug.get("rotate") else None,
           "scaled" if aug.get("scale") else None, "shifted" if aug.get("translate") else None,
           "partly erased" if aug.get("erase") else None,
           "changed in brightness and contrast" if aug.get("brightness") or aug.get("contrast") else None]
    ops = [o for o in ops if o]
    return (f"Training faces are {and_join(ops)}" if ops else "Augmentation is on but every operation is off") + \
        ("; evaluation uses the centre crop." if crop < 48 else ".")


def findings(ctx):
    """All generated sentences, keyed by topic; each one a function of the numbers in `ctx`."""
    f = {}
    alpha, metric = ctx["alpha"], ctx["metric"]
    mname = metric.replace("_", " ")
    rows = {row["architecture"]: row for row in ctx["archs"]}
    base = rows[ctx["baseline"]]
    abl = ctx["ablation"]
    chosen = ctx["chosen"]
    sel = ctx["selection"]

    # -- data
    train = ctx["data"]["counts"]["Training"]
    big = max(CLASS_NAMES, key=lambda c: train[c])
    small = min(CLASS_NAMES, key=lambda c: train[c])
    private = ctx["data"]["counts"]["PrivateTest"]
    major = max(CLASS_NAMES, key=lambda c: private[c])
    f["augment"] = augmentation_text(ctx["cv_training"].get("augment", {}))
    f["data_balance"] = (
        f"The classes are unbalanced: {big} is the largest Training class ({num(train[big])} faces, "
        f"{pct(train[big] / train['total'])}) and {small} the smallest ({num(train[small])}, "
        f"{pct(train[small] / train['total'])}), a ratio of {train[big] / max(train[small], 1):.1f} to 1. "
        f"Always answering {major} would score {pct(private[major] / private['total'])} on PrivateTest, "
        f"and guessing uniformly {pct(1 / len(CLASS_NAMES))}.")

    # -- ablation, per factor
    by_factor = {}
    for row in abl:
        by_factor.setdefault(row["factor"], []).append(row)
    f["variants"] = {row["arch"]: f"{code(row['arch'])} {_verdict_phrase(row)} ({_effect(row)})." for row in abl}
    f["factors"] = [{"factor": factor, "explain": OPERATIONS.get(factor, ""), "sentence": _factor_sentence(frows)}
                    for factor, frows in by_factor.items()]
    helped = [r for r in abl if r["verdict"] == "helped"]
    hurt = [r for r in abl if r["verdict"] == "hurt"]
    n = len(abl)
    survivors = []
    if n:
        f["ablation_count"] = (
            f"Of the {plural(n, 'variant')} compared with {code(ctx['baseline'])}, {len(helped)} helped, "
            f"{len(hurt)} hurt and {n - len(helped) - len(hurt)} made no measurable difference "
            f"at α = {alpha:g}" + (f" (helped: {and_join(code(r['arch']) for r in helped)})" if helped else "")
            + (f" (hurt: {and_join(code(r['arch']) for r in hurt)})" if hurt else "") + ".")
        f["short_ablation"] = (f"Against the baseline, {len(helped)} of {n} variants helped, {len(hurt)} hurt and "
                               f"{n - len(helped) - len(hurt)} made no measurable difference.")
        sig = [r for r in abl if r["verdict"] != "no measurable difference"]
        keep = holm([r["p"] for r in abl], alpha)
        survivors = [r["arch"] for r, k in zip(abl, keep) if k]
        from scipy import stats

        chance_p = float(stats.binom.sf(len(sig) - 1, n, alpha)) if sig else 1.0
        text = (f"If no operation mattered, about {n * alpha:.1f} of these {n} uncorrected tests would come out "
                f"significant by chance; {len(sig)} did")
        if not sig:
            text += ", so no operation showed a measurable effect at this budget."
        elif chance_p < alpha:
            text += f", more than chance explains (binomial {pval(chance_p)})."
        else:
            text += (f", which chance could produce (binomial {pval(chance_p)}), so treat "
                     f"{'it' if len(sig) == 1 else 'them'} as tentative.")
        if sig:
            text += (f" After a Holm correction for the {n} tests, {and_join(code(a) for a in survivors)} "
                     f"{'remains' if len(survivors) == 1 else 'remain'} significant." if survivors else
                     f" After a Holm correction for the {n} tests, none remains significant.")
        f["multiple"] = text
        stds = [r["std_pp"] for r in abl if r["std_pp"] is not None and np.isfinite(r["std_pp"])]
        k = int(abl[0]["k"])
        if stds and k >= 2:
            from scipy import stats

            t_crit = float(stats.t.ppf(1 - alpha / 2, k - 1))
            mdd = t_crit * math.sqrt(1 / k + ctx["data"]["fold_test"] / max(ctx["data"]["fold_train"], 1)) \
                * float(np.median(stds))
            f["power"] = (f"With k = {k} folds (critical t = {t_crit:.2f}) and a median spread of the paired "
                          f"differences of {np.median(stds):.1f} pp, a difference needed about {mdd:.1f} pp to reach "
                          f"p < {alpha:g}; smaller real effects are invisible here, so \"no measurable difference\" "
                          f"is not evidence of no effect.")
        confounds = []
        for r in ctx["archs"]:
            own = OPERATION_SETTINGS.get(r["factor"], ())
            extra = [c for c in r["training_changes"] if not c.startswith(own)] if own else r["training_changes"]
            if extra:
                confounds.append((r["architecture"], extra))
        if confounds:
            f["confounds"] = ("Some variants change more than the architecture: " + "; ".join(
                f"{code(a)} also trains with {and_join(ch)}" for a, ch in confounds)
                + ". Their differences mix both changes.")

    # -- cost
    best = max(ctx["archs"], key=lambda r: r[f"{metric}_mean"])
    if all(r["mflops"] is not None and np.isfinite(r["mflops"]) for r in ctx["archs"]):
        close = [r for r in ctx["archs"] if r[f"{metric}_mean"] >= best[f"{metric}_mean"] - best[f"{metric}_std"]]
        cheapest = min(close, key=lambda r: r["mflops"])
        text = (f"The best network by cross-validation {mname}, {code(best['architecture'])}, costs "
                f"{mflops(best['mflops'])} MFLOPs per face and {num(best['params'])} parameters "
                f"({best['mflops'] / base['mflops']:.1f}x the baseline's compute).")
        if cheapest["architecture"] != best["architecture"]:
            text += (f" {code(cheapest['architecture'])} comes within one standard deviation of it "
                     f"({pct(cheapest[f'{metric}_mean'])} against {pct(best[f'{metric}_mean'])}) with "
                     f"{mflops(cheapest['mflops'])} MFLOPs, {best['mflops'] / cheapest['mflops']:.1f}x less compute.")
        else:
            text += " No cheaper network comes within one standard deviation of it."
        f["cost"] = text

    # -- selection
    runner = sel.get("runner_up")
    by_cv = ctx["selected_by_cv"]
    tie = bool(runner) and runner["mean"] == sel["mean"] and by_cv
    text = (f"The final architecture is {code(sel['architecture'])}, {'chosen by ' if by_cv else ''}{sel['reason']}"
            f"{' (a tie, broken by name)' if tie else ''}: "
            f"{pct(sel['mean'])} ± {pct(sel['std'])} over {plural(int(chosen['folds']), 'fold')}.")
    if runner:
        margin = 100 * (sel["mean"] - runner["mean"])
        within = abs(margin) <= 100 * sel["std"]
        text += (f" {'The runner-up' if by_cv else 'The best other architecture'} {code(runner['architecture'])} "
                 f"reached {pct(runner['mean'])}, "
                 + (f"{abs(margin):.1f} pp {'behind' if margin >= 0 else 'ahead'}" if margin else "a tie")
                 + (f", within one standard deviation ({100 * sel['std']:.1f} pp), so these folds do not settle "
                    f"the order of the top two." if within else
                    f", more than one standard deviation ({100 * sel['std']:.1f} pp)."))
    if sel["architecture"] == ctx["baseline"] and by_cv:
        text += " No variant had a higher mean than the baseline, so the baseline itself was retrained."
    else:
        row = next((r for r in abl if r["arch"] == sel["architecture"]), None)
        if row is not None:
            holm_note = "" if row["verdict"] == "no measurable difference" else (
                ", and stays so after the Holm correction" if row["arch"] in survivors else
                ", though not after the Holm correction")
            text += (" Against the baseline its advantage was significant" if row["verdict"] == "helped" else
                     " Against the baseline it did not differ measurably" if row["verdict"] != "hurt" else
                     " Against the baseline it was significantly worse") + \
                f" ({pp(row['diff_pp'])}, {pval(row['p'])}){holm_note}."
        if chosen["mflops"] and base["mflops"]:
            text += (f" It costs {chosen['mflops'] / base['mflops']:.1f}x the baseline's compute and "
                     f"{chosen['params'] / base['params']:.1f}x its parameters.")
    f["selection"] = text
    order = ("" if not runner else "tied with" if runner["mean"] == sel["mean"] else
             "ahead of" if sel["mean"] > runner["mean"] else "behind")
    f["short_selection"] = ((f"Cross-validation chose {code(sel['architecture'])}" if by_cv else
                             f"The config named {code(sel['architecture'])} as the final architecture")
                            + f" ({pct(sel['mean'])} ± {100 * sel['std']:.1f} mean {mname})"
                            + (f", {order} {code(runner['architecture'])} ({pct(runner['mean'])})" if runner else "")
                            + ".")

    # -- final test results
    pub, prv = ctx["final"]["public"], ctx["final"]["private"]
    fin = ctx["final"]
    se = math.sqrt(sum(m["accuracy"] * (1 - m["accuracy"]) / m["n"] for m in (pub, prv)))  # of the difference
    gap = 100 * (pub["accuracy"] - prv["accuracy"])
    text = (f"The final model scores {pct(prv['accuracy'])} on PrivateTest and {pct(pub['accuracy'])} on "
            f"PublicTest. ")
    if abs(gap) <= 2 * 100 * se:
        text += (f"The {abs(gap):.1f} pp gap is within sampling noise (two standard errors: {200 * se:.1f} pp).")
    else:
        text += (f"PublicTest is {abs(gap):.1f} pp {'higher' if gap > 0 else 'lower'}, more than two standard "
                 f"errors ({200 * se:.1f} pp)"
                 + (", as expected when a set chooses the checkpoint." if gap > 0 else "."))
    cv_gap = 100 * (prv["accuracy"] - sel["mean"])
    text += (f" PrivateTest is {abs(cv_gap):.1f} pp {'above' if cv_gap >= 0 else 'below'} the "
             f"cross-validation mean; the final model trained on {num(ctx['data']['n_train'])} faces "
             f"for {fin['training'].get('epochs', '?')} epochs, each fold model on "
             f"{num(ctx['data']['fold_train'] * ctx['cv_training'].get('subsample', 1.0))} for "
             f"{ctx['cv_training'].get('epochs', '?')}.")
    f["final"] = text
    if fin["extra"]:
        f["extra"] = ("On the extra test set" + ("s" if len(fin["extra"]) > 1 else "") + " it scores " + and_join(
            f"{pct(m['accuracy'])} on {code(name)} ({num(m['n'])} faces)" for name, m in sorted(fin["extra"].items()))
            + f", against {pct(prv['accuracy'])} on PrivateTest.")
    f["short_final"] = (f"Retrained on all of Training, it scores {pct(prv['accuracy'])} on the untouched "
                        f"PrivateTest set (macro F1 {prv['macro_f1']:.3f}).")
    hist = fin["history"]
    if hist:
        last = hist[-1]
        epochs = int(last["epoch"])
        be = fin["best_epoch"]
        text = "" if be is None else (f"PublicTest accuracy peaked at epoch {be} of {epochs}" +
                                      (", the last, so the model had not clearly stopped improving"
                                       if be == epochs else "") + ". ")
        gap = 100 * (last["train_acc"] - last["val_acc"])
        text += (f"At the last epoch training accuracy (augmented faces) was {pct(last['train_acc'])} against "
                 f"{pct(last['val_acc'])} on PublicTest"
                 + (": the network fits its training faces much better than new ones." if gap > 10 else
                    ": little sign of overfitting." if gap <= 3 else "."))
        f["history"] = text
    f["protocol"] = (
        f"PrivateTest was predicted once, after cross-validation had chosen the architecture and PublicTest the "
        f"epoch{'' if fin['best_epoch'] is None else ' (' + str(fin['best_epoch']) + ')'}; nothing read it to "
        f"choose anything, so {pct(prv['accuracy'])} is an unbiased "
        f"estimate, while the PublicTest score is optimistic.")

    # -- per class
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
    cm = np.asarray(prv["confusion_matrix"], dtype=float)
    off = cm.copy()
    np.fill_diagonal(off, -1)
    i, j = np.unravel_index(np.argmax(off), off.shape)
    if off[i, j] > 0:
        text += (f" The most frequent confusion is {CLASS_NAMES[i]} taken for {CLASS_NAMES[j]}: "
                 f"{int(cm[i, j])} of the {int(cm[i].sum())} {CLASS_NAMES[i]} faces "
                 f"({pct(cm[i, j] / cm[i].sum(), 0)}).")
    few = [c for c in present if pc[c]["support"] < 30]
    if few:
        tiny = min(few, key=lambda c: pc[c]["support"])
        text += (f" Per-class scores rest on few faces ({plural(len(few), 'class', 'classes')} under 30): one "
                 f"{tiny} face moves its recall by {100 / pc[tiny]['support']:.0f} pp.")
    f["per_class"] = text

    # -- inside the model
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
    if ch:
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
        from scipy import stats

        p_sel = float(stats.binom.sf(ch["selective"] - 1, ch["live"], 0.05)) if ch["live"] else 1.0
        text += (f": more than chance ({pval(p_sel)}), so the deep channels carry emotion information." if p_sel < alpha
                 else f": no more than chance ({pval(p_sel)}).")
        f["channels"] = text
    else:
        f["channels"] = "The final model has no spatial feature maps to inspect."

    # -- reflections (generated from the same numbers)
    refl = []
    if n:
        means = [r[f"{metric}_mean"] for r in ctx["archs"]]
        quiet = n - len(helped) - len(hurt)
        spread = 100 * (max(means) - min(means))
        folds = plural(int(abl[0]["k"]), "fold")
        if 2 * quiet >= n:
            refl.append(f"A table of means invites over-reading: here the means span {spread:.1f} pp and look like a "
                        f"ranking, yet {quiet} of the {n} differences from the baseline are not measurable with {folds}"
                        + (", so no single operation can be said to matter at this budget." if quiet == n else "."))
        else:
            refl.append(f"The means span {spread:.1f} pp and {n - quiet} of the {n} differences from the baseline are "
                        f"measurable with {folds}, yet {quiet} are not: the verdicts, not the order of the means, say "
                        f"which operations made a difference.")
    if not ctx["demo"] and prv["accuracy"] < 0.70:
        refl.append(f"At {pct(prv['accuracy'])} the model stays below the 73% reported for a VGG-style network "
                    f"trained for hundreds of GPU epochs (Khaireddin and Chen, 2021); this study trained each fold "
                    f"for {ctx['cv_training'].get('epochs')} epochs.")
    f["reflections"] = " ".join(refl)
    f["cost_prediction"] = cost_prediction_sentence(ctx.get("cost_prediction"))
    return f


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
