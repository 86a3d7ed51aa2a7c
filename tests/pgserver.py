"""A throwaway PostgreSQL server for tests.

Owns: finding the server binaries (``/usr/lib/postgresql/<major>/bin``, newest first, else
``pg_ctl`` on ``PATH``), creating a cluster in a fresh temporary directory, starting it on a free
TCP port of 127.0.0.1 (trust authentication, user ``postgres``, durability switched off for
speed), handing out fresh databases, and stopping it and removing the directory.

``initdb`` refuses to run as root, so when the tests run as root the directory is given to the
``postgres`` OS user and the binaries run through ``runuser -u postgres --`` (``su`` as fallback).
The server is also stopped at interpreter exit, in case the owner forgot.

    with PgServer() as pg:
        name = pg.create_database()
        url = pg.url(name)          # postgresql+psycopg://postgres@127.0.0.1:PORT/NAME
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
OS_USER = "postgres"
DB_USER = "postgres"


def find_pg_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl`` (newest major version), or None."""

    def major(path: str) -> int:
        m = re.search(r"/postgresql/(\d+)/", path)
        return int(m.group(1)) if m else -1

    candidates = sorted(glob.glob(PG_BIN_GLOB), key=major, reverse=True)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for cand in candidates:
        d = Path(cand)
        if all(os.access(d / tool, os.X_OK) for tool in ("initdb", "pg_ctl")):
            return d
    return None


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One PostgreSQL cluster in a temporary directory; ``start()`` / ``stop()`` (idempotent)."""

    def __init__(self, bindir: Path | None = None) -> None:
        found = bindir or find_pg_bindir()
        if found is None:
            raise FileNotFoundError(
                f"PostgreSQL server binaries (initdb, pg_ctl) not found under {PG_BIN_GLOB}"
            )
        self.bindir = found
        self.as_root = os.geteuid() == 0
        self.base: Path | None = None
        self.port: int | None = None
        self._running = False

    # ---- process plumbing

    def _run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [str(a) for a in argv]
        if self.as_root:
            if shutil.which("runuser"):
                cmd = ["runuser", "-u", OS_USER, "--", *cmd]
            else:
                cmd = ["su", OS_USER, "-s", "/bin/sh", "-c", shlex.join(cmd)]
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        env.pop("PGDATA", None)
        return subprocess.run(
            cmd,
            cwd=self.base,  # the postgres user may not be allowed into the caller's cwd
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def _check(self, what: str, proc: subprocess.CompletedProcess[str]) -> None:
        if proc.returncode != 0:
            raise RuntimeError(
                f"{what} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n"
                f"{self._log_tail()}"
            )

    def _log_tail(self, lines: int = 30) -> str:
        log = self.base / "server.log" if self.base else None
        if log is None or not log.exists():
            return ""
        text = log.read_text(errors="replace").splitlines()[-lines:]
        return "server log:\n" + "\n".join(text)

    @property
    def datadir(self) -> Path:
        assert self.base is not None
        return self.base / "data"

    # ---- lifecycle

    def start(self, attempts: int = 3) -> PgServer:
        """initdb + start; retries on another port if the chosen one got taken meanwhile."""
        if self._running:
            return self
        self.base = Path(tempfile.mkdtemp(prefix="aisync-pg-"))
        atexit.register(self.stop)
        try:
            if self.as_root:
                pw = pwd.getpwnam(OS_USER)
                os.chown(self.base, pw.pw_uid, pw.pw_gid)
            self._check(
                "initdb",
                self._run(
                    self.bindir / "initdb",
                    "-D",
                    self.datadir,
                    "-A",
                    "trust",
                    "-U",
                    DB_USER,
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ),
            )
            for attempt in range(1, attempts + 1):
                self.port = free_port()
                opts = (
                    f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 "
                    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
                )
                proc = self._run(
                    self.bindir / "pg_ctl",
                    "-D",
                    self.datadir,
                    "-l",
                    self.base / "server.log",
                    "-o",
                    opts,
                    "-w",
                    "-t",
                    "60",
                    "start",
                )
                if proc.returncode == 0:
                    self._running = True
                    return self
                if attempt == attempts:
                    self._check("pg_ctl start", proc)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (immediate mode) and remove its directory; safe to call twice."""
        if self.base is None:
            return
        try:
            if self._running or (self.datadir / "postmaster.pid").exists():
                self._run(
                    self.bindir / "pg_ctl",
                    "-D",
                    self.datadir,
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                    timeout=60,
                )
        finally:
            self._running = False
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None
            atexit.unregister(self.stop)

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- databases

    def url(self, dbname: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        """SQLAlchemy URL of ``dbname`` on this server."""
        return f"{driver}://{DB_USER}@127.0.0.1:{self.port}/{dbname}"

    def _admin(self):  # -> psycopg.Connection
        import psycopg

        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=DB_USER,
            dbname="postgres",
            autocommit=True,
            connect_timeout=10,
        )

    def create_database(self, prefix: str = "test") -> str:
        """Create an empty database with a random name; returns the name."""
        from psycopg import sql

        name = f"{prefix}_{secrets.token_hex(6)}"
        with self._admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever is still connected."""
        from psycopg import sql

        with self._admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
