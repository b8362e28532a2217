"""The report sets a pretrained backbone (`pretrained: imagenet`) against its from-scratch twin with
the ablation's own rule (corrected resampled t-test, verdict at p < alpha, stability label), on
fake-but-consistent results written by the project's writers (tests/test_report.py)."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_report import REPO, TEMPLATE_DIR, build_results, default_scores, fast_writers

from ferstudy.config import resolve_config
from ferstudy.metrics import corrected_resampled_ttest
from ferstudy.report.load import collect
from ferstudy.report.render import render, render_both
from ferstudy.report.sections import findings
from ferstudy.report.sections.effects import OPERATIONS
from ferstudy.report.text import pct, pp, pval
from ferstudy.report.verdicts import verdict_clause
from ferstudy.stability import LABELS

PAIR = ["baseline", "kernel_5", "vgg11_bn", "vgg11_bn_imagenet"]


def pair_config(only=PAIR):
    """The shipped config.yaml (its vgg11_bn_imagenet), demo preset, a few architectures; the final
    model is the baseline (building the pretrained one would read ImageNet weights)."""
    raw = yaml.safe_load((REPO / "ferstudy" / "defaults.yaml").read_text())
    raw["preset"] = "demo"
    raw["presets"]["demo"]["study"] = {"skip": [], "only": list(only)}
    raw["final"]["architecture"] = "baseline"
    return resolve_config(copy.deepcopy(raw), workdir=REPO / "tests")


@pytest.fixture(autouse=True)
def _fast_writers():
    with fast_writers():
        yield


def results_with(tmp_path, pretrained, twin=(0.58, 0.61, 0.59), only=PAIR):
    cfg = pair_config(only)
    assert cfg["architectures"]["vgg11_bn_imagenet"]["pretrained"] == "imagenet"
    overrides = {"vgg11_bn_imagenet": list(pretrained)}
    if "vgg11_bn" in only:
        overrides["vgg11_bn"] = list(twin)
    return build_results(tmp_path, cfg, default_scores(cfg, overrides=overrides))


def expected_test(ctx, a="vgg11_bn_imagenet", b="vgg11_bn"):
    scores = {
        n: json.loads((Path(ctx["results_dir"]) / "cv" / n / "metrics.json").read_text())["aggregate"]["metrics"][
            "accuracy"
        ]["folds"]
        for n in (a, b)
    }
    return corrected_resampled_ttest(
        np.subtract(scores[a], scores[b]), ctx["data"]["fold_train"], ctx["data"]["fold_test"]
    )


@pytest.mark.parametrize(
    "pretrained,verdict", [((0.66, 0.70, 0.67), "helped"), ((0.55, 0.66, 0.58), "made no measurable difference")]
)
def test_the_pretrained_variant_is_set_against_its_twin(tmp_path, pretrained, verdict):
    ctx = collect(results_with(tmp_path, pretrained))
    [pair] = ctx["pretrained_pairs"]
    assert pair["arch"] == "vgg11_bn_imagenet" and pair["twin"] == "vgg11_bn" and pair["changes"] == []
    row, test = pair["row"], expected_test(ctx)
    assert row["diff_pp"] == pytest.approx(100 * test["mean_diff"]) and row["p"] == pytest.approx(test["p"])
    assert row["verdict"] == ("helped" if verdict == "helped" else "no measurable difference")
    assert row["stability"] in LABELS and row["stability_reason"]
    f = findings(ctx)
    sentence = f["pretrained"]["vgg11_bn_imagenet"]
    assert sentence.startswith(
        "Against its from-scratch twin `vgg11_bn` (the same network and training), "
        "`vgg11_bn_imagenet` reached "
        f"{pct(row['mean'])} against {pct(row['baseline_mean'])}: "
    ), sentence
    # the verdict phrased as every verdict of the report is, without a Holm p (one planned comparison)
    assert f"ImageNet pretraining {verdict_clause(row)}" in sentence
    assert f"ImageNet pretraining {verdict} ({pp(row['diff_pp'])}, {pval(row['p'])}; {row['stability']})" in sentence
    assert "Holm p" not in sentence and "outside Holm" in sentence
    # in section 4, closing the paragraph of its factor (after its verdict against the baseline)
    text, appendix = render_both(ctx, TEMPLATE_DIR)
    paragraph = next(line for line in text.splitlines() if line.startswith("**Pretraining.**"))
    assert paragraph.startswith(f"**Pretraining.** {OPERATIONS['pretraining']} ") and paragraph.endswith(sentence)
    assert "(`vgg11_bn_imagenet`)" in paragraph.split("Against its from-scratch twin")[0]
    # the appendix: the pair's statistics and its label's reason
    assert (f"| `vgg11_bn_imagenet` | `vgg11_bn` | {pp(row['diff_pp'])} ± {row['std_pp']:.1f} | ") in appendix
    assert f"| {row['stability']} | {row['stability_reason']} |" in appendix
    assert "torchvision vgg11_bn (ImageNet-pretrained)" == next(
        a["layers"] for a in ctx["archs"] if a["architecture"] == "vgg11_bn_imagenet"
    )


def test_without_its_twin_the_report_says_so(tmp_path):
    ctx = collect(results_with(tmp_path, (0.66, 0.70, 0.67), only=["baseline", "kernel_5", "vgg11_bn_imagenet"]))
    [pair] = ctx["pretrained_pairs"]
    assert pair["twin"] is None
    sentence = findings(ctx)["pretrained"]["vgg11_bn_imagenet"]
    assert sentence == (
        "`vgg11_bn_imagenet` has no from-scratch twin in this study (`vgg11_bn` with "
        "`pretrained: null`), so only its comparison with the baseline is reported."
    )
    assert sentence in render(ctx, TEMPLATE_DIR)


def test_no_pretrained_variant_no_sentence(tmp_path):
    cfg = pair_config(["baseline", "kernel_5", "vgg11_bn"])
    ctx = collect(build_results(tmp_path, cfg, default_scores(cfg)))
    assert ctx["pretrained_pairs"] == [] and findings(ctx)["pretrained"] == {}
    assert "Pretraining" not in render(ctx, TEMPLATE_DIR)
