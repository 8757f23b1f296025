"""A private PostgreSQL server for the ledger tests, on a free loopback port.

Debian's ``postgresql`` package (``make test`` installs it) provides ``initdb`` and
``pg_ctl`` under ``/usr/lib/postgresql/<version>/bin``. PostgreSQL refuses to run as root,
so as root the cluster directory belongs to the ``postgres`` user and the tools run
through ``runuser``. The cluster runs with ``fsync=off`` (a test server: crash safety is
not what is tested) and trust authentication on 127.0.0.1 only. ``pg_ctl -w`` returns
once the server accepts connections, which is the readiness probe.

One server serves the whole session; each test takes a fresh database from
:meth:`PostgresServer.create_database` (a copy of ``template1``, a few tens of ms).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from postedge.localservers import free_port


class PostgresMissing(RuntimeError):
    """PostgreSQL is not installed: the ledger tests fail rather than skip."""


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    if not found:
        initdb = shutil.which("initdb")
        if initdb is None:
            raise PostgresMissing(
                "PostgreSQL is not installed (no initdb). Install it with: "
                "apt-get install -y postgresql  ('make test' does this when run as root)"
            )
        return Path(initdb).resolve().parent
    return Path(found[-1]).parent


def _version_key(path: str) -> int:
    version = Path(path).parent.parent.name
    return int(version) if version.isdigit() else 0


class PostgresServer:
    """``start()`` creates a cluster in a temporary directory and starts it; ``stop()``
    stops it and removes the directory."""

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.user = "postgres"
        self.root: Path | None = None
        self._bin: Path | None = None

    def _run(self, *command: str) -> None:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        result = subprocess.run(
            [*as_postgres, *command], capture_output=True, text=True, check=False, timeout=60
        )
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {result.stdout}{result.stderr}")

    def start(self) -> None:
        self._bin = _bin_dir()
        # Not under pytest's tmp dirs: those are 0700 root, and the server runs as postgres.
        self.root = Path(tempfile.mkdtemp(prefix="postedge-pg-"))
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        data = self.root / "data"
        self._run(
            str(self._bin / "initdb"), "-D", str(data), "-A", "trust", "-U", self.user,
            "--no-sync", "-E", "UTF8", "--locale", "C",
        )  # fmt: skip
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses={self.host} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            str(self._bin / "pg_ctl"), "-D", str(data), "-l", str(self.root / "server.log"),
            "-w", "-t", "30", "-o", options, "start",
        )  # fmt: skip

    def stop(self) -> None:
        if self.root is None or self._bin is None:
            return
        try:
            self._run(str(self._bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate",
                      "-w", "stop")  # fmt: skip
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database`` on this server."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """A plain psycopg connection in autocommit mode (for set-up and inspection)."""
        return psycopg.connect(
            host=self.host, port=self.port, user=self.user, dbname=database, autocommit=True
        )

    def create_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        with self.connect() as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)
