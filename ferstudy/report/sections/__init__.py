"""The report's findings: one module per `##` heading of report/report.md.j2, in the template's
order, each a pure function `findings(ctx)` returning {key: text} (numbers -> sentences; no torch,
no files); `findings` merges them for the template (`f`)."""

from . import (architectures, budget, effects, final, inside, limitations, per_class, protocol, reflections,
               reproducibility, results)

SECTIONS = (protocol, architectures, results, budget, effects, final, per_class, inside, reflections, limitations,
            reproducibility)


def findings(ctx):
    """All generated sentences, keyed by topic: the merged dicts of the section modules."""
    f = {}
    for section in SECTIONS:
        f.update(section.findings(ctx))
    return f
