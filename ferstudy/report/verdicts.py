"""How a verdict is stated, everywhere in the report: the verdict of the raw corrected t-test
(p < alpha), its Holm-adjusted p over all comparisons, and its budget-stability label
(ferstudy/stability.py), as `verdict_clause` words it (the appendix) or `outcome` in a few words
(the main report, whose numbers stand in its table); the labels counted; the difference each
comparison could have detected; whether the fold spread samples initialisation noise. Summaries
lead with the verdicts that survive Holm and hold."""

import math

import numpy as np

from .text import and_join, pp, pval

SIGNIFICANT = ("helped", "hurt")
LABEL_WORDS = {
    "holds": ("holds", "hold"),
    "budget-dependent": ("is budget-dependent", "are budget-dependent"),
    "undecided": ("is undecided", "are undecided"),
    "unchecked": ("is unchecked", "are unchecked"),
}


def _significant(row):
    return row["verdict"] in SIGNIFICANT


def _label(row):
    return row.get("stability") or "unchecked"


def _verdict_phrase(row):
    v = row["verdict"]
    if v in SIGNIFICANT:
        return v
    if row["p"] is None or not np.isfinite(row["p"]):
        return "could not be tested"
    return "made no measurable difference"


def _effect(row):
    """'+4.1 pp, p = 0.012, Holm p = 0.13' (and the test's note when there is one)."""
    holm_p = f", Holm {pval(row['p_holm'])}" if np.isfinite(row.get("p_holm", math.nan)) else ""
    note = f"; {row['note']}" if row.get("note") else ""
    compute = (
        f"; at {row['compute_ratio']:.1f}x the baseline's compute, a verdict on the operation and compute together"
        if row.get("compute_mixed")
        else ""
    )
    return f"{pp(row['diff_pp'])}, {pval(row['p'])}{holm_p}{note}{compute}"


def verdict_clause(row: dict, reason: bool = False) -> str:
    """How every verdict is stated: 'helped (+4.9 pp, p = 0.024, Holm p = 0.29; budget-dependent)',
    and with `reason` the label's reason after a colon."""
    why = f": {row['stability_reason']}" if reason and row.get("stability_reason") else ""
    return f"{_verdict_phrase(row)} ({_effect(row)}; {_label(row)}{why})"


def _strength(row):
    """Sort key: significant verdicts that survive Holm first, those that hold before the others, then by p."""
    p = row["p"] if np.isfinite(row["p"]) else 1.0
    return (not (_significant(row) and row["holm"]), not _significant(row), _label(row) != "holds", p)


def label_counts(rows: list[dict]) -> dict[str, int]:
    """{label: count} in the order holds, budget-dependent, undecided (unchecked last), zeros left out."""
    counts = {lab: sum(_label(r) == lab for r in rows) for lab in LABEL_WORDS}
    return {lab: n for lab, n in counts.items() if n}


def counts_text(counts: dict[str, int]) -> str:
    """'3 hold, 1 is budget-dependent and 7 are undecided'."""
    return and_join(f"{n} {LABEL_WORDS[lab][n != 1]}" for lab, n in counts.items())


def min_detectable_pp(ctx: dict) -> tuple | None:
    """(k, df, critical t, {arch: the difference that would have reached p < alpha, pp}) from each
    comparison's own spread and n_train/n_test; None without comparisons."""
    from scipy import stats

    abl = ctx["ablation"]
    if not abl or int(abl[0]["k"]) < 2:
        return None
    k, df = int(abl[0]["k"]), int(abl[0]["df"])
    t_crit = float(stats.t.ppf(1 - ctx["alpha"] / 2, df))
    mdd = {
        r["arch"]: t_crit * math.sqrt(1 / k + _n_test(r, ctx) / _n_train(r, ctx)) * r["std_pp"]
        for r in abl
        if np.isfinite(r["std_pp"])
    }
    return k, df, t_crit, mdd


def _n_train(row, ctx):
    return float(row["n_train"]) if row.get("n_train") else ctx["data"]["fold_train"]


def _n_test(row, ctx):
    return float(row["n_test"]) if row.get("n_test") else ctx["data"]["fold_test"]


def outcome(row: dict) -> str:
    """A verdict in a few words: 'clearly hurt' (survives Holm and holds), 'helped', 'hurt at this
    budget only' (budget-dependent), 'made no measurable difference'."""
    if not _significant(row):
        return "could not be tested" if not np.isfinite(row["p"]) else "made no measurable difference"
    if _label(row) == "budget-dependent":
        return f"{row['verdict']} at this budget only"
    return f"clearly {row['verdict']}" if row["holm"] and _label(row) == "holds" else row["verdict"]


def seed_noise_sampled(ctx: dict) -> bool:
    """Whether the fold models started from different initial weights (fold k from seed s + k, as each
    fold's config.yaml records in `init_seed`): then the fold spread holds initialisation noise as
    well as data noise. Folds trained before `init_seed` existed all started from seed s."""
    by_fold: dict = {}
    for fo in ctx["precision"]["folds"]:
        by_fold.setdefault(fo["fold"], set()).add(fo.get("init_seed"))
    seeds = {s for ss in by_fold.values() for s in ss}
    return None not in seeds and len(seeds) > 1


def compute_note(row: dict) -> str:
    """'0.3x': the variant's compute against the baseline's ('' when unknown)."""
    ratio = row.get("compute_ratio", math.nan)
    return f"{ratio:.1f}x" if np.isfinite(ratio) else ""
