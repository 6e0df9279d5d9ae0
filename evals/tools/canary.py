"""The newest-versions canary, run by ``make test-latest`` inside its own venv (the newest versions that
pyproject.toml allows, torch and triton pinned to the lock's CPU build): the default test suite, then
its outcome, the date and the resolved version of every direct dependency written to
``evals/results/canary.md`` by this command (never by hand). Exits with pytest's status.

A failure here is a dependency that moved: fix it with a bound in pyproject.toml or a code change, and
a test that pins the behaviour down.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import os
import re
import subprocess
import sys

import tomllib

from recall_lm.evals.common import ROOT

REPORT = ROOT / "evals" / "results" / "canary.md"


def direct_dependencies() -> list[str]:
    """The distribution names pyproject.toml asks for, the dev extra included."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + [
        s for extra in project["optional-dependencies"].values() for s in extra
    ]
    return [re.match(r"[A-Za-z0-9_.\-]+", spec).group(0) for spec in specs]


def resolved_versions() -> dict[str, str]:
    out = {}
    for name in direct_dependencies():
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def run_suite(extra: list[str]) -> tuple[int, str]:
    """The default suite, its output shown as it runs; (exit status, pytest's closing line)."""
    env = {**os.environ, "RECALL_LM_CANARY": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra]
    child = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    last = ""
    for line in child.stdout:
        sys.stdout.write(line)
        if re.search(r"\d+ (passed|failed|error)", line):
            last = line.strip().strip("=").strip()
    return child.wait(), last


def write_report(code: int, summary: str, versions: dict[str, str]) -> None:
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = "\n".join(f"| {name} | {version} |" for name, version in versions.items())
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(
        "# Newest-versions canary\n\n"
        "Written by `make test-latest` (`python -m recall_lm.evals.tools.canary` in a venv with the newest "
        "versions\n"
        "that pyproject.toml allows; torch and triton pinned to the lock's CPU build). "
        "Do not edit by hand.\n\n"
        f"- date: {today}\n- python: {sys.version.split()[0]}\n"
        f"- result: **{'pass' if code == 0 else 'FAIL'}** "
        f"(pytest exit {code}: {summary or 'no summary line'})\n\n"
        f"| direct dependency | resolved version |\n|---|---|\n{rows}\n"
    )


def main(argv: list[str] | None = None) -> int:
    code, summary = run_suite(list(sys.argv[1:] if argv is None else argv))
    write_report(code, summary, resolved_versions())
    print(f"canary: {'pass' if code == 0 else 'FAIL'} ({summary}); versions in {REPORT.relative_to(ROOT)}")
    return code


if __name__ == "__main__":
    sys.exit(main())
