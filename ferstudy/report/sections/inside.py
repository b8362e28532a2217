"""Section 7, what the filters and activations show: the first-layer kernels against random ones and
the last feature map's channels against shuffled labels (the numbers of report.model_facts)."""

from ..text import and_join, num, pct, plural, pval


def model_findings(ctx: dict) -> dict:
    alpha = ctx["alpha"]
    f = {}
    fl = ctx["inspect"]["filters"]
    if fl:
        frac = fl["edge"] / fl["n"]
        text = (
            f"By a simple measure (a linear ramp explains half a kernel's variance, its weights nearly "
            f"cancel), {fl['edge']} of the {fl['n']} first-layer kernels ({pct(frac, 0)}) are oriented edge "
            f"detectors, against {pct(fl['chance_edge'], 0)} of random kernels; {fl['blob']} are blobs."
        )
        if fl["p_edge"] < alpha:
            orient = max(("horizontal", "vertical", "diagonal"), key=lambda o: fl[o])
            text += f" That is more than chance ({pval(fl['p_edge'])})" + (
                f", mostly {orient} ({fl[orient]})." if fl[orient] > fl["edge"] / 2 else "."
            )
        else:
            text += (
                f" That is no more than chance ({pval(fl['p_edge'])}): the first layer has not clearly become "
                f"a bank of edge detectors."
            )
        f["filters"] = text
    else:
        f["filters"] = "The final model has no first-layer kernels larger than 1x1 to classify."
    ch = ctx["inspect"]["channels"]
    if not ch:
        f["channels"] = "The final model has no spatial feature maps to inspect."
        return f
    from scipy import stats

    fav = max(ch["prefer"], key=ch["prefer"].get)
    none = [e for e, v in ch["prefer"].items() if v == 0]
    text = (
        f"In the last feature map ({ch['channels']} channels of {ch['size']}, {num(ch['faces'])} PublicTest faces), "
        + (f"{plural(ch['dead'], 'channel')} never changed; of the other {ch['live']}, " if ch["dead"] else "")
        + f"{ch['prefer'][fav]} respond most to {fav} ({ch['prefer_null'][fav]} with shuffled labels)"
        + (f" and none prefers {and_join(none)}" if none else "")
        + ". "
    )
    expected = 0.05 * ch["live"]
    text += (
        f"The emotion explains a median {pct(ch['eta_median'])} of a channel's variance (η², "
        f"{pct(ch['eta_null_median'])} with shuffled labels); {ch['selective']} of {ch['live']} channels exceed "
        f"the shuffled 95th percentile (about {expected:.0f} would by chance)"
    )
    p_sel = float(stats.binom.sf(ch["selective"] - 1, ch["live"], 0.05)) if ch["live"] else 1.0
    text += (
        f", so the deep channels carry emotion information ({pval(p_sel)})."
        if p_sel < alpha
        else f": no more than chance ({pval(p_sel)})."
    )
    f["channels"] = text
    return f


def findings(ctx: dict) -> dict:
    return model_findings(ctx)
