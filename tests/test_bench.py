"""The benchmark harness with tiny settings: every line is JSON with the promised keys and sane
numbers; the Snakemake output parsers on captured text."""

import json
from pathlib import Path

import pytest

from ferstudy import bench
from ferstudy.cli import main
from ferstudy.demo import write_demo_csv

REPO = Path(__file__).resolve().parents[1]

NUMBERS = {  # name -> keys that must be positive numbers
    "matmul": ["gflops"],
    "train_step": ["img_per_s", "gflops", "fraction_of_matmul", "mflops_forward"],
    "train_pil": ["img_per_s"],
    "train_vs_pil": ["ratio", "project_img_per_s", "pil_best_img_per_s"],
    "ingest": ["seconds", "rows"],
    "h5_load": ["seconds", "rows"],
    "inference": ["img_per_s"],
    "latency": ["ms_median"],
}


@pytest.fixture(scope="module")
def bench_lines(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    csv = tmp / "tiny.csv"
    write_demo_csv(csv, n_images=120, seed=1)
    out = tmp / "bench.jsonl"
    rc = main(["bench", "--config", str(REPO / "config.yaml"), "--archs", "baseline", "--threads", "1",
               "--batches", "1", "--warmup", "1", "--trials", "1", "--batch-size", "8", "--matmul-size", "128",
               "--max-images", "64", "--latency-reps", "3", "--pil-workers", "0", "--csv", str(csv),
               "--out", str(out)])
    assert rc == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_every_line_has_name_units_context_and_sane_numbers(bench_lines):
    names = [r["name"] for r in bench_lines]
    for expected in NUMBERS:
        assert expected in names, f"no {expected} line in {names}"
    for r in bench_lines:
        assert isinstance(r["context"], dict) and r["context"]["threads"] == 1
        assert "torch" in r["context"]
        if "skipped" in r:
            continue
        assert "units" in r, r["name"]
        for key in NUMBERS.get(r["name"], []):
            assert isinstance(r[key], (int, float)) and r[key] > 0, (r["name"], key, r[key])
    step = next(r for r in bench_lines if r["name"] == "train_step")
    assert 0 < step["fraction_of_matmul"] < 2
    assert step["arch"] == "baseline" and step["context"]["batch_size"] == 8
    assert "channels_last" in step["context"]
    assert step["context"]["loop"] == "ferstudy.train.train_one_epoch"
    ingest = next(r for r in bench_lines if r["name"] == "ingest")
    assert ingest["rows"] == 120
    # no --study-dir: the Snakemake measurement says why it is skipped
    assert "skipped" in next(r for r in bench_lines if r["name"] == "snakemake_dry_run")


def test_parse_job_stats_and_dry_run_listing():
    text = """Building DAG of jobs...
Job stats:
job              count
-------------  -------
run_config           1
train_fold           3
evaluate_arch        1
total                5

[Thu Nov 26 08:53:18 2026]
localrule train_fold:
    input: results/data/dataset.h5
    wildcards: arch=kernel_5, fold=0
    resources: tmpdir=/tmp
[Thu Nov 26 08:53:18 2026]
rule evaluate_arch:
    wildcards: arch=kernel_5
[Thu Nov 26 08:53:18 2026]
localrule run_config:
    output: results/cv/kernel_5/run_config.yaml
"""
    assert bench.parse_job_stats(text) == {"run_config": 1, "train_fold": 3, "evaluate_arch": 1}
    assert bench.parse_job_stats("Nothing to be done (all requested files are present and up to date).") == {}
    assert bench.parse_dry_run_jobs(text) == ["train_fold[arch=kernel_5, fold=0]", "evaluate_arch[arch=kernel_5]",
                                              "run_config"]


def test_changed_archs_follows_extends():
    archs = {"baseline": {"blocks": {"filters": [8, 16], "kernel": 3}},
             "leaf": {"extends": "baseline", "blocks": {"filters": [8]}},
             "own_kernel": {"extends": "baseline", "blocks": {"kernel": 5}},
             "net": {"backbone": "resnet18"}}
    cfg = {"architectures": archs, "training": {"epochs": 1, "augment": {"crop": 44}}, "data": {"folds": 3},
           "study": {"architectures": list(archs), "baseline": "baseline"}}
    change = {"blocks": {"kernel": 5}}
    assert bench.changed_archs(cfg, "leaf", change) == ["leaf"]
    # variants that do not set their own kernel inherit the baseline's
    assert bench.changed_archs(cfg, "baseline", change) == ["baseline", "leaf"]
    assert bench.default_change_arch(cfg, change) == "leaf"  # own_kernel: no change; net: a backbone
