# Shared helpers: the resolved study config, target lists and wildcard constraints.
import os
import sys

import yaml

# The checkout: workflow/Snakefile's parent. Its `ferstudy/` is the package, here and in every job.
REPO = os.path.dirname(workflow.basedir)
sys.path.insert(0, REPO)

from ferstudy.config import (
    DEFAULTS_NAME,
    PINNED_PRESET_ENV,
    config_hash,
    load_defaults,
    load_yaml,
    preset_lines,
    resolve_arch,
    resolve_layers,
)
from ferstudy.errors import UserError
from ferstudy.figures import FIGURES
from ferstudy.validation import coerce_cli_config


def config_layers():
    """The user's layers as Snakemake got them, in Snakemake's order: the config/config.yaml that
    `configfile:` loaded (unless --replace-workflow-config), each --configfile file, then --config
    (whose nested values Snakemake hands as strings: given the schema's types here). The shipped
    defaults and the preset lie under all of them (resolve_layers)."""
    settings = workflow.config_settings
    cli_files = [str(f) for f in workflow.overwrite_configfiles]
    own = [f for f in map(str, workflow.configfiles) if f not in cli_files]  # loaded by `configfile:`
    if settings.replace_workflow_config:
        own = []
    user = [(f, load_yaml(f)) for f in own + cli_files]
    if settings.config:
        user.append(("--config", coerce_cli_config(plain(settings.config))))
    return user


def plain(value):
    from collections.abc import Mapping

    return {k: plain(v) for k, v in value.items()} if isinstance(value, Mapping) else value


SPAWNED_JOB = workflow.remote_exec or workflow.subprocess_exec  # a job this workflow's Snakemake started
try:
    USER_LAYERS = config_layers()
    RESOLVED = resolve_layers(
        load_defaults(),
        USER_LAYERS,
        source=DEFAULTS_NAME,
        pinned_preset=os.environ.get(PINNED_PRESET_ENV) if SPAWNED_JOB else None,
    )
except UserError as err:
    raise WorkflowError(str(err)) from None
STUDY = RESOLVED.config
# Every job re-reads the config where it runs: it gets the preset resolved here (a GPU node must
# not turn a cpu study's job into a gpu one). Jobs inherit this environment (also sbatch --export=ALL).
os.environ[PINNED_PRESET_ENV] = STUDY["preset"]
if not SPAWNED_JOB:
    for line in preset_lines(RESOLVED):
        logger.info(line)

DATASET = STUDY["dataset"]["name"]
# For `snakemake --report`: its first page (workflow/report/workflow.rst, Jinja over snakemake.config)
# says when the data are the built-in demo's.
config["ferstudy_dataset"] = DATASET
ARCHS = STUDY["study"]["architectures"]
FOLDS = list(range(STUDY["data"]["folds"]))
# Extra test sets (FER2013-format CSVs) are evaluated with the final model only.
EXTRA_TEST_SETS = STUDY["data"].get("extra_test_sets") or {}
# FER+ crowd relabels (data.ferplus): the final model is also scored against them (rule ferplus_scores).
FERPLUS = STUDY["data"].get("ferplus")
R = "results"


# Rules call the package's CLI as `python3 -m ferstudy`, with the checkout (REPO) first on
# PYTHONPATH: the package comes from the checkout, in the venv that runs Snakemake and in a conda
# environment (`--sdm conda`: envs/ferstudy.yaml has the dependencies only) alike. The interpreter's
# bin directory goes first on PATH, so `.venv/bin/snakemake` works without an activated venv (a
# conda environment, activated inside the job, comes before it). Jobs inherit both.
def path_first(variable, directory):
    entries = [e for e in os.environ.get(variable, "").split(os.pathsep) if e and e != directory]
    os.environ[variable] = os.pathsep.join([directory] + entries)


path_first("PYTHONPATH", REPO)
path_first("PATH", os.path.dirname(sys.executable))


envvars:
    "PATH",
    "PYTHONPATH",
    PINNED_PRESET_ENV,


wildcard_constraints:
    arch="|".join(ARCHS),
    fold=r"\d+",
    name="|".join(EXTRA_TEST_SETS) or "(?!)",  # names checked by the config (a folder under results/final/extra/)


def announce_dataset():
    if DATASET == "demo":
        logger.warning(
            "\n" + "=" * 78 + "\nDEMO DATA: no data/fer2013.csv found, so this study runs on the built-in "
            "synthetic faces\n(preset %r). Its numbers say nothing about real faces. Download FER2013 as the "
            "README\nsays and put it at data/fer2013.csv to run the real study.\n" % STUDY["preset"] + "=" * 78
        )
    else:
        logger.info(f"Dataset: {STUDY['dataset']['csv']} (preset {STUDY['preset']!r})")


def announce_cost(log):
    """First lines of the study's log: the jobs to do and the predicted wall time (ferstudy/cost/).
    Measured on local runs only: on a cluster the submitting host's speed predicts nothing. The
    prediction resolves RESOLVED.flat: one dict that gives the same study as the layers."""
    from collections import Counter

    from ferstudy.cost.study import in_study_prediction

    enabled = STUDY["study"].get("predict_cost", True) and workflow.local_exec and not workflow.touch
    try:
        in_study_prediction(
            RESOLVED.flat,
            STUDY,
            workflow.cores,
            dict(Counter(j.rule.name for j in workflow.dag.jobs)),
            sum(1 for _ in workflow.dag.needrun_jobs()),
            results=R,
            enabled=enabled,
            started_at=workflow.start_time.timestamp(),
            snakemake_log=log,
            say=logger.info,
            planned=bool(TIME_BUDGET_S),
        )
    except Exception as err:  # the prediction is advice: never stop the study for it
        logger.warning(f"Cost prediction skipped: {err!r}")


def data_sha256(wildcards):
    """The data's content hash, a rerun trigger of `prepare` besides its mtime: different data with
    the old mtime (`cp -p`) reruns it. The demo CSV is this workflow's own output, which demo_csv's
    params already trigger (and it does not exist before its job has run)."""
    from ferstudy.data import sha256_of

    return "demo" if DATASET == "demo" else sha256_of(STUDY["dataset"]["csv"])


def spec_id(obj, name=None):
    """A short stand-in for a settings dict in `params` (the rerun trigger Snakemake compares and
    prints in `reason:`): a readable name beside a hash of the whole dict."""
    return f"{name or obj['name']} {config_hash(obj)}"


def write_yaml_logged(path, obj, log_path, ident):
    """Write a settings file (the output of a `run:` rule) and say in its log what was written."""
    from ferstudy.io import write_text

    write_text(path, yaml.safe_dump(obj, sort_keys=False))
    write_text(log_path, f"wrote {path}: {ident} (the settings' hash; a change reruns what reads it)\n")


def final_settings():
    """final_config.yaml: the final retrain's choice and settings (rule final_config)."""
    return {"architecture": STUDY["final"].get("architecture"), "training": STUDY["final"].get("training") or {}}


SELECTION = f"{R}/final/selection.json"  # checkpoint select's output: the final architecture
_said_dry_run_selection = []


def final_architecture():
    """The architecture the final model trains: final.architecture when the config names one, else
    cross-validation's choice in the output of checkpoint `select`. train_final reads only that
    architecture's run config, so a change to a losing architecture reruns its folds, the tables
    and `select`, and the final model only if the choice changes (Snakemake re-evaluates the DAG
    after the checkpoint). A dry run cannot look past a checkpoint that reruns: it plans with the
    selection on disk, and says so."""
    import json

    pinned = STUDY["final"].get("architecture")
    if pinned:
        return pinned
    if workflow.dryrun and os.path.exists(SELECTION):
        with open(SELECTION) as f:
            chosen = json.load(f).get("architecture")
        if chosen in ARCHS:
            if not _said_dry_run_selection:
                _said_dry_run_selection.append(chosen)
                logger.info(
                    f"Dry run: the final model is planned for {chosen}, the choice in {SELECTION}; should "
                    f"a rerun of `select` choose another architecture, the run retrains the final model too."
                )
            return chosen
    with open(checkpoints.select.get().output[0]) as f:
        return json.load(f)["architecture"]


# ---------------------------------------------------------------- the time-budget plan (plan.smk)
from ferstudy.plan import FINAL_EPOCHS_CAP_FACTOR, apply_plan, budget_seconds, load_plan, plan_relevant, user_settings

try:
    TIME_BUDGET_S = budget_seconds(STUDY["study"].get("time_budget"))
except UserError as err:
    raise WorkflowError(str(err)) from None
PLAN = f"{R}/plan.json"
PLAN_INPUT = [PLAN] if TIME_BUDGET_S else []  # an input of every rule that reads the plan
FINAL_PLANNED = f"{R}/final/final_config_planned.yaml"  # train_final's settings under a plan


def plan_inputs():
    """What the plan depends on (plan_config's output and its rerun trigger): the study as its layers
    resolve it, the budget, and which planned keys the user set (they win)."""
    return {
        "config": plan_relevant(RESOLVED.flat),
        "time_budget_s": TIME_BUDGET_S,
        "user_set": user_settings(USER_LAYERS),
    }


def planned_study(plan_files, final_arch=None):
    """STUDY with the plan's budgets (`plan_files`: a rule's input.plan, empty without a budget)."""
    return apply_plan(STUDY, load_plan(plan_files[0]) if plan_files else None, final_arch)


def data_targets():
    return [f"{R}/data/dataset.h5", f"{R}/data/summary.csv", f"{R}/data/summary.md", f"{R}/data/faces.png"]


FIGURE_NAMES = list(FIGURES)  # ferstudy/figures/__init__.py: one list for the rule, the command and the report


def figure_targets():
    return [f"{R}/figures/{name}.png" for name in FIGURE_NAMES]


def ferplus_targets():
    """results/final/ferplus.json when data.ferplus is set, else nothing (the report reads it if present)."""
    return [f"{R}/final/ferplus.json"] if FERPLUS else []


def ferplus_scored():
    """Whether the report reads results/final/ferplus.json: data.ferplus is set (rule ferplus_scores
    makes it), or it exists (scored by hand with `ferstudy ferplus`; a report not rerun then left
    FER+ out of the committed real run's report)."""
    return bool(FERPLUS) or os.path.exists(f"{R}/final/ferplus.json")


def all_targets():
    return data_targets() + [
        f"{R}/tables/cv_summary.csv",
        f"{R}/final/selection.json",
        f"{R}/final/metrics.json",
        *ferplus_targets(),
        *figure_targets(),
        f"{R}/report/report.md",
        f"{R}/report/appendix.md",
    ]


# ---------------------------------------------------------------- pages for readers (publish.smk)
HTML_TABLES = {  # page name: (CSV, caption, category, subcategory, label) in `snakemake --report`
    "cv_summary": (
        f"{R}/tables/cv_summary.csv",
        "cv_summary.rst",
        "3 Cross-validation",
        "Tables",
        "cross-validation summary",
    ),
    "ablation": (
        f"{R}/tables/ablation.csv",
        "ablation.rst",
        "3 Cross-validation",
        "Tables",
        "each variant against the baseline",
    ),
    "cost": (f"{R}/tables/cost.csv", "cost.rst", "3 Cross-validation", "Tables", "cost per architecture"),
    "data_summary": (f"{R}/data/summary.csv", "data_summary.rst", "2 Data", "Tables", "images per split and emotion"),
}


HTML_REPORT = f"{R}/report/html"  # the study report as a web page: index.html and its figures


def html_page(name):
    return f"{R}/report/pages/{name}.html"


def html_targets():
    """The report and the tables as HTML pages (rule report_html), part of the default target."""
    return [HTML_REPORT, html_page("final_metrics"), *map(html_page, HTML_TABLES)]


def handin_name():
    """The hand-in zip's file name (config key `handin`): handin.zip, or with `handin.authors`
    Surname1_Surname2_<handin.name>.zip (ferstudy.handin.zip_name)."""
    from ferstudy.handin import zip_name

    return zip_name(STUDY.get("handin") or {})


def code_version(wildcards):
    """HEAD of the workflow's git checkout (the hand-in's rerun trigger), or "" outside git."""
    import subprocess

    try:
        head = subprocess.run(
            ["git", "-C", REPO, "rev-parse", "--verify", "--quiet", "HEAD"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return head.stdout.strip()


# ---------------------------------------------------------------- resources (local and cluster)
# Every rule declares threads and resources (mem_mb, runtime in minutes), so the Slurm profile
# (profiles/slurm) needs no numbers per rule: ferstudy/resources.py estimates them from the config
# (torch-free). Training asks for a GPU (resource `gpu`, `sbatch --gpus=1` under Slurm) when the
# config says `training: {device: cuda}`. A retried job (`retries:` in the profile) gets `attempt`
# x runtime and memory and resumes from its per-epoch checkpoint. Override any value:
# --set-resources train_fold:runtime=600 train_fold:mem_mb=8000 --set-threads train_final=8.
import functools
import math

from ferstudy import resources

CLUSTER_FINAL_THREADS = 4  # threads of train_final on a cluster (locally: every core given)


def mb(value):
    return int(math.ceil(value / 256) * 256)


def final_archs():
    return [STUDY["final"]["architecture"]] if STUDY["final"].get("architecture") else ARCHS


@functools.lru_cache(maxsize=None)
def train_estimate(arch, final=False, threads=1):
    return resources.train_estimate(STUDY, arch, final=final, threads=threads)


@functools.lru_cache(maxsize=None)
def uses_gpu(arch, final=False):
    return resources.uses_gpu(resolve_arch(STUDY, arch, final=final))


def train_fold_runtime(wildcards, threads, attempt):
    return attempt * train_estimate(wildcards.arch, threads=threads)[0]


def train_fold_mem_mb(wildcards, threads, attempt):
    return mb(attempt * train_estimate(wildcards.arch, threads=threads)[1])


def train_fold_gpu(wildcards):
    return int(uses_gpu(wildcards.arch))


def train_final_runtime(wildcards, threads, attempt):
    # The architecture is chosen by cross-validation later: size for the most expensive one. A plan
    # (study.time_budget) may give the final model up to FINAL_EPOCHS_CAP_FACTOR x its epochs.
    planned = FINAL_EPOCHS_CAP_FACTOR if TIME_BUDGET_S else 1
    return attempt * planned * max(train_estimate(a, True, threads)[0] for a in final_archs())


def train_final_mem_mb(wildcards, threads, attempt):
    return mb(attempt * max(train_estimate(a, True, threads)[1] for a in final_archs()))


def train_final_gpu(wildcards):
    return int(any(uses_gpu(a, final=True) for a in final_archs()))


def train_final_threads(wildcards):
    """Every core of a local run (--cores N); CLUSTER_FINAL_THREADS for a cluster job."""
    if workflow.non_local_exec or workflow.remote_exec:
        return CLUSTER_FINAL_THREADS
    return workflow.cores


def prepare_runtime(wildcards, attempt):
    return attempt * resources.prepare_estimate(STUDY)[0]


def prepare_mem_mb(wildcards, attempt):
    return mb(attempt * resources.prepare_estimate(STUDY)[1])


def predict_extra_runtime(wildcards, attempt):
    path = EXTRA_TEST_SETS[wildcards.name]
    return attempt * resources.predict_extra_estimate(STUDY, final_archs(), path)[0]


def predict_extra_mem_mb(wildcards, attempt):
    path = EXTRA_TEST_SETS[wildcards.name]
    return mb(attempt * resources.predict_extra_estimate(STUDY, final_archs(), path)[1])


def longer_recheck_config(run_config, fold_config, factor):
    """The study's run config at `factor` x the epochs, in the precision that fold trained in."""
    from ferstudy.config import load_yaml
    from ferstudy.recheck import longer_run_config

    precision = load_yaml(fold_config).get("precision")
    return longer_run_config(load_yaml(run_config), factor, precision)
