"""`ferstudy handin`: results/handin.zip (with config key `handin.authors`:
results/Surname1_Surname2_Second_Assignment.zip, `zip_name`), what a reader needs to check the study.

Inside one folder, `ferstudy-handin/`:
  - `code/`: the code as committed (`git archive` of HEAD when the workflow is a git checkout;
    otherwise the package, workflow, config and docs files as they are); never data, weights or
    results, also when committed by mistake;
  - `README.md`, and `MANIFEST.txt` (commit, what was left out, every member);
  - `results/report/`: the report and its appendix as markdown (their figures at the paths they
    link, under `results/`), as HTML (`html/index.html` and `html/appendix.html`, the figures beside
    them) and as PDF (`report.pdf`, `appendix.pdf`: those pages printed by headless Chromium; without
    Chromium a note file says why there is none, and the warning reaches the console, not only the log);
  - `results/final/`, `results/tables/`, ...: the final metrics and tables given with --files.
The zip is written under a temporary name and renamed when complete.
"""

import argparse
import contextlib
import datetime
import io
import logging
import os
import subprocess
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from . import chromium
from .errors import UserError
from .io import atomic_path

log = logging.getLogger("ferstudy")

ROOT = "ferstudy-handin"
# What the code part never holds: data, weights, results, environments, caches.
EXCLUDED_DIRS = {
    "data",
    "results",
    ".snakemake",
    ".venv",
    "checkpoints",
    "__pycache__",
    ".git",
    ".pytest_cache",
    "ferstudy.egg-info",
}
EXCLUDED_SUFFIXES = (
    ".h5",
    ".hdf5",
    ".pt",
    ".pth",
    ".ckpt",
    ".onnx",
    ".npz",
    ".npy",
    ".pkl",
    ".csv.gz",
    ".tar.gz",
    ".zip",
    ".pyc",
)
# Without git: these, in the checkout (workflow/Snakefile's parent), are the code.
CODE_PATHS = (
    "workflow",
    "config",
    "ferstudy",
    "pyproject.toml",
    "README.md",
    "LICENSE",
    ".snakemake-workflow-catalog.yml",
    "report",
    "envs",
    "profiles",
    "scripts",
    "tests",
    "docs",
    ".ci",
)
NO_PDF_NOTE = "PDF_NOT_INCLUDED.txt"
DEFAULT_ZIP = "handin.zip"
DEFAULT_NAME = "Second_Assignment"


def zip_name(handin: dict) -> str:
    """The hand-in's file name from config key `handin`: `handin.zip` without authors, else the
    authors' surnames and `name` joined by underscores: {authors: [Doe, Roe]} -> Doe_Roe_Second_Assignment.zip."""
    authors = [str(a) for a in handin.get("authors") or []]
    if not authors:
        return DEFAULT_ZIP
    return "_".join([*authors, str(handin.get("name") or DEFAULT_NAME)]) + ".zip"


def excluded(name: str) -> bool:
    """Whether a code path (posix, relative) is data, weights, results or a cache."""
    path = PurePosixPath(name)
    lower = path.name.lower()
    return (
        bool(EXCLUDED_DIRS.intersection(path.parts[:-1]))
        or lower.endswith(EXCLUDED_SUFFIXES)
        or (lower.startswith(("fer2013", "icml_face_data")) and ".csv" in lower)
    )


def git(source: str | Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True)


def git_code(source: str | Path) -> tuple[str, list] | None:
    """(description, [(name, bytes)]) of `git archive HEAD` of the checkout's folder `source`, or None
    when `source` is not in a git repository with a commit (or git is missing)."""
    try:
        head = git(source, "rev-parse", "--verify", "--quiet", "HEAD")
    except OSError:
        return None
    if head.returncode != 0:
        return None
    commit = head.stdout.strip()
    # Run in `source`: git archive takes the current folder's subtree of HEAD.
    tar = subprocess.run(["git", "archive", "--format=tar", "HEAD"], cwd=source, capture_output=True)
    if tar.returncode != 0:
        raise UserError(f"{source}: git archive HEAD failed: {tar.stderr.decode(errors='replace').strip()}")
    files = []
    with tarfile.open(fileobj=io.BytesIO(tar.stdout)) as archive:
        for member in archive:
            data = archive.extractfile(member) if member.isfile() else None
            if data is not None:
                files.append((member.name, data.read()))
    dirty = [
        line
        for line in git(source, "status", "--porcelain", "--untracked-files=no", "--", ".").stdout.splitlines()
        if line.strip()
    ]
    note = f"git archive of HEAD {commit}"
    if dirty:
        note += f" ({len(dirty)} tracked file(s) with uncommitted changes: their committed version is included)"
    return note, files


def plain_code(source: str | Path) -> tuple[str, list]:
    """(description, [(name, bytes)]) of CODE_PATHS under `source`, as they are on disk."""
    source = Path(source)
    files = []
    for entry in CODE_PATHS:
        path = source / entry
        if path.is_file():
            candidates = [path]
        else:
            candidates = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
        for file in candidates:
            name = file.relative_to(source).as_posix()
            inside = PurePosixPath(name).parts[len(PurePosixPath(entry).parts) :]  # below the entry: no caches
            if not any(part.startswith(".") for part in inside):
                files.append((name, file.read_bytes()))
    return f"files of {source} (not a git checkout: {', '.join(CODE_PATHS)})", files


def code_files(source: str | Path) -> tuple[str, list, list]:
    """(description, kept [(name, bytes)], left-out names) of the code."""
    note, files = git_code(source) or plain_code(source)
    kept = [(n, b) for n, b in files if not excluded(n)]
    left_out = sorted(n for n, _ in files if excluded(n))
    return note, kept, left_out


def result_name(path: str | Path, results: str | Path) -> str:
    """The member name of a results file: its path below the results folder, under `results/`."""
    path, results = Path(path).resolve(), Path(results).resolve()
    try:
        rel = path.relative_to(results)
    except ValueError:
        raise UserError(f"{path}: not inside the results folder {results}") from None
    return f"results/{rel.as_posix()}"


def report_images(markdown_path: str | Path) -> list[Path]:
    """The local image files the markdown report links (what its HTML version embeds)."""
    from .htmlreport import markdown_to_html

    markdown_path = Path(markdown_path)
    _, images = markdown_to_html(markdown_path.read_text(encoding="utf-8"), markdown_path.parent)
    return list(dict.fromkeys(path for path, _ in images))


def pdf_member(html_path: str | Path, pdf_name: str) -> tuple[str, bytes, str]:
    """(member name, bytes, status line): a page printed by Chromium, or a note why there is none."""
    binary = chromium.find_chromium()
    note_name = str(PurePosixPath(pdf_name).with_name(NO_PDF_NOTE))
    if binary is None:
        why = (
            f"PDF skipped: no Chromium found (${chromium.ENV_VAR} or one of {', '.join(chromium.CANDIDATES)}"
            " on PATH); install Debian's chromium-headless-shell for the report as PDF"
        )
        note = why + "\nThe report is here as markdown (report.md) and HTML (html/index.html).\n"
        return note_name, note.encode(), why
    with tempfile.TemporaryDirectory(prefix="ferstudy-pdf-") as tmp:
        pdf = Path(tmp) / "report.pdf"
        try:
            chromium.print_to_pdf(binary, html_path, pdf)
        except (RuntimeError, OSError, subprocess.SubprocessError) as err:
            raise UserError(f"{html_path}: printing to PDF with {binary} failed: {err}") from None
        data = pdf.read_bytes()
    return pdf_name, data, f"PDF printed by {chromium.version(binary)} ({len(data) / 1e6:.1f} MB)"


def manifest(code_note: str, left_out: list, pdf_status: str, members: list) -> str:
    lines = [
        f"ferstudy hand-in, written {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"code/: {code_note}",
        f"left out of code/ (data, weights, results): {', '.join(left_out) if left_out else 'nothing'}",
        pdf_status,
        "",
        "members (bytes):",
    ]
    lines += [f"  {len(data):>10}  {ROOT}/{name}" for name, data in members]
    return "\n".join(lines) + "\n"


def build_members(
    source: str | Path,
    readme: str | Path,
    report_md: str | Path,
    html_dir: str | Path,
    files: list,
    results: str | Path,
    appendix_md: str | Path | None = None,
) -> tuple[list, list]:
    """Every member of the hand-in as [(name below ROOT, bytes)], and the status lines for the log:
    the report and its appendix (`appendix_md`) as markdown with their figures, HTML and PDF."""
    code_note, code, left_out = code_files(source)
    members = [(f"code/{name}", data) for name, data in code]
    members.append(("README.md", Path(readme).read_bytes()))
    html_dir = Path(html_dir)
    if not (html_dir / "index.html").is_file():
        raise UserError(f"{html_dir}: no index.html in it (the HTML report, rule report_html)")
    documents = [(Path(report_md), html_dir / "index.html")]
    if appendix_md:
        page = html_dir / f"{Path(appendix_md).stem}.html"
        if not page.is_file():
            raise UserError(f"{html_dir}: no {page.name} in it (the appendix's page, rule report_html)")
        documents.append((Path(appendix_md), page))
    for md, _ in documents:
        members.append((result_name(md, results), md.read_bytes()))
        members += [(result_name(p, results), p.read_bytes()) for p in report_images(md)]
    members += [(result_name(p, results), p.read_bytes()) for p in sorted(html_dir.rglob("*")) if p.is_file()]
    statuses = []
    for md, page in documents:
        pdf_name, pdf_data, status = pdf_member(page, str(PurePosixPath(result_name(md, results)).with_suffix(".pdf")))
        members.append((pdf_name, pdf_data))
        statuses.append(status)
    pdf_status = (
        statuses[0] if len(set(statuses)) == 1 or statuses[0].startswith("PDF skipped") else "; ".join(statuses)
    )
    members += [(result_name(f, results), Path(f).read_bytes()) for f in files]
    members = list({name: (name, data) for name, data in members}.values())  # a file given twice goes in once
    members.append(("MANIFEST.txt", manifest(code_note, left_out, pdf_status, members).encode()))
    return members, [code_note, pdf_status] + ([f"left out of code/: {', '.join(left_out)}"] if left_out else [])


def write_zip(out: str | Path, members: list) -> Path:
    """The zip at `out`, written under a temporary name beside it and renamed when complete."""
    with atomic_path(out) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in members:
                zf.writestr(f"{ROOT}/{name}", data)
    return Path(out)


@contextlib.contextmanager
def logging_to(path: str | Path | None) -> Iterator[None]:
    """With `path`: every log line goes to that file and only warnings to the console (stderr), so
    that a PDF skipped is seen where the command ran (Snakemake's console), not only in its log."""
    if not path:
        yield
        return
    root = logging.getLogger()
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"))
    consoles = [
        h for h in root.handlers if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]
    levels = [h.level for h in consoles]
    for h in consoles:
        h.setLevel(logging.WARNING)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        for h, level in zip(consoles, levels):
            h.setLevel(level)


def cmd_handin(args: argparse.Namespace) -> None:
    with logging_to(args.log):
        t0 = time.perf_counter()
        members, status = build_members(
            args.source,
            args.readme,
            args.report_md,
            args.report_html_dir,
            args.files or [],
            args.results,
            args.appendix_md,
        )
        for line in status:
            (log.warning if line.startswith("PDF skipped") else log.info)(line)
        write_zip(args.out, members)
        log.info(
            "wrote %s: %d members, %.1f MB, in %.1f s",
            args.out,
            len(members),
            os.path.getsize(args.out) / 1e6,
            time.perf_counter() - t0,
        )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("handin", help="the hand-in zip: code as committed, README, report (md, HTML, PDF), metrics")
    p.add_argument("--out", required=True, help="zip to write (results/handin.zip)")
    p.add_argument("--source", required=True, help="the workflow's folder (its git HEAD is the code)")
    p.add_argument("--readme", required=True)
    p.add_argument("--report-md", required=True, help="results/report/report.md (its figures come with it)")
    p.add_argument("--appendix-md", help="results/report/appendix.md (its page: <name>.html in --report-html-dir)")
    p.add_argument(
        "--report-html-dir", required=True, help="the HTML report's folder (its index.html is printed to PDF)"
    )
    p.add_argument("--files", nargs="*", help="results files to include (final metrics, tables), at their paths")
    p.add_argument("--results", default="results", help="the results folder the files are in")
    p.add_argument("--log", help="write the log here; only warnings (a PDF skipped) go to the console")
    p.set_defaults(func=cmd_handin)
