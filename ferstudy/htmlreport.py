"""`ferstudy report-html`: the markdown report and the study's tables as HTML pages for a reader.

Pages (style inline, nothing fetched from the network):
  - the report: a folder with `index.html`, results/report/report.md converted by the `markdown`
    package (tables, code, heading anchors), its other pages (`--page`: the appendix, appendix.md ->
    appendix.html, the links between them rewritten to the HTML names) and beside them a copy of
    every image they link (read from beside the markdown file), linked relatively: the folder opens
    and prints anywhere, and
    Snakemake shows it as one result (`report(directory(...), htmlindex="index.html")`, in a zip
    report: `snakemake --report report.zip`). Not one file with the figures inside as data URIs:
    Snakemake's single-file report (`--report x.html`) shows an HTML result in an iframe whose
    source is the file's data URI, and Chromium refuses URLs over 2 MB (the frame stays blank),
    which the study report with its figures exceeds;
  - one page per CSV table (every cell escaped);
  - the final model's test metrics (PublicTest, PrivateTest, the extra test sets), from
    results/final/metrics.json and selection.json.
"""

import argparse
import html
import json
import logging
import re
import shutil
import time
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urlparse

from .errors import UserError
from .io import atomic_path, write_text

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("ferstudy")

MARKDOWN_EXTENSIONS = ["tables", "fenced_code", "sane_lists", "toc"]
CSS = """
body { font: 15px/1.5 -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif; color: #1f2328;
       background: #fff; margin: 0; }
main { max-width: 980px; margin: 0 auto; padding: 24px 32px 48px; }
h1, h2, h3 { line-height: 1.25; } h1 { font-size: 1.9em; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2em; }
img { max-width: 100%; height: auto; display: block; margin: 12px auto; }
table { border-collapse: collapse; margin: 12px 0; font-size: 13px; display: block; overflow-x: auto; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } tr:nth-child(2n) td { background: #fbfcfd; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code, pre { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace; font-size: 90%; background: #f6f8fa; }
pre { padding: 10px; overflow-x: auto; white-space: pre-wrap; } code { padding: .1em .3em; } pre code { padding: 0; }
p.source { color: #59636e; font-size: 13px; }
@media print { main { max-width: none; padding: 0; } h2, h3 { break-after: avoid; } img, tr { break-inside: avoid; }
               table { display: table; font-size: 10px; } }
"""
TABLE_TITLES = {
    "cv_summary": "Cross-validation summary",
    "ablation": "Each variant against the baseline",
    "cost": "Cost per architecture",
    "data_summary": "Data: images per split and emotion",
}
TEST_SET_ROLES = {
    "public": ("PublicTest", "chose the final model's epoch (checkpoint)"),
    "private": ("PrivateTest", "predicted once, at the end; chose nothing"),
}
METRIC_COLUMNS = [
    ("n", "images"),
    ("accuracy", "accuracy"),
    ("balanced_accuracy", "balanced accuracy"),
    ("macro_f1", "macro F1"),
    ("top2_accuracy", "top-2 accuracy"),
]


def page(title: str, body: str) -> str:
    """A whole HTML document around `body` (already HTML)."""
    return (
        f'<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def linked_file(src: str, base_dir: str | Path) -> Path | None:
    """The local file an image link names (relative to the markdown's folder), or None for a URL."""
    parsed = urlparse(src)
    if parsed.scheme in ("http", "https", "data") or parsed.netloc:
        return None
    return (Path(base_dir) / unquote(parsed.path)).resolve()


def asset_name(src: str) -> str:
    """Where a linked image goes in the page's folder: its link without the leading `../` parts
    (`../figures/a.png` -> `figures/a.png`), so the layout and the names of results/ are kept."""
    parts = [p for p in PurePosixPath(unquote(urlparse(src).path)).parts if p not in ("..", ".", "/")]
    return PurePosixPath(*parts).as_posix() if parts else "image"


def _page_links_extension(base_dir, pages):
    """A markdown extension that points every link to one of `pages` ({markdown file: its HTML name
    beside the report}) at that HTML page, its #anchor kept."""
    from markdown.extensions import Extension
    from markdown.treeprocessors import Treeprocessor

    class PageLinks(Treeprocessor):
        def run(self, root):
            for a in root.iter("a"):
                href = a.get("href", "")
                path = linked_file(href.split("#", 1)[0], base_dir) if href and not href.startswith("#") else None
                if path is not None and path in pages:
                    a.set("href", quote(pages[path]) + (f"#{href.split('#', 1)[1]}" if "#" in href else ""))

    class PageLinksExtension(Extension):
        def extendMarkdown(self, md):
            md.treeprocessors.register(PageLinks(md), "ferstudy_page_links", 1)

    return PageLinksExtension()


def _image_extension(base_dir, images):
    """A markdown extension that records every local <img> as (file, name in the page's folder)
    and links it by that name."""
    from markdown.extensions import Extension
    from markdown.treeprocessors import Treeprocessor

    class LocalImages(Treeprocessor):
        def run(self, root):
            for img in root.iter("img"):
                src = img.get("src", "")
                path = linked_file(src, base_dir)
                if path is None:
                    continue
                if not path.is_file():
                    raise UserError(f"{src}: the report links this image, but {path} does not exist")
                name = asset_name(src)
                if any(name == n and path != p for p, n in images):  # same name, another file
                    name = f"{len(images)}-{name.replace('/', '-')}"
                images.append((path, name))
                img.set("src", quote(name))

    class LocalImagesExtension(Extension):
        def extendMarkdown(self, md):
            md.treeprocessors.register(LocalImages(md), "ferstudy_local_images", 0)

    return LocalImagesExtension()


def markdown_to_html(text: str, base_dir: str | Path, pages: dict | None = None) -> tuple[str, list]:
    """(body HTML, [(image file, its name beside the page)]) of markdown `text` whose links are
    relative to `base_dir`; the body links each image by that name, and each link to one of `pages`
    ({resolved markdown path: HTML name}) by the page's HTML name."""
    import markdown

    images: list = []
    extensions = [_image_extension(base_dir, images), _page_links_extension(base_dir, pages or {})]
    body = markdown.markdown(text, extensions=MARKDOWN_EXTENSIONS + extensions, output_format="html")
    return body, list(dict.fromkeys(images))


def first_heading(text: str, default: str) -> str:
    m = re.search(r"^#\s+(.+?)\s*#*\s*$", text, re.M)
    return m.group(1).strip() if m else default


def report_page(markdown_path: str | Path, pages: dict | None = None) -> tuple[str, list]:
    """(HTML document, [(image file, its name beside the page)]) of a markdown page of the report;
    `pages`: {resolved markdown path: HTML name} of the pages its links should point to."""
    markdown_path = Path(markdown_path)
    text = markdown_path.read_text(encoding="utf-8")
    body, images = markdown_to_html(text, markdown_path.parent, pages)
    return page(first_heading(text, "Study report"), body), images


def write_report_folder(markdown_path: str | Path, out_dir: str | Path, other_pages: Iterable = ()) -> list:
    """`out_dir`/index.html of the report, `out_dir`/<name>.html of each of `other_pages` (markdown
    files, e.g. the appendix) and the images they link beside them; [(file, name)] of the images.
    Links between the pages point to their HTML names."""
    out_dir = Path(out_dir)
    pages = {Path(markdown_path).resolve(): "index.html"}
    for other in other_pages:
        name = f"{Path(other).stem}.html"
        if name == "index.html" or name in pages.values():
            raise UserError(f"{other}: its page would be {name}, which another page of the report already is")
        pages[Path(other).resolve()] = name
    images = []
    for source, name in pages.items():
        text, linked = report_page(source, pages)
        images += [item for item in linked if item not in images]
        write_text(out_dir / name, text)
    for path, name in images:
        with atomic_path(out_dir / name) as tmp:
            shutil.copyfile(path, tmp)
    return images


def table_html(frame: "pd.DataFrame") -> str:
    """An HTML table of a DataFrame: numbers right-aligned and shortened, empty cells empty."""
    import pandas as pd

    numeric = {c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c]) and frame[c].dtype != bool}

    def cell(column, value):
        if pd.isna(value):
            text = ""
        elif column in numeric and isinstance(value, float):
            text = f"{value:.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
        else:
            text = str(value)
        return f'<td class="num">{html.escape(text)}</td>' if column in numeric else f"<td>{html.escape(text)}</td>"

    head = "".join(
        f'<th class="num">{html.escape(str(c))}</th>' if c in numeric else f"<th>{html.escape(str(c))}</th>"
        for c in frame.columns
    )
    rows = "\n".join(
        "<tr>" + "".join(cell(c, v) for c, v in zip(frame.columns, row)) + "</tr>"
        for row in frame.itertuples(index=False, name=None)
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>"


def csv_page(csv_path: str | Path, title: str) -> str:
    import pandas as pd

    frame = pd.read_csv(csv_path)
    body = (
        f'<h1>{html.escape(title)}</h1>\n<p class="source">{len(frame)} rows, from '
        f"<code>{html.escape(str(csv_path))}</code></p>\n{table_html(frame)}"
    )
    return page(title, body)


def metric_rows(metrics: dict) -> list[tuple]:
    """[(name, role, metrics)] of every test set in metrics.json: PublicTest, PrivateTest, then the extra sets."""
    order = [k for k in TEST_SET_ROLES if k in metrics] + [k for k in metrics if k not in TEST_SET_ROLES]
    rows = []
    for key in order:
        value = metrics[key]
        if not isinstance(value, dict) or "accuracy" not in value:
            continue
        name, role = TEST_SET_ROLES.get(key, (key, "extra test set (data.extra_test_sets), predicted once"))
        rows.append((name, role, value))
    return rows


def percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}%"


def metric_text(key: str, value: float | int | None) -> str:
    """Counts as they are, F1 scores to 3 decimals, accuracies as percentages."""
    if value is None:
        return ""
    if key == "n":
        return str(value)
    return f"{value:.3f}" if "f1" in key else percent(value)


def final_metrics_page(metrics_path: str | Path, selection_path: str | Path | None = None) -> str:
    """The final model's metrics on every test set, and per class (recall and F1)."""
    metrics = json.loads(Path(metrics_path).read_text())
    rows = metric_rows(metrics)
    if not rows:
        raise UserError(f"{metrics_path}: no test set with an accuracy in it")
    parts = ["<h1>Final model: test metrics</h1>"]
    if selection_path:
        selection = json.loads(Path(selection_path).read_text())
        parts.append(
            f"<p>Architecture <code>{html.escape(str(selection.get('architecture')))}</code> "
            f"({html.escape(str(selection.get('reason', '')))}).</p>"
        )
    head = "<th>test set</th><th>role</th>" + "".join(f'<th class="num">{label}</th>' for _, label in METRIC_COLUMNS)
    body = []
    for name, role, m in rows:
        cells = [f'<td class="num">{metric_text(k, m.get(k))}</td>' for k, _ in METRIC_COLUMNS]
        body.append(f"<tr><td>{html.escape(name)}</td><td>{html.escape(role)}</td>{''.join(cells)}</tr>")
    parts.append(
        f'<table id="final-metrics">\n<thead><tr>{head}</tr></thead>\n<tbody>\n'
        + "\n".join(body)
        + "\n</tbody>\n</table>"
    )
    parts.append(per_class_table(rows))
    parts.append(f'<p class="source">From <code>{html.escape(str(metrics_path))}</code>.</p>')
    return page("Final model: test metrics", "\n".join(parts))


def per_class_table(rows: list[tuple]) -> str:
    classes = [c for c in rows[0][2].get("class_names", []) if all(c in m.get("per_class", {}) for _, _, m in rows)]
    if not classes:
        return ""
    head = "<th>emotion</th>" + "".join(
        f'<th class="num">{html.escape(n)} recall</th><th class="num">{html.escape(n)} F1</th>' for n, _, _ in rows
    )
    body = []
    for c in classes:
        cells = "".join(
            f'<td class="num">{percent(m["per_class"][c].get("recall"))}</td>'
            f'<td class="num">{m["per_class"][c].get("f1", float("nan")):.3f}</td>'
            for _, _, m in rows
        )
        body.append(f"<tr><td>{html.escape(c)}</td>{cells}</tr>")
    return (
        '<h2>Per emotion</h2>\n<table id="per-class">\n<thead><tr>'
        + head
        + "</tr></thead>\n<tbody>\n"
        + "\n".join(body)
        + "\n</tbody>\n</table>"
    )


def parse_pairs(items: Iterable[str] | None, option: str) -> list[tuple[str, str]]:
    """`IN=OUT` arguments -> [(IN, OUT)] (split at the last `=`: output names have none)."""
    pairs = []
    for item in items or []:
        if "=" not in item:
            raise UserError(f"{option} {item!r}: expected INPUT=OUTPUT")
        given, out = item.rsplit("=", 1)
        pairs.append((given, out))
    return pairs


def cmd_report_html(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    images = write_report_folder(args.markdown, args.out_dir, args.page or ())
    log.info(
        "wrote %s/index.html from %s%s, with the %d image(s) they link beside it",
        args.out_dir,
        args.markdown,
        "".join(f" and {Path(p).stem}.html from {p}" for p in args.page or ()),
        len(images),
    )
    for csv, out in parse_pairs(args.table, "--table"):
        write_text(out, csv_page(csv, TABLE_TITLES.get(Path(out).stem, Path(out).stem.replace("_", " "))))
        log.info("wrote %s from %s", out, csv)
    if args.final_metrics:
        metrics, out = parse_pairs([args.final_metrics], "--final-metrics")[0]
        write_text(out, final_metrics_page(metrics, args.selection))
        log.info("wrote %s from %s", out, metrics)
    log.info("HTML pages done in %.1f s", time.perf_counter() - t0)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report-html", help="the markdown report and the tables as HTML pages")
    p.add_argument("--markdown", required=True, help="the markdown report (its image links relative to it)")
    p.add_argument(
        "--page",
        action="append",
        metavar="MARKDOWN",
        help="another markdown page of the report (the appendix): <name>.html beside index.html",
    )
    p.add_argument("--out-dir", required=True, help="folder of the report page: index.html and its images")
    p.add_argument("--table", nargs="+", metavar="CSV=HTML", help="CSV tables and their HTML pages")
    p.add_argument("--final-metrics", metavar="METRICS_JSON=HTML", help="results/final/metrics.json and its HTML page")
    p.add_argument("--selection", help="results/final/selection.json (the final architecture, on the metrics page)")
    p.set_defaults(func=cmd_report_html)
