"""The pages for readers and the hand-in: the HTML report and tables (ferstudy/htmlreport.py), the
hand-in zip (ferstudy/handin.py), and, end to end on a tiny demo study, Snakemake's HTML report as
headless Chromium shows it after its scripts ran (the study report, its figures, the final
accuracy, the tables) and `snakemake handin`."""

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from cdp import Browser, require_chromium
from conftest import REPO, TINY_SNAKEMAKE

from ferstudy import handin, htmlreport
from ferstudy.errors import UserError

TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108000000003a7e9b55"
    "0000000a4944415478da63600000000200015d0e1c2c0000000049454e44ae426082"
)
REPORT_MD = """# A study & its <results>

**In short.** The final model scores 61.2% on PrivateTest.

## 1. Data and protocol

| architecture | accuracy |
|---|---|
| baseline | 0.612 |

![Cross-validation accuracy](../figures/cv_accuracy.png)

![Faces](../data/faces.png)

```bash
snakemake --cores 2
```

Every verdict's evidence: [appendix](appendix.md#a1-every-verdict).
"""
APPENDIX_MD = """# Appendix

The [main report](report.md) argues from these numbers.

## A1. Every verdict

![Training curves](../figures/training_curves.png)
"""
METRIC = {
    "n": 100,
    "accuracy": 0.612,
    "balanced_accuracy": 0.5,
    "macro_f1": 0.45,
    "top2_accuracy": 0.8,
    "class_names": ["angry", "happy"],
    "per_class": {"angry": {"recall": 0.4, "f1": 0.41}, "happy": {"recall": 0.9, "f1": 0.88}},
}


def fake_results(root):
    """results/ with the files the HTML pages and the hand-in read (contents made up)."""
    r = Path(root) / "results"
    for rel in ("figures/cv_accuracy.png", "data/faces.png", "figures/training_curves.png"):
        (r / rel).parent.mkdir(parents=True, exist_ok=True)
        (r / rel).write_bytes(TINY_PNG)
    (r / "report").mkdir(parents=True)
    (r / "report" / "report.md").write_text(REPORT_MD)
    (r / "report" / "appendix.md").write_text(APPENDIX_MD)
    (r / "tables").mkdir()
    (r / "tables" / "cv_summary.csv").write_text(
        "architecture,accuracy_mean,note\nbaseline,0.61234567,<b>x</b>\npool_avg,0.5,\n"
    )
    (r / "final").mkdir()
    metrics = {"public": {**METRIC, "accuracy": 0.633}, "private": METRIC, "my set": {**METRIC, "accuracy": 0.25}}
    (r / "final" / "metrics.json").write_text(json.dumps(metrics))
    (r / "final" / "selection.json").write_text(json.dumps({"architecture": "baseline", "reason": "best mean"}))
    (r / "final" / "model.pt").write_bytes(b"weights")
    (r / "data" / "dataset.h5").write_bytes(b"data")
    return r


# ---------------------------------------------------------------- HTML pages


def test_the_markdown_report_becomes_a_page_with_its_figures_beside_it(tmp_path):
    r = fake_results(tmp_path)
    out = tmp_path / "my page"
    images = htmlreport.write_report_folder(r / "report" / "report.md", out)
    assert images == [
        ((r / "figures" / "cv_accuracy.png").resolve(), "figures/cv_accuracy.png"),
        ((r / "data" / "faces.png").resolve(), "data/faces.png"),
    ]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "data/faces.png",
        "figures/cv_accuracy.png",
        "index.html",
    ]
    assert (out / "figures" / "cv_accuracy.png").read_bytes() == TINY_PNG
    text = (out / "index.html").read_text()
    assert "../" not in text and 'src="figures/cv_accuracy.png"' in text and 'src="data/faces.png"' in text
    assert "<title>A study &amp; its &lt;results&gt;</title>" in text
    assert re.search(r"<table>.*<td>baseline</td>", text, re.S) and '<code class="language-bash">' in text
    assert '<h2 id="1-data-and-protocol">' in text  # heading anchors


def test_the_appendix_is_a_page_beside_the_report_and_the_links_between_them_follow(tmp_path):
    r = fake_results(tmp_path)
    out = tmp_path / "html"
    images = htmlreport.write_report_folder(r / "report" / "report.md", out, [r / "report" / "appendix.md"])
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "appendix.html",
        "data/faces.png",
        "figures/cv_accuracy.png",
        "figures/training_curves.png",
        "index.html",
    ]
    assert len(images) == 3
    index, appendix = (out / "index.html").read_text(), (out / "appendix.html").read_text()
    assert 'href="appendix.html#a1-every-verdict"' in index and "appendix.md" not in index
    assert 'href="index.html"' in appendix and 'src="figures/training_curves.png"' in appendix
    assert '<h2 id="a1-every-verdict">' in appendix


def test_a_missing_figure_is_named(tmp_path):
    r = fake_results(tmp_path)
    (r / "data" / "faces.png").unlink()
    with pytest.raises(UserError, match=r"\.\./data/faces\.png.*does not exist"):
        htmlreport.report_page(r / "report" / "report.md")


def test_csv_tables_are_escaped_html_tables(tmp_path):
    r = fake_results(tmp_path)
    text = htmlreport.csv_page(r / "tables" / "cv_summary.csv", "Cross-validation summary")
    assert "<h1>Cross-validation summary</h1>" in text and "2 rows" in text
    assert '<td class="num">0.6123</td>' in text and "<td>&lt;b&gt;x&lt;/b&gt;</td>" in text
    assert "<td></td>" in text and "nan" not in text


def test_final_metrics_page_has_every_test_set(tmp_path):
    r = fake_results(tmp_path)
    text = htmlreport.final_metrics_page(r / "final" / "metrics.json", r / "final" / "selection.json")
    rows = re.findall(r"<tr><td>([^<]+)</td>", text.split('id="per-class"')[0])
    assert rows == ["PublicTest", "PrivateTest", "my set"]
    assert "63.30%" in text and "61.20%" in text and "25.00%" in text and "<code>baseline</code>" in text
    assert '<td class="num">90.00%</td>' in text and '<td class="num">0.450</td>' in text  # recall; macro F1


def test_the_cli_writes_every_page(tmp_path):
    from ferstudy.cli import main

    r = fake_results(tmp_path)
    out = tmp_path / "my pages"
    assert (
        main(
            [
                "report-html",
                "--markdown",
                str(r / "report" / "report.md"),
                "--out-dir",
                str(out / "html"),
                "--table",
                f"{r / 'tables' / 'cv_summary.csv'}={out / 'cv_summary.html'}",
                "--final-metrics",
                f"{r / 'final' / 'metrics.json'}={out / 'final_metrics.html'}",
                "--selection",
                str(r / "final" / "selection.json"),
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["cv_summary.html", "final_metrics.html", "html"]
    assert (out / "html" / "index.html").is_file() and (out / "html" / "figures" / "cv_accuracy.png").is_file()
    assert "Cross-validation summary" in (out / "cv_summary.html").read_text()


# ---------------------------------------------------------------- the hand-in zip


def git_checkout(path):
    """A small git repository with the code layout and, committed by mistake, data and weights."""
    for rel, text in {
        "workflow/Snakefile": "rule all:\n",
        "README.md": "# readme\n",
        "ferstudy/__init__.py": "",
        "workflow/rules/a.smk": "",
        "config/config.yaml": "seed: 0\n",
        "data/fer2013.csv": "emotion\n",
        "weights/model.pt": "w",
        "docs/x.h5": "h",
    }.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run(git[:3] + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "code"], check=True)
    (path / "config" / "config.yaml").write_text("seed: 1\n")  # an uncommitted change: the committed file goes in
    (path / "untracked.py").write_text("")
    return subprocess.run(git[:3] + ["rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def make_handin(study, source, monkeypatch=None, chromium=True):
    r = study / "results"
    if not chromium:
        monkeypatch.setattr(handin.chromium, "find_chromium", lambda: None)
    html = r / "report" / "html"
    htmlreport.write_report_folder(r / "report" / "report.md", html, [r / "report" / "appendix.md"])
    out = r / "handin.zip"
    args = [
        "handin",
        "--out",
        str(out),
        "--source",
        str(source),
        "--readme",
        str(source / "README.md"),
        "--report-md",
        str(r / "report" / "report.md"),
        "--appendix-md",
        str(r / "report" / "appendix.md"),
        "--report-html-dir",
        str(html),
        "--results",
        str(r),
        "--files",
        str(r / "final" / "metrics.json"),
        str(r / "tables" / "cv_summary.csv"),
    ]
    from ferstudy.cli import main

    assert main(args) == 0
    return out


def test_handin_zip_has_the_committed_code_and_no_data(tmp_path, monkeypatch, caplog):
    study, source = tmp_path / "my study", tmp_path / "my code"
    source.mkdir()
    commit = git_checkout(source)
    fake_results(study)
    with caplog.at_level("INFO", logger="ferstudy"):
        out = make_handin(study, source, monkeypatch, chromium=False)
    names = zipfile.ZipFile(out).namelist()
    root = "ferstudy-handin/"
    assert all(n.startswith(root) for n in names)
    names = [n[len(root) :] for n in names]
    assert {
        "code/workflow/Snakefile",
        "code/ferstudy/__init__.py",
        "code/workflow/rules/a.smk",
        "code/config/config.yaml",
        "code/README.md",
        "README.md",
        "MANIFEST.txt",
        "results/report/report.md",
        "results/report/html/index.html",
        "results/report/appendix.md",
        "results/report/html/appendix.html",
        "results/report/html/figures/cv_accuracy.png",
        "results/report/html/data/faces.png",
        "results/report/html/figures/training_curves.png",
        "results/figures/training_curves.png",
        "results/figures/cv_accuracy.png",
        "results/data/faces.png",
        "results/final/metrics.json",
        "results/tables/cv_summary.csv",
        "results/report/PDF_NOT_INCLUDED.txt",
    } == set(names)
    assert not [n for n in names if n.endswith((".pt", ".h5", ".pth")) or "fer2013" in n or "untracked" in n]
    zf = zipfile.ZipFile(out)
    assert zf.read(root + "code/config/config.yaml") == b"seed: 0\n"  # as committed
    manifest = zf.read(root + "MANIFEST.txt").decode()
    assert f"git archive of HEAD {commit}" in manifest and "1 tracked file(s) with uncommitted changes" in manifest
    assert "data/fer2013.csv, docs/x.h5, weights/model.pt" in manifest
    assert "PDF skipped: no Chromium found" in zf.read(root + "results/report/PDF_NOT_INCLUDED.txt").decode()
    assert sum(r.message.startswith("PDF skipped") for r in caplog.records) == 1  # one clear line
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "data",
        "figures",
        "final",
        "handin.zip",
        "report",
        "tables",
    ]


def test_handin_without_git_takes_the_code_files(tmp_path, monkeypatch):
    study, source = tmp_path / "study", tmp_path / "code"
    for rel in (
        "workflow/Snakefile",
        "README.md",
        "ferstudy/cli.py",
        "ferstudy/__pycache__/cli.pyc",
        "workflow/x.smk",
        "workflow/.snakemake/x",
        "config/config.yaml",
        "LICENSE",
        ".snakemake-workflow-catalog.yml",
        "data/fer2013.csv",
        "results/final/model.pt",
        "notes.txt",
    ):
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_text("x")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # no repository above tmp_path counts
    fake_results(study)
    names = {n.split("/", 1)[1] for n in zipfile.ZipFile(make_handin(study, source, monkeypatch, False)).namelist()}
    assert {n for n in names if n.startswith("code/")} == {
        "code/workflow/Snakefile",
        "code/README.md",
        "code/ferstudy/cli.py",
        "code/workflow/x.smk",
        "code/config/config.yaml",
        "code/LICENSE",
        "code/.snakemake-workflow-catalog.yml",
    }


def test_handin_pdf_is_printed_by_chromium(tmp_path):
    require_chromium()
    study, source = tmp_path / "my study", tmp_path / "my code"
    source.mkdir()
    git_checkout(source)
    fake_results(study)
    zf = zipfile.ZipFile(make_handin(study, source))
    pdf = zf.read("ferstudy-handin/results/report/report.pdf")
    assert pdf.startswith(b"%PDF") and len(pdf) > 5000
    assert zf.read("ferstudy-handin/results/report/appendix.pdf").startswith(b"%PDF")
    assert "PDF printed by Chromium" in zf.read("ferstudy-handin/MANIFEST.txt").decode()


def test_handin_name_from_the_config():
    """config key `handin`: results/handin.zip by default, the authors' surnames and the name with authors."""
    assert handin.zip_name({}) == "handin.zip" == handin.zip_name({"authors": [], "name": "Second_Assignment"})
    assert handin.zip_name({"authors": ["Doe", "Roe"]}) == "Doe_Roe_Second_Assignment.zip"
    assert handin.zip_name({"authors": ["Doe"], "name": "Third_Assignment"}) == "Doe_Third_Assignment.zip"
    defaults = next(p for p in (REPO / "ferstudy" / "defaults.yaml", REPO / "config.yaml") if p.is_file())
    shipped = yaml.safe_load(defaults.read_text())
    assert shipped["handin"] == {"authors": [], "name": "Second_Assignment"}  # the default: handin.zip
    from ferstudy.config import validate

    validate({**shipped, "handin": {"authors": ["Doe", "Roe-Smith"], "name": "Second_Assignment"}})
    for bad in ({"authors": ["Doe/../x"]}, {"authors": ["Doe Roe"]}, {"author": ["Doe"]}, {"name": "a b"}):
        with pytest.raises(UserError, match="handin"):
            validate({**shipped, "handin": bad})


def test_snakemake_handin_writes_the_authors_zip(tmp_path):
    """With handin.authors the target `handin` plans results/<Surname1>_<Surname2>_Second_Assignment.zip."""
    from test_workflow import planned_jobs

    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"handin": {"authors": ["Doe", "Roe"]}}))
    dry = subprocess.run(
        SNAKEMAKE + [str(mine), "--cores", "1", "-n", "handin"], cwd=tmp_path, capture_output=True, text=True
    )
    assert dry.returncode == 0, dry.stderr[-3000:]
    job = (dry.stdout + dry.stderr).split("rule handin:")[1]
    assert re.search(r"output: results/Doe_Roe_Second_Assignment\.zip", job), job[:800]
    assert "handin" in {r for r, _ in planned_jobs(dry.stdout + dry.stderr)}


def test_a_skipped_pdf_is_said_on_the_console_not_only_in_the_log(tmp_path):
    """`--log`: every line in the log file, and the PDF-skipped warning also on stderr (what Snakemake's
    console shows), without the info lines."""
    study, source = tmp_path / "my study", tmp_path / "my code"
    source.mkdir()
    git_checkout(source)
    r = fake_results(study)
    html = r / "report" / "html"
    htmlreport.write_report_folder(r / "report" / "report.md", html, [r / "report" / "appendix.md"])
    log = tmp_path / "handin.log"
    env = {**os.environ, "FERSTUDY_CHROMIUM": "no-such-chromium", "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "ferstudy",
            "handin",
            "--out",
            str(r / "handin.zip"),
            "--source",
            str(source),
            "--readme",
            str(source / "README.md"),
            "--report-md",
            str(r / "report" / "report.md"),
            "--appendix-md",
            str(r / "report" / "appendix.md"),
            "--report-html-dir",
            str(html),
            "--results",
            str(r),
            "--log",
            str(log),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("PDF skipped: no Chromium found") == 1 and "WARNING" in run.stderr
    assert "wrote " not in run.stderr  # info lines go to the log only
    text = log.read_text()
    assert "PDF skipped: no Chromium found" in text and f"wrote {r / 'handin.zip'}" in text


# ---------------------------------------------------------------- end to end: Snakemake's report in a browser

SNAKEMAKE = TINY_SNAKEMAKE


def snakemake(study, *args):
    result = subprocess.run(
        SNAKEMAKE + [str(study / "extra.yaml"), "--cores", "2", *args], cwd=study, capture_output=True, text=True
    )
    assert result.returncode == 0, f"snakemake {args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """The tiny demo study (with an extra test set) in a folder with a space, its hand-in and its
    Snakemake HTML report."""
    from ferstudy.demo import write_demo_csv

    study = tmp_path_factory.mktemp("publish") / "my study"
    (study / "extra sets").mkdir(parents=True)
    write_demo_csv(study / "extra sets" / "demo 5.csv", n_images=140, seed=5)
    (study / "extra.yaml").write_text(
        yaml.safe_dump(
            {"data": {"extra_test_sets": {"demo_seed5": "extra sets/demo 5.csv"}}, "study": {"predict_cost": False}}
        )
    )
    run = snakemake(study, "all", "handin")
    (study / "console.txt").write_text(run.stdout + run.stderr)  # what Snakemake's console showed
    snakemake(study, "--report", "report.zip")
    with zipfile.ZipFile(study / "report.zip") as zf:
        zf.extractall(study / "report zip")
    return study


def private_accuracy(study):
    return json.loads((study / "results" / "final" / "metrics.json").read_text())["private"]["accuracy"]


@pytest.mark.slow
def test_snakemake_report_shows_the_study_report_and_the_tables_in_a_browser(tiny_study):
    binary = require_chromium()
    markdown = (tiny_study / "results" / "report" / "report.md").read_text()
    figures = re.findall(r"!\[([^\]]*)\]\(([^)]+)\)", markdown)
    assert len(figures) >= 10
    url = (tiny_study / "report zip" / "report" / "report.html").as_uri()
    with Browser(binary) as browser:

        def load():
            page = browser.open(url)
            page.wait_for(
                "!!document.querySelector('#app') && document.querySelector('#app').innerText.length > 100",
                what="the report app to render",
            )
            return page

        def click(page, text):
            """Click the menu entry reading `text`, as a reader does."""
            page.wait_for(
                f"[...document.querySelectorAll('a')].some(a => a.textContent.trim() === {json.dumps(text)})",
                what=f"a menu entry {text!r}",
            )
            page.js(
                f"[...document.querySelectorAll('a')].find(a => a.textContent.trim() === {json.dumps(text)}).click()"
            )

        def open_result(category, subcategory, label):
            """In a fresh tab: the category, the subcategory, then the eye button of the result labelled
            `label`; the frame showing it, once its images loaded."""
            page = load()
            click(page, category)
            if subcategory:
                click(page, subcategory)
            row = f"[...document.querySelectorAll('tr')].find(tr => tr.textContent.includes({json.dumps(label)}))"
            page.wait_for(f"!!{row}", what=f"{label} listed in {category}")
            page.js(f"{row}.querySelector('a').click()")
            src = page.wait_for(
                "document.querySelector('iframe') && document.querySelector('iframe').src", what=f"{label} shown"
            )
            frame = page.frame(src)  # the result's page, shown in a frame
            frame.wait_for("document.readyState === 'complete' && [...document.images].every(i => i.complete)")
            return frame

        main_text = load().js("document.body.innerText")
        for category in ("1 Report", "2 Data", "3 Cross-validation", "4 Final model", "5 Inside the final model"):
            assert category in main_text, category
        assert "Where to read" in main_text  # workflow/report/workflow.rst
        assert "DEMO DATA" in main_text  # the tiny study runs on the demo faces: its first page says so

        report = open_result("1 Report", None, "study report (HTML)")
        text = report.js("document.body.innerText")
        assert f"{100 * private_accuracy(tiny_study):.1f}%" in text and "PrivateTest" in text
        assert "DEMO" in text[:3000]
        shown = report.js("[...document.images].map(i => [i.alt, i.naturalWidth])")
        assert sorted(alt for alt, _ in shown) == sorted(alt for alt, _ in figures)
        assert all(width > 100 for _, width in shown), shown  # decoded, not broken-image icons
        assert report.js("document.querySelectorAll('table').length") >= 3

        metrics = open_result("4 Final model", "Test metrics", "PublicTest, PrivateTest and extra test sets")
        text = metrics.js("document.body.innerText")
        assert f"{100 * private_accuracy(tiny_study):.2f}%" in text
        assert "PublicTest" in text and "demo_seed5" in text

        table = open_result("3 Cross-validation", "Tables", "cross-validation summary")
        rows = table.js("[...document.querySelectorAll('tbody tr')].map(tr => tr.cells[0].textContent)")
        assert sorted(rows) == ["baseline", "pool_avg"]


@pytest.mark.slow
def test_snakemake_handin_writes_the_zip(tiny_study):
    names = zipfile.ZipFile(tiny_study / "results" / "handin.zip").namelist()
    names = [n.split("/", 1)[1] for n in names]
    assert "code/workflow/Snakefile" in names and "code/ferstudy/cli.py" in names and "README.md" in names
    assert "code/config/config.yaml" in names and "code/ferstudy/defaults.yaml" in names
    assert "results/report/report.md" in names and "results/figures/saliency.png" in names
    assert "results/final/metrics.json" in names and "results/tables/ablation.csv" in names
    assert not [n for n in names if n.endswith((".pt", ".h5", ".pth", ".onnx")) or n.startswith("results/cv/")]
    log = (tiny_study / "results" / "logs" / "handin.log").read_text()
    assert "results/report/appendix.md" in names and "results/report/html/appendix.html" in names
    if "results/report/report.pdf" in names:
        pdf = zipfile.ZipFile(tiny_study / "results" / "handin.zip").read("ferstudy-handin/results/report/report.pdf")
        assert pdf.startswith(b"%PDF")
    else:
        assert "results/report/PDF_NOT_INCLUDED.txt" in names and log.count("PDF skipped") == 1
        assert "PDF skipped: no Chromium found" in (tiny_study / "console.txt").read_text()  # on the console too
        require_chromium()  # fails in CI, where Chromium is installed and the PDF must be there
