"""The markdown report a student hands in (results/report/report.md: the assignment's parts in
1,200-1,500 prose words) and its appendix (appendix.md: every verdict's statistics and evidence):
every number from the result files, every finding a sentence computed from those numbers. One job
per module; imports go one way: cli -> load, render -> sections -> verdicts -> text.

- `inputs`: the files the report reads (`report_inputs`); rule `report` declares the same list.
- `load`: `collect(results_dir)` reads the results (tables, cross-validation and final metrics, the
  final model, the prepared data, benchmarks) into one dict of numbers, `ctx`. It raises
  `UserError` naming every missing file. `specs` puts a run config in words, `model_facts` looks
  inside the final model (torch, through ferstudy/probe.py).
- `sections/`: one module per `##` heading of report/report.md.j2 and report/appendix.md.j2 (the
  heading's comment names it), each `findings(ctx)`, a pure function of `ctx` returning {key: text};
  `sections.findings` merges them. The sections import no torch and never read files.
- `verdicts`: a verdict is stated one way everywhere (`outcome` in words in the main report, whose
  table carries the numbers; `verdict_clause` and the tables of the appendix): the corrected
  resampled t-test's verdict (p < `study.alpha`), its Holm-adjusted p over all comparisons and its
  budget-stability label from ablation.csv (ferstudy/stability.py); summaries lead with the
  verdicts that survive Holm and hold. The runner-up is compared by the same paired test; "within
  sampling noise" and the over- or under-fitting reading are computed, and a different result
  gives a different sentence. Nothing is claimed that the numbers do not support.
- `text`: number formatting (also the template's Jinja filters), tables, how words are counted
  (`prose_words`) and repeated sentence skeletons found (`repeated_skeletons`).
- `render`: `render(ctx, template_dir, template)` fills one template (Jinja2) with `ctx` and the
  findings; `render_both` the main report and the appendix from one set of findings.
- `cli`: `register(subparsers)` adds `ferstudy report` (both documents; it warns when the main
  report leaves 1,200-1,500 words or repeats a sentence skeleton more than three times).
"""
