"""The report: a fake-but-consistent results/ directory written by the real writers (HDF5,
predictions, evaluate_arch, aggregate, select, evaluate_final, history, model), then the word
count, the image links, the demo banner and findings that follow the numbers."""

import contextlib
import copy
import functools
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ferstudy import CLASS_NAMES, report, study
from ferstudy.cli import _result_config, main
from ferstudy.config import resolve_arch, resolve_config
from ferstudy.data import write_h5
from ferstudy.errors import UserError
from ferstudy.io import write_json, write_text
from ferstudy.models import build_model
from ferstudy.train import save_model, write_history, write_predictions

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
TEMPLATE_DIR = REPO / "report"
# FER2013 Training counts per class, scaled down; PublicTest and PrivateTest an eighth of that.
FER_TRAIN = np.array([3995, 436, 4097, 7215, 4830, 3171, 4965])
EASE = np.array([0.9, 0.5, 0.7, 1.6, 0.9, 1.3, 1.0])  # how easy each emotion is in the fake predictions
TINY_PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108000000003a7e9b55"
                         "0000000a4944415478da63600000000200015d0e1c2c0000000049454e44ae426082")
ENV = {"ferstudy": "0.1.0", "python": "3.11.7", "platform": "Linux-test", "processor": "x86_64",
       "torch": "2.14.1", "numpy": "2.4.6", "sklearn": "1.9.1", "pandas": "3.1.1", "snakemake": "9.27.1",
       "cuda": None}


def study_config(preset):
    raw = yaml.safe_load((REPO / "config.yaml").read_text())
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
    cost["params"], cost["mflops"] = _params_flops(json.dumps(run_config["model"], sort_keys=True),
                                                   run_config["training"]["augment"].get("crop", 48))
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


def build_results(root, cfg, scores, final_acc=(0.62, 0.60), dataset="demo", seed=0):
    """results/ under `root`: per-fold accuracies `scores[arch]` (list, one per fold) for every
    architecture of `cfg`; every file the report reads, written by the project's own writers."""
    rng = np.random.default_rng(seed)
    r = Path(root) / "results"
    k = cfg["data"]["folds"]
    archs = cfg["study"]["architectures"]
    train_n = np.maximum(FER_TRAIN // 40, 3 * k)
    test_n = np.maximum(train_n // 8, 2)
    labels = np.concatenate([np.repeat(np.arange(7), n) for n in (train_n, test_n, test_n)]).astype(np.uint8)
    split = np.repeat([0, 1, 2], [train_n.sum(), test_n.sum(), test_n.sum()]).astype(np.uint8)
    images = rng.integers(0, 256, size=(len(labels), 48, 48), dtype=np.uint8)
    data = write_h5(r / "data" / "dataset.h5", images, labels, split, np.arange(len(labels)), k, 0, dataset,
                    "data/fer2013.csv" if dataset == "fer2013" else "results/data/demo.csv", "ab" * 32)
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
            write_predictions(preds[-1], data.row[held], data.labels[held],
                              fake_predictions(data.labels[held].astype(int), scores[arch][fold], rng))
            benches.append(r / "benchmarks" / "train" / arch / f"fold{fold}.tsv")
            write_text(benches[-1], f"s\th:m:s\tmax_rss\n{20 + 5 * fold}\t0:00:20\t{300 + fold}\n")
        result = study.evaluate_arch(preds, run_cfg, benchmark_files=benches)
        metrics.append(r / "cv" / arch / "metrics.json")
        write_json(metrics[-1], result)
    n_train = int(train_n.sum())
    summary, ablation, cost = study.aggregate(metrics, cfg["study"]["baseline"], cfg["study"]["alpha"],
                                              n_train=n_train * (k - 1) // k, n_test=n_train // k)
    for name, df in (("cv_summary", summary), ("ablation", ablation), ("cost", cost)):
        study.write_csv(df, r / "tables" / f"{name}.csv")
    selection = study.select(summary, cfg["study"]["select_metric"], cfg["final"].get("architecture"))
    write_json(r / "final" / "selection.json", selection)

    run_cfg = resolve_arch(cfg, selection["architecture"], final=True)
    torch.manual_seed(seed)
    save_model(r / "final" / "model.pt", build_model(run_cfg["model"], input_size=44), run_cfg, {"best_epoch": 9})
    epochs = run_cfg["training"]["epochs"]
    write_history(r / "final" / "history.csv",
                  [[e, 0.1, 1.5 - e / epochs, 0.4 + 0.4 * e / epochs, 1.6 - e / epochs, 0.4 + 0.02 * min(e, 9),
                    10.0, 300.0]
                   for e in range(1, epochs + 1)])
    for name, idx, acc in (("public", np.flatnonzero(split == 1), final_acc[0]),
                           ("private", np.flatnonzero(split == 2), final_acc[1])):
        write_predictions(r / "final" / f"predictions_{name}.csv", data.row[idx], data.labels[idx],
                          fake_predictions(data.labels[idx].astype(int), acc, rng))
    write_json(r / "final" / "metrics.json", study.evaluate_final(r / "final" / "predictions_public.csv",
                                                                    r / "final" / "predictions_private.csv"))
    extra = {"selection": selection, "best_epoch": 9, "best_public_acc": final_acc[0], "n_train": n_train,
             "threads": 2, "seconds": 321.0}
    write_text(r / "final" / "config.yaml", yaml.safe_dump(_result_config(run_cfg, data, extra), sort_keys=False))
    write_text(r / "benchmarks" / "train_final.tsv", "s\th:m:s\tmax_rss\n321.0\t0:05:21\t900\n")
    for name in report.FIGURE_NAMES:
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
    out = tmp_path / "results_report" / "report.md"
    ctx = report.collect(results, report_path=out, **kw)
    text = report.render(ctx, TEMPLATE_DIR)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return ctx, text, out


# ---------------------------------------------------------------- word counting

def test_prose_words_leaves_out_tables_code_images_and_headings():
    md = ("# A heading with words\n\nOne two three, [four](x.md) `five_5`.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
          "```\nnot counted here\n```\n\n![alt text](../figures/x.png)\n<!-- hidden words -->\n- six seven\n---\n")
    assert report.prose_words(md) == 7


# ---------------------------------------------------------------- the three required properties

def test_word_count_in_range_and_every_image_exists(demo_results, tmp_path):
    ctx, text, out = make_report(demo_results, tmp_path, preset="demo")
    words = report.prose_words(text)
    assert report.PROSE_WORDS[0] <= words <= report.PROSE_WORDS[1], words
    links = report.image_links(text)
    assert len(links) == len(report.FIGURE_NAMES) + 1  # every figure and the example faces
    for link in links:
        assert not Path(link).is_absolute() and (out.parent / link).resolve().is_file(), link
    assert "{{" not in text and "{%" not in text and "nan" not in text.lower().split()


def test_word_count_in_range_for_the_full_real_data_study(tmp_path):
    cfg = study_config("gpu")  # 18 architectures, 5 folds, as a real FER2013 run
    results = build_results(tmp_path, cfg, default_scores(cfg, seed=1), final_acc=(0.70, 0.69), dataset="fer2013")
    _, text, _ = make_report(results, tmp_path, preset="gpu")
    assert report.PROSE_WORDS[0] <= report.prose_words(text) <= report.PROSE_WORDS[1], report.prose_words(text)
    assert "DEMO" not in text


def test_significance_follows_the_numbers(demo_cfg, tmp_path):
    """The same variant: clearly better on every fold -> 'helped'; noisy around the baseline -> not."""
    clear = default_scores(demo_cfg, overrides={"kernel_5": [0.67, 0.72, 0.70]})
    unclear = default_scores(demo_cfg, overrides={"kernel_5": [0.56, 0.70, 0.63]})
    a = build_results(tmp_path / "a", demo_cfg, clear)
    b = build_results(tmp_path / "b", demo_cfg, unclear)
    f_a = report.findings(report.collect(a))
    f_b = report.findings(report.collect(b))
    sent_a, sent_b = f_a["variants"]["kernel_5"], f_b["variants"]["kernel_5"]
    assert sent_a.startswith("`kernel_5` helped (+"), sent_a
    assert sent_b.startswith("`kernel_5` made no measurable difference ("), sent_b
    factor_a = next(fac["sentence"] for fac in f_a["factors"] if fac["factor"] == "kernel size")
    assert re.fullmatch(r"`kernel_5` \(\+[0-9.]+ pp, p = 0\.0\d+\) helped\.", factor_a), factor_a
    _, text, _ = make_report(a, tmp_path / "ra")
    assert f"**Kernel size.** {report.OPERATIONS['kernel size']} {factor_a}" in text


def test_the_chosen_architecture_follows_the_numbers(demo_cfg, tmp_path):
    win_pool = default_scores(demo_cfg, overrides={"pool_avg": [0.70, 0.72, 0.71]})
    win_base = default_scores(demo_cfg, overrides={a: [0.50, 0.52, 0.51] for a in demo_cfg["study"]["architectures"]
                                                   if a != "baseline"})
    f_pool = report.findings(report.collect(build_results(tmp_path / "p", demo_cfg, win_pool)))
    f_base = report.findings(report.collect(build_results(tmp_path / "b", demo_cfg, win_base)))
    assert "The final architecture is `pool_avg`" in f_pool["selection"]
    assert "significant" in f_pool["selection"]
    assert "The final architecture is `baseline`" in f_base["selection"]
    assert "No variant had a higher mean than the baseline" in f_base["selection"]
    assert "No variant" not in f_pool["selection"]
    assert "more than one standard deviation" in f_pool["selection"]  # 0.71 against about 0.62


def test_margin_within_one_std_is_said(demo_cfg, tmp_path):
    close = default_scores(demo_cfg, overrides={"pool_avg": [0.66, 0.60, 0.72], "act_elu": [0.65, 0.61, 0.71]})
    f_close = report.findings(report.collect(build_results(tmp_path / "c", demo_cfg, close)))
    assert "`pool_avg`" in f_close["selection"] and "`act_elu`" in f_close["selection"]
    assert "within one standard deviation" in f_close["selection"]
    assert "more than one standard deviation" not in f_close["selection"]


def test_an_architecture_named_in_the_config_is_not_called_the_cv_choice(demo_cfg, tmp_path):
    cfg = copy.deepcopy(demo_cfg)
    cfg["final"]["architecture"] = "pool_avg"
    scores = default_scores(cfg, overrides={"pool_avg": [0.50, 0.52, 0.51]})
    _, text, _ = make_report(build_results(tmp_path, cfg, scores), tmp_path)
    f = report.findings(report.collect(tmp_path / "results"))
    assert "The config named `pool_avg`" in f["short_selection"] and "Cross-validation chose" not in text
    assert "named in config (final.architecture)" in f["selection"] and "chosen by" not in f["selection"]
    assert "The best other architecture" in f["selection"] and "pp ahead" in f["selection"]
    assert "significantly worse" in f["selection"] and "The architecture named in the config" in text


# ---------------------------------------------------------------- banner, per-class facts, CLI, errors

def test_demo_banner_at_the_top_only_for_demo_data(demo_results, tmp_path):
    _, text, _ = make_report(demo_results, tmp_path)
    assert "DEMO DATA" in "\n".join(text.splitlines()[:6])


def test_per_class_findings_match_the_confusion_matrix(demo_results):
    ctx = report.collect(demo_results)
    f = report.findings(ctx)
    pc = ctx["final"]["private"]["per_class"]
    best = max(CLASS_NAMES, key=lambda c: pc[c]["f1"])
    worst = min(CLASS_NAMES, key=lambda c: pc[c]["f1"])
    assert f"{best} is recognised best" in f["per_class"] and f"{worst} worst" in f["per_class"]
    assert "fear taken for sad" in f["per_class"]  # the confusion the fake predictions build in
    assert "PrivateTest was predicted once" in f["protocol"]


def test_extra_test_sets_are_reported(demo_results, tmp_path):
    r = tmp_path / "results"
    shutil.copytree(demo_results, r)
    f = r / "final"
    write_json(f / "metrics.json", study.evaluate_final(f / "predictions_public.csv", f / "predictions_private.csv",
                                                        extra={"other_faces": f / "predictions_public.csv"}))
    ctx, text, _ = make_report(r, tmp_path)
    acc = report.pct(ctx["final"]["public"]["accuracy"])
    assert f"On the extra test set it scores {acc} on `other_faces`" in text
    assert "| other_faces |" in text


def test_model_inspection_matches_the_figures_computation(demo_results):
    from ferstudy import figures
    from ferstudy.data import load_h5
    from ferstudy.train import load_model

    data = load_h5(demo_results / "data" / "dataset.h5")
    model, payload = load_model(demo_results / "final" / "model.pt")
    name, module, _ = figures.stage_taps(model, payload["input_size"])[-1]
    idx = np.concatenate(list(figures.pick_faces(data, report.CHANNEL_FACES_PER_CLASS, report.SEED).values()))
    crop = payload["input_size"]
    means, sel = figures.channel_emotion_matrix(model, data.images[idx], data.labels[idx], crop, module)
    (a,), _ = figures.capture(model, figures.model_input(data.images[idx], payload["input_size"]), [module])
    m2, s2 = report.eta_squared(a.float().mean(dim=(2, 3)).numpy(), data.labels[idx])
    np.testing.assert_allclose(m2, means, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s2, sel, rtol=1e-4, atol=1e-6)
    info = report.inspect_model(demo_results / "final" / "model.pt", data)
    assert sum(info["channels"]["prefer"].values()) == info["channels"]["live"]


def test_kernel_shapes_tells_edges_from_blobs():
    edge = np.array([[-1, -1, -1], [0, 0, 0], [1, 1, 1]], float)  # horizontal edge detector
    blob = np.ones((3, 3))
    s = report.kernel_shapes(np.stack([edge, edge.T, blob]))
    assert (s["edge"], s["blob"], s["horizontal"], s["vertical"]) == (2, 1, 1, 1)


def test_cli_writes_the_report_and_names_missing_files(demo_results, tmp_path, capsys):
    out = tmp_path / "r" / "report.md"
    assert main(["report", "--results", str(demo_results), "--out", str(out),
                 "--template", str(TEMPLATE_DIR / "report.md.j2"), "--preset", "demo"]) == 0
    assert "--config preset=demo" in out.read_text()
    broken = tmp_path / "broken"
    shutil.copytree(demo_results, broken)
    (broken / "final" / "metrics.json").unlink()
    (broken / "figures" / "saliency.png").unlink()
    assert main(["report", "--results", str(broken), "--out", str(tmp_path / "x.md"),
                 "--template", str(TEMPLATE_DIR / "report.md.j2")]) == 2
    err = capsys.readouterr().err
    assert "final/metrics.json" in err and "figures/saliency.png" in err
    out = tmp_path / "partial" / "report.md"
    assert main(["report", "--results", str(broken), "--out", str(out), "--allow-missing-figures",
                 "--template", str(TEMPLATE_DIR / "report.md.j2")]) == 2  # metrics.json is still required
    shutil.copy(demo_results / "final" / "metrics.json", broken / "final" / "metrics.json")
    assert main(["report", "--results", str(broken), "--out", str(out), "--allow-missing-figures",
                 "--template", str(TEMPLATE_DIR / "report.md.j2")]) == 0
    links = report.image_links(out.read_text())
    assert len(links) == len(report.FIGURE_NAMES) and not any("saliency" in link for link in links)
    assert all((out.parent / link).is_file() for link in links)
    with pytest.raises(UserError, match="template not found"):
        report.render(report.collect(demo_results), tmp_path)
