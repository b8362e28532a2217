"""4. Ingest (`ingest`, `h5_load`): `data.prepare` of a real CSV in a fresh Python process (time,
CPU time, peak resident memory) and `data.load_h5` of the result."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .context import child_env

if TYPE_CHECKING:
    import argparse

_INGEST_CHILD = """
import json, resource, sys, time
from ferstudy.errors import UserError
from ferstudy import csvdata, data


def peak_mib():
    # VmHWM: this process's own high-water mark. (ru_maxrss of a child also counts the parent's
    # memory that the fork copied before the exec, here a process with torch loaded.)
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024, "VmHWM in /proc/self/status"
    except OSError:
        pass
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform == "darwin" else 1)
    return kib / 1024, "getrusage ru_maxrss"


before, _ = peak_mib()
c0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
try:
    d = data.prepare(sys.argv[1], sys.argv[2], folds=int(sys.argv[3]), fold_seed=int(sys.argv[4]))
except UserError as err:
    print(err, file=sys.stderr)
    sys.exit(2)
seconds, c1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
peak, how = peak_mib()
print(json.dumps({"rows": int(len(d.labels)), "seconds": seconds,
                  "cpu_s": c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime,
                  "peak_rss_mb": peak, "rss_after_import_mb": before, "rss_source": how,
                  "chunk_bytes": csvdata.CHUNK_BYTES}))
"""


def ingest_in_subprocess(
    csv: Path | str, h5: Path | str, folds: int = 5, fold_seed: int = 0, timeout: float = 600
) -> dict:
    """`data.prepare(csv, h5)` in a fresh Python process, as `ferstudy prepare` runs it: {rows,
    seconds, cpu_s (user + system of all its threads), peak_rss_mb (the process's high-water mark,
    MiB), rss_after_import_mb (before the ingest: Python, numpy, h5py), chunk_bytes}."""
    from ..errors import UserError

    proc = subprocess.run(
        [sys.executable, "-c", _INGEST_CHILD, str(csv), str(h5), str(folds), str(fold_seed)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(),
    )
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit code {proc.returncode}"
        raise UserError(f"ingest of {csv} failed: {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ingest_times(csv: Path | str, folds: int = 5, fold_seed: int = 0, trials: int = 3) -> dict:
    from ..data import load_h5

    with tempfile.TemporaryDirectory(prefix="ferstudy-bench-") as tmp:
        h5 = Path(tmp) / "bench.h5"
        child = ingest_in_subprocess(csv, h5, folds, fold_seed)
        loads = []
        for _ in range(trials):
            t0 = time.perf_counter()
            load_h5(h5)
            loads.append(time.perf_counter() - t0)
        h5_bytes = h5.stat().st_size
    return {
        **child,
        "csv_bytes": Path(csv).stat().st_size,
        "h5_load_s": min(loads),
        "h5_load_s_median": statistics.median(loads),
        "h5_bytes": h5_bytes,
    }


def ingest_records(out: Callable[[dict], dict], args: argparse.Namespace, cfg: dict) -> None:
    """Ingest (time, CPU, peak memory) of --csv and the HDF5 load of it and of --h5."""
    if not (args.csv and Path(args.csv).is_file()):
        out({"name": "ingest", "skipped": f"no CSV ({args.csv or 'give --csv'} not found)", "context": {}})
    else:
        r = ingest_times(args.csv, cfg["data"]["folds"], cfg["data"]["fold_seed"])
        out(
            {
                "name": "ingest",
                "csv": str(args.csv),
                "rows": r["rows"],
                "seconds": r["seconds"],
                "rows_per_s": r["rows"] / r["seconds"],
                "mb_per_s": r["csv_bytes"] / 1e6 / r["seconds"],
                "cpu_s": r["cpu_s"],
                "peak_rss_mb": r["peak_rss_mb"],
                "rss_after_import_mb": r["rss_after_import_mb"],
                "units": {
                    "seconds": "s for ferstudy.data.prepare (parse, validate, folds, sha256, HDF5 write)",
                    "mb_per_s": "MB of the CSV file (as stored, compressed or not) per s",
                    "cpu_s": "CPU s (user + system, all threads) of the same; above `seconds`: a second core worked",
                    "peak_rss_mb": "MiB, the ingest process's peak resident memory (its high-water mark)",
                    "rss_after_import_mb": "MiB resident before the ingest (Python, numpy, h5py imported)",
                },
                "context": {
                    "csv_bytes": r["csv_bytes"],
                    "chunk_bytes": r["chunk_bytes"],
                    "rss_source": r["rss_source"],
                    "process": "a fresh Python process running ferstudy.data.prepare",
                },
            }
        )
        out(
            {
                "name": "h5_load",
                "path": "(written by ingest)",
                "rows": r["rows"],
                "seconds": r["h5_load_s"],
                "seconds_median": r["h5_load_s_median"],
                "mb_per_s": r["h5_bytes"] / 1e6 / r["h5_load_s"],
                "units": {"seconds": "s for ferstudy.data.load_h5, best of 3"},
                "context": {"h5_bytes": r["h5_bytes"]},
            }
        )
    if args.h5:
        from ..data import load_h5

        loads = []
        for _ in range(3):
            t0 = time.perf_counter()
            data = load_h5(args.h5)
            loads.append(time.perf_counter() - t0)
        out(
            {
                "name": "h5_load",
                "path": str(args.h5),
                "rows": int(len(data.labels)),
                "seconds": min(loads),
                "seconds_median": statistics.median(loads),
                "units": {"seconds": "s for ferstudy.data.load_h5, best of 3"},
                "context": {"h5_bytes": Path(args.h5).stat().st_size},
            }
        )
