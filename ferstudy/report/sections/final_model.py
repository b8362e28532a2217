"""Appendix A5, the final model in detail: its budget against a fold model's, its scores on every
test set, why PrivateTest differs from the cross-validation mean, its training history, and why
its PrivateTest score is unbiased."""

import math

from ..specs import has_dropout
from ..text import and_join, code, num, pct, seconds


def final_budget_text(ctx: dict) -> str:
    """How the final budget was set, against a fold model's."""
    fw, cw = ctx["final"]["workload"], ctx["chosen"]["workload"]
    if not fw:
        return ""
    preset = f"`{ctx['preset']}` preset" if ctx.get("preset") else "preset"
    text = (
        f"The final budget comes from `final.training` in the config: {fw['epochs']} epochs on all "
        f"{num(fw['n_train'])} Training faces at batch {fw['batch_size']}, {num(fw['steps'])} SGD steps, "
        f"{fw['steps'] / max(cw['steps'], 1):.1f}x a fold model's {num(cw['steps'])} ({cw['epochs']} epochs on "
        f"about {num(cw['n_train'])} faces at batch {cw['batch_size']}). It was set so that the whole study fits "
        f"the {preset}'s time budget"
    )
    cp = ctx.get("cost_prediction")
    whole = cp["rows"][0] if cp and cp.get("rows") else None
    if whole and whole.get("predicted_s") and whole.get("actual_s"):
        text += (
            f" (predicted {seconds(whole['predicted_s'])} when the study started; it took {seconds(whole['actual_s'])})"
        )
    return text + "."


def public_private_text(ctx: dict) -> str:
    pub, prv = ctx["final"]["public"], ctx["final"]["private"]
    se = math.sqrt(sum(m["accuracy"] * (1 - m["accuracy"]) / m["n"] for m in (pub, prv)))  # of the difference
    gap = 100 * (pub["accuracy"] - prv["accuracy"])
    text = f"The final model scores {pct(prv['accuracy'])} on PrivateTest and {pct(pub['accuracy'])} on PublicTest. "
    if abs(gap) <= 2 * 100 * se:
        return text + f"The {abs(gap):.1f} pp gap is within sampling noise (two standard errors: {200 * se:.1f} pp)."
    return text + (
        f"PublicTest is {abs(gap):.1f} pp {'higher' if gap > 0 else 'lower'}, more than two standard "
        f"errors ({200 * se:.1f} pp)" + (", as expected when a set chooses the checkpoint." if gap > 0 else ".")
    )


def cv_gap_text(ctx: dict) -> str:
    """Why PrivateTest differs from the cross-validation mean: what the final model had that a fold model had not."""
    fin, chosen = ctx["final"], ctx["chosen"]
    fw, cw = fin["workload"], chosen["workload"]
    ft, ct = fin["training"], ctx["chosen_training"]
    gap = 100 * (fin["private"]["accuracy"] - chosen["accuracy_mean"])
    had = []
    if fw:
        if fw["n_train"] != round(cw["n_train"]):
            had.append(
                f"{num(fw['n_train'])} training faces against about {num(cw['n_train'])} "
                f"({fw['n_train'] / max(cw['n_train'], 1):.1f}x)"
            )
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
    text = (
        f"PrivateTest accuracy is {abs(gap):.1f} pp {'above' if gap >= 0 else 'below'} the cross-validation "
        f"mean of {code(chosen['architecture'])} ({pct(chosen['accuracy_mean'])})."
    )
    if had:
        text += f" A fold model is not the final model: the final one had {and_join(had)}."
    p = fin["private"]["accuracy"]
    noise = 200 * math.sqrt(p * (1 - p) / fin["private"]["n"])
    if abs(gap) <= noise:
        text += f" The difference is within PrivateTest's sampling noise (two standard errors: {noise:.1f} pp)."
    elif gap > 0:
        text += (
            " Each of these usually raises accuracy, so the cross-validation means compare networks at the fold "
            "budget and do not estimate the final accuracy."
        )
    else:
        text += f" It scored lower despite them, by more than PrivateTest's sampling noise (two standard errors: {noise:.1f} pp)."
    return text


def final_history_text(ctx: dict) -> str:
    fin = ctx["final"]
    hist = fin["history"]
    if not hist:
        return ""
    last = hist[-1]
    epochs, be = int(last["epoch"]), fin["best_epoch"]
    text = (
        ""
        if be is None
        else (
            f"PublicTest accuracy peaked at epoch {be} of {epochs}"
            + (", the last, so the model had not clearly stopped improving" if be == epochs else "")
            + ". "
        )
    )
    augment = fin["training"].get("augment")
    augmented = None if augment is None else bool(augment.get("enabled", True))
    dropout = has_dropout(fin["model"])
    measured = {True: "augmented faces", False: "un-augmented training faces", None: "training batches"}[augmented]
    gap = 100 * (last["train_acc"] - last["val_acc"])
    text += (
        f"At the last epoch training accuracy ({measured}) was {pct(last['train_acc'])}, measured during the "
        f"epoch{' with dropout on' if dropout else ''}, against {pct(last['val_acc'])} on PublicTest"
    )
    if gap > 10:
        text += ": the network fits its training faces much better than new ones."
    elif gap <= 3:
        text += ": little sign of over-fitting" + (
            ", though augmented faces are harder than the faces themselves, so the gap understates it."
            if augmented
            else "."
        )
    else:
        text += "."
    return text


def tta_text(fin: dict) -> str:
    """What PublicTest chose of the test-time augmentation (train-final measures it once, at the end)."""
    accuracy, chosen = fin["tta_public_accuracy"], fin["training"].get("tta", "none")
    other = [m for m in accuracy if m != "none"]
    if not other:
        return ""
    mode = other[0]
    verdict = "kept" if chosen == mode else "left out (no better than none)"
    return (
        f" PublicTest also chose the test-time augmentation: {mode} {pct(accuracy[mode])} against "
        f"{pct(accuracy['none'])} without, so {mode} was {verdict}."
    )


def findings(ctx: dict) -> dict:
    fin, prv = ctx["final"], ctx["final"]["private"]
    protocol = (
        f"PrivateTest was predicted once, after cross-validation had chosen the architecture and PublicTest the "
        f"epoch{'' if fin['best_epoch'] is None else ' (' + str(fin['best_epoch']) + ')'}; nothing read it to "
        f"choose anything, so {pct(prv['accuracy'])} is an unbiased estimate, while the PublicTest score is "
        f"optimistic." + tta_text(fin)
    )
    return {
        "final_budget": final_budget_text(ctx),
        "final": public_private_text(ctx),
        "cv_gap": cv_gap_text(ctx),
        "history": final_history_text(ctx),
        "protocol": protocol,
    }
