"""Ingest: real FER2013 rows, every malformed case, formats, folds, the HDF5 contract."""

import gzip
import hashlib
import subprocess
import sys

import numpy as np
import pytest

from ferstudy import CLASS_NAMES, SPLIT_NAMES
from ferstudy.csvdata import parse_fer_csv
from ferstudy.data import count_table, load_h5, prepare, sha256_of, write_summary
from ferstudy.errors import UserError

from conftest import REAL_CSV_GZ, require_real_data

# sha256 of images, labels, split, row (their bytes, in that order) as the whole-file parser before
# the chunked one (commit 7db30f1) returned them: for the real slice of conftest and the real file.
OLD_PARSE_SHA256_SLICE = "88cb23002a206a10e014dce4694df17b3110d72232c131fd8d8683c3fa99df0d"
OLD_PARSE_SHA256_FULL = "960b7396d5827dfbac10bc8c105f96bb6b45246699643801ea319e20dc26777f"
# (chunk_bytes, read_bytes, background): the defaults; many chunks, with lines split across the
# pieces read; every line longer than a chunk; the same without the reader thread.
CHUNKINGS = [(None, None, True), (20_000, 4096, True), (1000, 1500, True), (20_000, 4096, False)]


def parse_digest(arrays):
    h = hashlib.sha256()
    for a in arrays:
        h.update(a.tobytes())
    return h.hexdigest()


def parse_with(path, chunking):
    chunk_bytes, read_bytes, background = chunking
    kwargs = {k: v for k, v in (("chunk_bytes", chunk_bytes), ("read_bytes", read_bytes)) if v}
    return parse_fer_csv(path, background=background, **kwargs)


def independent_parse(lines):
    """The obvious slow parse, to check the vectorised one against."""
    labels, usage, pixels = [], [], []
    for line in lines[1:]:
        e, p, u = line.split(",")
        labels.append(int(e))
        usage.append(SPLIT_NAMES.index(u))
        pixels.append(np.array(p.split(), dtype=np.uint8).reshape(48, 48))
    return np.array(labels), np.array(usage), np.stack(pixels)


def test_real_slice_parses_exactly(real_slice_csv, real_slice_lines):
    images, labels, split, row = parse_fer_csv(real_slice_csv)
    exp_labels, exp_split, exp_images = independent_parse(real_slice_lines)
    assert images.shape == (900, 48, 48) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, exp_labels)
    np.testing.assert_array_equal(split, exp_split)
    np.testing.assert_array_equal(images, exp_images)
    np.testing.assert_array_equal(row, np.arange(900))
    assert np.bincount(split).tolist() == [600, 150, 150]


def test_prepare_writes_hdf5_contract(real_slice_csv, tmp_path):
    h5 = tmp_path / "d.h5"
    prepare(real_slice_csv, h5, folds=3, fold_seed=7)
    d = load_h5(h5)
    assert d.attrs["class_names"] == CLASS_NAMES and d.attrs["split_names"] == SPLIT_NAMES
    assert d.attrs["dataset"] == "fer2013" and d.attrs["source_sha256"] == sha256_of(real_slice_csv)
    assert d.attrs["folds"] == 3 and d.attrs["fold_seed"] == 7
    train = d.split == 0
    assert set(d.fold[train]) == {0, 1, 2} and (d.fold[~train] == -1).all()
    # Stratified: every fold's class counts are within 1 of a third of the class's Training count.
    for c in range(7):
        per_fold = np.bincount(d.fold[train & (d.labels == c)], minlength=3)
        assert per_fold.max() - per_fold.min() <= 1
    tr, held = d.fold_indices(1)
    assert len(np.intersect1d(tr, held)) == 0 and len(tr) + len(held) == 600
    # Same seed, same folds; another seed, other folds.
    prepare(real_slice_csv, tmp_path / "e.h5", folds=3, fold_seed=7)
    np.testing.assert_array_equal(load_h5(tmp_path / "e.h5").fold, d.fold)
    prepare(real_slice_csv, tmp_path / "f.h5", folds=3, fold_seed=8)
    assert (load_h5(tmp_path / "f.h5").fold != d.fold).any()


def test_accepts_gzip_crlf_bom_and_icml_layout(real_slice_lines, real_slice_csv, tmp_path):
    reference = parse_fer_csv(real_slice_csv)
    gz = tmp_path / "a.csv.gz"
    gz.write_bytes(gzip.compress(("\n".join(real_slice_lines) + "\n").encode()))
    crlf = tmp_path / "b.csv"
    crlf.write_bytes(b"\xef\xbb\xbf" + ("\r\n".join(real_slice_lines) + "\r\n").encode())
    icml = tmp_path / "icml_face_data.csv"
    rows = ["emotion, Usage, pixels"] + [
        f"{e},{u},{p}" for e, p, u in (line.split(",") for line in real_slice_lines[1:])
    ]
    icml.write_text("\n".join(rows))  # no final newline either
    for path in (gz, crlf, icml):
        got = parse_fer_csv(path)
        for a, b in zip(got, reference):
            np.testing.assert_array_equal(a, b)


def _corrupt(lines, index, new_line):
    out = list(lines)
    out[index] = new_line
    return out


def _pixels(lines, i):
    return lines[i].split(",")[1].split()


MALFORMED = {
    # name: (function of real lines -> lines, expected fragment of the message)
    "missing column": (lambda L: ["emotion,pixels"] + [",".join(line.split(",")[:2]) for line in L[1:]], "line 1"),
    "too few pixels": (
        lambda L: _corrupt(L, 5, "3," + " ".join(_pixels(L, 5)[:-1]) + ",Training"),
        "line 6: expected 2304 pixels, found 2303",
    ),
    "too many pixels": (
        lambda L: _corrupt(L, 5, "3," + " ".join(_pixels(L, 5) + ["7"]) + ",Training"),
        "line 6: expected 2304 pixels, found 2305",
    ),
    "non-integer pixel": (
        lambda L: _corrupt(L, 9, "3," + " ".join(["12.5"] + _pixels(L, 9)[1:]) + ",Training"),
        "line 10: pixel 1 '12.5' is not an integer",
    ),
    "negative pixel": (
        lambda L: _corrupt(L, 9, "3," + " ".join(["-4"] + _pixels(L, 9)[1:]) + ",Training"),
        "line 10: pixel 1 '-4' is not an integer",
    ),
    "out-of-range pixel": (
        lambda L: _corrupt(L, 12, "3," + " ".join(_pixels(L, 12)[:7] + ["256"] + _pixels(L, 12)[8:]) + ",Training"),
        "line 13: pixel 8 = 256 is out of range 0-255",
    ),
    "label outside 0-6": (
        lambda L: _corrupt(L, 3, "7," + L[3].split(",", 1)[1]),
        "line 4: emotion '7' is not a label 0-6",
    ),
    "unknown usage": (
        lambda L: _corrupt(L, 4, L[4].rsplit(",", 1)[0] + ",Validation"),
        "line 5: unknown Usage 'Validation'",
    ),
    "empty file": (lambda L: [], "the file is empty"),
    "header only": (lambda L: L[:1], "no data rows"),
    "no PrivateTest rows": (lambda L: [line for line in L if not line.endswith("PrivateTest")], "no PrivateTest rows"),
    "extra field": (lambda L: _corrupt(L, 2, L[2] + ",x"), "line 3: expected 3 comma-separated fields"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_input_fails_clearly_and_leaves_nothing(case, real_slice_lines, tmp_path):
    make, fragment = MALFORMED[case]
    bad = tmp_path / "bad.csv"
    lines = make(real_slice_lines)
    bad.write_text("\n".join(lines) + ("\n" if lines else ""))
    out = tmp_path / "out" / "d.h5"
    result = subprocess.run(
        [sys.executable, "-m", "ferstudy", "prepare", "--csv", str(bad), "--h5", str(out), "--folds", "3"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2, result.stderr
    assert str(bad) in result.stderr and fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and not any(out.parent.glob("*")) if out.parent.exists() else True


def test_several_errors_report_first_few_and_count(real_slice_lines, tmp_path):
    lines = list(real_slice_lines)
    for i in range(1, 21):
        lines[i] = "9," + lines[i].split(",", 1)[1]
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError) as err:
        parse_fer_csv(bad)
    msg = str(err.value)
    assert "20 malformed line(s)" in msg and "and 15 more" in msg and "line 2:" in msg and "line 7:" not in msg


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        parse_fer_csv(tmp_path / "nope.csv")


def test_summary_counts_and_faces(real_slice_csv, tmp_path):
    d = prepare(real_slice_csv, tmp_path / "d.h5", folds=3)
    write_summary(d, tmp_path / "s.csv", tmp_path / "s.md", tmp_path / "faces.png")
    table = count_table(d)
    assert table.loc["Training", "total"] == 600 and table.loc["total", "total"] == 900
    assert table.loc["PublicTest", CLASS_NAMES].sum() == 150
    assert "| Training |" in (tmp_path / "s.md").read_text()
    assert (tmp_path / "faces.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("chunking", CHUNKINGS)
def test_chunked_parse_is_byte_identical_to_the_old_parse(chunking, real_slice_csv, real_slice_lines, tmp_path):
    gz = tmp_path / "slice.csv.gz"
    gz.write_bytes(gzip.compress(("\n".join(real_slice_lines) + "\n").encode()))
    for path in (real_slice_csv, gz):
        got = parse_with(path, chunking)
        assert [a.dtype for a in got] == [np.uint8, np.uint8, np.uint8, np.int64]
        assert [a.shape for a in got] == [(900, 48, 48), (900,), (900,), (900,)]
        assert parse_digest(got) == OLD_PARSE_SHA256_SLICE, (path.name, chunking)


@pytest.mark.parametrize("chunking", CHUNKINGS[:3])
def test_bad_lines_in_later_chunks_keep_their_line_numbers(chunking, real_slice_lines, tmp_path):
    lines = list(real_slice_lines)
    p = _pixels(lines, 333)
    lines[333] = "3," + " ".join(p[:7] + ["256"] + p[8:]) + ",Training"  # file line 334
    lines[777] = lines[777].rsplit(",", 1)[0] + ",Validation"  # file line 778, a PrivateTest row
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError) as err:
        parse_with(bad, chunking)
    msg = str(err.value)
    assert (
        "2 malformed line(s): line 334: pixel 8 = 256 is out of range 0-255; "
        "line 778: unknown Usage 'Validation'" in msg
    ), msg
    # more bad lines than are reported, in many chunks: the first five in order, all counted
    lines = list(real_slice_lines)
    for i in range(100, 800, 100):
        lines[i] = "3," + " ".join(_pixels(lines, i)[:-1]) + ",Training"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError) as err:
        parse_with(bad, chunking)
    msg = str(err.value)
    assert "7 malformed line(s) (and 2 more bad lines): line 101: expected 2304 pixels, found 2303; line 201:" in msg
    assert "line 501: expected 2304 pixels, found 2303" in msg and "line 601" not in msg


@pytest.mark.parametrize("background", [True, False])
def test_gzip_members_padding_and_damage(background, real_slice_csv, real_slice_lines, tmp_path):
    text = ("\n".join(real_slice_lines) + "\n").encode()
    whole = gzip.compress(text)
    cases = {
        "members.csv.gz": gzip.compress(text[:3_000_001]) + gzip.compress(text[3_000_001:]),
        "padded.csv.gz": whole + b"\0" * 3000,
    }
    for name, content in cases.items():  # read as gzip.decompress reads them
        (tmp_path / name).write_bytes(content)
        got = parse_fer_csv(tmp_path / name, read_bytes=4096, background=background)
        assert parse_digest(got) == OLD_PARSE_SHA256_SLICE, name
    damaged = bytearray(whole)
    damaged[len(whole) // 2 : len(whole) // 2 + 64] = bytes(64)
    broken = {
        "truncated.csv.gz": whole[:-5000],
        "trailing.csv.gz": whole + b"not gzip",
        "damaged.csv.gz": bytes(damaged),
        "no_trailer.csv.gz": whole[:-4],
    }
    for name, content in broken.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UserError, match="not a readable gzip file"):
            parse_fer_csv(tmp_path / name, read_bytes=4096, background=background)


def test_broken_gzip_fails_clearly_and_leaves_nothing(real_slice_lines, tmp_path):
    bad = tmp_path / "bad.csv.gz"
    bad.write_bytes(gzip.compress(("\n".join(real_slice_lines) + "\n").encode())[:-5000])
    out = tmp_path / "out" / "d.h5"
    result = subprocess.run(
        [sys.executable, "-m", "ferstudy", "prepare", "--csv", str(bad), "--h5", str(out), "--folds", "3"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "not a readable gzip file" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))


@pytest.mark.slow
def test_full_real_fer2013_exact_counts(tmp_path):
    require_real_data()
    d = prepare(REAL_CSV_GZ, tmp_path / "fer.h5", folds=5)
    assert parse_digest((d.images, d.labels, d.split, d.row)) == OLD_PARSE_SHA256_FULL
    assert d.attrs["source_sha256"] == sha256_of(REAL_CSV_GZ)
    assert np.bincount(d.split).tolist() == [28709, 3589, 3589]
    assert np.bincount(d.labels).tolist() == [4953, 547, 5121, 8989, 6077, 4002, 6198]
    table = count_table(d)
    assert table.loc["Training", CLASS_NAMES].tolist() == [3995, 436, 4097, 7215, 4830, 3171, 4965]
    assert table.loc["PrivateTest", CLASS_NAMES].tolist() == [491, 55, 528, 879, 594, 416, 626]


def test_long_number_outside_pixels_blames_only_its_own_line(real_slice_lines, tmp_path):
    lines = list(real_slice_lines)
    lines[7] = "1234," + lines[7].split(",", 1)[1]
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError) as err:
        parse_fer_csv(bad)
    assert "1 malformed line(s)" in str(err.value) and "line 8: emotion '1234' is not a label 0-6" in str(err.value)


@pytest.mark.slow
def test_full_real_fer2013_ingest_memory_is_bounded(tmp_path):
    """`ferstudy prepare` of the real .gz in a fresh process peaks far below 1 GB (the whole-file
    parse peaked at 3.4 GB): the text is parsed in chunks, only the images are kept."""
    from ferstudy.bench.ingest import ingest_in_subprocess

    require_real_data()
    r = ingest_in_subprocess(REAL_CSV_GZ, tmp_path / "fer.h5", folds=5)
    assert r["rows"] == 35887
    assert r["rss_after_import_mb"] < r["peak_rss_mb"] <= 1000, r


# ---------------------------------------------------------------- crafted HDF5 files (issue 24)
def _valid_h5(path, folds=3):
    from ferstudy.data import write_h5

    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(7, dtype=np.uint8), 12)
    split = np.repeat(np.array([0, 1, 2], dtype=np.uint8), [56, 14, 14])
    images = rng.integers(0, 256, (len(labels), 48, 48), dtype=np.uint8)
    write_h5(path, images, labels, split, np.arange(len(labels)), folds, 0, "demo", "x.csv", "ab" * 32)
    return path


def _replace(name, **kw):
    def change(f):
        del f[name]
        f.create_dataset(name, **kw)

    return change


def _set(name, index, value):
    def change(f):
        f[name][index] = value

    return change


CRAFTED_H5 = {
    "not HDF5": (None, "not a readable HDF5 file"),
    "images a group": (lambda f: (f.__delitem__("images"), f.create_group("images")), "dataset 'images': a group"),
    "labels a group": (lambda f: (f.__delitem__("labels"), f.create_group("labels")), "dataset 'labels': a group"),
    "fold missing": (lambda f: f.__delitem__("fold"), "missing datasets: fold"),
    "label 200": (_set("labels", 5, 200), "dataset 'labels': value 200 at index 5 is outside 0-6"),
    "split 9": (_set("split", 3, 9), "dataset 'split': value 9 at index 3 is outside 0-2"),
    "negative row": (_set("row", 2, -4), "dataset 'row': value -4 at index 2 is outside 0-any"),
    "fold 5 of 3": (_set("fold", 0, 5), "dataset 'fold': value 5 at index 0 is outside -1-2"),
    "a test row in a fold": (_set("fold", 80, 1), "dataset 'fold': index 80 has fold 1 in split PrivateTest"),
    "attribute folds 7": (lambda f: f.attrs.__setitem__("folds", 7), "fold 3 of the 7 the attribute folds declares"),
    "attribute folds 2.5": (lambda f: f.attrs.__setitem__("folds", 2.5), "attribute folds is 2.5, expected an integer"),
    "attribute folds missing": (lambda f: f.attrs.__delitem__("folds"), "attributes missing: folds"),
    "class names missing": (lambda f: f.attrs.__delitem__("class_names"), "attributes missing: class_names"),
    "class names not JSON": (lambda f: f.attrs.__setitem__("class_names", "{oops"), "attribute class_names is None"),
    "1e9 images declared": (
        _replace("images", shape=(10**9, 48, 48), dtype=np.uint8),
        "dataset 'images': 1,000,000,000 rows declared, more than the 1,000,000",
    ),
    "float64 pixels x1000": (
        lambda f: _replace("images", data=f["images"][()] * 1000.0)(f),
        "dataset 'images': dtype float64, expected uint8 pixels",
    ),
    "32x32 images": (
        _replace("images", data=np.zeros((84, 32, 32), np.uint8)),
        "shape (84, 32, 32), expected (N, 48, 48)",
    ),
    "labels too short": (
        _replace("labels", data=np.zeros(10, np.uint8)),
        "dataset 'labels': 10 rows, but 'images' has 84",
    ),
    "float labels": (_replace("labels", data=np.zeros(84)), "dataset 'labels': dtype float64, expected integers"),
    "no PrivateTest": (
        lambda f: _replace("split", data=np.minimum(f["split"][()], 1))(f),
        "dataset 'split' has no PrivateTest rows",
    ),
}


@pytest.mark.parametrize("case", list(CRAFTED_H5))
def test_a_crafted_hdf5_is_refused_in_one_line_naming_the_dataset(case, tmp_path):
    import h5py

    change, fragment = CRAFTED_H5[case]
    path = tmp_path / "dataset.h5"
    if change is None:
        path.write_text("emotion,pixels,Usage\n")
    else:
        _valid_h5(path)
        with h5py.File(path, "r+") as f:
            change(f)
    with pytest.raises(UserError) as err:
        load_h5(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and fragment in message and "\n" not in message, message
    assert "ferstudy prepare" in message


def test_a_valid_hdf5_reads_back_with_the_contracts_dtypes(tmp_path):
    data = load_h5(_valid_h5(tmp_path / "d.h5"))
    assert [a.dtype for a in (data.images, data.labels, data.split, data.row, data.fold)] == [
        np.uint8,
        np.uint8,
        np.uint8,
        np.int64,
        np.int8,
    ]
    assert data.attrs["folds"] == 3 and data.attrs["class_names"] == CLASS_NAMES


@pytest.mark.parametrize("command", ["train", "figures", "aggregate"])
def test_every_command_that_reads_the_hdf5_refuses_a_crafted_one(command, tmp_path):
    import h5py

    path = _valid_h5(tmp_path / "my data.h5")
    with h5py.File(path, "r+") as f:
        f["labels"][0] = 200
    import yaml
    from test_train import tiny_run_config

    (tmp_path / "rc.yaml").write_text(yaml.safe_dump(tiny_run_config(epochs=1)))
    args = {
        "train": [
            "--run-config",
            tmp_path / "rc.yaml",
            "--fold",
            "0",
            "--out-dir",
            tmp_path / "o",
            "--checkpoint",
            tmp_path / "c.pt",
        ],
        "figures": ["--results", tmp_path, "--archs", "x", "--baseline", "x", "--out-dir", tmp_path / "f"],
        "aggregate": [
            "--metrics",
            tmp_path / "m.json",
            "--baseline",
            "x",
            "--summary",
            tmp_path / "s.csv",
            "--ablation",
            tmp_path / "a.csv",
            "--cost",
            tmp_path / "c.csv",
        ],
    }[command]
    proc = subprocess.run(
        [sys.executable, "-m", "ferstudy", command, "--h5", path, *args], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"ferstudy: error: {path}: dataset 'labels': value 200 at index 0" in proc.stderr


@pytest.mark.parametrize(
    "text, line",
    [
        (b"emotion,pixels,Usage\n0," + b"1 " * (1 << 20), 2),
        (b"emotion,pixels,Usage\n" + b"0,1 2,Training\n" * 3 + b"9" * (3 << 20), 5),
        (b"emotion" * (1 << 18), 1),
    ],
)
def test_a_line_without_end_is_refused_before_it_fills_memory(text, line, tmp_path):
    """A one-line 1.5 GB gzip made prepare read it whole (MemoryError); any text of more than
    MAX_LINE_BYTES without a line break is refused, naming its line."""
    path = tmp_path / "oneline.csv.gz"
    path.write_bytes(gzip.compress(text, compresslevel=1))
    with pytest.raises(
        UserError, match=rf"oneline.csv.gz: line {line}: more than 1,048,576 bytes without a line break"
    ):
        parse_fer_csv(path)


def test_prepare_under_a_file_size_limit_is_one_line_and_leaves_nothing(real_slice_csv, tmp_path):
    """`ulimit -f` while prepare writes the HDF5: h5py's RuntimeError traceback before; now one line."""
    import resource

    out = tmp_path / "out" / "dataset.h5"
    proc = subprocess.run(
        [sys.executable, "-m", "ferstudy", "prepare", "--csv", str(real_slice_csv), "--h5", str(out), "--folds", "3"],
        capture_output=True,
        text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (500_000, 500_000)),
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"ferstudy: error: {out}: writing it failed (File too large); nothing was written" in proc.stderr
    assert list(out.parent.iterdir()) == []


def test_prepare_never_writes_over_its_csv(real_slice_csv, tmp_path):
    import shutil

    csv = shutil.copy(real_slice_csv, tmp_path / "fer.csv")
    before = csv.read_bytes()
    for option in ("--h5", "--summary-csv"):
        args = {"--h5": tmp_path / "d.h5", option: csv}
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "ferstudy",
                "prepare",
                "--csv",
                str(csv),
                *(str(a) for kv in args.items() for a in kv),
            ],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 2 and f"{csv}: this output would replace the input {csv}" in proc.stderr
    assert csv.read_bytes() == before


def test_prepare_writes_each_summary_file_it_is_asked_for(real_slice_csv, tmp_path):
    """`--summary-md` alone writes the markdown table and nothing else (it used to need --summary-csv)."""
    md = tmp_path / "counts.md"
    proc = subprocess.run(
        [sys.executable, "-m", "ferstudy", "prepare", "--csv", str(real_slice_csv), "--h5", str(tmp_path / "d.h5")]
        + ["--summary-md", str(md)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert md.read_text().startswith("Dataset: **fer2013**") and "| Training |" in md.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counts.md", "d.h5"]
