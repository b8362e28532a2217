"""`ferstudy <command>`: the entry points the Snakemake rules call; usable without Snakemake.

Each command is a small function taking parsed arguments. User errors print one line
(`ferstudy: error: <file/key>: <problem>`) and exit with status 2, without a traceback.
"""

import argparse
import logging
import sys
import time

from .errors import UserError

log = logging.getLogger("ferstudy")


def cmd_demo(args):
    from .demo import write_demo_csv

    t0 = time.perf_counter()
    write_demo_csv(args.out, n_images=args.images, seed=args.seed)
    log.info("DEMO DATA: wrote %d synthetic faces to %s in %.1f s (seed %d). This is NOT FER2013: "
             "download the real data as the README says.", args.images, args.out, time.perf_counter() - t0, args.seed)


def cmd_prepare(args):
    from .data import prepare, write_summary

    t0 = time.perf_counter()
    data = prepare(args.csv, args.h5, folds=args.folds, fold_seed=args.fold_seed, dataset=args.dataset)
    log.info("prepared %s (%s): %d images -> %s in %.2f s", args.csv, args.dataset, len(data.labels), args.h5,
             time.perf_counter() - t0)
    if args.dataset == "demo":
        log.warning("DEMO DATA: these are synthetic faces, not FER2013; results say nothing about real faces.")
    if args.summary_csv:
        write_summary(data, args.summary_csv, args.summary_md, args.faces)


def build_parser():
    parser = argparse.ArgumentParser(prog="ferstudy", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="write the built-in synthetic demo dataset as a FER2013-format CSV")
    p.add_argument("--out", required=True)
    p.add_argument("--images", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("prepare", help="validate a FER2013 CSV and write the HDF5 (+ data summary)")
    p.add_argument("--csv", required=True)
    p.add_argument("--h5", required=True)
    p.add_argument("--dataset", default="fer2013", choices=["fer2013", "demo"])
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--fold-seed", type=int, default=0)
    p.add_argument("--summary-csv")
    p.add_argument("--summary-md")
    p.add_argument("--faces")
    p.set_defaults(func=cmd_prepare)
    return parser


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UserError as err:
        print(f"ferstudy: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
