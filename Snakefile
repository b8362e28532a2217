# ferstudy: FER2013 CSV -> HDF5 -> per-fold, per-architecture training -> evaluation -> figures -> report.
# Run `snakemake --cores N` (see README); `snakemake --cores N handin` writes the hand-in zip.
# The work is done by the `ferstudy` package's CLI.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


# The description page of `snakemake --report`.
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/recheck.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/publish.smk"


onstart:
    announce_dataset()
    announce_cost(log)


rule all:
    input:
        all_targets(),
        html_targets(),
    default_target: True
