"""The synthetic demo dataset: format, determinism, splits, and that expressions drive pixels."""

import csv
import gzip

import numpy as np
import pytest
from sklearn.linear_model import RidgeClassifier

from ferstudy import CLASS_NAMES, SPLIT_NAMES
from ferstudy.demo import DEFAULT_CLASS_WEIGHTS, make_demo_faces, write_demo_csv

N_CLASSES = len(CLASS_NAMES)
ANGRY, FEAR, HAPPY, SAD, SURPRISE, NEUTRAL = (
    CLASS_NAMES.index(c) for c in ("angry", "fear", "happy", "sad", "surprise", "neutral")
)


@pytest.fixture(scope="module")
def faces():
    """The default-size dataset, drawn once (about a second)."""
    return make_demo_faces(3000, seed=0)


@pytest.fixture(scope="module")
def class_means(faces):
    images, labels, usage = faces
    train = usage == "Training"
    return np.stack([images[train & (labels == c)].astype(float).mean(0) for c in range(N_CLASSES)])


def read_rows(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", newline="") as f:
        return list(csv.reader(f))


# --- arrays -------------------------------------------------------------------------------------


def test_arrays_have_fer_shapes_and_types(faces):
    images, labels, usage = faces
    assert images.shape == (3000, 48, 48) and images.dtype == np.uint8
    assert labels.shape == (3000,) and labels.dtype == np.uint8
    assert len(usage) == 3000 and set(usage) == set(SPLIT_NAMES)
    assert set(labels.tolist()) == set(range(N_CLASSES))
    # Real images use the whole range, not a constant or a clipped mess.
    assert 20 < images.std() < 90
    assert (images == 0).mean() < 0.05 and (images == 255).mean() < 0.05


def test_splits_are_80_10_10_with_every_class_in_every_split(faces):
    _, labels, usage = faces
    for name, fraction in zip(SPLIT_NAMES, (0.8, 0.1, 0.1)):
        in_split = usage == name
        assert in_split.mean() == pytest.approx(fraction, abs=0.01)
        assert set(labels[in_split].tolist()) == set(range(N_CLASSES)), name
    # FER2013 order: all Training rows, then PublicTest, then PrivateTest.
    order = np.array([SPLIT_NAMES.index(u) for u in usage])
    assert np.all(np.diff(order) >= 0)
    # ...but classes are shuffled within a split.
    assert np.count_nonzero(np.diff(labels[usage == "Training"])) > 1000


def test_default_class_frequencies_are_mildly_imbalanced(faces):
    _, labels, _ = faces
    freq = np.bincount(labels, minlength=N_CLASSES) / len(labels)
    np.testing.assert_allclose(freq, DEFAULT_CLASS_WEIGHTS, atol=0.002)
    assert freq.argmax() == HAPPY and freq.argmin() == CLASS_NAMES.index("disgust")
    assert freq.min() >= 0.05


def test_class_weights_are_honoured():
    _, labels, usage = make_demo_faces(140, seed=3, class_weights=[1] * N_CLASSES)
    assert np.bincount(labels).tolist() == [20] * N_CLASSES
    assert (usage == "PublicTest").sum() == (usage == "PrivateTest").sum() == 14


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_images": 10},  # too few for 3 splits x 7 classes
        {"n_images": 100, "class_weights": [1, 0, 1, 1, 1, 1, 1]},  # a class could not appear
        {"n_images": 100, "class_weights": [1, 1, 1]},  # wrong length
    ],
)
def test_bad_arguments_are_rejected(kwargs):
    with pytest.raises(ValueError):
        make_demo_faces(seed=0, **kwargs)


# --- CSV ----------------------------------------------------------------------------------------


def test_csv_is_fer2013_format(tmp_path):
    path = write_demo_csv(tmp_path / "demo.csv", n_images=210, seed=1)
    rows = read_rows(path)
    assert rows[0] == ["emotion", "pixels", "Usage"]
    assert len(rows) == 211
    images, labels, usage = make_demo_faces(210, seed=1)
    for i, (emotion, pixels, use) in enumerate(rows[1:]):
        values = [int(p) for p in pixels.split(" ")]
        assert len(values) == 48 * 48
        assert min(values) >= 0 and max(values) <= 255
        assert values == images[i].ravel().tolist()  # row-major, as the writer was given
        assert int(emotion) == labels[i] and use == usage[i]
    assert list(tmp_path.iterdir()) == [path]  # written atomically: no temp file left behind


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = write_demo_csv(tmp_path / "a.csv", n_images=70, seed=5).read_bytes()
    b = write_demo_csv(tmp_path / "b.csv", n_images=70, seed=5).read_bytes()
    c = write_demo_csv(tmp_path / "c.csv", n_images=70, seed=6).read_bytes()
    assert a == b
    assert a != c


def test_gzip_output_is_deterministic_and_holds_the_same_csv(tmp_path):
    plain = write_demo_csv(tmp_path / "demo.csv", n_images=70, seed=2).read_bytes()
    gz1 = write_demo_csv(tmp_path / "one" / "demo.csv.gz", n_images=70, seed=2).read_bytes()
    gz2 = write_demo_csv(tmp_path / "two" / "demo.csv.gz", n_images=70, seed=2).read_bytes()
    assert gz1 == gz2  # no timestamp or file name in the gzip header
    assert gzip.decompress(gz1) == plain


# --- the expression drives the pixels -----------------------------------------------------------


def test_linear_classifier_learns_emotions_but_not_trivially(faces):
    images, labels, usage = faces
    # 2x2 average pooling, per-image standardisation: a cheap pixel baseline (~0.1 s).
    x = images.astype(np.float32).reshape(-1, 24, 2, 24, 2).mean((2, 4)).reshape(len(images), -1)
    x = (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-6)
    train, test = usage == "Training", usage != "Training"
    model = RidgeClassifier(alpha=100.0).fit(x[train], labels[train])
    accuracy = model.score(x[test], labels[test])
    # Measured 0.60-0.66 over seeds 0-5 (majority class: 0.22; a small CNN reaches ~0.85).
    assert 0.5 < accuracy < 0.85


def test_surprise_opens_the_mouth(class_means):
    mouth = (slice(32, 38), slice(21, 27))
    # Measured about -45 grey levels: the dark inside of the open O.
    assert class_means[SURPRISE][mouth].mean() - class_means[NEUTRAL][mouth].mean() < -25


def test_surprise_and_fear_widen_the_eyes(class_means):
    eye = (slice(18, 24), slice(13, 20))
    wide = (class_means[SURPRISE] + class_means[FEAR])[eye].mean() / 2
    narrow = (class_means[NEUTRAL] + class_means[ANGRY])[eye].mean() / 2
    assert wide - narrow > 5  # measured 10-18: bright sclera shows


def test_happy_smiles_and_sad_frowns(class_means):
    diff = class_means[HAPPY] - class_means[SAD]
    # A smile's lowest point is the middle of the mouth; a frown arches up there instead.
    assert diff[36:40, 22:27].mean() < -5  # measured -10 to -16
    assert diff[33:36, 22:27].mean() > 3  # measured 6 to 11


def test_angry_brows_drop_and_sad_brows_lift_at_the_inner_ends(class_means):
    diff = class_means[ANGRY] - class_means[SAD]
    inner_low = np.r_[diff[16:19, 20:23], diff[16:19, 25:28]].mean()
    inner_high = np.r_[diff[11:14, 20:23], diff[11:14, 25:28]].mean()
    assert inner_low < -4  # measured about -8 to -12: angry brows are there
    assert inner_high > 8  # measured about +17 to +20: sad brows are there
