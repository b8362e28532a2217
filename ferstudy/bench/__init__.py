"""Benchmark harness: `ferstudy bench` prints one JSON line per measurement (and writes them to
`--out`). See docs/PERFORMANCE.md for what each line means and the targets.

Measurements, in the order they run (each line: `name`, the numbers, `units`, `context`):

1. `matmul`      the machine's attainable rate in each precision training uses: an n x n matmul
                 (default 2048) repeated, best trial, with the configured threads; fp32 always,
                 bf16 too on a CPU with native bf16 (`precision.cpu_has_bf16`). Every
                 `fraction_of_matmul` below divides by the matmul of its own precision.
   `cpu_peak`    the processor's theoretical peak (cores x FLOP/cycle/core x clock) per precision,
                 from what the machine reports (/proc/cpuinfo flags, sysfs, lscpu); each factor
                 says where it came from, the ones not reported (FMA units per core) are listed
                 under `assumed`. `fraction_of_peak` on the matmul and training lines divides by it.
2. `train_step`  per architecture and precision (fp32; bf16 too where the CPU has it): images/s
                 through the project's real training step (`train.train_one_epoch` with the real
                 `Augmenter`, `make_optimizer`, `make_scheduler`) on a fixed number of batches;
                 achieved GFLOP/s counts 3 x forward FLOPs per image (forward + backward, a
                 multiply-add = 2 FLOPs; the first conv's unneeded input gradient is counted too,
                 so this slightly flatters).
3. `train_pil`   the same model and batch size trained the way most public FER2013 code does it:
                 a per-image `Dataset` of PIL images, torchvision RandomCrop + RandomHorizontalFlip
                 + ToTensor + Normalize, a `DataLoader` (0 and 2 workers), a plain loop, NCHW, fp32.
                 `train_vs_pil` sets against it the project as it would really train (`amp: auto`
                 decides the precision as a training job does: `ratio`) and the project in fp32
                 (`ratio_fp32`), with the target (>= 2x on a CPU with native bf16, >= 1.5x without).
                 The loops run in alternating rounds (`--pil-rounds`); each ratio is the median of
                 the rounds' ratios, so the machine's drift over minutes cancels.
4. `ingest`, `h5_load`  `data.prepare` of a real CSV (`--csv`) in a fresh Python process (its time,
                 CPU time and peak resident memory) and `data.load_h5` of the result.
5. `inference`, `latency`  `train.predict` in batches of 256, and one image at a time (median).
6. `snakemake_dry_run`, `snakemake_change`  `snakemake -n` in a finished study (`--study-dir`),
                 and the jobs a change to one architecture's spec triggers.

A measurement that cannot run (no CSV, no study dir) prints a line with `skipped` saying why.
Times are the best of `--trials` (the machine's attainable speed; medians are given beside).

The package, one module per measurement group: `context` (the config, the machine's context, the
faces), `machine` (1: matmul, cpu_peak), `training` (2 and 5: the project's training step and
inference), `pil` (3), `ingest` (4), `dryrun` (6), and `cli`, the harness that runs them. The cost
prediction (ferstudy/cost/) measures with the same modules.
"""
