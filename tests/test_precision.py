"""bf16 autocast on CPUs that have it: the `amp: auto` decision, determinism and the learning curve."""

import math

import numpy as np
import pytest
import torch

from ferstudy import precision, train
from ferstudy.data import load_h5, prepare
from test_train import needs_bf16, tiny_run_config

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def real_h5(real_slice_csv, tmp_path_factory):
    path = tmp_path_factory.mktemp("h5") / "d.h5"
    prepare(real_slice_csv, path, folds=3, fold_seed=0)
    return path


def decide(monkeypatch, has_bf16, rates=None, amp="auto", device=CPU):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: has_bf16)
    calls = []

    def probe(model, training, crop):
        calls.append(crop)
        return rates

    amp_on, reason = precision.choose_amp({"amp": amp, "batch_size": 8}, device, torch.nn.Linear(2, 2), 44, probe)
    return amp_on, reason, calls


def test_auto_without_native_bf16_is_fp32_and_measures_nothing(monkeypatch):
    amp, reason, calls = decide(monkeypatch, has_bf16=False, rates=(100.0, 1000.0))
    assert amp is False and calls == [] and "no native bf16" in reason


def test_auto_with_native_bf16_takes_bf16_only_when_measured_faster(monkeypatch):
    amp, reason, calls = decide(monkeypatch, has_bf16=True, rates=(100.0, 190.0))
    assert amp is True and calls == [44] and "1.90x" in reason
    amp, reason, _ = decide(monkeypatch, has_bf16=True, rates=(100.0, 104.0))  # a near tie stays fp32
    assert amp is False and "1.04x" in reason


def test_forced_settings_win_over_the_measurement(monkeypatch):
    assert decide(monkeypatch, has_bf16=True, rates=(100.0, 1000.0), amp=False)[:1] == (False,)
    amp, reason, calls = decide(monkeypatch, has_bf16=False, amp=True)
    assert amp is True and calls == [] and "amp: True in the config" in reason
    assert decide(monkeypatch, has_bf16=False, device=torch.device("cuda"))[0] is True


def test_time_precisions_leaves_model_and_rng_alone():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.LazyLinear(7)
    )
    model(torch.zeros(2, 1, 20, 20))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    fp32, bf16 = precision.time_precisions(model, {"batch_size": 16}, 20, steps=1, warmup=1)
    assert fp32 > 0 and bf16 > 0
    assert torch.equal(torch.rand(3), expected)  # the global generator did not move
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_bf16_same_seed_same_weights_bit_for_bit(real_h5, tmp_path):
    needs_bf16(True)
    data = load_h5(real_h5)
    tr, va = data.fold_indices(0)
    runs = [
        train.fit(tiny_run_config(amp=True), data, tr, va, tmp_path / f"ck{i}.pt", progress=lambda s: None)
        for i in range(2)
    ]
    (m1, s1), (m2, s2) = runs
    assert s1["amp"] is True and "config" in s1["precision_reason"]
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert a.dtype == torch.float32 or k.endswith("num_batches_tracked"), k  # weights stay fp32
        assert torch.equal(a, b), k
    assert s1["history"][-1]["val_loss"] == s2["history"][-1]["val_loss"]
    fp32_model, _ = train.fit(tiny_run_config(amp=False), data, tr, va, tmp_path / "fp32.pt", progress=lambda s: None)
    assert not torch.equal(next(iter(fp32_model.state_dict().values())), next(iter(m1.state_dict().values())))


def test_resume_keeps_the_precision_it_started_with(real_h5, tmp_path, monkeypatch):
    """A run decided by `auto` and resumed must not re-measure: a different verdict would change the bits."""
    data = load_h5(real_h5)
    tr, va = data.fold_indices(0)
    ck = tmp_path / "ck.pt"
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(precision, "time_precisions", lambda *a, **k: (100.0, 50.0))  # fp32 wins
    train.fit(tiny_run_config(epochs=1, amp="auto"), data, tr, va, ck, progress=lambda s: None)
    cfg2 = tiny_run_config(epochs=1, amp="auto")
    monkeypatch.setattr(precision, "time_precisions", lambda *a, **k: pytest.fail("re-measured on resume"))
    lines = []
    _, state = train.fit(cfg2, data, tr, va, ck, progress=lines.append)
    assert any("resuming" in line for line in lines) and state["amp"] is False
    assert "0.50x" in state["precision_reason"]


def test_folds_of_one_architecture_share_one_precision_decision(real_h5, tmp_path, monkeypatch):
    """The first fold measures, the others read its verdict: a busy moment cannot put one fold of an
    architecture in another precision (a real study had one fold in fp32, the other two in bf16)."""
    data = load_h5(real_h5)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    verdicts = iter([(100.0, 50.0)])  # fp32 wins; a second measurement would raise StopIteration
    monkeypatch.setattr(precision, "time_precisions", lambda *a, **k: next(verdicts))
    memo = tmp_path / "arch"
    cfg = tiny_run_config(epochs=1, amp="auto")
    states = [
        train.fit(
            cfg, data, *data.fold_indices(k), tmp_path / f"f{k}.pt", progress=lambda s: None, precision_memo=memo
        )[1]
        for k in range(2)
    ]
    assert [s["amp"] for s in states] == [False, False]
    assert "0.50x" in states[1]["precision_reason"] and str(memo / "precision-") in states[1]["precision_reason"]
    assert [p.name.startswith("precision-") for p in memo.iterdir()] == [True]  # no temporary or lock file left
    # another run config (here: another learning rate) is another network's decision: measured anew
    monkeypatch.setattr(precision, "time_precisions", lambda *a, **k: (100.0, 200.0))
    _, other = train.fit(
        tiny_run_config(epochs=1, amp="auto", lr=0.01),
        data,
        *data.fold_indices(0),
        tmp_path / "o.pt",
        progress=lambda s: None,
        precision_memo=memo,
    )
    assert other["amp"] is True and "2.00x" in other["precision_reason"]


def concurrent_verdicts(tmp_path, monkeypatch, rates, jobs=3):
    """`jobs` threads deciding at once for one architecture; returns (verdicts, measurements)."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    calls, lock = [], threading.Lock()

    def slow_probe(*a, **k):
        with lock:
            calls.append(1)
            r = rates[len(calls) - 1]
        time.sleep(0.3)
        return r

    monkeypatch.setattr(precision, "time_precisions", slow_probe)
    cfg = {"training": {"amp": "auto", "batch_size": 8}, "model": {"layers": []}}
    with ThreadPoolExecutor(jobs) as pool:
        verdicts = list(
            pool.map(
                lambda _: precision.shared_choose_amp(tmp_path, cfg, CPU, torch.nn.Linear(2, 2), 44, 1), range(jobs)
            )
        )
    return verdicts, calls


def test_concurrent_jobs_measure_once(tmp_path, monkeypatch):
    verdicts, calls = concurrent_verdicts(tmp_path, monkeypatch, [(100.0, 150.0)] * 3)
    assert len(calls) == 1 and [amp for amp, _ in verdicts] == [True] * 3
    # a forced setting never reads or writes the shared verdict
    forced = {"training": {"amp": False, "batch_size": 8}, "model": {"layers": []}}
    assert precision.shared_choose_amp(tmp_path, forced, CPU, torch.nn.Linear(2, 2), 44, 1)[0] is False
    assert len(calls) == 1


def test_jobs_on_machines_without_a_shared_lock_still_agree(tmp_path, monkeypatch):
    """Slurm nodes on NFS: flock may not reach across them, so all jobs measure at once, and get
    different verdicts; the first published one wins and every job trains in it."""
    monkeypatch.setattr(precision, "_lock_directory", lambda directory: None)
    verdicts, calls = concurrent_verdicts(tmp_path, monkeypatch, [(100.0, 150.0), (100.0, 50.0), (100.0, 60.0)])
    assert len(calls) == 3  # nobody waited
    assert len({amp for amp, _ in verdicts}) == 1
    (published,) = tmp_path.glob("precision-*.json")
    assert sum("measured by the first" not in reason for _, reason in verdicts) == 1
    assert published.read_text().count('"amp"') == 1


def test_learning_curve_recorded_every_epoch_on_fixed_subsets(real_h5, tmp_path):
    data = load_h5(real_h5)
    tr, va = data.fold_indices(0)
    _, state = train.fit(
        tiny_run_config(epochs=3, eval_every=0, curve_images=60),
        data,
        tr,
        va,
        tmp_path / "c.pt",
        progress=lambda s: None,
    )
    hist = state["history"]
    assert [math.isnan(h["val_acc"]) for h in hist] == [True, True, False]
    for h in hist:
        assert 0 <= h["curve_val_acc"] <= 1 and 0 <= h["curve_train_acc"] <= 1
    # the subsets are fixed and stratified: the same images after every epoch, drawn from each split
    sets = train.learning_curve_sets({"curve_images": 60, "seed": 3}, data.labels, np.asarray(tr), np.asarray(va), CPU)
    assert len(sets[1]) <= 62 and set(sets[1].numpy()) <= set(va) and set(sets[0].numpy()) <= set(tr)
    assert len(np.unique(data.labels[sets[1].numpy()])) >= 5
    _, none = train.fit(tiny_run_config(epochs=1), data, tr, va, tmp_path / "n.pt", progress=lambda s: None)
    assert math.isnan(none["history"][0]["curve_val_acc"])
