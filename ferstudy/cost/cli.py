"""`ferstudy predict-cost`: measure this machine, count the study's jobs and print the prediction
(optionally against a finished study's real times)."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from . import __doc__ as cost_doc
from .actual import actual_times, compare
from .measure import measure
from .predict import count_jobs, dry_run_jobs, predict

if TYPE_CHECKING:
    import argparse

log = logging.getLogger("ferstudy.cost")


def cmd_predict_cost(args: argparse.Namespace) -> None:
    from ..bench.context import all_cores, load_config
    from ..io import write_json

    workdir = Path(args.study_dir or ".")
    cfg = load_config(args.config, args.configfile, args.preset, workdir)
    cfg["_config_path"], cfg["_workdir"] = args.config, str(workdir)
    cores = args.cores or all_cores()
    h5 = args.h5 or workdir / "results/data/dataset.h5"
    m = measure(cfg, cores, batches=args.batches, warmup=args.warmup, h5=h5, final_arch=args.final_arch)
    static = count_jobs(cfg)
    if args.jobs_by_rule:
        m["jobs_by_rule"], m["jobs_from"] = json.loads(args.jobs_by_rule), "the running study's DAG"
    elif args.dry_run and (workdir / "workflow" / "Snakefile").is_file():
        try:
            m["jobs_by_rule"] = dry_run_jobs(workdir, args.config, args.configfile, args.preset)
            m["jobs_from"] = f"snakemake -n --forceall in {workdir}"
        except (RuntimeError, subprocess.SubprocessError, OSError) as err:
            log.warning("could not count the jobs with Snakemake (%s): using the rule table", err)
        else:
            if m["jobs_by_rule"] != static:
                log.warning(
                    "Snakemake's job table %s differs from cost.count_jobs %s (update the table)",
                    m["jobs_by_rule"],
                    static,
                )
    result = predict(cfg, cores, m)
    if args.compare:
        result["actual"] = compare(result, actual_times(args.compare))
    text = json.dumps(result, indent=2, default=float)
    print(text)
    if args.out:
        write_json(args.out, result)
    for name, p in result["per_arch"].items():
        log.info(
            "%-16s %9d images x epochs  %7.0f img/s  %7.1f s per fold job",
            name,
            p["images_x_epochs"],
            p["img_per_s"],
            p["predicted_job_s"],
        )
    log.info(
        "%d jobs; predicted %.0f s (%.1f min) on %d cores; final %s %.0f s%s",
        result["jobs"],
        result["predicted_total_s"],
        result["predicted_total_s"] / 60,
        cores,
        result["final"]["architecture"],
        result["final"]["predicted_job_s"],
        " (assumed: chosen by cross-validation)" if result["final"]["assumed"] else "",
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "predict-cost",
        help="predict a study's jobs, training images x epochs and wall time",
        description=cost_doc.split("\n\n")[0],
    )
    p.add_argument(
        "--config",
        help="the study's config file, over the shipped defaults (default: "
        "config/config.yaml of the study directory, if there is one)",
    )
    p.add_argument("--configfile", nargs="*", default=[], help="YAML files merged over --config, as Snakemake does")
    p.add_argument("--preset", help="override the config's preset")
    p.add_argument("--cores", type=int, default=0, help="Snakemake --cores of the run (default: all cores)")
    p.add_argument("--h5", help="prepared HDF5 for the data sizes (default: STUDY/results/data/dataset.h5 if present)")
    p.add_argument("--study-dir", help="directory the study runs in (default: the current one)")
    p.add_argument(
        "--final-arch",
        help="architecture assumed for the final model (default: final.architecture, else the study baseline)",
    )
    p.add_argument("--batches", type=int, default=3, help="timed batches per architecture (default 3)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument(
        "--no-dry-run",
        dest="dry_run",
        action="store_false",
        help="count jobs from the rule table only, without `snakemake -n --forceall`",
    )
    p.add_argument(
        "--jobs-by-rule", metavar="JSON", help="the study's jobs per rule (the Snakefile's onstart passes its DAG)"
    )
    p.add_argument("--compare", metavar="STUDY_DIR", help="add the real times of a finished study")
    p.add_argument("--out", help="write the prediction JSON here")
    p.set_defaults(func=cmd_predict_cost)
    return p
