"""Section 6, the final architecture and why: the choice and the runner-up, the final model's test
scores, its budget against a fold model's, why PrivateTest differs from the cross-validation
mean, its training history, and the extra test sets (`data.extra_test_sets`)."""

import math

import numpy as np

from ... import CLASS_NAMES
from ..specs import has_dropout
from ..text import and_join, code, num, pct, plural, pp, pval, seconds
from ..verdicts import verdict_clause


def selection_findings(ctx):
    sel, runner, test = ctx["selection"], ctx["selection"].get("runner_up"), ctx.get("runner_up_test")
    chosen, by_cv, alpha = ctx["chosen"], ctx["selected_by_cv"], ctx["alpha"]
    base = next(r for r in ctx["archs"] if r["architecture"] == ctx["baseline"])
    mname = ctx["metric"].replace("_", " ")
    tie = bool(runner) and runner["mean"] == sel["mean"] and by_cv
    text = (f"The final architecture is {code(sel['architecture'])}, {'chosen by ' if by_cv else ''}{sel['reason']}"
            f"{' (a tie, broken by name)' if tie else ''}: "
            f"{pct(sel['mean'])} ± {pct(sel['std'])} over {plural(int(chosen['folds']), 'fold')}.")
    paired = ""
    if runner:
        margin = 100 * (sel["mean"] - runner["mean"])
        text += (f" {'The runner-up' if by_cv else 'The best other architecture'} {code(runner['architecture'])} "
                 f"reached {pct(runner['mean'])}, "
                 + (f"{abs(margin):.1f} pp {'behind' if margin >= 0 else 'ahead'}" if margin else "a tie"))
        if test and np.isfinite(test["p"]):
            paired = f"; paired t-test {pval(test['p'])}"
            text += (f". Paired by fold, the corrected resampled t-test of the two gives t = {test['t']:.2f} "
                     f"(df = {test['df']}), {pval(test['p'])}"
                     + (f": a measurable difference at α = {alpha:g}." if test["p"] < alpha else
                        ", so these folds do not settle which of the two is better."))
        else:
            text += "."
    row = next((r for r in ctx["ablation"] if r["arch"] == sel["architecture"]), None)
    if sel["architecture"] == ctx["baseline"] and by_cv:
        text += " No variant had a higher mean than the baseline, so the baseline itself was retrained."
    elif row is not None:
        text += f" Against the baseline it {verdict_clause(row, reason=True)}."
    if sel["architecture"] != ctx["baseline"] and chosen["mflops"] and base["mflops"]:
        text += (f" It costs {chosen['mflops'] / base['mflops']:.1f}x the baseline's compute and "
                 f"{chosen['params'] / base['params']:.1f}x its parameters.")
    order = ("" if not runner else "tied with" if runner["mean"] == sel["mean"] else
             "ahead of" if sel["mean"] > runner["mean"] else "behind")
    short = ((f"Cross-validation chose {code(sel['architecture'])}" if by_cv else
              f"The config named {code(sel['architecture'])} as the final architecture")
             + f" ({pct(sel['mean'])} ± {100 * sel['std']:.1f} mean {mname})"
             + (f", {order} {code(runner['architecture'])} ({pct(runner['mean'])}{paired})" if runner else "") + ".")
    return {"selection": text, "short_selection": short}


def final_findings(ctx):
    fin = ctx["final"]
    pub, prv = fin["public"], fin["private"]
    f = {"final_budget": final_budget_text(ctx), "cv_gap": cv_gap_text(ctx)}
    se = math.sqrt(sum(m["accuracy"] * (1 - m["accuracy"]) / m["n"] for m in (pub, prv)))  # of the difference
    gap = 100 * (pub["accuracy"] - prv["accuracy"])
    text = f"The final model scores {pct(prv['accuracy'])} on PrivateTest and {pct(pub['accuracy'])} on PublicTest. "
    if abs(gap) <= 2 * 100 * se:
        text += f"The {abs(gap):.1f} pp gap is within sampling noise (two standard errors: {200 * se:.1f} pp)."
    else:
        text += (f"PublicTest is {abs(gap):.1f} pp {'higher' if gap > 0 else 'lower'}, more than two standard "
                 f"errors ({200 * se:.1f} pp)" + (", as expected when a set chooses the checkpoint." if gap > 0 else "."))
    f["final"] = text
    if fin["extra"]:
        f["extra"] = ("On the extra test set" + ("s" if len(fin["extra"]) > 1 else "") + " it scores " + and_join(
            f"{pct(m['accuracy'])} on {code(name)} ({num(m['n'])} faces)" for name, m in sorted(fin["extra"].items()))
            + f", against {pct(prv['accuracy'])} on PrivateTest.")
    f["short_final"] = (f"Retrained on all of Training, it scores {pct(prv['accuracy'])} on the untouched "
                        f"PrivateTest set (macro F1 {prv['macro_f1']:.3f}).")
    f["history"] = final_history_text(ctx)
    f["protocol"] = (
        f"PrivateTest was predicted once, after cross-validation had chosen the architecture and PublicTest the "
        f"epoch{'' if fin['best_epoch'] is None else ' (' + str(fin['best_epoch']) + ')'}; nothing read it to "
        f"choose anything, so {pct(prv['accuracy'])} is an unbiased estimate, while the PublicTest score is optimistic.")
    return f


def final_budget_text(ctx):
    """How the final budget was set, against a fold model's."""
    fw, cw = ctx["final"]["workload"], ctx["chosen"]["workload"]
    if not fw:
        return ""
    preset = f"`{ctx['preset']}` preset" if ctx.get("preset") else "preset"
    text = (f"The final budget comes from `final.training` in the config: {fw['epochs']} epochs on all "
            f"{num(fw['n_train'])} Training faces at batch {fw['batch_size']}, {num(fw['steps'])} SGD steps, "
            f"{fw['steps'] / max(cw['steps'], 1):.1f}x a fold model's {num(cw['steps'])} ({cw['epochs']} epochs on "
            f"about {num(cw['n_train'])} faces at batch {cw['batch_size']}). It was set so that the whole study fits "
            f"the {preset}'s time budget")
    cp = ctx.get("cost_prediction")
    whole = cp["rows"][0] if cp and cp.get("rows") else None
    if whole and whole.get("predicted_s") and whole.get("actual_s"):
        text += f" (predicted {seconds(whole['predicted_s'])} when the study started; it took {seconds(whole['actual_s'])})"
    return text + "."


def cv_gap_text(ctx):
    """Why PrivateTest differs from the cross-validation mean: what the final model had that a fold model had not."""
    fin, chosen = ctx["final"], ctx["chosen"]
    fw, cw = fin["workload"], chosen["workload"]
    ft, ct = fin["training"], ctx["chosen_training"]
    gap = 100 * (fin["private"]["accuracy"] - chosen["accuracy_mean"])
    had = []
    if fw:
        if fw["n_train"] != round(cw["n_train"]):
            had.append(f"{num(fw['n_train'])} training faces against about {num(cw['n_train'])} "
                       f"({fw['n_train'] / max(cw['n_train'], 1):.1f}x)")
        if fw["epochs"] != cw["epochs"]:
            had.append(f"{fw['epochs']} epochs against {cw['epochs']}")
        had.append(f"{num(fw['steps'])} SGD steps against {num(cw['steps'])}")
    for key, what in (("batch_size", "batch size"), ("lr", "learning rate"), ("schedule", "schedule")):
        if key in ft and ft.get(key) != ct.get(key):
            had.append(f"{what} {ft[key]} against {ct.get(key)}")
    if ft.get("tta", "none") != ct.get("tta", "none"):
        had.append(f"test-time augmentation {ft.get('tta', 'none')} against {ct.get('tta', 'none')}")
    if fin["best_epoch"] is not None:
        had.append(f"the checkpoint PublicTest chose (epoch {fin['best_epoch']})")
    text = (f"PrivateTest accuracy is {abs(gap):.1f} pp {'above' if gap >= 0 else 'below'} the cross-validation "
            f"mean of {code(chosen['architecture'])} ({pct(chosen['accuracy_mean'])}).")
    if had:
        text += f" A fold model is not the final model: the final one had {and_join(had)}."
    p = fin["private"]["accuracy"]
    noise = 200 * math.sqrt(p * (1 - p) / fin["private"]["n"])
    if abs(gap) <= noise:
        text += f" The difference is within PrivateTest's sampling noise (two standard errors: {noise:.1f} pp)."
    elif gap > 0:
        text += (" Each of these usually raises accuracy, so the cross-validation means compare networks at the fold "
                 "budget and do not estimate the final accuracy.")
    else:
        text += f" It scored lower despite them, by more than PrivateTest's sampling noise (two standard errors: {noise:.1f} pp)."
    return text


def final_history_text(ctx):
    fin = ctx["final"]
    hist = fin["history"]
    if not hist:
        return ""
    last = hist[-1]
    epochs, be = int(last["epoch"]), fin["best_epoch"]
    text = "" if be is None else (f"PublicTest accuracy peaked at epoch {be} of {epochs}" +
                                  (", the last, so the model had not clearly stopped improving"
                                   if be == epochs else "") + ". ")
    augment = fin["training"].get("augment")
    augmented = None if augment is None else bool(augment.get("enabled", True))
    dropout = has_dropout(fin["model"])
    measured = {True: "augmented faces", False: "un-augmented training faces", None: "training batches"}[augmented]
    gap = 100 * (last["train_acc"] - last["val_acc"])
    text += (f"At the last epoch training accuracy ({measured}) was {pct(last['train_acc'])}, measured during the "
             f"epoch{' with dropout on' if dropout else ''}, against {pct(last['val_acc'])} on PublicTest")
    if gap > 10:
        text += ": the network fits its training faces much better than new ones."
    elif gap <= 3:
        text += (": little sign of over-fitting" + (", though augmented faces are harder than the faces themselves, "
                                                     "so the gap understates it." if augmented else "."))
    else:
        text += "."
    return text


def cross_dataset_findings(ctx):
    """The extra test sets (data.extra_test_sets) beside PrivateTest: table rows (faces, accuracy,
    balanced accuracy, recall per emotion; '–' where a set has no face of that emotion) and what the
    difference from PrivateTest does and does not mean."""
    extra, prv = ctx["final"]["extra"], ctx["final"]["private"]
    if not extra:
        return {}

    def recall(m, c):
        return m["per_class"][c]["recall"] if m["per_class"][c]["support"] else None

    def row(name, m):
        return [name, num(m["n"]), pct(m["accuracy"]), pct(m["balanced_accuracy"]),
                *("–" if recall(m, c) is None else pct(recall(m, c), 0) for c in CLASS_NAMES)]

    rows = [row("PrivateTest (FER2013)", prv)] + [row(code(name), m) for name, m in sorted(extra.items())]
    diffs = {name: 100 * (m["accuracy"] - prv["accuracy"]) for name, m in sorted(extra.items())}
    lower = [n for n, d in diffs.items() if d < 0]
    higher = [n for n, d in diffs.items() if d >= 0]
    parts = []
    if lower:
        parts.append("lower on " + and_join(f"{code(n)} ({pp(diffs[n])})" for n in lower))
    if higher:
        parts.append(("higher" if all(diffs[n] > 0 for n in higher) else "no lower") + " on "
                     + and_join(f"{code(n)} ({pp(diffs[n])})" for n in higher))
    text = f"Against PrivateTest's {pct(prv['accuracy'])}, accuracy is {' and '.join(parts)}."
    falls = [(100 * (recall(m, c) - recall(prv, c)), n, c) for n, m in extra.items() for c in CLASS_NAMES
             if recall(m, c) is not None and recall(prv, c) is not None]
    worst = min(falls) if falls else None
    if worst and worst[0] < 0:
        text += f" The largest fall in recall is {worst[2]} on {code(worst[1])} ({pp(worst[0])})."
    text += (" A difference like this measures domain shift, not a model that got worse: another camera, another "
             "population and another labelling protocol (posed or spontaneous faces, who chose the label and how) "
             "change the task itself, so it reads as \"the same model, worse\" only where a set's labels follow "
             "FER2013's protocol.")
    return {"cross_dataset_rows": rows, "cross_dataset": text}


def findings(ctx):
    return {**selection_findings(ctx), **final_findings(ctx), **cross_dataset_findings(ctx)}
