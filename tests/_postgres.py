"""A throwaway PostgreSQL server for the test session, from Debian's postgresql package.

``initdb`` makes a cluster in a temporary directory and ``pg_ctl`` starts it on
127.0.0.1 at a free port, its socket in the same directory, fsync off (a test
cluster need not survive a power cut). PostgreSQL refuses to run as root, so
when the tests run as root (CI, containers) the directory is handed to the
``postgres`` user and every command runs through ``runuser``. Each test gets a
fresh schema (CREATE SCHEMA takes milliseconds, CREATE DATABASE a third of a
second here); the server is stopped and its directory removed at the end of
the session.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

USER = "assay"
INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found; run `make postgresql` "
    "(installs Debian's postgresql package) and run the tests again"
)


class PostgresMissingError(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def bin_dir() -> Path:
    """The folder with initdb and pg_ctl (Debian keeps them off PATH).

    Raises:
        PostgresMissingError: No PostgreSQL server is installed.
    """
    candidates: list[Path] = []
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        out = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True, timeout=10
        )
        candidates.append(Path(out.stdout.strip()))

    def major(path: str) -> int:
        version = Path(path).parts[-3]
        return int(version) if version.isdigit() else 0

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=major, reverse=True)
    candidates += [Path(path).parent for path in found]
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    raise PostgresMissingError(INSTALL_HINT)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """One running cluster; `create_database` hands out fresh databases on it."""

    def __init__(self) -> None:
        """Creates and starts the cluster.

        Raises:
            PostgresMissingError: PostgreSQL is not installed.
            RuntimeError: initdb or pg_ctl failed (their output is in the message).
        """
        self._bin = bin_dir()
        self._as_postgres = os.geteuid() == 0
        self.dir = Path(tempfile.mkdtemp(prefix="assay-pg-"))
        self.port = 0
        try:
            if self._as_postgres:
                shutil.chown(self.dir, "postgres", "postgres")
            self._run("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", USER)
            self._start()
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self._bin / tool), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")

    def _start(self) -> None:
        for attempt in range(3):  # another process may take the free port in between
            self.port = _free_port()
            options = f"-k {self.dir} -h 127.0.0.1 -p {self.port} -F"
            data, log = str(self.dir / "data"), str(self.dir / "server.log")
            try:
                self._run("pg_ctl", "-D", data, "-o", options, "-l", log, "-w", "start")
                return
            except RuntimeError:
                if attempt == 2:
                    raise

    def url(self, database: str = "postgres") -> str:
        """A URL for one database of this server."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database of its own; returns its URL (CREATE DATABASE: ~0.3 s)."""
        name = f"test_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        return self.url(name)

    def create_schema(self) -> str:
        """A new, empty schema, the only one on its URL's search_path; returns the URL.

        Costs a few milliseconds where CREATE DATABASE takes a third of a second,
        and isolates as well: everything the store creates lands in it.
        """
        name = f"test_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{name}"'.encode())
        return f"{self.url()}?options=-csearch_path%3D{name}"

    def drop(self, url: str) -> None:
        """Drops what create_database or create_schema made, closing its connections."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            if "search_path%3D" in url:
                name = url.rsplit("%3D", 1)[1]
                conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'.encode())
            else:
                name = url.rsplit("/", 1)[1]
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())

    def stop(self) -> None:
        """Stops the server at once and removes its files."""
        try:
            self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def start_timed() -> tuple[PostgresServer, float]:
    """Starts a server; returns it and how long initdb + start took, in seconds."""
    began = time.perf_counter()
    server = PostgresServer()
    return server, time.perf_counter() - began
