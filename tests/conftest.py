"""Shared fixtures: a small slice of the real FER2013 (never committed: read from ../shared/data)."""

import gzip
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_CSV_GZ = Path(os.environ.get("FERSTUDY_REAL_CSV", REPO.parent / "shared" / "data" / "fer2013.csv.gz"))

# First data lines of each split in the original file order (Training, then PublicTest, PrivateTest).
# The tiny study's Snakemake command (tests/configs/tiny.yaml over the shipped config/config.yaml);
# callers add their own config files and options.
TINY = REPO / "tests" / "configs" / "tiny.yaml"
TINY_SNAKEMAKE = [
    sys.executable,
    "-m",
    "snakemake",
    "--snakefile",
    str(REPO / "workflow" / "Snakefile"),
    "--configfile",
    str(REPO / "config" / "config.yaml"),
    str(TINY),
]
SLICE_RANGES = {"Training": (0, 600), "PublicTest": (28709, 28709 + 150), "PrivateTest": (32298, 32298 + 150)}


def require_real_file(path, what, variable):
    """Skip without the real data file `path`, except in CI, where shared/ lies beside the clone."""
    if not Path(path).is_file():
        message = f"real {what} not found at {path} (set {variable})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def require_real_data():
    require_real_file(REAL_CSV_GZ, "FER2013", "FERSTUDY_REAL_CSV")


def _real_lines():
    require_real_data()
    with gzip.open(REAL_CSV_GZ, "rt", newline="") as f:
        return f.read().splitlines()


@pytest.fixture(scope="session")
def real_slice_lines():
    """Header + 900 real rows: 600 Training, 150 PublicTest, 150 PrivateTest."""
    lines = _real_lines()
    body = lines[1:]
    picked = [line for lo, hi in SLICE_RANGES.values() for line in body[lo:hi]]
    return [lines[0]] + picked


@pytest.fixture(scope="session")
def real_slice_csv(tmp_path_factory, real_slice_lines):
    path = tmp_path_factory.mktemp("real") / "fer2013_slice.csv"
    path.write_text("\n".join(real_slice_lines) + "\n")
    return path
