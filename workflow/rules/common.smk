# Shared helpers: the resolved study config, target lists and wildcard constraints.
import os
import sys

import yaml

from ferstudy.config import resolve_config, resolve_arch
from ferstudy.errors import UserError

try:
    STUDY = resolve_config(config, source="config (config.yaml and --configfile/--config)")
except UserError as err:
    raise WorkflowError(str(err)) from None

DATASET = STUDY["dataset"]["name"]
ARCHS = STUDY["study"]["architectures"]
FOLDS = list(range(STUDY["data"]["folds"]))
# Extra test sets (FER2013-format CSVs) are evaluated with the final model only.
EXTRA_TEST_SETS = STUDY["data"].get("extra_test_sets") or {}
R = "results"
# Rules call the package's CLI (`ferstudy ...`); put the interpreter's bin directory first on PATH
# so that `.venv/bin/snakemake` finds the venv's `ferstudy` without an activated venv.
envvars:
    "PATH",


os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")


wildcard_constraints:
    arch="|".join(ARCHS),
    fold=r"\d+",


def announce_dataset():
    if DATASET == "demo":
        logger.warning(
            "\n" + "=" * 78 + "\nDEMO DATA: no data/fer2013.csv found, so this study runs on the built-in "
            "synthetic faces\n(preset %r). Its numbers say nothing about real faces. Download FER2013 as the "
            "README\nsays and put it at data/fer2013.csv to run the real study.\n" % STUDY["preset"] + "=" * 78
        )
    else:
        logger.info(f"Dataset: {STUDY['dataset']['csv']} (preset {STUDY['preset']!r})")


def write_yaml(path, obj):
    from ferstudy.io import write_text

    write_text(path, yaml.safe_dump(obj, sort_keys=False))


def data_targets():
    return [f"{R}/data/dataset.h5", f"{R}/data/summary.csv", f"{R}/data/summary.md", f"{R}/data/faces.png"]


FIGURE_NAMES = [
    "training_curves",
    "cv_accuracy",
    "accuracy_vs_compute",
    "confusion_cv",
    "confusion_final",
    "final_history",
    "filters_layer1",
    "filters_deeper",
    "activations",
    "channel_emotion",
    "saliency",
    "examples",
]


def figure_targets():
    return [f"{R}/figures/{name}.png" for name in FIGURE_NAMES]


def all_targets():
    return data_targets() + [
        f"{R}/tables/cv_summary.csv",
        f"{R}/final/selection.json",
        f"{R}/final/metrics.json",
        *figure_targets(),
        f"{R}/report/report.md",
    ]
