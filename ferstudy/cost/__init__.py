"""Study cost prediction: `ferstudy predict-cost` says, before a study runs, how many jobs it has,
how many training images x epochs each architecture costs, and how long it will take on
`--cores N` of this machine.

The model (every constant is measured on this machine when the command runs; none is fitted):

* data sizes: per-class Training counts from the prepared HDF5 if present (and made from the
  same dataset), else from the config (the demo generator's split rule for `demo_images`, or
  FER2013's 28,709 Training rows). Fold sizes follow scikit-learn's StratifiedKFold allocation
  (fold k holds every K-th row of the label-sorted Training set), and `training.subsample`
  keeps max(1, round(f * n_c)) images of each class, as `train.subsample` does: both exact.
* a cross-validation job (1 thread, N side by side) takes `job_overhead_s` + epochs x
  (steps x batch / training img/s + checkpoint save) + evaluations x held-out / eval img/s
  (evaluations: every `eval_every` epochs and after the last) + Snakemake's per-job cost. Training img/s: a few batches through the
  real training step (`bench.training.train_throughput`); eval img/s: `train.predict` with the
  architecture's TTA; both at 1 thread in N processes side by side, as the fold jobs run.
* `job_overhead_s` is measured by running the real command: N `ferstudy train` side by side
  for one epoch on a tiny HDF5 (process start, imports, torch set-up, model build, outputs,
  `config.environment()`), minus that tiny epoch's compute (from the measured rates), plus
  the load time of the real-size HDF5. Light jobs (evaluate_arch, aggregate, select,
  evaluate_final, figures, report, and rules the model does not know) cost what N real
  `ferstudy evaluate-arch` take (figures takes longer: an underestimate of some seconds). Snakemake's own per-job cost and its start-up come from a
  trivial workflow of no-op jobs whose Snakefile resolves this config as common.smk does.
  demo_csv and prepare are timed by doing the work (demo CSV, `data.prepare`, data summary).
* the final model: all of Training, `final.training` epochs, `--cores` threads, PublicTest
  evaluated every `eval_every` epochs, PublicTest + PrivateTest predicted at the end. Its architecture is
  chosen by cross-validation, so unless `final.architecture` names one the prediction assumes
  the study baseline and lists every candidate's time under `final.per_arch_s`.
* schedule: Snakemake start-up (DAG with the config resolved), demo_csv -> prepare, then the
  fold jobs (and evaluate_arch jobs) greedily list-scheduled longest first on N slots, then
  train_final and the light jobs after it (aggregate, select, evaluate_final, figures, report)
  in sequence.

Measured on a loaded machine, the prediction is for that load: the rates, probes and
Snakemake timings all slow down together with the study they predict.

The JSON (`--out`): {"cores", "jobs", "jobs_by_rule", "predicted_total_s", "per_arch": {arch:
{"images_x_epochs", "img_per_s", "predicted_job_s", ...}}, "final": {...}, "constants": {...}}.

The package: `workload` (data sizes and the images, steps and epochs of each job), `measure` (the
measured constants), `predict` (jobs, schedule and the prediction), `actual` (a finished study's
real times), `study` (inside a study: the Snakefile's onstart and the report's predicted against
actual) and `cli` (`ferstudy predict-cost`). It measures with the benchmark's modules
(ferstudy/bench/).
"""
