"""Headless Chromium, found on this machine and run without network, sandbox or profile state.

Used to print the HTML report to PDF (`ferstudy handin`) and by the tests that look at the
reports in a real browser. Debian ships it as `chromium-headless-shell` (or `chromium`);
FERSTUDY_CHROMIUM names another binary.
"""

import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger("ferstudy")

ENV_VAR = "FERSTUDY_CHROMIUM"
CANDIDATES = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# No sandbox (root in containers), no GPU, and nothing that reaches out to the network or keeps state.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-breakpad",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
)


def find_chromium() -> str | None:
    """Path of a Chromium binary, or None: $FERSTUDY_CHROMIUM first, then the usual names on PATH."""
    wanted = os.environ.get(ENV_VAR)
    if wanted:
        return shutil.which(wanted)
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def command(binary: str, user_data_dir: Path | str, *args: str) -> list[str]:
    """The command line: the fixed flags, a fresh profile directory, then `args`."""
    return [binary, *FLAGS, f"--user-data-dir={user_data_dir}", *args]


def run(binary: str, *args: str, timeout: float = 180) -> str:
    """Run Chromium once with a throwaway profile; its stdout (e.g. --dump-dom) as text."""
    with tempfile.TemporaryDirectory(prefix="ferstudy-chromium-") as profile:
        result = subprocess.run(
            command(binary, profile, *args),
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "HOME": profile},
        )
    if result.returncode != 0:
        raise RuntimeError(f"{binary} exited with {result.returncode}: {result.stderr.strip()[-2000:]}")
    return result.stdout


def print_to_pdf(binary: str, html: Path | str, pdf: Path | str, timeout: float = 180) -> Path:
    """Print the HTML file `html` to `pdf` (A4, no header or footer) as the browser renders it."""
    html, pdf = Path(html).resolve(), Path(pdf)
    out = pdf.with_name(pdf.name + ".part")
    run(
        binary,
        "--no-pdf-header-footer",
        "--virtual-time-budget=10000",
        f"--print-to-pdf={out}",
        html.as_uri(),
        timeout=timeout,
    )
    if not out.is_file() or not out.read_bytes().startswith(b"%PDF"):
        raise RuntimeError(f"{binary} wrote no PDF for {html}")
    out.replace(pdf)
    return pdf


def version(binary: str) -> str:
    try:
        return subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown version"
