"""A throw-away PostgreSQL cluster for tests: initdb + pg_ctl on a free local port, one database per test.

PostgreSQL refuses to run as root, and tests and CI run as root: the cluster then runs as the
unprivileged `postgres` user (created by Debian's `postgresql` package) through `runuser`.
pytest-postgresql was tried and cannot do this (it calls pg_ctl as the current user).
The cluster trades durability for speed (fsync off): it lives for one test session.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

SERVER_USER = "postgres"


def find_bin_dir() -> Path | None:
    """The directory holding initdb and pg_ctl: on PATH, else Debian's newest /usr/lib/postgresql/N/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    return Path(candidates[-1]).parent if candidates else None


def missing_reason() -> str | None:
    """Why a test cluster cannot start here, or None."""
    if find_bin_dir() is None:
        return "PostgreSQL server binaries not found (apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"running as root and there is no '{SERVER_USER}' user to run PostgreSQL as"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """One cluster in a temporary folder; `new_database()` hands out fresh empty databases."""

    def __init__(self, durable: bool = False) -> None:
        """`durable`: PostgreSQL's default settings (for measuring); else fsync off (for tests)."""
        bin_dir = find_bin_dir()
        assert bin_dir is not None, missing_reason()
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="classmood-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = _free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            self._as_user = ["runuser", "-u", SERVER_USER, "--"]
            account = pwd.getpwnam(SERVER_USER)
            os.chown(self.root, account.pw_uid, account.pw_gid)
        self.root.chmod(0o755)
        self._counter = itertools.count(1)
        self.durable = durable

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as_user, *args], check=True, capture_output=True, timeout=120)

    def init(self) -> PostgresServer:
        self._run(str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-sync", "--locale=C")
        self.start()
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=400"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "-o", options, "start")

    def stop(self) -> None:
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def restart(self, down_s: float = 0.0) -> float:
        """Stop (closing every client connection), stay down `down_s`, start; returns the seconds it was down."""
        began = time.monotonic()
        self.stop()
        time.sleep(down_s)
        self.start()
        return time.monotonic() - began

    def destroy(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # already stopped
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> None:
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=database,
                             autocommit=True) as conn:
            conn.execute(sql.encode())  # bytes: a script of several statements, as psql would run it

    def new_database(self, prefix: str = "test") -> str:
        """A fresh empty database; returns its SQLAlchemy URL."""
        name = f"{prefix}_{next(self._counter)}"
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)
