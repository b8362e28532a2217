"""The benchmark harness with tiny settings: every line is JSON with the promised keys and sane
numbers; the Snakemake output parsers on captured text."""

import json
from pathlib import Path

import pytest

from ferstudy.bench.dryrun import changed_archs, default_change_arch, parse_dry_run_jobs, parse_job_stats
from ferstudy.bench.machine import cpu_peak
from ferstudy.cli import main
from ferstudy.demo import write_demo_csv

REPO = Path(__file__).resolve().parents[1]

NUMBERS = {  # name -> keys that must be positive numbers
    "matmul": ["gflops"],
    "train_step": ["img_per_s", "gflops", "fraction_of_matmul", "mflops_forward"],
    "train_pil": ["img_per_s"],
    "train_vs_pil": [
        "ratio",
        "ratio_fp32",
        "project_img_per_s",
        "project_fp32_img_per_s",
        "pil_best_img_per_s",
        "target_ratio",
    ],
    "ingest": ["seconds", "rows", "cpu_s", "peak_rss_mb", "rss_after_import_mb"],
    "h5_load": ["seconds", "rows"],
    "inference": ["img_per_s"],
    "latency": ["ms_median"],
}


TINY = [
    "--config",
    str(REPO / "config" / "config.yaml"),
    "--archs",
    "baseline",
    "--threads",
    "1",
    "--batches",
    "1",
    "--warmup",
    "1",
    "--trials",
    "1",
    "--batch-size",
    "8",
    "--matmul-size",
    "128",
    "--max-images",
    "64",
    "--pil-workers",
    "0",
    "--pil-rounds",
    "2",
]


def run_tiny_bench(out, *extra):
    assert main(["bench", *TINY, *extra, "--out", str(out)]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.fixture(scope="module")
def bench_lines(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    csv = tmp / "tiny.csv"
    write_demo_csv(csv, n_images=120, seed=1)
    return run_tiny_bench(tmp / "bench.jsonl", "--latency-reps", "3", "--csv", str(csv))


def check_precisions(lines, native_bf16):
    """Like with like: a matmul per training precision, a training line per precision divided by
    the matmul and the peak of its own precision, the PIL loop against fp32 and as trained."""
    precisions = ["fp32", "bf16"] if native_bf16 else ["fp32"]
    by_name = lambda name: [r for r in lines if r["name"] == name]  # noqa: E731
    matmul = {r["precision"]: r for r in by_name("matmul")}
    assert list(matmul) == precisions
    (peak,) = by_name("cpu_peak")
    factors = peak["factors"]
    for name, factor in factors.items():
        assert set(factor) == {"value", "source"} and factor["source"], name
    assert factors["cores"]["value"] == 1  # --threads 1
    if factors["fp32_flop_per_cycle_per_core"]["value"]:  # a known vector ISA (any x86)
        assert any("FMA units" in a for a in peak["assumed"])
        assert "ASSUMED" in factors["fp32_flop_per_cycle_per_core"]["source"]
    if factors["clock_ghz"]["value"]:
        assert peak["gflops_fp32"] == pytest.approx(
            factors["cores"]["value"] * factors["clock_ghz"]["value"] * factors["fp32_flop_per_cycle_per_core"]["value"]
        )

    def fraction_of_peak(r, p):
        return pytest.approx(r["gflops"] / peak[f"gflops_{p}"]) if peak[f"gflops_{p}"] else None

    for p, r in matmul.items():
        assert r["fraction_of_peak"] == fraction_of_peak(r, p)
    steps = by_name("train_step")
    assert [r["precision"] for r in steps] == precisions  # side by side, one architecture
    for r in steps:
        assert r["fraction_of_matmul"] == pytest.approx(r["gflops"] / matmul[r["precision"]]["gflops"])
        assert r["fraction_of_peak"] == fraction_of_peak(r, r["precision"])
        assert r["context"]["autocast"] == f"bf16 autocast {'on' if r['precision'] == 'bf16' else 'off'}"
        assert r["context"]["cpu_native_bf16"] is native_bf16
    (vs,) = by_name("train_vs_pil")
    assert all(r["precision"] == "fp32" for r in by_name("train_pil")) and vs["pil_precision"] == "fp32"
    # alternating rounds; each ratio is the median of the rounds' own ratios
    rounds = vs["rounds"]
    assert len(rounds) == vs["context"]["rounds"] == 2
    for key, ratio in (("project", vs["ratio"]), ("project_fp32", vs["ratio_fp32"])):
        per_round = sorted(x[key] / max(x["pil"].values()) for x in rounds)
        assert ratio == pytest.approx((per_round[0] + per_round[1]) / 2)
    assert vs["pil_best_img_per_s"] == pytest.approx(sum(max(x["pil"].values()) for x in rounds) / 2)
    for r in by_name("train_pil"):
        assert r["img_per_s"] == pytest.approx(sum(x["pil"][str(r["workers"])] for x in rounds) / 2)
    if vs["project_precision"] == "fp32":  # the project as it trains is the fp32 measurement itself
        assert all(x["project"] == x["project_fp32"] for x in rounds)
    assert vs["project_precision"] in precisions and vs["project_precision_reason"]
    if not native_bf16:
        assert vs["project_precision"] == "fp32" and "no native bf16" in vs["project_precision_reason"]
    assert vs["target_ratio"] == (2.0 if native_bf16 else 1.5)
    assert vs["meets_target"] is (vs["ratio"] >= vs["target_ratio"]) and ">= 2x" in vs["target"]


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
    # measured in a fresh process: its own memory, not the benchmark's (torch alone is more)
    assert ingest["rss_after_import_mb"] <= ingest["peak_rss_mb"] < 500
    assert ingest["context"]["process"].startswith("a fresh Python process")
    # no --study-dir: the Snakemake measurement says why it is skipped
    assert "skipped" in next(r for r in bench_lines if r["name"] == "snakemake_dry_run")


def test_precisions_compared_like_with_like(bench_lines):
    from ferstudy.precision import cpu_has_bf16

    check_precisions(bench_lines, cpu_has_bf16())


def test_the_other_kind_of_cpu(tmp_path, monkeypatch):
    """The same checks with native bf16 switched the other way (bf16 without it is emulated: slow,
    but it runs), so both kinds of machine are tested wherever the tests run."""
    from ferstudy import precision

    native = precision.cpu_has_bf16()
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: not native)
    lines = run_tiny_bench(tmp_path / "bench.jsonl", "--only", "matmul", "train", "pil")
    check_precisions(lines, not native)


CPUINFO_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
cpu MHz\t\t: 2445.404
physical id\t: 0
core id\t\t: 0
flags\t\t: fpu sse sse2 avx fma avx2
processor\t: 1
physical id\t: 0
core id\t\t: 1
flags\t\t: fpu sse sse2 avx fma avx2
"""


def test_cpu_peak_from_what_the_machine_reports(tmp_path):
    no_sysfs = tmp_path / "none"
    # AVX2 + FMA, 2 cores, the clock from lscpu: 2 x 32 x 2.9 GHz
    r = cpu_peak(2, CPUINFO_AVX2, "CPU max MHz:     2900.0000\n", no_sysfs, cpus=[0, 1])
    assert r["factors"]["fp32_flop_per_cycle_per_core"]["value"] == 32
    assert r["gflops_fp32"] == pytest.approx(2 * 32 * 2.9) and r["gflops_bf16"] is None
    assert (
        "lscpu" in r["factors"]["clock_ghz"]["source"] and "(physical id, core id)" in r["factors"]["cores"]["source"]
    )
    assert "no native bf16" in r["factors"]["bf16_flop_per_cycle_per_core"]["source"]
    # no lscpu: the `cpu MHz` line, said to be assumed; one thread counts one core
    r = cpu_peak(1, CPUINFO_AVX2, "", no_sysfs, cpus=[0, 1])
    assert r["gflops_fp32"] == pytest.approx(32 * 2.445404) and r["factors"]["cores"]["value"] == 1
    assert "cpu MHz" in r["factors"]["clock_ghz"]["source"] and any("clock" in a for a in r["assumed"])
    # AVX-512 with AMX; sysfs: cpufreq max and 4 logical CPUs on 2 cores (SMT)
    sysfs = tmp_path / "cpu"
    for cpu in range(4):
        topo = sysfs / f"cpu{cpu}" / "topology"
        topo.mkdir(parents=True)
        (topo / "physical_package_id").write_text("0\n")
        (topo / "core_id").write_text(f"{cpu // 2}\n")
    (sysfs / "cpu0" / "cpufreq").mkdir()
    (sysfs / "cpu0" / "cpufreq" / "cpuinfo_max_freq").write_text("3500000\n")
    spr = CPUINFO_AVX2.replace("avx2", "avx2 avx512f avx512_bf16 amx_bf16 amx_tile")
    r = cpu_peak(4, spr, "", sysfs, cpus=[0, 1, 2, 3])
    assert r["factors"]["cores"]["value"] == 2 and "topology" in r["factors"]["cores"]["source"]
    assert r["factors"]["clock_ghz"] == {"value": 3.5, "source": r["factors"]["clock_ghz"]["source"]}
    assert r["gflops_fp32"] == pytest.approx(2 * 64 * 3.5) and r["gflops_bf16"] == pytest.approx(2 * 1024 * 3.5)
    assert not any("clock" in a for a in r["assumed"])
    # AVX-512 BF16 without AMX: twice the fp32 rate; no clock at all: no peak, said why
    r = cpu_peak(1, spr.replace(" amx_bf16 amx_tile", "").replace("cpu MHz", "bogus"), "", no_sysfs, cpus=[0])
    assert r["factors"]["bf16_flop_per_cycle_per_core"]["value"] == 128
    assert r["gflops_fp32"] is None and "no clock" in r["factors"]["clock_ghz"]["source"]


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
    assert parse_job_stats(text) == {"run_config": 1, "train_fold": 3, "evaluate_arch": 1}
    assert parse_job_stats("Nothing to be done (all requested files are present and up to date).") == {}
    assert parse_dry_run_jobs(text) == [
        "train_fold[arch=kernel_5, fold=0]",
        "evaluate_arch[arch=kernel_5]",
        "run_config",
    ]


def test_changed_archs_follows_extends():
    archs = {
        "baseline": {"blocks": {"filters": [8, 16], "kernel": 3}},
        "leaf": {"extends": "baseline", "blocks": {"filters": [8]}},
        "own_kernel": {"extends": "baseline", "blocks": {"kernel": 5}},
        "net": {"backbone": "resnet18"},
    }
    cfg = {
        "architectures": archs,
        "training": {"epochs": 1, "augment": {"crop": 44}},
        "data": {"folds": 3},
        "study": {"architectures": list(archs), "baseline": "baseline"},
    }
    change = {"blocks": {"kernel": 5}}
    assert changed_archs(cfg, "leaf", change) == ["leaf"]
    # variants that do not set their own kernel inherit the baseline's
    assert changed_archs(cfg, "baseline", change) == ["baseline", "leaf"]
    assert default_change_arch(cfg, change) == "leaf"  # own_kernel: no change; net: a backbone
