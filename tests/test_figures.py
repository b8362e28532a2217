"""Figures: a tiny real study (demo data, 2 folds, 2 architectures, 1 epoch) built with the real
commands, then every figure and the model-inspection functions on it."""

import itertools

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from ferstudy import CLASS_NAMES
from ferstudy.checkpoint import load_model
from ferstudy.cli import main
from ferstudy.data import load_h5
from ferstudy.errors import UserError
from ferstudy.metrics import read_predictions
from ferstudy.figures import FIGURES
from ferstudy.figures.cli import _augmented, make_all
from ferstudy.figures.cv import curve_series, has_learning_curve, mean_std_by_epoch, pareto_front, plot_training_curves
from ferstudy.figures.final import plot_examples, rows_to_indices
from ferstudy.figures.inside import plot_filters_deeper, plot_filters_layer1
from ferstudy.figures.plot import batches_label, dataset_label
from ferstudy.models import build_model
from ferstudy.probe import (
    capture,
    channel_emotion_matrix,
    conv_layers,
    first_layer_filters,
    grad_cam,
    model_input,
    pick_faces,
    stage_taps,
)

torch.set_num_threads(1)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CROP = 44


def run_config(name, filters, factor):
    training = {
        "epochs": 1,
        "batch_size": 64,
        "optimizer": "sgd",
        "lr": 0.05,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "schedule": "onecycle",
        "warmup_fraction": 0.2,
        "label_smoothing": 0.1,
        "seed": 0,
        "subsample": 1.0,
        "tta": "none",
        "device": "cpu",
        "augment": {"enabled": True, "crop": CROP, "flip": True},
    }
    layers = []
    for f in filters:
        layers += [
            {"conv": {"filters": f, "kernel": 3, "padding": 1, "bias": False}},
            "batchnorm",
            "relu",
            {"maxpool": 2},
        ]
    return {
        "name": name,
        "description": f"filters {filters}",
        "factor": factor,
        "model": {"layers": layers + ["gap"]},
        "training": training,
        "data": {"folds": 2, "fold_seed": 0},
        "dataset": "demo",
    }


def assert_png(path):
    from PIL import Image

    assert path.is_file() and path.read_bytes()[:8] == PNG_MAGIC, path
    with Image.open(path) as im:
        w, h = im.size
        arr = np.asarray(im.convert("L"))
    assert w > 300 and h > 150, (path, w, h)
    assert arr.std() > 5, f"{path} looks blank"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """results/ of a tiny study, made by the same commands the Snakemake rules call."""
    from ferstudy.demo import write_demo_csv

    root = tmp_path_factory.mktemp("study")
    r = root / "results"
    write_demo_csv(root / "demo.csv", n_images=700, seed=0)
    h5 = r / "data" / "dataset.h5"
    assert main(["prepare", "--csv", str(root / "demo.csv"), "--h5", str(h5), "--dataset", "demo", "--folds", "2"]) == 0
    archs = {"tiny": ([8, 16, 16], "baseline"), "tiny_wide": ([12, 16, 24], "filters")}
    metrics = []
    for arch, (filters, factor) in archs.items():
        cfg_path = r / "cv" / arch / "run_config.yaml"
        cfg_path.parent.mkdir(parents=True)
        cfg_path.write_text(yaml.safe_dump(run_config(arch, filters, factor)))
        for k in range(2):
            assert (
                main(
                    [
                        "train",
                        "--h5",
                        str(h5),
                        "--run-config",
                        str(cfg_path),
                        "--fold",
                        str(k),
                        "--out-dir",
                        str(r / "cv" / arch / f"fold{k}"),
                        "--checkpoint",
                        str(root / "ckpt" / f"{arch}{k}.pt"),
                    ]
                )
                == 0
            )
        metrics.append(str(r / "cv" / arch / "metrics.json"))
        assert (
            main(
                [
                    "evaluate-arch",
                    "--run-config",
                    str(cfg_path),
                    "--out",
                    metrics[-1],
                    "--predictions",
                    *[str(r / "cv" / arch / f"fold{k}" / "predictions.csv") for k in range(2)],
                ]
            )
            == 0
        )
    t = r / "tables"
    assert (
        main(
            [
                "aggregate",
                "--h5",
                str(h5),
                "--metrics",
                *metrics,
                "--baseline",
                "tiny",
                "--summary",
                str(t / "cv_summary.csv"),
                "--ablation",
                str(t / "ablation.csv"),
                "--cost",
                str(t / "cost.csv"),
            ]
        )
        == 0
    )
    f = r / "final"
    f.mkdir()
    (f / "final_config.yaml").write_text(
        yaml.safe_dump({"architecture": "tiny_wide", "training": {"epochs": 2, "tta": "flip"}})
    )
    assert (
        main(
            [
                "select",
                "--summary",
                str(t / "cv_summary.csv"),
                "--final-config",
                str(f / "final_config.yaml"),
                "--out",
                str(f / "selection.json"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train-final",
                "--h5",
                str(h5),
                "--run-config",
                str(r / "cv" / "tiny_wide" / "run_config.yaml"),
                "--final-config",
                str(f / "final_config.yaml"),
                "--out-dir",
                str(f),
                "--checkpoint",
                str(root / "ckpt" / "final.pt"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "evaluate-final",
                "--public",
                str(f / "predictions_public.csv"),
                "--private",
                str(f / "predictions_private.csv"),
                "--out",
                str(f / "metrics.json"),
            ]
        )
        == 0
    )
    return {"root": root, "results": r, "h5": h5, "archs": list(archs), "data": load_h5(h5)}


@pytest.fixture(scope="module")
def final_model(study):
    model, payload = load_model(study["results"] / "final" / "model.pt")
    assert payload["input_size"] == CROP
    return model


def test_train_final_ranks_epochs_without_tta_and_chooses_it_on_public_test(study):
    """The epochs are ranked on PublicTest with one view a face; flip is then kept only if it beats
    none on PublicTest, and the predictions written (and PrivateTest's) use the mode it chose."""
    final = study["results"] / "final"
    cfg = yaml.safe_load((final / "config.yaml").read_text())
    accuracy = cfg["tta_public_accuracy"]
    assert cfg["tta_configured"] == "flip" and set(accuracy) == {"none", "flip"}
    assert accuracy["none"] == pytest.approx(cfg["best_public_acc"], abs=1e-9)  # the ranking had no TTA
    chosen = cfg["run_config"]["training"]["tta"]
    assert chosen == max(accuracy, key=lambda m: (accuracy[m], m == "none"))
    labels, probs, _ = read_predictions(final / "predictions_public.csv")
    assert float((probs.argmax(1) == labels).mean()) == pytest.approx(accuracy[chosen], abs=1e-9)
    _, payload = load_model(final / "model.pt")
    assert payload["run_config"]["training"]["tta"] == chosen  # photos, export and predict use it too


def test_cli_writes_every_figure(study):
    out = study["root"] / "figures"
    assert (
        main(
            [
                "figures",
                "--h5",
                str(study["h5"]),
                "--results",
                str(study["results"]),
                "--archs",
                *study["archs"],
                "--baseline",
                "tiny",
                "--out-dir",
                str(out),
                "--threads",
                "1",
            ]
        )
        == 0
    )
    for name in FIGURES:
        assert_png(out / f"{name}.png")
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.png" for n in FIGURES)  # no temp files


def test_missing_input_names_the_file(study, tmp_path, capsys):
    code = main(["figures", "--h5", str(study["h5"]), "--results", str(tmp_path), "--out-dir", str(tmp_path / "f")])
    assert code == 2
    assert "cv_summary.csv" in capsys.readouterr().err
    with pytest.raises(UserError, match="unknown figure"):
        make_all(study["h5"], study["results"], tmp_path, only=["nope"])


def test_training_curve_statistics():
    h = [pd.DataFrame({"epoch": [1, 2], "val_acc": [0.2, 0.4]}), pd.DataFrame({"epoch": [1, 2], "val_acc": [0.4, 0.8]})]
    epochs, mean, std = mean_std_by_epoch(h, "val_acc")
    np.testing.assert_allclose(epochs, [1, 2])
    np.testing.assert_allclose(mean, [0.3, 0.6])
    np.testing.assert_allclose(std, [np.std([0.2, 0.4], ddof=1), np.std([0.4, 0.8], ddof=1)])
    assert mean_std_by_epoch(h[:1], "val_acc")[2].tolist() == [0.0, 0.0]


def test_pareto_front():
    x = np.array([1.0, 2.0, 3.0, 4.0, 0.5])
    y = np.array([0.5, 0.4, 0.7, 0.6, 0.3])
    assert pareto_front(x, y) == [4, 0, 2]


def accuracy_vs_compute_figure(monkeypatch, tmp_path, cost, summary, **kwargs):
    """plot_accuracy_vs_compute's figure, kept open (save is replaced by a capture)."""
    kept = []
    import ferstudy.figures.cv as cv_figures

    monkeypatch.setattr(cv_figures, "save", lambda fig, path, dpi=110: kept.append(fig) or path)
    cv_figures.plot_accuracy_vs_compute(cost, tmp_path / "avc.png", "fer2013", summary=summary, **kwargs)
    fig = kept[0]
    fig.canvas.draw()
    return fig, fig.axes[0]


@pytest.mark.parametrize("study", ["cpu_preset", "crowded"])
def test_accuracy_vs_compute_points_at_true_x_and_labels_apart(study, monkeypatch, tmp_path):
    """Every point at its own compute (none moved aside), every label clear of the other labels and
    of every point; the same figure each time. `crowded`: nine networks of equal compute within
    0.3 pp of each other, beside two of nearly the same compute."""
    from conftest import REPO

    if study == "cpu_preset":
        d = REPO / "docs" / "measurements" / "cpu_preset"
        cost, summary = pd.read_csv(d / "cost.csv"), pd.read_csv(d / "cv_summary.csv")
    else:
        names = [f"net_{i}" for i in range(11)]
        cost = pd.DataFrame(
            {
                "architecture": names,
                "mflops": [50.0] * 9 + [52.0, 12.0],
                "accuracy_mean": [0.540 + 0.0003 * i for i in range(9)] + [0.541, 0.5],
            }
        )
        summary = pd.DataFrame(
            {"architecture": names, "factor": ["a", "b", "c"] * 3 + ["d", "e"], "accuracy_std": [0.01] * 11}
        )
    kwargs = {"baseline": cost["architecture"][0], "final": cost["architecture"][3]}
    fig, ax = accuracy_vs_compute_figure(monkeypatch, tmp_path, cost, summary, **kwargs)
    points = {(round(float(px), 9), round(float(py), 9)) for line in ax.lines for px, py in zip(*line.get_data())}
    truth = {(round(float(px), 9), round(float(py), 9)) for px, py in zip(cost["mflops"], cost["accuracy_mean"])}
    assert truth <= points  # markers at the true x (and y)
    renderer = fig.canvas.get_renderer()
    labels = [t for t in ax.texts if t.get_text()]
    assert sorted(t.get_text().split(" (")[0] for t in labels) == sorted(cost["architecture"])
    from matplotlib.text import Text

    boxes = [Text.get_window_extent(t, renderer) for t in labels]  # the text alone, not its leader line
    for i, j in itertools.combinations(range(len(boxes)), 2):
        assert not boxes[i].overlaps(boxes[j]), (labels[i].get_text(), labels[j].get_text())
    centres = ax.transData.transform(np.column_stack([cost["mflops"], cost["accuracy_mean"]]))
    for t, box in zip(labels, boxes):
        for cx, cy in centres:
            assert not (box.x0 - 4 < cx < box.x1 + 4 and box.y0 - 4 < cy < box.y1 + 4), t.get_text()
    again, ax2 = accuracy_vs_compute_figure(monkeypatch, tmp_path, cost, summary, **kwargs)
    assert [t.get_position() for t in ax2.texts] == [t.get_position() for t in ax.texts]


def test_first_layer_filters_and_plot(final_model, tmp_path):
    name, w = first_layer_filters(final_model)
    conv = dict(final_model.named_modules())[name]
    assert w.shape == (conv.out_channels, 3, 3) == (12, 3, 3)
    np.testing.assert_allclose(w, conv.weight.detach().numpy()[:, 0])
    assert plot_filters_layer1(final_model, tmp_path / "f1.png", "demo", "tiny_wide") == conv.out_channels
    assert_png(tmp_path / "f1.png")


def test_stage_taps_are_post_activation_block_outputs(final_model):
    taps = stage_taps(final_model, CROP)
    # three blocks at 44, 22, 11: the ReLU before each pool (not the 5x5 pooled map before the gap)
    assert [t[2] for t in taps] == [(12, 44, 44), (16, 22, 22), (24, 11, 11)]
    assert all(isinstance(t[1], torch.nn.ReLU) for t in taps)


def test_grad_cam_maps(study, final_model):
    data = study["data"]
    idx = np.concatenate([v[:2] for v in pick_faces(data, 2, seed=0).values()])
    x = model_input(data.images[idx], CROP)
    assert x.shape == (len(idx), 1, CROP, CROP)
    module = stage_taps(final_model, CROP)[-1][1]
    cams, probs = grad_cam(final_model, x, torch.as_tensor(data.labels[idx]), module)
    assert cams.shape == (len(idx), CROP, CROP)
    assert cams.min() >= 0 and cams.max() <= 1
    spread = cams.reshape(len(cams), -1).std(axis=1)
    assert (spread > 0.01).mean() >= 0.75, spread  # not constant (a map is all zero only if no region helps)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    # Grad-CAM is class-specific: another target gives other maps
    other, _ = grad_cam(final_model, x, torch.as_tensor((data.labels[idx] + 3) % 7), module)
    assert np.abs(other - cams).mean() > 0.01


def test_channel_emotion_matrix(study, final_model):
    data = study["data"]
    idx = np.concatenate(list(pick_faces(data, 20, seed=0).values()))
    name, module, (channels, _, _) = stage_taps(final_model, CROP)[-1]
    means, sel = channel_emotion_matrix(final_model, data.images[idx], data.labels[idx], CROP, module)
    assert means.shape == (len(CLASS_NAMES), channels)
    assert sel.shape == (channels,) and np.all((sel >= 0) & (sel <= 1 + 1e-9))
    # the mean for one emotion equals the spatial-then-image mean of that emotion's feature maps
    happy = idx[data.labels[idx] == CLASS_NAMES.index("happy")]
    (a,), _ = capture(final_model, model_input(data.images[happy], CROP), [module])
    np.testing.assert_allclose(means[CLASS_NAMES.index("happy")], a.mean(dim=(0, 2, 3)).numpy(), rtol=1e-4, atol=1e-6)
    assert np.all(means >= 0)  # post-ReLU


def test_example_picks_are_publictest_and_seeded(study):
    data = study["data"]
    a = pick_faces(data, 3, seed=5)
    b = pick_faces(data, 3, seed=5)
    for c in range(len(CLASS_NAMES)):
        assert np.array_equal(a[c], b[c])
        assert np.all(data.split[a[c]] == 1) and np.all(data.labels[a[c]] == c)
    rows = data.row[a[3]]
    assert np.array_equal(rows_to_indices(data, rows, "x"), a[3])
    with pytest.raises(UserError, match="not in the HDF5"):
        rows_to_indices(data, np.array([10**9]), "preds.csv")


def test_examples_refuse_non_publictest(study, tmp_path):
    private = study["results"] / "final" / "predictions_private.csv"
    with pytest.raises(UserError, match="PublicTest"):
        plot_examples(study["data"], private, tmp_path / "e.png", "demo", "x")


def test_backbone_filters_taps_and_grad_cam(study, tmp_path):
    torch.manual_seed(0)
    model = build_model({"backbone": "resnet18", "pretrained": None}, input_size=CROP).eval()
    name, w = first_layer_filters(model)
    assert name == "conv1" and w.shape == (64, 3, 3)
    assert plot_filters_layer1(model, tmp_path / "r1.png", "demo", "resnet18") == 64
    taps = stage_taps(model, CROP)
    assert [t[0] for t in taps] == ["layer1", "layer2", "layer3", "layer4"]
    assert taps[-1][2] == (512, 6, 6)
    data = study["data"]
    idx = pick_faces(data, 1, seed=0)[3][:1].tolist() + pick_faces(data, 1, seed=0)[5][:1].tolist()
    x = model_input(data.images[idx], CROP)
    cams, _ = grad_cam(model, x, torch.tensor([3, 5]), taps[-1][1])
    assert cams.shape == (2, CROP, CROP) and cams.min() >= 0 and cams.max() <= 1
    assert cams.reshape(2, -1).std(axis=1).min() > 0.01
    convs = conv_layers(model)
    assert len(convs) == 20  # 1 stem + 16 block convs + 3 downsample convs
    plot_filters_deeper(model, tmp_path / "r2.png", "demo", "resnet18")
    assert_png(tmp_path / "r2.png")


def test_figure_titles_say_demo():
    assert "DEMO" in dataset_label("demo") and "not FER2013" in dataset_label("demo")
    assert dataset_label("fer2013") == "FER2013"


def test_training_batch_legend_says_whether_they_were_augmented(tmp_path):
    assert batches_label(True) == "training batches (augmented)"
    assert batches_label(False) == "training batches (not augmented)"
    assert batches_label({"a": True, "b": True}) == "training batches (augmented)"
    assert batches_label({"a": True, "b": False}) == "training batches (augmented unless the panel says not)"
    assert batches_label(None) == "training batches, as trained"
    assert _augmented({"training": {"augment": {"enabled": False}}}) is False
    assert _augmented({"training": {"augment": {"crop": 44}}}) is True and _augmented({}) is None
    h = pd.DataFrame({"epoch": [1, 2], "train_acc": [0.3, 0.5], "val_acc": [np.nan, 0.4]})
    plot_training_curves(
        {"base": [h, h], "no_aug": [h, h]}, tmp_path / "c.png", "demo", augmented={"base": True, "no_aug": False}
    )
    assert_png(tmp_path / "c.png")


def test_training_curves_plot_the_learning_curve_when_the_folds_recorded_one(tmp_path):
    """With `curve_images` the panels show the fixed held-out and trained-on subsets after every
    epoch (the over-fitting gap) and the whole fold as a point; without, the running batch accuracy."""
    plain = pd.DataFrame({"epoch": [1, 2], "train_acc": [0.3, 0.5], "val_acc": [np.nan, 0.4]})
    curve = plain.assign(curve_val_acc=[0.30, 0.38], curve_train_acc=[0.31, 0.45])
    assert not has_learning_curve([plain, plain]) and has_learning_curve([curve, curve])
    assert [c for c, _, _ in curve_series([curve], True)] == ["curve_val_acc", "curve_train_acc", "val_acc"]
    assert [c for c, _, _ in curve_series([plain], True)] == ["val_acc", "train_acc"]
    assert not has_learning_curve([curve, plain])  # one fold without: the plain panel
    plot_training_curves(
        {"base": [curve, curve], "no_aug": [plain, plain]},
        tmp_path / "c.png",
        "demo",
        augmented={"base": True, "no_aug": False},
    )
    assert_png(tmp_path / "c.png")
