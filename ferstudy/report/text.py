"""Number formatting (also the template's Jinja filters), markdown tables and lists, and how the
report's words are counted.

How words are counted (`prose_words`): the rendered markdown minus fenced code blocks, table rows
(lines starting with `|`), image lines (`![...](...)`), headings (`#`), HTML comments and
horizontal rules; link targets and emphasis markers are dropped, link texts and inline code are
kept (`snake_case` names are one word); a word is a whitespace-separated token containing a letter
or a digit. The main report aims at 1,200-1,500 such words (`PROSE_WORDS`: the assignment's
"maximum 1,200-1,500 words"; the appendix has no limit); `ferstudy report` logs the count and warns
outside that range.

Repeated sentence skeletons (`sentence_skeletons`, `repeated_skeletons`): each prose sentence with
its code spans, numbers and the given names (emotions, test sets) masked; a report that states one
verdict after another in one formula shows the same skeleton many times. `ferstudy report` warns
when a skeleton comes back more than `MAX_SKELETON_REPEATS` times.
"""

import re
from collections.abc import Iterable

import numpy as np

PROSE_WORDS = (1200, 1500)
MAX_SKELETON_REPEATS = 3


def pct(x: float | None, digits: int = 1) -> str:
    """0.6134 -> '61.3%'."""
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.{digits}f}%"


def pp(x: float | None, digits: int = 1) -> str:
    """Percentage points with a sign: 4.06 -> '+4.1 pp'."""
    return "n/a" if x is None or not np.isfinite(x) else f"{x:+.{digits}f} pp"


def pval(p: float | None) -> str:
    """'p = 0.012', 'p < 0.001', or 'no p-value'."""
    if p is None or not np.isfinite(p):
        return "no p-value"
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}" if p < 0.1 else f"p = {p:.2f}"


def p_cell(p: float | None) -> str:
    """A p-value for a table cell: '0.012', '< 0.001', 'n/a'."""
    return pval(p).removeprefix("p = ").removeprefix("p ").replace("no p-value", "n/a")


def num(x: float) -> str:
    return f"{int(round(x)):,}"


def mflops(x: float | None) -> str:
    """MFLOPs: one decimal below 100 ('9.5', '36.8'), none above ('751', '2,192')."""
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.1f}" if x < 100 else f"{x:,.0f}"


def seconds(s: float | None) -> str:
    """Human wall time: '42 s', '12.5 min', '2.3 h'."""
    if s is None or not np.isfinite(s):
        return "n/a"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def code(name: str) -> str:
    return f"`{name}`"


def mean_std(metric: str, row: dict) -> str:
    """'61.3% ± 1.2' from row['<metric>_mean'] and row['<metric>_std'] (fractions)."""
    return f"{pct(row[f'{metric}_mean'])} ± {100 * row[f'{metric}_std']:.1f}"


def extract(key: str, mapping: dict) -> object:
    return mapping[key]


def md_table(headers: list, rows: list[list], align: list[str] | None = None) -> str:
    """Markdown table; `align` one of 'l'/'r' per column (default: text left, numbers right)."""
    align = align or ["l"] + ["r"] * (len(headers) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "|".join(sep) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def and_join(items: Iterable[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def plain_description(desc: str | float | None) -> str:
    """A config description for a sentence: its parenthesised details dropped (widths a preset may
    change) and, after a colon, what the variant does: 'no pooling: stride-2 convolutions' -> 'stride-2 convolutions'.
    An architecture without a description has none (None, or NaN where a table read back an empty cell)."""
    text = desc if isinstance(desc, str) else ""
    return re.sub(r"\s*\([^)]*\)", "", text).split(": ")[-1].strip()


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


_IMAGE_LINE = re.compile(r"^\s*!\[[^\]]*\]\([^)]*\)\s*$")


def prose_lines(markdown: str) -> list[str]:
    """The prose lines of a markdown document: no fenced code, table rows, headings, image lines,
    HTML comments or horizontal rules."""
    markdown = re.sub(r"<!--.*?-->", " ", markdown, flags=re.S)
    kept, fenced = [], False
    for line in markdown.splitlines():
        s = line.strip()
        if s.startswith("```") or s.startswith("~~~"):
            fenced = not fenced
            continue
        if fenced or s.startswith("|") or s.startswith("#") or _IMAGE_LINE.match(s) or re.fullmatch(r"[-*_]{3,}", s):
            continue
        kept.append(line)
    return kept


def prose_text(markdown: str) -> str:
    """The prose of a markdown document (see the module docstring for what is left out)."""
    text = "\n".join(prose_lines(markdown))
    text = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"\1", text)  # inline images -> alt text
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links -> their text
    text = re.sub(r"^\s*>", " ", text, flags=re.M)  # blockquote markers
    return re.sub(r"[*`]|(?<![A-Za-z0-9])_+|_+(?![A-Za-z0-9])", " ", text)  # emphasis, not snake_case


def prose_words(markdown: str) -> int:
    """Number of prose words (tokens with a letter or digit) in `markdown`."""
    return sum(1 for tok in prose_text(markdown).split() if re.search(r"[A-Za-z0-9]", tok))


def image_links(markdown: str) -> list[str]:
    """Targets of every markdown image link, in order."""
    return re.findall(r"!\[[^\]]*\]\(([^)\s]+)[^)]*\)", markdown)


_NUMBER = re.compile(r"(?<![A-Za-z_])[+\-−±]?\d[\d,]*(?:\.\d+)?(?:[%x]|st|nd|rd|th)?(?![A-Za-z_])")
_ABBREVIATIONS = {"e.g.": "eg", "i.e.": "ie", "et al.": "et al", "vs.": "vs", "cf.": "cf"}


def sentence_skeletons(markdown: str, names: tuple = ()) -> list[str]:
    """Every prose sentence as its skeleton: code spans `C`, numbers `N` and each of `names` `W`
    masked, emphasis and link targets dropped, lower case, spaces collapsed."""
    text = " ".join(prose_lines(markdown))
    text = re.sub(r"`[^`]*`", " C ", text)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"^\s*>|\*+", " ", text)
    for short, plain in _ABBREVIATIONS.items():
        text = text.replace(short, plain)
    text = _NUMBER.sub(" N ", text)
    for name in sorted(names, key=len, reverse=True):
        text = re.sub(rf"(?<![A-Za-z_]){re.escape(name)}(?![A-Za-z_])", " W ", text, flags=re.I)
    sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z(\"]|C |N |W )", text)
    out = []
    for sentence in sentences:
        skeleton = re.sub(r"\s+", " ", sentence).strip().lower()
        if re.search(r"[a-z]", skeleton):
            out.append(skeleton)
    return out


def repeated_skeletons(markdown: str, names: tuple = (), limit: int = MAX_SKELETON_REPEATS) -> dict[str, int]:
    """{skeleton: count} of the sentence skeletons that occur more than `limit` times."""
    from collections import Counter

    counts = Counter(sentence_skeletons(markdown, names))
    return {s: n for s, n in counts.most_common() if n > limit}
