"""`ferstudy report`: collect the results, render the template, write the report, count its words."""

import logging
from pathlib import Path

from .load import collect
from .render import render
from .text import PROSE_WORDS, prose_words

log = logging.getLogger("ferstudy.report")


def cmd_report(args):
    from ..io import write_text

    template = Path(args.template)
    ctx = collect(args.results, report_path=args.out, preset=args.preset, threads=args.threads,
                  allow_missing_figures=args.allow_missing_figures)
    text = render(ctx, template.parent, template.name)
    write_text(args.out, text)
    words = prose_words(text)
    lo, hi = PROSE_WORDS
    (log.info if lo <= words <= hi else log.warning)(
        "wrote %s: %d prose words (target %d-%d)%s", args.out, words, lo, hi,
        " -- DEMO DATA" if ctx["demo"] else "")


def register(sub):
    p = sub.add_parser("report", help="render the markdown report from the results")
    p.add_argument("--results", default="results", help="results directory (data/, tables/, cv/, final/, figures/)")
    p.add_argument("--out", default="results/report/report.md", help="markdown file to write")
    p.add_argument("--template", default="report/report.md.j2", help="Jinja2 template")
    p.add_argument("--preset", help="preset the study ran with (shown in the rebuild command)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the look inside the final model")
    p.add_argument("--allow-missing-figures", action="store_true",
                   help="write the report without the figures that do not exist (default: they are required)")
    p.set_defaults(func=cmd_report)
