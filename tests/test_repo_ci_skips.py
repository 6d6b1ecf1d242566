"""conftest.py's rule (DESIGN §10): a skip fails the run under `CI=true` and stays a skip
without it. Checked on a tiny suite run by pytest in its own process, with that hook."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = """
import pytest


@pytest.fixture
def server():
    pytest.skip("needs nginx (apt-get install nginx)")


def test_runs():
    pass


def test_skips_in_its_body():
    pytest.skip("needs curl (apt-get install curl)")


@pytest.mark.skipif(True, reason="needs redis-server (apt-get install redis-server)")
def test_skipped_by_a_marker():
    pass


def test_skipped_by_a_fixture(server):
    pass


@pytest.mark.xfail(strict=True)
def test_an_expected_failure():
    assert False
"""
MISSING_MODULE = 'import pytest\n\npytest.importorskip("no_such_module_here")\n'
SKIP_REASONS = ("apt-get install curl", "apt-get install redis-server", "apt-get install nginx")


def run_tiny(tmp_path: Path, ci: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import pytest_make_collect_report, pytest_runtest_makereport\n"
    )
    (tmp_path / "test_tiny.py").write_text(TINY)
    (tmp_path / "test_needs_a_module.py").write_text(MISSING_MODULE)
    env = {name: value for name, value in os.environ.items() if name != "CI"}
    env["PYTHONPATH"] = str(ROOT)
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def summary(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout.strip().splitlines()[-1]


def failures(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]


@pytest.mark.parametrize("ci", [None, "false"])
def test_without_ci_a_skip_is_a_skip(tmp_path: Path, ci: str | None) -> None:
    done = run_tiny(tmp_path, ci)
    assert done.returncode == 0, done.stdout + done.stderr
    assert summary(done).startswith("1 passed, 4 skipped, 1 xfailed"), done.stdout
    assert all(reason in done.stdout for reason in SKIP_REASONS)


@pytest.mark.parametrize("ci", ["true", "TRUE"])
def test_under_ci_every_kind_of_skip_fails_with_its_reason(tmp_path: Path, ci: str) -> None:
    done = run_tiny(tmp_path, ci, "test_tiny.py")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "skipped" not in summary(done), done.stdout
    assert "1 passed" in summary(done) and "1 xfailed" in summary(done), done.stdout
    assert len(failures(done)) == 3, done.stdout
    for reason in SKIP_REASONS:
        (line,) = [line for line in failures(done) if reason in line]
        assert "CI=true allows no skip" in line


def test_under_ci_a_module_skipped_at_import_stops_the_run(tmp_path: Path) -> None:
    """A collection error: pytest runs nothing else and exits 2, loud enough for CI."""
    done = run_tiny(tmp_path, "true")
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = failures(done)
    assert "CI=true allows no skip" in line and "no_such_module_here" in line
