"""A real local Hub for tests: ``olah`` (PyPI, a self-hosted Hub mirror) serving plain git repos,
offline, on 127.0.0.1 (see docs: design.md, "The Hub without internet").

``mirrors/<models|datasets>/<org>/<name>`` under the root are git repos (:func:`git_repo`);
:func:`olah_server` starts olah on a free port, waits until ``probe`` answers, yields the
endpoint and stops the process by its PID. Skips the test when olah or git is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest


def git(repo: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=lorun", "-c", "user.email=lorun@example.com", "-c", "commit.gpgsign=false", *args]
    return subprocess.run(command, cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def git_repo(root: Path, kind: str, repo_id: str) -> Path:
    """An empty git repo (branch main) at ``root/mirrors/<kind>/<repo_id>``; commit with :func:`commit_all`."""
    repo = root / "mirrors" / kind / repo_id
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    return repo


def commit_all(repo: Path, message: str = "add") -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@contextlib.contextmanager
def olah_server(root: Path, probe: str) -> Iterator[str]:
    """olah serving ``root/mirrors``; ``probe`` ("models/org/name" or "datasets/org/name") is a
    repo whose refs answer once the server is ready. Yields the endpoint URL."""
    olah = shutil.which("olah-cli") or str(Path(sys.executable).with_name("olah-cli"))
    if not Path(olah).exists() or shutil.which("git") is None:
        pytest.skip("olah-cli (pip install olah) and git are needed for the local Hub server")
    port = free_port()
    (root / "olah.toml").write_text(
        f'[basic]\nhost = "127.0.0.1"\nport = {port}\nrepos-path = "{root / "repos"}"\n'
        f'mirror-netloc = "127.0.0.1:{port}"\nmirror-lfs-netloc = "127.0.0.1:{port}"\n'
        f'mirrors-path = ["{root / "mirrors"}"]\n\n[accessibility]\noffline = true\n'
    )
    endpoint = f"http://127.0.0.1:{port}"
    with open(root / "olah.log", "wb") as log:
        proc = subprocess.Popen([olah, "-c", str(root / "olah.toml")], cwd=root, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        try:
            while True:
                try:
                    with urllib.request.urlopen(f"{endpoint}/api/{probe}/refs", timeout=2) as answer:
                        if answer.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = (root / "olah.log").read_text(errors="replace")[-1500:]
                    pytest.skip(f"olah did not start on {endpoint} within 30 s (exit code {proc.poll()}): {tail}")
                time.sleep(0.25)
            yield endpoint
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
