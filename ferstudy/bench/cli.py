"""The harness: `ferstudy bench` runs the groups of measurements asked for and prints each as
one JSON line (`Recorder`), also written to `--out`."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from . import __doc__ as bench_doc
from .context import all_cores, base_context, bench_images, load_config
from .dryrun import snakemake_records
from .ingest import ingest_records
from .machine import matmul_records, training_precisions
from .pil import pil_records
from .training import inference_records, train_records

if TYPE_CHECKING:
    import argparse

log = logging.getLogger("ferstudy.bench")

GROUPS = ("matmul", "train", "pil", "ingest", "inference", "snakemake")


class Recorder:
    """Prints each measurement as one JSON line and keeps it for the output file."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.lines: list[str] = []
        self.stream = stream or sys.stdout

    def __call__(self, record: dict) -> dict:
        line = json.dumps(record, default=_jsonable)
        self.lines.append(line)
        print(line, file=self.stream, flush=True)
        return record


def _jsonable(obj):
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def run_bench(args: argparse.Namespace, emit: Callable[[dict], dict] | None = None) -> list[dict]:
    """Run every measurement `args` asks for; returns the list of records."""
    emit = emit or Recorder()
    threads = args.threads or all_cores()
    cfg = load_config(args.config, args.configfile, args.preset, args.study_dir)
    archs = _bench_archs(args, cfg)
    pil_archs = args.pil_archs if args.pil_archs is not None else [cfg["study"]["baseline"]]
    ctx = {
        **base_context(threads),
        "preset": cfg["preset"],
        "dataset": cfg["dataset"]["name"],
        "data": f"HDF5 {args.h5}" if args.h5 else "demo faces",
    }
    records = []

    def out(record):
        record.setdefault("context", {})
        record["context"] = {**ctx, **record["context"], "loadavg_1m": base_context(threads)["loadavg_1m"]}
        records.append(emit(record))
        return record

    only = set(args.only or GROUPS)
    if "train" in only:
        only.add("matmul")  # the training lines divide by it
    archs = archs if "train" in only else []
    pil_archs = pil_archs if "pil" in only else []
    precisions = training_precisions()
    ctx["cpu_native_bf16"] = "bf16" in precisions
    matmul, peak = matmul_records(out, args, threads, precisions) if "matmul" in only else ({}, {})
    max_bs = max([args.batch_size or _batch_size(cfg, a) for a in archs + pil_archs] + [64])
    images, labels = bench_images(min(max_bs * (args.batches + args.warmup), args.max_images), args.h5)
    train_records(out, args, cfg, archs, images, labels, threads, precisions, matmul, peak)
    pil_records(out, args, cfg, pil_archs, images, labels, threads, precisions)
    if "ingest" in only:
        ingest_records(out, args, cfg)
    if "inference" in only:
        for r in inference_records(cfg, args, images, threads):
            out(r)
    if "snakemake" in only:
        snakemake_records(out, args, cfg)
    return records


def _bench_archs(args, cfg):
    archs = args.archs or list(cfg["architectures"])
    for name in archs:
        if name not in cfg["architectures"]:
            from ..errors import UserError

            raise UserError(f"--archs: unknown architecture {name!r} (config has {', '.join(cfg['architectures'])})")
    return archs


def _batch_size(cfg, arch):
    from ..config import resolve_arch

    return resolve_arch(cfg, arch)["training"]["batch_size"]


def cmd_bench(args: argparse.Namespace) -> None:
    from ..io import atomic_path

    records = run_bench(args)
    if args.out:
        with atomic_path(args.out) as tmp:
            Path(tmp).write_text("".join(json.dumps(r, default=_jsonable) + "\n" for r in records))
        log.info("wrote %d measurements to %s", len(records), args.out)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--only",
        nargs="+",
        choices=GROUPS,
        help="run only these groups of measurements (default: all; train implies matmul)",
    )
    p.add_argument(
        "--config",
        help="the study's config file, over the shipped defaults (default: "
        "config/config.yaml of the study directory, if there is one)",
    )
    p.add_argument("--configfile", nargs="*", default=[], help="YAML files merged over --config, as Snakemake does")
    p.add_argument("--preset", help="override the config's preset (e.g. cpu: full-width networks, batch 128)")
    p.add_argument("--archs", nargs="*", help="architectures to time (default: every one in the config)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    p.add_argument("--batch-size", type=int, help="override every architecture's batch size")
    p.add_argument("--batches", type=int, default=8, help="timed batches per trial (default 8)")
    p.add_argument("--warmup", type=int, default=1, help="untimed batches first (default 1)")
    p.add_argument("--trials", type=int, default=3, help="repetitions; the best is reported (default 3)")
    p.add_argument(
        "--channels-last",
        choices=["auto", "on", "off", "both"],
        default="auto",
        help="memory format of the training step (auto: as the config says)",
    )
    p.add_argument(
        "--pil-archs",
        nargs="*",
        help="architectures for the PIL+DataLoader comparison "
        "(default: the study baseline; the option without names skips it)",
    )
    p.add_argument("--pil-workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers to try")
    p.add_argument(
        "--pil-rounds",
        type=int,
        default=3,
        help="alternating rounds of project and PIL loop; train_vs_pil is the median of their ratios (default 3)",
    )
    p.add_argument("--matmul-size", type=int, default=2048)
    p.add_argument("--max-images", type=int, default=2048, help="distinct images generated or read")
    p.add_argument("--h5", help="prepared HDF5 to train on (default: demo faces)")
    p.add_argument("--csv", help="FER2013 CSV (.csv or .csv.gz) to time the ingest of")
    p.add_argument("--model", help="saved model for the inference lines (default: the baseline, fresh)")
    p.add_argument("--latency-reps", type=int, default=100)
    p.add_argument("--study-dir", help="finished study directory for the Snakemake lines")
    p.add_argument("--change-arch", help="architecture to alter for snakemake_change (default: a leaf one)")
    p.add_argument("--change", help="YAML of the change (default: '{blocks: {kernel: 5}}')")
    p.add_argument("--out", help="also write the JSON lines here (e.g. results/bench.jsonl)")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench", help="benchmark harness: one JSON line per measurement", description=bench_doc.split("\n\n")[0]
    )
    add_arguments(p)
    p.set_defaults(func=cmd_bench)
    return p
