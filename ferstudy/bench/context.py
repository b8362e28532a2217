"""What every measurement needs: the study config layered as the workflow layers it, the cores,
the context recorded beside each line, the training job's thread set-up, faces to train on, and
the environment of a child process."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


def load_config(
    config_path: Path | str | None = None,
    configfiles: Sequence[Path | str] = (),
    preset: str | None = None,
    workdir: Path | str | None = None,
) -> dict:
    """The resolved study config, layered as the workflow layers it (`config.load_study`: the
    shipped defaults, the preset, then the study's config file, default config/config.yaml, each
    `--configfile` and the `--preset` choice); resolved relative to `workdir` (the study
    directory; default the current one)."""
    from ..config import load_study

    return load_study(config_path, configfiles, preset, workdir)


def all_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def base_context(threads: int) -> dict[str, Any]:
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    from ..config import cpu_name

    return {
        "threads": threads,
        "torch": torch.__version__,
        "cpu": cpu_name(),
        "cores": all_cores(),
        "loadavg_1m": round(load, 2) if load is not None else None,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }


def set_threads(threads: int) -> None:
    import torch

    from ..train import setup_torch

    setup_torch(torch.device("cpu"), threads)  # exactly what a training job does


def bench_images(n: int, h5: Path | str | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (n, 48, 48), labels int64 (n,)): Training rows of a prepared HDF5, or the
    built-in demo faces (real-looking pixel statistics; the content does not change the speed)."""
    import numpy as np

    if h5:
        from ..data import load_h5

        data = load_h5(h5)
        train = data.indices("Training")
        pick = np.random.default_rng(seed).permutation(train)[:n]
        pick = np.resize(pick, n)  # repeat when the file is smaller than n
        return data.images[pick], data.labels[pick].astype(np.int64)
    from ..demo import make_demo_faces

    images, labels, _ = make_demo_faces(max(n, 100), seed)
    return images[:n], labels[:n].astype(np.int64)


def child_env() -> dict[str, str]:
    """Environment for child processes: this checkout's `ferstudy` first on PYTHONPATH."""
    package_root = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
