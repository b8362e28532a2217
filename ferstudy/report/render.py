"""The report as markdown: report/report.md.j2 and report/appendix.md.j2 (Jinja2) filled with `ctx`
(report.load) and the findings (report.sections); the number formats of report.text are the
templates' filters."""

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import CLASS_NAMES
from ..errors import UserError
from .sections import findings
from .text import (
    and_join,
    code,
    extract,
    md_table,
    mean_std,
    mflops,
    num,
    pct,
    pp,
    pval,
    seconds,
)

if TYPE_CHECKING:
    import jinja2

TEMPLATE = "report.md.j2"
APPENDIX_TEMPLATE = "appendix.md.j2"


def environment(template_dir: str | Path) -> "jinja2.Environment":
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters.update(
        pct=pct,
        pp=pp,
        pval=pval,
        num=num,
        mflops=mflops,
        seconds=seconds,
        code=code,
        mean_std=mean_std,
        extract=extract,
    )
    env.globals.update(
        table=md_table, and_join=and_join, CLASS_NAMES=CLASS_NAMES, isfinite=lambda x: x is not None and np.isfinite(x)
    )
    return env


def render(ctx: dict, template_dir: str | Path, template: str = TEMPLATE, found: dict | None = None) -> str:
    """One template (the main report by default) as markdown text; `found`: the findings, when
    already computed for another template of the same ctx."""
    import jinja2

    template_dir = Path(template_dir)
    if not (template_dir / template).is_file():
        raise UserError(f"{template_dir / template}: report template not found")
    try:
        tpl = environment(template_dir).get_template(template)
        text = tpl.render(ctx=ctx, f=findings(ctx) if found is None else found)
    except jinja2.TemplateError as err:
        lineno = getattr(err, "lineno", None)  # syntax errors have one
        where = f"{template_dir / template}" + (f", line {lineno}" if lineno else "")
        raise UserError(f"{where}: {err.message if hasattr(err, 'message') else err}") from None
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text)


def render_both(
    ctx: dict, template_dir: str | Path, template: str = TEMPLATE, appendix_template: str = APPENDIX_TEMPLATE
) -> tuple[str, str]:
    """(main report, appendix) from one set of findings."""
    found = findings(ctx)
    return (render(ctx, template_dir, template, found), render(ctx, template_dir, appendix_template, found))
