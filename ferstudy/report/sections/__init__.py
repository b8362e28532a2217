"""The report's findings: one module per `##` heading of report/report.md.j2 (the main report) and
report/appendix.md.j2 (the appendix), in their order, each a pure function `findings(ctx)` returning
{key: text} (numbers -> sentences; no torch, no files); `findings` merges them for both templates (`f`)."""

from . import (
    architectures,
    budget,
    class_effects,
    costs,
    effects,
    evidence,
    extra_sets,
    ferplus,
    final,
    final_model,
    inside,
    limitations,
    per_class,
    protocol,
    reflections,
    reproducibility,
    results,
)

MAIN = (protocol, architectures, results, effects, final, per_class, inside, reflections)
APPENDIX = (evidence, budget, class_effects, costs, final_model, ferplus, extra_sets, limitations, reproducibility)
SECTIONS = MAIN + APPENDIX


def findings(ctx: dict) -> dict:
    """All generated sentences, keyed by topic: the merged dicts of the section modules."""
    f = {}
    for section in SECTIONS:
        f.update(section.findings(ctx))
    return f
