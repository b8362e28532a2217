"""The report: a fake-but-consistent results/ directory written by the real writers (HDF5,
predictions, evaluate_arch, aggregate, select, evaluate_final, history, model), then the word
count, the image links, the demo banner and findings that follow the numbers."""

import contextlib
import copy
import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ferstudy import CLASS_NAMES, study
from ferstudy.checkpoint import save_model
from ferstudy.cli import _result_config, main
from ferstudy.config import resolve_arch, resolve_config
from ferstudy.data import write_h5
from ferstudy.errors import UserError
from ferstudy.figures import FIGURES
from ferstudy.io import write_json, write_text
from ferstudy.models import build_model
from ferstudy.probe import (
    CHANNEL_FACES_PER_CLASS,
    PICK_SEED,
    capture,
    channel_emotion_matrix,
    eta_squared,
    model_input,
    pick_faces,
    stage_taps,
)
from ferstudy.report.load import collect
from ferstudy.report.model_facts import inspect_model, kernel_shapes
from ferstudy.report.cli import SKELETON_NAMES
from ferstudy.report.render import render, render_both
from ferstudy.report.sections import findings
from ferstudy.report.sections.budget import fit_reading
from ferstudy.report.sections.class_effects import hard_class_extremes
from ferstudy.report.sections.effects import OPERATIONS, operation_text
from ferstudy.report.sections.final_model import tta_text
from ferstudy.report.sections.per_class import top_confusions
from ferstudy.report.sections.reproducibility import precision_text
from ferstudy.report.text import PROSE_WORDS, image_links, num, pct, prose_words, pval, repeated_skeletons
from ferstudy.report.verdicts import counts_text, label_counts
from ferstudy.train import write_history, write_predictions

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
TEMPLATE_DIR = REPO / "report"
# FER2013 Training counts per class, scaled down; PublicTest and PrivateTest an eighth of that.
FER_TRAIN = np.array([3995, 436, 4097, 7215, 4830, 3171, 4965])
EASE = np.array([0.9, 0.5, 0.7, 1.6, 0.9, 1.3, 1.0])  # how easy each emotion is in the fake predictions
TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108000000003a7e9b55"
    "0000000a4944415478da63600000000200015d0e1c2c0000000049454e44ae426082"
)
ENV = {
    "ferstudy": "0.1.0",
    "python": "3.11.7",
    "platform": "Linux-test",
    "processor": "x86_64",
    "torch": "2.14.1",
    "numpy": "2.4.6",
    "sklearn": "1.9.1",
    "pandas": "3.1.1",
    "snakemake": "9.27.1",
    "cuda": None,
}


def study_config(preset):
    raw = yaml.safe_load((REPO / "ferstudy" / "defaults.yaml").read_text())
    raw["preset"] = preset
    return resolve_config(raw, workdir=REPO / "tests")  # no data/ there: the demo dataset


_REAL_MODEL_COST = study.model_cost
_TINY_SPEC = {"layers": [{"conv": 1}, "gap"]}


# Building a torchvision backbone imports torchvision (seconds): use its known size instead.
BACKBONE_COST = {"resnet18": (11_171_271, 2192.2), "vgg11_bn": (9_228_423, 502.4)}


@functools.lru_cache(maxsize=None)
def _params_flops(spec_json, crop):
    spec = json.loads(spec_json)
    if "backbone" in spec:
        return BACKBONE_COST[spec["backbone"]]
    cost = _REAL_MODEL_COST({"model": spec, "training": {"augment": {"crop": crop}}})
    return cost["params"], cost["mflops"]


def cached_model_cost(run_config, model_file=None, benchmark_files=()):
    """study.model_cost, with the (slow for resnet18) params and FLOPs computed once per spec."""
    cost = _REAL_MODEL_COST({**run_config, "model": _TINY_SPEC}, model_file, benchmark_files)
    cost["params"], cost["mflops"] = _params_flops(
        json.dumps(run_config["model"], sort_keys=True), run_config["training"]["augment"].get("crop", 48)
    )
    return cost


@contextlib.contextmanager
def fast_writers():
    """Fixed environment record (importing snakemake for its version is slow) and cached model costs."""
    import ferstudy.config

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ferstudy.config, "environment", lambda: dict(ENV))
        mp.setattr(study, "model_cost", cached_model_cost)
        yield


def fake_predictions(labels, accuracy, rng, confuse=(2, 4)):
    """Probabilities whose argmax is right for exactly round(accuracy * n) faces, easy emotions first."""
    n = len(labels)
    w = EASE[labels] ** 3
    right = np.zeros(n, bool)
    right[rng.choice(n, size=int(round(accuracy * n)), replace=False, p=w / w.sum())] = True
    pred = labels.copy()
    wrong = np.flatnonzero(~right)
    pred[wrong] = (labels[wrong] + rng.integers(1, 7, size=len(wrong))) % 7
    fear = wrong[labels[wrong] == confuse[0]]
    pred[fear[: len(fear) * 2 // 3]] = confuse[1]  # a dominant confusion: fear taken for sad
    probs = np.full((n, 7), 0.02)
    probs[np.arange(n), labels] = 0.3
    probs[np.arange(n), pred] = 0.6
    return probs / probs.sum(1, keepdims=True)


def fold_history(epochs, score, gap_pp, lift=0.15):
    """history.csv rows of a fold job: the learning curve rises to `score` at the last epoch, the
    trained-on curve `gap_pp` above it, the whole held-out set predicted after the last epoch only."""
    rows = []
    for e in range(1, epochs + 1):
        val = score - lift * (epochs - e) / epochs
        last = e == epochs
        rows.append(
            [
                e,
                0.05,
                1.5 - e / epochs,
                val + (gap_pp - 4) / 100,
                1.6 - e / epochs if last else np.nan,
                score if last else np.nan,
                val + gap_pp / 100,
                val,
                10.0,
                300.0,
            ]
        )
    return rows


def build_results(
    root,
    cfg,
    scores,
    final_acc=(0.62, 0.60),
    dataset="demo",
    seed=0,
    gaps=None,
    precision=("fp32", "this CPU has no native bf16"),
    faces=None,
):
    """results/ under `root`: per-fold accuracies `scores[arch]` (list, one per fold) for every
    architecture of `cfg`, learning curves ending `gaps[arch]` pp (default 3) below the trained-on
    curve; every file the report reads, written by the project's own writers. `faces`: a FerData
    (e.g. a slice of the real FER2013) whose images, labels, splits and rows to use instead of
    made-up ones."""
    rng = np.random.default_rng(seed)
    r = Path(root) / "results"
    k = cfg["data"]["folds"]
    archs = cfg["study"]["architectures"]
    if faces is None:
        train_n = np.maximum(FER_TRAIN // 40, 3 * k)
        test_n = np.maximum(train_n // 8, 2)
        labels = np.concatenate([np.repeat(np.arange(7), n) for n in (train_n, test_n, test_n)]).astype(np.uint8)
        split = np.repeat([0, 1, 2], [train_n.sum(), test_n.sum(), test_n.sum()]).astype(np.uint8)
        images, rows = rng.integers(0, 256, size=(len(labels), 48, 48), dtype=np.uint8), np.arange(len(labels))
    else:
        images, labels, split, rows = faces.images, faces.labels, faces.split, faces.row
        train_n = np.bincount(labels[split == 0], minlength=7)
    data = write_h5(
        r / "data" / "dataset.h5",
        images,
        labels,
        split,
        rows,
        k,
        0,
        dataset,
        "data/fer2013.csv" if dataset == "fer2013" else "results/data/demo.csv",
        "ab" * 32,
    )
    (r / "data" / "faces.png").write_bytes(TINY_PNG)
    write_text(r / "benchmarks" / "prepare.tsv", "s\th:m:s\tmax_rss\n7.5\t0:00:07\t220.3\n")
    metrics = []
    for arch in archs:
        run_cfg = resolve_arch(cfg, arch)
        write_text(r / "cv" / arch / "run_config.yaml", yaml.safe_dump(run_cfg, sort_keys=False))
        preds, benches = [], []
        for fold in range(k):
            _, held = data.fold_indices(fold)
            preds.append(r / "cv" / arch / f"fold{fold}" / "predictions.csv")
            write_predictions(
                preds[-1],
                data.row[held],
                data.labels[held],
                fake_predictions(data.labels[held].astype(int), scores[arch][fold], rng),
            )
            write_history(
                preds[-1].with_name("history.csv"),
                fold_history(run_cfg["training"]["epochs"], scores[arch][fold], (gaps or {}).get(arch, 3.0)),
            )
            write_text(
                preds[-1].with_name("config.yaml"),
                yaml.safe_dump(
                    {
                        "fold": fold,
                        "init_seed": run_cfg["training"]["seed"] + fold,
                        "precision": precision[0],
                        "precision_reason": precision[1],
                    }
                ),
            )
            benches.append(r / "benchmarks" / "train" / arch / f"fold{fold}.tsv")
            write_text(benches[-1], f"s\th:m:s\tmax_rss\n{20 + 5 * fold}\t0:00:20\t{300 + fold}\n")
        result = study.evaluate_arch(preds, run_cfg, benchmark_files=benches)
        metrics.append(r / "cv" / arch / "metrics.json")
        write_json(metrics[-1], result)
    n_train = int(train_n.sum())
    summary, ablation, cost = study.aggregate(
        metrics, cfg["study"]["baseline"], cfg["study"]["alpha"], n_train=n_train * (k - 1) // k, n_test=n_train // k
    )
    for name, df in (("cv_summary", summary), ("ablation", ablation), ("cost", cost)):
        study.write_csv(df, r / "tables" / f"{name}.csv")
    selection = study.select(summary, cfg["study"]["select_metric"], cfg["final"].get("architecture"))
    write_json(r / "final" / "selection.json", selection)

    run_cfg = resolve_arch(cfg, selection["architecture"], final=True)
    torch.manual_seed(seed)
    save_model(r / "final" / "model.pt", build_model(run_cfg["model"], input_size=44), run_cfg, {"best_epoch": 9})
    epochs = run_cfg["training"]["epochs"]
    write_history(
        r / "final" / "history.csv",
        [
            [
                e,
                0.1,
                1.5 - e / epochs,
                0.4 + 0.4 * e / epochs,
                1.6 - e / epochs,
                0.4 + 0.02 * min(e, 9),
                np.nan,
                np.nan,
                10.0,
                300.0,
            ]
            for e in range(1, epochs + 1)
        ],
    )
    for name, idx, acc in (
        ("public", np.flatnonzero(split == 1), final_acc[0]),
        ("private", np.flatnonzero(split == 2), final_acc[1]),
    ):
        write_predictions(
            r / "final" / f"predictions_{name}.csv",
            data.row[idx],
            data.labels[idx],
            fake_predictions(data.labels[idx].astype(int), acc, rng),
        )
    write_json(
        r / "final" / "metrics.json",
        study.evaluate_final(r / "final" / "predictions_public.csv", r / "final" / "predictions_private.csv"),
    )
    extra = {
        "selection": selection,
        "best_epoch": 9,
        "best_public_acc": final_acc[0],
        "n_train": n_train,
        "threads": 2,
        "seconds": 321.0,
        "precision": precision[0],
        "precision_reason": precision[1],
    }
    write_text(r / "final" / "config.yaml", yaml.safe_dump(_result_config(run_cfg, data, extra), sort_keys=False))
    write_text(r / "benchmarks" / "train_final.tsv", "s\th:m:s\tmax_rss\n321.0\t0:05:21\t900\n")
    for name in FIGURES:
        (r / "figures").mkdir(exist_ok=True)
        (r / "figures" / f"{name}.png").write_bytes(TINY_PNG)
    return r


def default_scores(cfg, seed=0, overrides=None):
    rng = np.random.default_rng(seed)
    k = cfg["data"]["folds"]
    base = [0.60, 0.63, 0.61, 0.62, 0.60][:k]
    scores = {a: [b + d for b, d in zip(base, rng.normal(0, 0.012, k))] for a in cfg["study"]["architectures"]}
    scores["baseline"] = base
    scores.update(overrides or {})
    return scores


@pytest.fixture(autouse=True)
def _fast_writers():
    with fast_writers():
        yield


@pytest.fixture(scope="module")
def demo_cfg():
    return study_config("demo")


@pytest.fixture(scope="module")
def demo_results(tmp_path_factory, demo_cfg):
    with fast_writers():
        return build_results(tmp_path_factory.mktemp("demo"), demo_cfg, default_scores(demo_cfg))


def make_report(results, tmp_path, **kw):
    """(ctx, main report, its path): both documents rendered and written, the appendix beside the
    report as appendix.md."""
    out = tmp_path / "results_report" / "report.md"
    ctx = collect(results, report_path=out, **kw)
    text, appendix = render_both(ctx, TEMPLATE_DIR)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_name("appendix.md").write_text(appendix)
    return ctx, text, out


def appendix_of(out):
    return out.with_name("appendix.md").read_text()


def assert_hand_in_shape(text):
    """The assignment's length and no sentence formula repeated more than three times."""
    assert PROSE_WORDS[0] <= prose_words(text) <= PROSE_WORDS[1], prose_words(text)
    assert not repeated_skeletons(text, SKELETON_NAMES), repeated_skeletons(text, SKELETON_NAMES)


# ---------------------------------------------------------------- word counting


def test_prose_words_leaves_out_tables_code_images_and_headings():
    md = (
        "# A heading with words\n\nOne two three, [four](x.md) `five_5`.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
        "```\nnot counted here\n```\n\n![alt text](../figures/x.png)\n<!-- hidden words -->\n- six seven\n---\n"
    )
    assert prose_words(md) == 7


# ---------------------------------------------------------------- the three required properties


def test_word_count_in_range_and_every_image_exists(demo_results, tmp_path):
    ctx, text, out = make_report(demo_results, tmp_path, preset="demo")
    assert_hand_in_shape(text)
    assert "[appendix](appendix.md)" in text and "[main report](report.md)" in appendix_of(out)
    links = image_links(text)
    assert len(links) == len(FIGURES) + 1  # every figure and the example faces
    for link in links:
        assert not Path(link).is_absolute() and (out.parent / link).resolve().is_file(), link
    assert "{{" not in text and "{%" not in text and "nan" not in text.lower().split()


def test_word_count_in_range_for_the_full_real_data_study(tmp_path):
    cfg = study_config("gpu")  # 18 architectures, 5 folds, as a real FER2013 run
    results = build_results(tmp_path, cfg, default_scores(cfg, seed=1), final_acc=(0.70, 0.69), dataset="fer2013")
    _, text, _ = make_report(results, tmp_path, preset="gpu")
    assert_hand_in_shape(text)
    assert "DEMO" not in text


def test_significance_follows_the_numbers(demo_cfg, tmp_path):
    """The same variant: clearly better on every fold -> 'helped'; noisy around the baseline -> not.
    Section 4 says it in words (the numbers stand in the table), with the verdicts that change compute."""
    clear = default_scores(demo_cfg, overrides={"kernel_5": [0.67, 0.72, 0.70]})
    unclear = default_scores(demo_cfg, overrides={"kernel_5": [0.56, 0.70, 0.63]})
    f_a = findings(ctx_a := collect(build_results(tmp_path / "a", demo_cfg, clear)))
    f_b = findings(collect(build_results(tmp_path / "b", demo_cfg, unclear)))
    factor_a = next(fac["sentence"] for fac in f_a["factors"] if fac["factor"] == "kernel size")
    factor_b = next(fac["sentence"] for fac in f_b["factors"] if fac["factor"] == "kernel size")
    assert re.match(r"5x5 kernels \(`kernel_5`\) (clearly )?helped( at this budget only)?\.", factor_a), factor_a
    assert factor_b.startswith("5x5 kernels (`kernel_5`) made no measurable difference."), factor_b
    assert "pp" not in factor_a and "p =" not in factor_a  # the numbers are the table's
    # 5x5 kernels cost 2.8x the baseline's compute: named once among the verdicts that change compute
    assert (
        "`kernel_5` (2.8x)" in f_a["effects_intro"]
        and "on the operation and its compute together" in f_a["effects_intro"]
    )
    row = next(r for r in f_a["verdict_rows"] if r[0] == "`kernel_5`")
    kernel = next(r for r in ctx_a["ablation"] if r["arch"] == "kernel_5")
    assert row[5].startswith("helped") and row[7] == "2.8x" and row[3] == pval(kernel["p"]).removeprefix("p = ")
    _, text, _ = make_report(build_results(tmp_path / "a2", demo_cfg, clear), tmp_path / "ra")
    assert f"**Kernel size.** {OPERATIONS['kernel size']} {factor_a}" in text


def test_the_chosen_architecture_follows_the_numbers(demo_cfg, tmp_path):
    win_pool = default_scores(demo_cfg, overrides={"pool_avg": [0.70, 0.72, 0.71]})
    win_base = default_scores(
        demo_cfg, overrides={a: [0.50, 0.52, 0.51] for a in demo_cfg["study"]["architectures"] if a != "baseline"}
    )
    f_pool = findings(collect(build_results(tmp_path / "p", demo_cfg, win_pool)))
    f_base = findings(collect(build_results(tmp_path / "b", demo_cfg, win_base)))
    assert f_pool["selection"].startswith("Cross-validation chose `pool_avg` (average pooling): ")
    assert re.search(r"Against the baseline it (clearly )?helped( at this budget only)? \(\+", f_pool["selection"])
    assert "Its compute is about the baseline's" in f_pool["final_compute"]  # average pooling costs what max does
    assert f_base["selection"].startswith("Cross-validation chose `baseline`: ")
    assert "No variant had a higher mean than the baseline" in f_base["selection"]
    assert "No variant" not in f_pool["selection"]
    assert "standard deviation" not in f_pool["selection"]  # the runner-up is compared by a paired test


def runner_up_expectation(ctx):
    """The corrected resampled t-test of the chosen against the runner-up, computed here from the
    per-fold scores of metrics.json and the pair's own n_train / n_test."""
    from ferstudy.metrics import corrected_resampled_ttest

    rows = {r["architecture"]: r for r in ctx["archs"]}
    a, b = ctx["selection"]["architecture"], ctx["selection"]["runner_up"]["architecture"]
    scores = {
        name: json.loads((Path(ctx["results_dir"]) / "cv" / name / "metrics.json").read_text())["aggregate"]["metrics"][
            "accuracy"
        ]["folds"]
        for name in (a, b)
    }
    n_train = min(max(1, round(ctx["data"]["fold_train"] * rows[n]["subsample"])) for n in (a, b))
    return b, corrected_resampled_ttest(np.subtract(scores[a], scores[b]), n_train, ctx["data"]["fold_test"])


def test_the_runner_up_is_compared_by_a_paired_test(demo_cfg, tmp_path):
    close = default_scores(demo_cfg, overrides={"pool_avg": [0.66, 0.60, 0.72], "act_elu": [0.65, 0.61, 0.71]})
    clear = default_scores(demo_cfg, overrides={"pool_avg": [0.70, 0.75, 0.72], "act_elu": [0.64, 0.68, 0.65]})
    for name, scores, settled in (("close", close, False), ("clear", clear, True)):
        ctx = collect(build_results(tmp_path / name, demo_cfg, scores))
        f = findings(ctx)
        runner, test = runner_up_expectation(ctx)
        assert runner == "act_elu" and test["df"] == 2
        assert ctx["runner_up_test"]["t"] == pytest.approx(test["t"])
        assert f"(corrected paired t-test {pval(test['p'])}: " in f["selection"], f["selection"]
        assert (test["p"] < ctx["alpha"]) == settled
        assert ("a measurable lead" in f["selection"]) == settled
        assert ("these folds do not separate the two" in f["selection"]) == (not settled)
        assert "`act_elu` (" in f["short_selection"] and f"paired t-test {pval(test['p'])}" in f["short_selection"]


def test_an_architecture_named_in_the_config_is_not_called_the_cv_choice(demo_cfg, tmp_path):
    cfg = copy.deepcopy(demo_cfg)
    cfg["final"]["architecture"] = "pool_avg"
    scores = default_scores(cfg, overrides={"pool_avg": [0.50, 0.52, 0.51]})
    _, text, _ = make_report(build_results(tmp_path, cfg, scores), tmp_path)
    f = findings(collect(tmp_path / "results"))
    assert "The config named `pool_avg`" in f["short_selection"] and "Cross-validation chose" not in text
    assert f["selection"].startswith("The config named `pool_avg` (average pooling) as the final architecture: ")
    assert "pp behind the best other architecture" in f["selection"] and "lead" not in f["selection"]
    assert re.search(r"Against the baseline it (clearly )?hurt \(-", f["selection"])
    assert "The architecture the config names" in text


# ---------------------------------------------------------------- banner, per-class facts, CLI, errors


def test_demo_banner_at_the_top_only_for_demo_data(demo_results, tmp_path):
    _, text, _ = make_report(demo_results, tmp_path)
    assert "DEMO DATA" in "\n".join(text.splitlines()[:6])


def test_per_class_findings_match_the_confusion_matrix(demo_results):
    ctx = collect(demo_results)
    f = findings(ctx)
    pc = ctx["final"]["private"]["per_class"]
    best = max(CLASS_NAMES, key=lambda c: pc[c]["f1"])
    worst = min(CLASS_NAMES, key=lambda c: pc[c]["f1"])
    assert f"{best.capitalize()} is recognised best" in f["per_class"] and f"{worst} worst" in f["per_class"]
    assert "fear taken for sad" in f["per_class"]  # the confusion the fake predictions build in
    assert "PrivateTest was predicted once" in f["protocol"]
    assert [row[0] for row in f["class_rows"]] == CLASS_NAMES
    assert f["class_rows"][1][3:6] == [f"{pc['disgust'][k]:.2f}" for k in ("precision", "recall", "f1")]


def test_extra_test_sets_are_reported(demo_results, tmp_path):
    r = tmp_path / "results"
    shutil.copytree(demo_results, r)
    f = r / "final"
    write_json(
        f / "metrics.json",
        study.evaluate_final(
            f / "predictions_public.csv",
            f / "predictions_private.csv",
            extra={"other_faces": f / "predictions_public.csv"},
        ),
    )
    ctx, text, out = make_report(r, tmp_path)
    acc = pct(ctx["final"]["public"]["accuracy"])
    assert f"On the extra test set it scores {acc} on `other_faces` (appendix A7)" in text
    assert "| other_faces |" in appendix_of(out) and "| `other_faces` |" in appendix_of(out)


def test_model_inspection_matches_the_figures_computation(demo_results):
    from ferstudy.data import load_h5
    from ferstudy.checkpoint import load_model

    data = load_h5(demo_results / "data" / "dataset.h5")
    model, payload = load_model(demo_results / "final" / "model.pt")
    name, module, _ = stage_taps(model, payload["input_size"])[-1]
    idx = np.concatenate(list(pick_faces(data, CHANNEL_FACES_PER_CLASS, PICK_SEED).values()))
    crop = payload["input_size"]
    means, sel = channel_emotion_matrix(model, data.images[idx], data.labels[idx], crop, module)
    (a,), _ = capture(model, model_input(data.images[idx], payload["input_size"]), [module])
    m2, s2 = eta_squared(a.float().mean(dim=(2, 3)).numpy(), data.labels[idx])
    np.testing.assert_allclose(m2, means, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s2, sel, rtol=1e-4, atol=1e-6)
    info = inspect_model(demo_results / "final" / "model.pt", data)
    assert sum(info["channels"]["prefer"].values()) == info["channels"]["live"]


def test_kernel_shapes_tells_edges_from_blobs():
    edge = np.array([[-1, -1, -1], [0, 0, 0], [1, 1, 1]], float)  # horizontal edge detector
    blob = np.ones((3, 3))
    s = kernel_shapes(np.stack([edge, edge.T, blob]))
    assert (s["edge"], s["blob"], s["horizontal"], s["vertical"]) == (2, 1, 1, 1)


_OPENED = None  # paths opened while a test records them (an audit hook cannot be removed: it looks here)


def _record_open(event, args):
    if event == "open" and _OPENED is not None and isinstance(args[0], (str, os.PathLike)):
        _OPENED.add(Path(args[0]).resolve())


def test_rule_report_declares_every_file_the_report_reads(demo_results, tmp_path):
    """Every file `collect` opens is an input of rule `report`, so Snakemake reruns the report when
    one of them changes; only the cost prediction's records are not (the Snakefile's onstart writes
    them, outside the DAG, on whole-study runs, which rerun the report anyway)."""
    global _OPENED
    sys.addaudithook(_record_open)
    _OPENED = set()
    try:
        collect(demo_results)
    finally:
        opened, _OPENED = _OPENED, None
    root = demo_results.parent.resolve()
    read = {p.relative_to(root).as_posix() for p in opened if root in p.parents}
    assert {
        "results/cv/baseline/fold0/config.yaml",
        "results/benchmarks/train/baseline/fold0.tsv",
        "results/final/model.pt",
    } <= read  # what the tracing sees
    dry = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(REPO / "workflow" / "Snakefile"),
            "--configfile",
            str(REPO / "config" / "config.yaml"),
            "--cores",
            "1",
            "-n",
            "--forceall",
            "results/report/report.md",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )  # no data/ here: the demo study, as demo_cfg
    assert dry.returncode == 0, dry.stderr[-3000:]
    job = (dry.stdout + dry.stderr).split("rule report:")[1]
    declared = set(re.search(r"input: (.*)", job).group(1).split(", "))
    written_by_onstart = {"results/cost/prediction.json", "results/cost/run.json"}
    assert not read - written_by_onstart - declared, sorted(read - written_by_onstart - declared)


def test_cli_writes_the_report_and_names_missing_files(demo_results, tmp_path, capsys):
    out = tmp_path / "r" / "report.md"
    assert (
        main(
            [
                "report",
                "--results",
                str(demo_results),
                "--out",
                str(out),
                "--template",
                str(TEMPLATE_DIR / "report.md.j2"),
                "--preset",
                "demo",
            ]
        )
        == 0
    )
    assert "--config preset=demo" in out.with_name("appendix.md").read_text()  # the rebuild command: A9
    assert "[appendix](appendix.md)" in out.read_text()
    broken = tmp_path / "broken"
    shutil.copytree(demo_results, broken)
    (broken / "final" / "metrics.json").unlink()
    (broken / "figures" / "saliency.png").unlink()
    assert (
        main(
            [
                "report",
                "--results",
                str(broken),
                "--out",
                str(tmp_path / "x.md"),
                "--template",
                str(TEMPLATE_DIR / "report.md.j2"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "final/metrics.json" in err and "figures/saliency.png" in err
    out = tmp_path / "partial" / "report.md"
    assert (
        main(
            [
                "report",
                "--results",
                str(broken),
                "--out",
                str(out),
                "--allow-missing-figures",
                "--template",
                str(TEMPLATE_DIR / "report.md.j2"),
            ]
        )
        == 2
    )  # metrics.json is still required
    shutil.copy(demo_results / "final" / "metrics.json", broken / "final" / "metrics.json")
    assert (
        main(
            [
                "report",
                "--results",
                str(broken),
                "--out",
                str(out),
                "--allow-missing-figures",
                "--template",
                str(TEMPLATE_DIR / "report.md.j2"),
            ]
        )
        == 0
    )
    links = image_links(out.read_text())
    assert len(links) == len(FIGURES) and not any("saliency" in link for link in links)
    assert all((out.parent / link).is_file() for link in links)
    with pytest.raises(UserError, match="template not found"):
        render(collect(demo_results), tmp_path)


# ---------------------------------------------------------------- verdicts, budget, fit, per class


@pytest.fixture(scope="module")
def mixed_results(tmp_path_factory, demo_cfg):
    """A study with one strong, stable verdict (`depth_3blocks` hurt on every fold), a regularizer
    that lost before anything over-fit (`no_augment` helped with a 4 pp gap, the baseline's 3 pp)
    and two networks that do over-fit (`kernel_5` 7 pp, `filters_double` 15 pp)."""
    base = [0.60, 0.63, 0.61]
    scores = default_scores(
        demo_cfg,
        overrides={
            "depth_3blocks": [b - 0.20 for b in base],
            "no_augment": [b + d for b, d in zip(base, (0.05, 0.07, 0.06))],
        },
    )
    with fast_writers():
        return build_results(
            tmp_path_factory.mktemp("mixed"),
            demo_cfg,
            scores,
            gaps={"filters_double": 15.0, "kernel_5": 7.0, "no_augment": 4.0},
        )


def test_every_verdict_carries_its_stability_label_and_reason(mixed_results, tmp_path):
    ctx, text, out = make_report(mixed_results, tmp_path)
    f = findings(ctx)
    appendix = appendix_of(out)
    rows = {r["arch"]: r for r in ctx["ablation"]}
    assert rows["depth_3blocks"]["stability"] == "holds" and rows["depth_3blocks"]["holm"]
    assert rows["no_augment"]["verdict"] == "helped" and not rows["no_augment"]["holm"]
    assert rows["no_augment"]["stability"] == "budget-dependent"
    for arch, row in rows.items():
        # the main table: verdict and label; the appendix: the label with ablation.csv's reason
        assert re.search(
            rf"\| `{arch}` \|.*\| {re.escape(row['verdict'])}( \(fragile\))? \| {row['stability']} \|", text
        ), arch
        assert f"| `{arch}` | {row['stability']} | {row['stability_reason']} |" in appendix, arch
        factor = next(fac["sentence"] for fac in f["factors"] if fac["factor"] == row["factor"])
        assert f"(`{arch}`)" in factor or f"`{arch}`" in factor, (arch, factor)
    assert "the regularizer lost while the less regularized network" in rows["no_augment"]["stability_reason"]
    augmentation = next(fac["sentence"] for fac in f["factors"] if fac["factor"] == "augmentation")
    assert "No data augmentation (`no_augment`) helped at this budget only" in augmentation
    assert (
        "Without augmentation the network fit its training faces 4.0 pp better than new ones, against the "
        "baseline's 3.0 pp: augmentation holds over-fitting down yet cost accuracy at this budget."
    ) in augmentation
    # the In-short line: what survives Holm with its numbers, the rest counted, not listed
    short = f["short_ablation"]
    assert (
        short.startswith("Surviving the Holm correction for 13 tests, ") and "`depth_3blocks` hurt (-20.0 pp)" in short
    )
    assert short.endswith("1 more variant differed before the correction (section 3).") and "`no_augment`" not in short
    assert f"**In short.** {f['short_study']} {short}" in text
    # the final architecture's rationale states the same verdict in words
    assert ctx["selection"]["architecture"] == "no_augment"
    assert "Against the baseline it helped at this budget only (+6.0 pp, " in f["selection"]
    assert "| variant | factor | difference | p | Holm p | verdict | stability | compute |" in text
    assert "| variant | difference | t | p | pooled p | fragile | Holm p | 80% power at |" in appendix


def test_budget_section_states_the_budget_the_counts_and_the_rule(mixed_results):
    ctx = collect(mixed_results)
    f = findings(ctx)
    w, fw = ctx["chosen"]["workload"], ctx["final"]["workload"]
    tr = ctx["cv_training"]
    assert w["epochs"] == tr["epochs"] and w["steps"] == w["steps_per_epoch"] * tr["epochs"]
    assert w["steps_per_epoch"] == round(w["n_train"]) // tr["batch_size"]
    assert f"Each fold model trained {tr['epochs']} epochs on about {num(w['n_train'])} faces" in f["budget"]
    assert f"{num(w['steps'])} SGD steps" in f["budget"]
    assert counts_text(label_counts(ctx["ablation"])) in f["budget"]
    assert "The rule: a rechecked verdict holds when its difference at twice the epochs keeps its sign" in f["budget"]
    assert "No verdict was retrained at a longer budget (`study.recheck`), so every label is a heuristic" in f["budget"]
    assert "the whole study fits the preset's time budget" in f["final_budget"]
    assert f"`final.training` in the config: {fw['epochs']} epochs on all {num(fw['n_train'])}" in f["final_budget"]
    assert fw["epochs"] == ctx["final"]["training"]["epochs"] and fw["n_train"] == ctx["data"]["n_train"]


def test_a_small_fit_gap_is_not_called_under_fitting(mixed_results, tmp_path):
    """A small train-minus-held-out gap says a network does not over-fit, not that it under-fits (it can
    fit new faces as badly as old ones); whether the budget stopped it, its learning curve's late gain says."""
    ctx, text, out = make_report(mixed_results, tmp_path)
    f = findings(ctx)
    fits = {r["architecture"]: r["fit"] for r in ctx["archs"]}
    assert fits["filters_double"]["gap_pp"] == pytest.approx(15.0) and fits["baseline"]["gap_pp"] == pytest.approx(3.0)
    assert "`filters_double` (+15.0 pp) over-fits" in f["fit"]
    assert "`kernel_5` (+7.0 pp) is beginning to over-fit" in f["fit"]
    assert "12 of the 14 networks fit their training faces less than 5 pp better than new ones: no sign of" in f["fit"]
    reading = {row[0]: row[-1] for row in f["fit_rows"]}
    assert reading["`filters_double`"] == "over-fitting" and reading["`baseline`"] == "not over-fitting"
    assert reading["`kernel_5`"] == "beginning to over-fit"
    assert fit_reading(4.9) == "not over-fitting" and fit_reading(10.0) == "over-fitting"
    assert "under-fit" not in text + appendix_of(out)
    # the late gain of the held-out curve: fold_history lifts it 15 pp over 8 epochs, from epoch 5 (the last
    # half) 3/8 of that
    assert fits["baseline"]["late_gain_pp"] == pytest.approx(15 * 3 / 8)
    assert (
        "All 14 networks still gained over 1 pp of held-out accuracy in the last half of their 8 epochs"
        in (f["reflections"])
    )
    assert "the budget more than the architecture" not in f["reflections"]


def test_final_history_says_what_training_accuracy_was_measured_on(mixed_results, demo_results):
    f_aug = findings(ctx_aug := collect(demo_results))
    f_raw = findings(ctx_raw := collect(mixed_results))
    assert ctx_aug["final"]["training"]["augment"]["enabled"] and ctx_raw["selection"]["architecture"] == "no_augment"
    assert "training accuracy (augmented faces)" in f_aug["history"]
    assert "training accuracy (un-augmented training faces)" in f_raw["history"]
    assert "(augmented faces)" not in f_raw["history"]


def test_cv_gap_to_the_final_accuracy_is_explained(demo_results):
    ctx = collect(demo_results)
    f = findings(ctx)
    fw, cw = ctx["final"]["workload"], ctx["chosen"]["workload"]
    gap = 100 * (ctx["final"]["private"]["accuracy"] - ctx["chosen"]["accuracy_mean"])
    assert f["cv_gap"].startswith(f"PrivateTest accuracy is {abs(gap):.1f} pp {'above' if gap >= 0 else 'below'}")
    assert f"{num(fw['n_train'])} training faces against about {num(cw['n_train'])}" in f["cv_gap"]
    assert f"{fw['epochs']} epochs against {cw['epochs']}" in f["cv_gap"]
    assert f"{num(fw['steps'])} SGD steps against {num(cw['steps'])}" in f["cv_gap"]
    assert f"the checkpoint PublicTest chose (epoch {ctx['final']['best_epoch']})" in f["cv_gap"]


def test_per_class_effects_and_top_confusions(mixed_results):
    ctx = collect(mixed_results)
    f = findings(ctx)
    r = Path(ctx["results_dir"])
    recall = {
        a: json.loads((r / "cv" / a / "metrics.json").read_text())["aggregate"]["per_class"]
        for a in ("baseline", "no_augment")
    }
    row = next(row for row in f["class_effect_rows"] if row[0] == "`no_augment`")
    fear = CLASS_NAMES.index("fear") + 2
    assert (
        row[fear]
        == f"{100 * (recall['no_augment']['fear']['recall']['mean'] - recall['baseline']['fear']['recall']['mean']):+.1f}"
    )
    assert len(f["class_effect_rows"]) == len(ctx["ablation"]) + 1
    assert "Does augmentation lift the hard classes? `no_augment` moved fear by" in f["class_effects"]
    assert "disgust (baseline recall" in f["class_effects"] and "not tested" in f["class_effects"]
    assert f["per_class"].count(" taken for ") == 3 and "fear taken for sad" in f["per_class"]
    assert top_confusions([[5, 1, 0], [4, 9, 2], [0, 0, 3]], n=5) == [  # rows: the true class
        ("disgust", "angry", 4, 4 / 15),
        ("disgust", "fear", 2, 2 / 15),
        ("angry", "disgust", 1, 1 / 6),
    ]


def test_activation_paragraph_names_only_the_activations_that_ran(demo_results):
    ctx = collect(demo_results)
    assert [r["architecture"] for r in ctx["archs"] if r["factor"] == "activation"] == ["act_elu"]
    text = operation_text("activation", ctx)
    assert "ELU" in text and "GELU" not in text
    gelu = copy.deepcopy(ctx)
    gelu["archs"] = [dict(r, activations=["gelu"]) if r["architecture"] == "act_elu" else r for r in gelu["archs"]]
    text = operation_text("activation", gelu)
    assert "GELU" in text and not re.search(r"\bELU\b", text)


def test_reflections_and_limitations_follow_the_numbers(mixed_results, demo_results):
    f_mixed = findings(collect(mixed_results))
    f_demo = findings(collect(demo_results))
    assert f_mixed["reflections"] != f_demo["reflections"]
    assert f_mixed["lessons"].startswith("**Lessons learnt.** ") and f_mixed["lessons"] != f_demo["lessons"]
    assert "judge regularizers at a budget at which the baseline over-fits" in f_mixed["lessons"]
    assert "regularizers" not in f_demo["lessons"] or any(
        r["factor"] in ("dropout", "augmentation") and r["verdict"] != "no measurable difference"
        for r in collect(demo_results)["ablation"]
    )
    assert "not corrected for multiple comparisons" not in f_mixed["limitations"]
    assert "survive the Holm correction" in f_mixed["limitations"] or "survives the Holm" in f_mixed["limitations"]


def test_precision_is_summarized_from_the_results(demo_results):
    ctx = collect(demo_results)
    assert precision_text(ctx) == (
        "The final model trained in fp32 (this CPU has no native bf16); "
        f"so did all {len(ctx['precision']['folds'])} fold jobs."
    )
    mixed = copy.deepcopy(ctx)
    mixed["precision"] = {
        "final": {"precision": "bf16", "reason": "native bf16 CPU, measured 1.50x fp32 for this network"},
        "folds": [
            {"arch": "a", "fold": 0, "precision": "bf16", "reason": "native bf16 CPU, measured 1.42x fp32 for x"},
            {"arch": "a", "fold": 1, "precision": "bf16", "reason": "native bf16 CPU, measured 1.30x fp32 for x"},
            {"arch": "b", "fold": 0, "precision": "fp32", "reason": "bf16 measured 0.90x fp32: fp32"},
            {"arch": "c", "fold": 0, "precision": "fp32", "reason": "amp: false in the config"},
        ],
    }
    text = precision_text(mixed)
    assert text.startswith("The final model trained in bf16 autocast (native bf16 CPU, measured 1.50x")
    assert (
        "of the 4 fold jobs, 2 in bf16 autocast (`a`) (native bf16 CPU; bf16 measured 1.30x-1.42x fp32, "
        "network by network)"
    ) in text
    assert "2 in fp32 (`b` and `c`) (reasons per network, e.g. bf16 measured 0.90x fp32: fp32)" in text
    assert "stay fp32" in text


def test_an_older_ablation_table_still_renders(demo_results, tmp_path):
    """An ablation.csv from before the stability, pooled-check and compute columns: the labels read
    `unchecked`, and the pooled check and the compute ratio come from the cross-validation metrics by
    the study's own rule."""
    import pandas as pd

    r = tmp_path / "results"
    shutil.copytree(demo_results, r)
    new = pd.read_csv(r / "tables" / "ablation.csv").set_index("arch")
    old = new.reset_index()[
        [
            "arch",
            "factor",
            "baseline",
            "metric",
            "k",
            "mean",
            "baseline_mean",
            "diff_pp",
            "std_pp",
            "t",
            "p",
            "df",
            "alpha",
            "verdict",
            "note",
        ]
    ]
    study.write_csv(old, r / "tables" / "ablation.csv")
    ctx, text, out = make_report(r, tmp_path)
    assert all(row["stability"] == "unchecked" and np.isfinite(row["p_holm"]) for row in ctx["ablation"])
    assert "| unchecked |" in text and "nan" not in text.lower().split()
    assert set(ctx["ablation_filled"]) == {"p_pooled", "fragile", "detectable_pp", "compute_ratio", "compute_mixed"}
    for row in ctx["ablation"]:
        for column in ("p_pooled", "detectable_pp", "compute_ratio"):
            assert row[column] == pytest.approx(new.loc[row["arch"], column], rel=1e-5), (row["arch"], column)
        assert row["fragile"] == bool(new.loc[row["arch"], "fragile"])
    assert "written by an older ferstudy without `p_pooled`" in appendix_of(out)


def test_the_report_names_the_rechecked_the_unchecked_and_the_fragile_verdicts(demo_results, tmp_path):
    """From ablation.csv's recheck and pooled-check columns: which verdicts were measured at twice the
    budget, which at-risk ones were left, the difference found with 80% power, the fragile ones."""
    import pandas as pd

    r = tmp_path / "results"
    shutil.copytree(demo_results, r)
    abl = pd.read_csv(r / "tables" / "ablation.csv")
    abl.loc[
        abl["arch"] == "no_dropout",
        ["stability_basis", "recheck_status", "stability", "recheck_1x_pp", "recheck_2x_pp"],
    ] = ["measured", "rechecked", "holds", 2.0, 1.6]
    abl.loc[abl["arch"] == "no_augment", "recheck_status"] = "at risk, not rechecked (study.recheck_max)"
    abl["fragile"] = abl["arch"] == "pool_avg"
    abl.loc[abl["arch"] == "pool_avg", "p_pooled"] = 0.061
    study.write_csv(abl, r / "tables" / "ablation.csv")
    ctx, text, out = make_report(r, tmp_path)
    f = findings(ctx)
    assert (
        "The study retrained `no_dropout` and the baseline at twice the epochs on one fold, so its label is "
        "measured; at risk but not rechecked: `no_augment`. Labels:"
    ) in f["budget"]
    assert "Stability is measured for `no_dropout` (retrained with the baseline at twice the epochs" in text
    power = float(np.median(abl["detectable_pp"]))
    assert f"At the spread pooled over all pairs a true difference of {power:.1f} pp is found with 80% power" in text
    pool_avg = next(row for row in ctx["ablation"] if row["arch"] == "pool_avg")
    said = (
        "does not confirm `pool_avg`"
        if pool_avg["verdict"] != "no measurable difference"
        else "would call `pool_avg` significant"
    )
    assert f"With that pooled variance the same test {said}, so this verdict is fragile." in text
    assert "| `pool_avg` |" in appendix_of(out) and "| 0.061 | yes |" in appendix_of(out)
    assert "| +2.0 → +1.6 |" in appendix_of(out)


def test_hard_class_extremes_say_when_no_variant_moved_a_class():
    abl = [{"arch": "a"}, {"arch": "b"}]
    moved = {"a": 2.0, "b": 0.0}
    text = hard_class_extremes(abl, "disgust", lambda arch, c: moved[arch], 0.0)
    assert text == "disgust (baseline recall 0%) gained most with `a` (+2.0 pp) and no variant lowered it"
    assert "no variant raised it" in hard_class_extremes(abl, "fear", lambda arch, c: -moved[arch], 0.2)


# ---------------------------------------------------------------- one architecture (issue 24)
def test_the_ablation_columns_are_those_aggregate_writes(demo_results):
    """study.ABLATION_COLUMNS (the header of an empty ablation) is the header of a real one."""
    assert tuple(pd_read(demo_results / "tables" / "ablation.csv").columns) == study.ABLATION_COLUMNS


def pd_read(path):
    import pandas as pd

    return pd.read_csv(path)


def test_a_one_architecture_study_runs_through_and_says_there_is_no_ablation(tmp_path):
    """`study: {only: [baseline]}`: aggregate wrote a 1-byte ablation.csv and the report died on
    pandas' EmptyDataError. Now the table has its header and no rows, and the report says why."""
    from ferstudy.htmlreport import csv_page

    raw = yaml.safe_load((REPO / "ferstudy" / "defaults.yaml").read_text())
    raw["preset"], raw["study"]["only"] = "demo", ["baseline"]
    cfg = resolve_config(raw, workdir=REPO / "tests")
    results = build_results(tmp_path, cfg, default_scores(cfg))
    ablation = pd_read(results / "tables" / "ablation.csv")
    assert len(ablation) == 0 and tuple(ablation.columns) == study.ABLATION_COLUMNS
    assert json.loads((results / "final" / "selection.json").read_text())["runner_up"] is None
    _, text, _ = make_report(results, tmp_path)
    sentence = "**No ablation.** Only one architecture, `baseline`, was studied (`study.only`)"
    assert text.count(sentence) == 3  # in short, the results, the effect of each operation
    assert "| variant | factor |" not in text and "over the 0 comparisons" not in text
    assert "0 rows" in csv_page(results / "tables" / "ablation.csv", "Each variant against the baseline")


def test_an_architecture_without_a_description_is_named_without_one():
    """A study whose networks have no `description` (tests/slurm/config.yaml): the empty cell reads
    back from the tables as NaN, and the report died on it (TypeError in re.sub)."""
    from ferstudy.report.text import plain_description

    assert plain_description(float("nan")) == plain_description(None) == ""
    assert plain_description("no pooling: stride-2 convolutions (16-128)") == "stride-2 convolutions"


def test_the_test_time_augmentation_publictest_chose_is_stated():
    kept = {"tta_public_accuracy": {"none": 0.661, "flip": 0.676}, "training": {"tta": "flip"}}
    dropped = {"tta_public_accuracy": {"none": 0.661, "flip": 0.655}, "training": {"tta": "none"}}
    assert "flip 67.6% against 66.1% without, so flip was kept." in tta_text(kept)
    assert "so flip was left out (no better than none)." in tta_text(dropped)
    assert tta_text({"tta_public_accuracy": {"none": 0.66}, "training": {"tta": "none"}}) == ""  # nothing to choose
    assert tta_text({"tta_public_accuracy": {}, "training": {"tta": "flip"}}) == ""  # an older final model
