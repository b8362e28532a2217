"""`ferstudy report`: collect the results, render the main report and its appendix, write both,
count the main report's words and look for repeated sentence skeletons."""

import argparse
import logging
from pathlib import Path

from .. import CLASS_NAMES, SPLIT_NAMES
from .load import collect
from .render import APPENDIX_TEMPLATE, render_both
from .text import MAX_SKELETON_REPEATS, PROSE_WORDS, prose_words, repeated_skeletons

log = logging.getLogger("ferstudy.report")
SKELETON_NAMES = (*CLASS_NAMES, *SPLIT_NAMES)  # masked like numbers when sentences are compared


def check_text(path: str, text: str, demo: bool) -> None:
    """Log the main report's word count (a warning outside `PROSE_WORDS`) and warn for every sentence
    skeleton repeated more than `MAX_SKELETON_REPEATS` times."""
    words = prose_words(text)
    lo, hi = PROSE_WORDS
    (log.info if lo <= words <= hi else log.warning)(
        "wrote %s: %d prose words (target %d-%d)%s", path, words, lo, hi, " -- DEMO DATA" if demo else ""
    )
    for skeleton, n in repeated_skeletons(text, SKELETON_NAMES).items():
        log.warning("%s: one sentence skeleton %d times (at most %d): %s", path, n, MAX_SKELETON_REPEATS, skeleton)


def cmd_report(args: argparse.Namespace) -> None:
    from ..io import write_text

    template = Path(args.template)
    appendix_out = Path(args.appendix_out) if args.appendix_out else Path(args.out).with_name("appendix.md")
    appendix_template = (
        Path(args.appendix_template) if args.appendix_template else template.with_name(APPENDIX_TEMPLATE)
    )
    ctx = collect(
        args.results,
        report_path=args.out,
        preset=args.preset,
        threads=args.threads,
        allow_missing_figures=args.allow_missing_figures,
        appendix_path=appendix_out,
    )
    if appendix_template.parent != template.parent:
        from .render import render

        main = render(ctx, template.parent, template.name)
        appendix = render(ctx, appendix_template.parent, appendix_template.name)
    else:
        main, appendix = render_both(ctx, template.parent, template.name, appendix_template.name)
    write_text(args.out, main)
    write_text(appendix_out, appendix)
    check_text(args.out, main, ctx["demo"])
    log.info("wrote %s: %d prose words (the appendix has no limit)", appendix_out, prose_words(appendix))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="render the markdown report and its appendix from the results")
    p.add_argument("--results", default="results", help="results directory (data/, tables/, cv/, final/, figures/)")
    p.add_argument("--out", default="results/report/report.md", help="markdown file to write (the main report)")
    p.add_argument("--appendix-out", help="the appendix's markdown file (default: appendix.md beside --out)")
    p.add_argument("--template", default="report/report.md.j2", help="Jinja2 template of the main report")
    p.add_argument(
        "--appendix-template", help=f"Jinja2 template of the appendix (default: {APPENDIX_TEMPLATE} beside --template)"
    )
    p.add_argument("--preset", help="preset the study ran with (shown in the rebuild command)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the look inside the final model")
    p.add_argument(
        "--allow-missing-figures",
        action="store_true",
        help="write the report without the figures that do not exist (default: they are required)",
    )
    p.set_defaults(func=cmd_report)
