"""The MONAI Label server both MONAI Label test modules start: its venv and a real `monailabel start_server` on loopback."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.ports import free_port


@pytest.fixture(scope="session")
def monailabel_python(repo_root) -> str:
    """The MONAI Label venv's python (.venv-monailabel, layered on this venv: scripts/make_venv.py)."""
    from scripts.make_venv import make_venv

    return make_venv(repo_root / "deploy" / "monailabel" / "requirements.txt", repo_root / ".venv-monailabel")


@pytest.fixture(scope="session")
def monailabel_server(monailabel_python):
    """Start a real server: ``with monailabel_server(app, store, base, *conf) as url``; ``conf`` pairs go to ``--conf``.

    The server runs in its own session from ``base`` (its log in ``base/server.log``), is up once ``/info/`` answers
    (else the test fails with the log's tail after 240 s), and is stopped with its process group.
    """
    venv = Path(monailabel_python).parents[1]

    @contextlib.contextmanager
    def serve(app: Path, store: Path, base: Path, *conf: str) -> Iterator[str]:
        port = free_port()
        log = open(base / "server.log", "w")
        cmd = [str(monailabel_python), "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(store)]
        for key, value in zip(conf[::2], conf[1::2], strict=True):
            cmd += ["--conf", key, value]
        cmd += ["--host", "127.0.0.1", "--port", str(port)]
        env = dict(os.environ, PATH=f"{venv / 'bin'}:{os.environ['PATH']}", MONAI_LABEL_APP_DIR=str(app))
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=base, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 240
            while True:
                if proc.poll() is not None:
                    pytest.fail("monailabel exited:\n" + (base / "server.log").read_text()[-4000:])
                try:
                    if requests.get(url + "/info/", timeout=5).ok:
                        break
                except requests.ConnectionError:
                    pass
                if time.time() > deadline:
                    pytest.fail("monailabel did not start in 240 s:\n" + (base / "server.log").read_text()[-4000:])
                time.sleep(2)
            yield url
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()

    return serve
