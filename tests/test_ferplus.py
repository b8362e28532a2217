"""FER+ as a second opinion (ferstudy/ferplus.py) and the report's cross-dataset and FER+ sections.

Scoring runs on a real slice: the 900 rows of conftest's FER2013 slice (600 Training, 150
PublicTest, 150 PrivateTest) and the same rows of the real FER+ fer2013new.csv (never committed:
read from ../shared/data)."""

import csv
import gzip
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REAL_CSV_GZ, REPO, SLICE_RANGES, TINY_SNAKEMAKE, require_real_file
from ferstudy import CLASS_NAMES, SPLIT_NAMES, ferplus, study
from ferstudy.cli import main
from ferstudy.config import resolve_config
from ferstudy.data import load_h5, prepare, write_h5
from ferstudy.errors import UserError
from ferstudy.io import write_json
from ferstudy.report.text import pct, pp
from ferstudy.train import write_predictions

REAL_FERPLUS = Path(os.environ.get("FERSTUDY_REAL_FERPLUS", REAL_CSV_GZ.parent / "fer2013new.csv"))
NAME_OF_VOTE = {
    "neutral": "neutral",
    "happiness": "happy",
    "surprise": "surprise",
    "sadness": "sad",
    "anger": "angry",
    "disgust": "disgust",
    "fear": "fear",
}


# ---------------------------------------------------------------- the majority rule on made-up votes


def votes_row(**v):
    return [v.get(c, 0) for c in ferplus.VOTE_COLUMNS]


def test_majority_maps_every_emotion_and_excludes_ties_nf_unknown_contempt():
    rows = [votes_row(**{c: 10}) for c in NAME_OF_VOTE]  # one clear vote per FER+ emotion
    rows += [
        votes_row(neutral=3, sadness=2, anger=2, fear=2, unknown=1),  # a plurality, not a majority: neutral
        votes_row(happiness=4, surprise=4, unknown=2),  # tie between two emotions
        votes_row(anger=4, contempt=4, disgust=2),  # tie with contempt: still a tie
        votes_row(NF=6, neutral=4),  # not a face
        votes_row(contempt=5, anger=3, disgust=2),  # contempt
        votes_row(unknown=7, fear=3),  # unknown
        votes_row(NF=10),  # dropped by FER+ (empty image name)
        votes_row(),  # no votes at all: a tie of zeros
    ]
    dropped = np.zeros(len(rows), bool)
    dropped[-2] = True
    labels, reasons = ferplus.majority_labels(np.array(rows), dropped)
    expected = [CLASS_NAMES.index(NAME_OF_VOTE[c]) for c in NAME_OF_VOTE]
    assert list(labels[:7]) == expected == [6, 3, 5, 4, 0, 1, 2]
    assert list(reasons[:7]) == [""] * 7
    assert labels[7] == CLASS_NAMES.index("neutral") and reasons[7] == ""
    assert list(reasons[8:]) == ["tie", "tie", "not_a_face", "contempt", "unknown", "dropped", "tie"]
    assert (labels[8:] == -1).all()


# ---------------------------------------------------------------- real slices


def require_real_ferplus():
    require_real_file(REAL_FERPLUS, "FER+", "FERSTUDY_REAL_FERPLUS")


@pytest.fixture(scope="module")
def ferplus_slice_lines():
    """Header + the FER+ lines of the rows in conftest's FER2013 slice, in the same order."""
    require_real_ferplus()
    lines = REAL_FERPLUS.read_text().splitlines()
    body = lines[1:]
    return [lines[0]] + [line for lo, hi in SLICE_RANGES.values() for line in body[lo:hi]]


@pytest.fixture(scope="module")
def sliced(tmp_path_factory, real_slice_csv, ferplus_slice_lines):
    """The prepared real FER2013 slice and its FER+ lines in a directory whose name has a space."""
    root = tmp_path_factory.mktemp("ferplus") / "My Data"
    root.mkdir()
    h5 = root / "dataset.h5"
    prepare(real_slice_csv, h5, folds=2)
    fp = root / "fer plus.csv"
    fp.write_text("\n".join(ferplus_slice_lines) + "\n")
    return root, h5, fp


def expected_crowd(lines):
    """The crowd's label per data line, computed line by line from the text (-1 and the reason when excluded)."""
    reader = csv.reader(lines)
    header = next(reader)
    out = []
    for parts in reader:
        votes = dict(zip(header[2:], map(int, parts[2:])))
        top = max(votes.values())
        winners = [k for k, v in votes.items() if v == top]
        if not parts[1].strip():
            out.append((-1, "dropped"))
        elif len(winners) > 1:
            out.append((-1, "tie"))
        elif winners[0] in ("NF", "unknown", "contempt"):
            out.append((-1, {"NF": "not_a_face"}.get(winners[0], winners[0])))
        else:
            out.append((CLASS_NAMES.index(NAME_OF_VOTE[winners[0]]), ""))
    return out


def write_split_predictions(path, rows, labels, preds, rng=None):
    """A predictions CSV whose argmax is `preds`, in a shuffled row order when `rng` is given."""
    order = np.arange(len(rows)) if rng is None else rng.permutation(len(rows))
    probs = np.full((len(rows), 7), 0.05)
    probs[np.arange(len(rows)), preds] = 0.7
    write_predictions(path, rows[order], labels[order], probs[order])


def test_scores_follow_the_crowd_line_by_line_and_align_by_source_row(sliced, ferplus_slice_lines, tmp_path):
    _, h5, fp = sliced
    data = load_h5(h5)
    crowd = expected_crowd(ferplus_slice_lines)
    label_of = {int(r): int(lab) for r, lab in zip(data.row, data.labels)}
    rng = np.random.default_rng(0)
    files = {}
    for key, split in (("public", "PublicTest"), ("private", "PrivateTest")):
        idx = data.indices(split)
        rows, labels = data.row[idx], data.labels[idx].astype(int)
        # A model that says what the crowd says where it has a label, and a wrong class elsewhere.
        preds = np.array([crowd[r][0] if crowd[r][0] >= 0 else (label_of[r] + 1) % 7 for r in rows])
        files[key] = tmp_path / f"predictions_{key}.csv"
        write_split_predictions(files[key], rows, labels, preds, rng)  # rows shuffled: only `row` aligns them
    result = ferplus.score(h5, files["public"], files["private"], fp)
    for key, (lo, hi) in (("public", SLICE_RANGES["PublicTest"]), ("private", SLICE_RANGES["PrivateTest"])):
        first = SLICE_RANGES["Training"][1] + (
            0 if key == "public" else SLICE_RANGES["PublicTest"][1] - SLICE_RANGES["PublicTest"][0]
        )
        mine = crowd[first : first + hi - lo]
        s = result[key]
        scored = [(r, c) for r, (c, _) in enumerate(mine, start=first) if c >= 0]
        assert s["faces"] == hi - lo and s["scored"] == len(scored)
        assert s["excluded"] == {why: sum(w == why for _, w in mine) for why in ferplus.REASONS}
        assert s["accuracy_ferplus"] == 1.0
        disagree = [(r, c) for r, c in scored if c != label_of[r]]  # every one is an "error" the crowd backs
        assert s["errors"] == s["crowd_agrees"] == len(disagree) > 10
        assert s["label_agreement"] == pytest.approx(1 - len(disagree) / len(scored))
        assert s["accuracy_fer2013"] == pytest.approx(1 - len(disagree) / len(scored))
        for k, name in enumerate(CLASS_NAMES):
            assert s["per_class"][name]["errors"] == sum(label_of[r] == k for r, _ in disagree)
    assert result["private"]["excluded"]["tie"] > 0  # the slice has ties: the rule is exercised on real rows

    # The same faces in another order in the HDF5 (row no longer = position) score the same.
    perm = np.random.default_rng(1).permutation(len(data.row))
    h5b = tmp_path / "permuted.h5"
    write_h5(
        h5b,
        data.images[perm],
        data.labels[perm],
        data.split[perm],
        data.row[perm],
        2,
        0,
        "fer2013",
        data.attrs["source_path"],
        data.attrs["source_sha256"],
    )
    again = ferplus.score(h5b, files["public"], files["private"], fp)
    assert {k: again[k] for k in ("public", "private")} == {k: result[k] for k in ("public", "private")}


def test_plain_and_gzip_paths_with_spaces_give_the_same_scores(sliced, tmp_path):
    root, h5, fp = sliced
    data = load_h5(h5)
    files = {}
    for key, split in (("public", "PublicTest"), ("private", "PrivateTest")):
        idx = data.indices(split)
        files[key] = tmp_path / f"my preds {key}.csv"
        write_split_predictions(files[key], data.row[idx], data.labels[idx], data.labels[idx].astype(int))
    gz = root / "fer plus copy.csv.gz"
    gz.write_bytes(gzip.compress(fp.read_bytes()))
    plain = ferplus.score(h5, files["public"], files["private"], fp)
    packed = ferplus.score(h5, files["public"], files["private"], gz)
    assert {k: plain[k] for k in ("public", "private")} == {k: packed[k] for k in ("public", "private")}
    # The model repeats FER2013's labels: no errors, and the crowd's accuracy is how often it agrees with them.
    s = plain["private"]
    assert s["errors"] == 0 and s["accuracy_fer2013"] == 1.0
    assert s["accuracy_ferplus"] == s["label_agreement"] < 0.95
    out = tmp_path / "out dir" / "ferplus.json"
    assert (
        main(
            [
                "ferplus",
                "--h5",
                str(h5),
                "--public",
                str(files["public"]),
                "--private",
                str(files["private"]),
                "--ferplus",
                str(gz),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    written = json.loads(out.read_text())
    assert written["private"] == s and written["ferplus"] == str(gz)


@pytest.mark.parametrize(
    "damage, message",
    [
        ("drop_last", r"fer plus bad\.csv: 899 data rows, but .*fer2013_slice\.csv has 900: FER\+"),
        (
            "usage",
            r"fer plus bad\.csv: line 652: Usage 'Training', but line 652 of .*fer2013_slice\.csv is 'PublicTest'",
        ),
        ("header", r"fer plus bad\.csv: line 1: not a FER\+ header \(missing column\(s\) fear"),
        ("votes", r"fer plus bad\.csv: line 5: anger votes 'x' is not a count"),
    ],
)
def test_a_misaligned_or_broken_ferplus_file_is_one_clear_error(
    sliced, ferplus_slice_lines, tmp_path, capsys, damage, message
):
    import re

    _, h5, _ = sliced
    lines = list(ferplus_slice_lines)
    if damage == "drop_last":
        lines = lines[:-1]
    elif damage == "usage":
        assert lines[651].startswith("PublicTest,")  # data row 650: the 51st PublicTest row of the slice
        lines[651] = lines[651].replace("PublicTest", "Training", 1)
    elif damage == "header":
        lines[0] = lines[0].replace(",fear,", ",fright,")
    else:
        parts = lines[4].split(",")
        parts[6] = "x"
        lines[4] = ",".join(parts)
    bad = tmp_path / "fer plus bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    data = load_h5(h5)
    preds = tmp_path / "p.csv"
    idx = data.indices("PublicTest")
    write_split_predictions(preds, data.row[idx], data.labels[idx], data.labels[idx].astype(int))
    with pytest.raises(UserError, match=message):
        ferplus.score(h5, preds, preds, bad)
    assert (
        main(
            [
                "ferplus",
                "--h5",
                str(h5),
                "--public",
                str(preds),
                "--private",
                str(preds),
                "--ferplus",
                str(bad),
                "--out",
                str(tmp_path / "o.json"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ferstudy: error: ") and re.search(message, err[0])
    assert not (tmp_path / "o.json").exists()


def test_predictions_that_do_not_match_the_data_or_demo_data_are_refused(sliced, tmp_path):
    _, h5, fp = sliced
    data = load_h5(h5)
    pub, prv = data.indices("PublicTest"), data.indices("PrivateTest")
    good, swapped = tmp_path / "good.csv", tmp_path / "swapped.csv"
    write_split_predictions(good, data.row[pub], data.labels[pub], data.labels[pub].astype(int))
    write_split_predictions(swapped, data.row[prv], data.labels[prv], data.labels[prv].astype(int))
    with pytest.raises(UserError, match=r"good\.csv: line 2: row \d+ is not a PrivateTest face"):
        ferplus.score(h5, good, good, fp)  # PublicTest rows given as PrivateTest's
    ferplus.score(h5, good, swapped, fp)
    demo = tmp_path / "demo.h5"
    write_h5(demo, data.images, data.labels, data.split, data.row, 2, 0, "demo", "results/data/demo.csv", "0" * 64)
    with pytest.raises(UserError, match="built-in demo data; FER\\+ relabels FER2013 only"):
        ferplus.score(demo, good, swapped, fp)


def test_config_key_data_ferplus(tmp_path):
    raw = yaml.safe_load((REPO / "ferstudy" / "defaults.yaml").read_text())
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "fer2013.csv").write_text("emotion,pixels,Usage\n")
    (tmp_path / "My Data").mkdir()
    (tmp_path / "My Data" / "fer plus.csv.gz").write_bytes(b"")
    raw["data"]["ferplus"] = "My Data/fer plus.csv.gz"
    assert resolve_config(raw, workdir=tmp_path)["data"]["ferplus"] == "My Data/fer plus.csv.gz"
    raw["data"]["ferplus"] = "My Data/missing.csv"
    with pytest.raises(UserError, match="config key data.ferplus: My Data/missing.csv does not exist"):
        resolve_config(raw, workdir=tmp_path)
    raw["data"]["ferplus"] = "My Data/fer plus.csv.gz"
    raw["data"]["csv"] = "demo"
    with pytest.raises(
        UserError, match="config key data.ferplus: FER\\+ relabels FER2013, but this study runs on the built-in demo"
    ):
        resolve_config(raw, workdir=tmp_path)
    raw["data"]["ferplus"] = 3
    with pytest.raises(UserError, match="data.ferplus"):
        resolve_config(raw, workdir=tmp_path)


# ---------------------------------------------------------------- the report


@pytest.fixture(scope="module")
def report_results(tmp_path_factory):
    """test_report's consistent fake results/ (real writers) of a FER2013 study."""
    import test_report as tr

    with tr.fast_writers():
        cfg = tr.study_config("demo")
        return tr.build_results(tmp_path_factory.mktemp("fp_report"), cfg, tr.default_scores(cfg), dataset="fer2013")


def make_report(results, tmp_path):
    """(ctx, the main report and its appendix, the main report)."""
    import test_report as tr

    with tr.fast_writers():
        ctx, text, out = tr.make_report(results, tmp_path)
    return ctx, text + "\n" + tr.appendix_of(out), text


def made_up_ferplus(h5, path, rng, predictions=()):
    """A FER+ file aligned with the HDF5's rows: Usage from its split, votes that mostly back the FER2013
    label, some another emotion (often the model's wrong prediction), some ties, not-a-face, unknown,
    contempt and dropped rows."""
    import pandas as pd

    data = load_h5(h5)
    pred_of = {}
    for p in predictions:
        t = pd.read_csv(p)
        pred_of.update(zip(t["row"], t["pred"]))
    n = int(data.row.max()) + 1
    label_of = np.zeros(n, int)
    label_of[data.row] = data.labels
    usage = np.empty(n, object)
    usage[data.row] = np.array(SPLIT_NAMES, object)[data.split]
    col_of = {k: ferplus.VOTE_COLUMNS.index(c) for c, k in ferplus.TO_FER2013.items()}
    lines = ["Usage,Image name," + ",".join(ferplus.VOTE_COLUMNS)]
    for r in range(n):
        v = np.zeros(10, int)
        u = rng.random()
        name = f"fer{r:07d}.png"
        if u < 0.6:
            v[col_of[label_of[r]]] = 7
            v[8] = 3
        elif u < 0.85:
            other = pred_of.get(r, label_of[r])
            if other == label_of[r] or rng.random() < 0.3:
                other = (label_of[r] + 1 + rng.integers(6)) % 7
            v[col_of[other]] = 6
            v[col_of[label_of[r]]] = 4
        elif u < 0.9:
            v[col_of[label_of[r]]], v[col_of[(label_of[r] + 1) % 7]] = 5, 5
        elif u < 0.93:
            v[9] = 10
        elif u < 0.96:
            v[8], v[0] = 6, 4
        elif u < 0.98:
            v[7], v[4] = 6, 4
        else:
            v[9], name = 10, ""
        lines.append(f"{usage[r]},{name}," + ",".join(map(str, v)))
    path.write_text("\n".join(lines) + "\n")


def test_report_section_on_ferplus_carries_its_numbers(report_results, tmp_path):
    r = tmp_path / "results"
    shutil.copytree(report_results, r)
    f = r / "final"
    ctx, text, main_text = make_report(r, tmp_path)
    assert ctx["ferplus"] is None and "FER+" not in main_text and "Not scored: `data.ferplus`" in text

    made_up_ferplus(
        r / "data" / "dataset.h5",
        tmp_path / "fer2013new.csv",
        np.random.default_rng(3),
        [f / "predictions_public.csv", f / "predictions_private.csv"],
    )
    scores = ferplus.score(
        r / "data" / "dataset.h5",
        f / "predictions_public.csv",
        f / "predictions_private.csv",
        tmp_path / "fer2013new.csv",
    )
    write_json(f / "ferplus.json", scores)
    ctx, text, main_text = make_report(r, tmp_path)
    assert ctx["ferplus"] == json.loads((f / "ferplus.json").read_text())
    prv, pub = scores["private"], scores["public"]
    assert prv["errors"] > 0 and 0 < prv["crowd_agrees"] < prv["errors"] and sum(prv["excluded"].values()) > 0
    ex = prv["excluded"]
    assert (
        f"| PrivateTest | {prv['faces']:,} | {prv['scored']:,} | {ex['dropped']} | {ex['tie']} | "
        f"{ex['not_a_face']} | {ex['unknown']} | {ex['contempt']} | {pct(prv['accuracy_fer2013'])} | "
        f"{pct(prv['accuracy_ferplus'])} | {pct(prv['label_agreement'])} |"
    ) in text
    for c in CLASS_NAMES:
        a, b = pub["per_class"][c], prv["per_class"][c]
        cells = [
            f"{x['crowd_agrees']} of {x['errors']}"
            + (f" ({pct(x['crowd_agrees'] / x['errors'], 0)})" if x["errors"] else "")
            for x in (a, b)
        ]
        assert f"| {c} | {cells[0]} | {cells[1]} |" in text
    assert (
        f"Of its {prv['errors']:,} PrivateTest errors against FER2013 the crowd sides with the model on "
        f"{prv['crowd_agrees']:,} ({pct(prv['crowd_agrees'] / prv['errors'], 0)})"
    ) in text
    more = "more" if prv["accuracy_ferplus"] > prv["label_agreement"] else "less"
    assert (
        f"On the labelled PrivateTest faces the FER2013 label is the crowd's for {pct(prv['label_agreement'])} and "
        f"the final model's prediction for {pct(prv['accuracy_ferplus'])}: the model agrees with the crowd {more} "
        f"often than FER2013's own labels do."
    ) in text
    assert f"the model agrees with the crowd on {pct(prv['accuracy_ferplus'])} of the" in main_text  # section 6
    assert "likely label noise" in text and "read only after PrivateTest had been predicted" in text
    assert "it learnt those labels" not in text

    # A ferplus.json of another final model's predictions is left out.
    scores["predictions_sha256"]["private"] = "0" * 64
    write_json(f / "ferplus.json", scores)
    ctx, text, main_text = make_report(r, tmp_path)
    assert ctx["ferplus"] is None and "Not scored" in text and "FER+" not in main_text


def test_report_tables_the_extra_test_sets_with_recall_per_emotion(report_results, tmp_path):
    r = tmp_path / "results"
    shutil.copytree(report_results, r)
    f = r / "final"
    import pandas as pd

    # Another dataset: the PrivateTest faces without disgust, half of the happy ones now predicted sad.
    table = pd.read_csv(f / "predictions_private.csv")
    table = table[table["label"] != CLASS_NAMES.index("disgust")].copy()
    happy = table.index[table["label"] == CLASS_NAMES.index("happy")][::2]
    table.loc[happy, "p_sad"] = 2.0
    table.loc[happy, "pred"] = CLASS_NAMES.index("sad")
    table.to_csv(tmp_path / "other.csv", index=False)
    write_json(
        f / "metrics.json",
        study.evaluate_final(
            f / "predictions_public.csv", f / "predictions_private.csv", extra={"other_faces": tmp_path / "other.csv"}
        ),
    )
    ctx, text, _ = make_report(r, tmp_path)
    m, prv = ctx["final"]["extra"]["other_faces"], ctx["final"]["private"]
    assert m["per_class"]["disgust"]["support"] == 0 and m["accuracy"] < prv["accuracy"]
    recalls = ["–" if m["per_class"][c]["support"] == 0 else pct(m["per_class"][c]["recall"], 0) for c in CLASS_NAMES]
    assert (
        f"| `other_faces` | {m['n']:,} | {pct(m['accuracy'])} | {pct(m['balanced_accuracy'])} | "
        + " | ".join(recalls)
        + " |"
    ) in text
    assert "| PrivateTest (FER2013) | " + f"{prv['n']:,} | {pct(prv['accuracy'])}" in text
    drop = pp(100 * (m["accuracy"] - prv["accuracy"]))
    assert f"accuracy is lower on `other_faces` ({drop})" in text
    fall = 100 * (m["per_class"]["happy"]["recall"] - prv["per_class"]["happy"]["recall"])
    assert f"The largest fall in recall is happy on `other_faces` ({pp(fall)})" in text
    assert "domain shift" in text and "labelling protocol" in text


# ---------------------------------------------------------------- the workflow


def test_ferplus_scores_is_planned_only_when_configured(tmp_path):
    """With data.ferplus, rule ferplus_scores writes results/final/ferplus.json and the report reads it;
    without, neither the rule nor the file is planned."""
    from test_workflow import fake_real_data, planned_jobs

    fake_real_data(tmp_path, "data/fer2013.csv")
    (tmp_path / "FER plus").mkdir()
    (tmp_path / "FER plus" / "fer2013new.csv").write_text("Usage\n")
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"data": {"csv": "data/fer2013.csv", "ferplus": "FER plus/fer2013new.csv"}}))
    base = TINY_SNAKEMAKE
    runs = {}
    for name, files in (("with", [str(mine)]), ("without", [])):
        override = [] if files else ["--config", "data={csv: data/fer2013.csv}"]
        out = subprocess.run(
            base + files + ["--cores", "1", "-n", "-p", *override], cwd=tmp_path, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr[-3000:]
        runs[name] = out.stdout + out.stderr
    assert [r for r, _ in planned_jobs(runs["with"])].count("ferplus_scores") == 1
    assert "--ferplus 'FER plus/fer2013new.csv' --out results/final/ferplus.json" in runs["with"]
    report_inputs = runs["with"].split("rule report:")[1].split("output:")[0]
    assert "results/final/ferplus.json" in report_inputs
    assert "ferplus_scores" not in {r for r, _ in planned_jobs(runs["without"])}
    assert "ferplus.json" not in runs["without"] and "rule report:" in runs["without"]
