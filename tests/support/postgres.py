"""A real PostgreSQL server for tests, from Debian's packages (``apt-get install postgresql``).

:class:`PostgresServer` runs ``initdb`` into a fresh directory and ``postgres`` in the
foreground on a free port of 127.0.0.1 (TCP with a password, ``scram-sha-256``; its unix
socket in that directory, never in ``/run/postgresql``), as a
:class:`~tests.support.procs.ManagedProcess`: a hard lifetime, stopped by pid (``SIGINT``:
PostgreSQL's fast shutdown) and reaped, its process group killed after it. PostgreSQL refuses
to run as root, and tests run as root on CI, so there the server runs as an unprivileged user
(``postgres`` when the package created it, else ``nobody``) through ``setpriv``, and its
directory is made under the system's temporary directory (pytest's ``tmp_path`` is private to
root) and removed afterwards. Settings trade durability for speed (``fsync=off``): a test
server holds nothing worth keeping.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg

from tests.conftest import scaled
from tests.support.ports import free_tcp_port
from tests.support.procs import ManagedProcess, ProcessError

__all__ = ["PostgresServer", "find_bin_dir", "running_postgres"]

#: Where Debian's postgresql-NN packages put the server programs.
DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
USER = "gateway"
PASSWORD = "test-password-not-a-secret"


def find_bin_dir() -> Path | None:
    """The newest installed PostgreSQL's ``bin`` directory with ``initdb`` and ``postgres``."""
    found = []
    for bin_dir in Path("/").glob(DEBIAN_BIN_GLOB.lstrip("/")):
        version = re.fullmatch(r"\d+", bin_dir.parent.name)
        if version and (bin_dir / "initdb").is_file() and (bin_dir / "postgres").is_file():
            found.append((int(version.group()), bin_dir))
    return max(found)[1] if found else None


def _server_user() -> pwd.struct_passwd | None:
    """Whom to run the server as: ``None`` (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ProcessError("running as root and neither a postgres nor a nobody user exists")


def _reachable_by_others(path: Path) -> bool:
    return all(p.stat().st_mode & stat.S_IXOTH for p in (path, *path.parents))


class PostgresServer:
    """One PostgreSQL cluster in a directory of its own (see the module docstring).

    Args:
        bin_dir: Where ``initdb`` and ``postgres`` are.
        log_dir: Where the server's logs go (read them when a test fails).
    """

    def __init__(self, bin_dir: Path, log_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.log_dir = log_dir
        self.user = _server_user()
        parent = Path(tempfile.gettempdir())
        if self.user is not None and not _reachable_by_others(parent):
            parent = Path("/tmp")
        self.base = Path(tempfile.mkdtemp(prefix="gateway-pg-", dir=parent))
        self.data = self.base / "data"
        self.port = free_tcp_port()
        self._process: ManagedProcess | None = None
        self._starts = 0
        self._databases = 0
        if self.user is not None:
            os.chown(self.base, self.user.pw_uid, self.user.pw_gid)

    def _as_user(self, argv: list[str]) -> list[str]:
        if self.user is None:
            return argv
        return ["setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}",
                "--clear-groups", "--", *argv]

    def initdb(self) -> None:
        """Create the cluster: superuser ``gateway`` with :data:`PASSWORD` over TCP."""
        pwfile = self.base / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        pwfile.chmod(0o600)
        if self.user is not None:
            os.chown(pwfile, self.user.pw_uid, self.user.pw_gid)
        argv = self._as_user([
            str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", USER,
            f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
            "-E", "UTF8", "--locale=C", "--no-sync"])
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=scaled(60),
                                  check=False, env={**os.environ, "LC_ALL": "C"},
                                  cwd=self.base)
        finally:
            pwfile.unlink()
        if done.returncode != 0:
            raise ProcessError(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def start(self) -> None:
        """Start the server on :attr:`port` and wait until it accepts connections."""
        if self._process is not None and self._process.running:
            raise ProcessError("postgres already running")
        self._starts += 1
        argv = self._as_user([
            str(self.bin_dir / "postgres"), "-D", str(self.data), "-h", "127.0.0.1",
            "-p", str(self.port), "-k", str(self.base), "-c", "fsync=off",
            "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "max_connections=20", "-c", "shared_buffers=16MB"])
        process = ManagedProcess(argv, log_path=self.log_dir / f"postgres-{self._starts}.log",
                                 name="postgres", env={"LC_ALL": "C"}, cwd=self.base,
                                 max_lifetime_s=scaled(600), stop_signal=signal.SIGINT,
                                 grace_s=scaled(15))
        self._process = process.start()
        try:
            process.wait_ready(lambda text: "ready to accept connections" in text,
                               port=self.port, proto="tcp", timeout_s=scaled(30))
        except BaseException:
            process.stop()
            raise

    def stop(self) -> None:
        """Stop the server (fast shutdown: connections are closed) and wait for it."""
        if self._process is not None:
            self._process.stop()

    def url(self, database: str = "postgres") -> str:
        """``postgresql://gateway@127.0.0.1:PORT/DATABASE`` (the password goes separately)."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; returns its name."""
        self._databases += 1
        name = f"test_{self._databases}"
        with psycopg.connect(self.url(), password=PASSWORD, autocommit=True,
                             connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def remove(self) -> None:
        """Stop the server and remove its directory."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def running_postgres(log_dir: Path) -> Iterator[PostgresServer]:
    """A started server, stopped and removed on exit whatever happened."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise ProcessError(f"no PostgreSQL server in {DEBIAN_BIN_GLOB}: apt-get install "
                           "postgresql (scripts/dev.sh setup does)")
    server = PostgresServer(bin_dir, log_dir)
    try:
        server.initdb()
        server.start()
        yield server
    finally:
        server.remove()
