"""Running a command with one folder (or file) read-only, the way a Docker volume mounted
`:ro` is: a bind mount made read-only in a private mount namespace (`unshare -m`), which
binds root too (tests run as root, where file modes stop nothing) and vanishes with the
command."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def can_mount() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


needs_mount = pytest.mark.skipif(
    not can_mount(), reason="needs unshare -m (root or CAP_SYS_ADMIN) to mount read-only"
)


def run_with_read_only(
    path: Path, argv: Sequence[str], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run `argv` with `path` (a folder or a file) read-only for it alone; everything else
    as usual."""
    script = (
        f"mount --bind {path} {path} && mount -o remount,bind,ro {path} && exec {shlex.join(argv)}"
    )
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
