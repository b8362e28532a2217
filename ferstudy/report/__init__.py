"""The markdown report: every number from the result files, every finding a sentence computed
from those numbers. One job per module; imports go one way: cli -> load, render -> sections ->
verdicts -> text.

- `inputs`: the files the report reads (`report_inputs`); rule `report` declares the same list.
- `load`: `collect(results_dir)` reads the results (tables, cross-validation and final metrics, the
  final model, the prepared data, benchmarks) into one dict of numbers, `ctx`. It raises
  `UserError` naming every missing file. `specs` puts a run config in words, `model_facts` looks
  inside the final model (torch, through ferstudy/probe.py).
- `sections/`: one module per `##` heading of report/report.md.j2 (the heading's comment names
  it), each `findings(ctx)`, a pure function of `ctx` returning {key: text}; `sections.findings`
  merges them. The sections import no torch and never read files.
- `verdicts`: a verdict is stated one way everywhere (`verdict_clause`): the corrected resampled
  t-test's verdict (p < `study.alpha`), its Holm-adjusted p over all comparisons and its
  budget-stability label from ablation.csv (ferstudy/stability.py); summaries lead with the
  verdicts that survive Holm and hold. The runner-up is compared by the same paired test; "within
  sampling noise" and the over- or under-fitting reading are computed, and a different result
  gives a different sentence. Nothing is claimed that the numbers do not support.
- `text`: number formatting (also the template's Jinja filters), tables, and how words are counted.
- `render`: `render(ctx, template_dir)` fills `report/report.md.j2` (Jinja2) with `ctx` and the findings.
- `cli`: `register(subparsers)` adds `ferstudy report`.
"""
