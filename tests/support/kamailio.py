"""A real SIP registrar/proxy for tests: Kamailio on 127.0.0.1 with an in-memory location table.

:class:`Kamailio` renders ``kamailio.cfg`` (next to this module) into a run directory, checks
it with ``kamailio -c``, starts ``kamailio -f CFG -DD -E -Y RUNDIR -m 64 -M 8`` as a bounded
:class:`~tests.support.procs.ManagedProcess` and waits until its UDP port is bound and its
control socket exists. Registrations are read back with ``kamcmd ul.lookup`` over the ``ctl``
module's unix socket (binrpc; measured to work here without extra setup), so a test can wait
for "the UA registered" as a condition. Digest authentication of REGISTER is optional and
needs no database: the ``auth`` module's ``pv_www_authenticate`` checks against the fixed
:data:`TEST_PASSWORD` written into the rendered config. Kamailio's log (``-E``: stderr) goes
to ``kamailio.log`` in the run directory; the config logs each REGISTER and relayed request.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.support.ports import free_udp_port
from tests.support.procs import POLL_S, ManagedProcess, ProcessError

#: The config template.
CONFIG_TEMPLATE = Path(__file__).with_name("kamailio.cfg")
#: Password every test account uses with ``auth=True``; not a secret, never use it elsewhere.
TEST_PASSWORD = "harness-test-password"
#: Where Debian (and most distributions) put Kamailio's modules.
_MODULE_DIRS = ("/usr/lib/x86_64-linux-gnu/kamailio/modules",
                "/usr/lib/aarch64-linux-gnu/kamailio/modules",
                "/usr/lib64/kamailio/modules", "/usr/lib/kamailio/modules",
                "/usr/local/lib64/kamailio/modules", "/usr/local/lib/kamailio/modules")
_PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")
_UNIX_PATH_MAX = 100  # sun_path is 108 bytes; keep a margin
_KAMCMD_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Contact:
    """One registered contact of an address-of-record."""

    uri: str
    expires_s: int
    user_agent: str


def module_dir() -> str:
    """Kamailio's module directory on this machine.

    Raises:
        ProcessError: Kamailio's modules are not installed in a known place.
    """
    for d in _MODULE_DIRS:
        if Path(d, "tm.so").exists():
            return d
    raise ProcessError("Kamailio modules not found (apt-get install kamailio)")


def render_config(template: str, values: Mapping[str, str]) -> str:
    """Fill ``{{NAME}}`` placeholders.

    Raises:
        ValueError: A placeholder has no value.
    """
    missing = sorted({m for m in _PLACEHOLDER.findall(template) if m not in values})
    if missing:
        raise ValueError(f"kamailio.cfg placeholders without a value: {missing}")
    return _PLACEHOLDER.sub(lambda m: values[m[1]], template)


def parse_ul_lookup(text: str) -> list[Contact]:
    """Contacts from ``kamcmd ul.lookup location USER`` output (empty when not found)."""
    contacts: list[Contact] = []
    for block in re.split(r"\bContact:\s*\{", text)[1:]:
        fields = dict(re.findall(r"^\s*([A-Za-z-]+):\s*(.*?)\s*$", block, re.MULTILINE))
        uri = fields.get("Address", "")
        if not uri:
            continue
        try:
            expires = int(fields.get("Expires", "0"))
        except ValueError:
            expires = 0
        contacts.append(Contact(uri, expires, fields.get("User-Agent", "")))
    return contacts


class Kamailio:
    """Kamailio as registrar and proxy on ``udp:127.0.0.1:port`` for a ``with`` block.

    Args:
        run_dir: Directory for the rendered config, the log and the runtime files.
        port: UDP port (default: a free one).
        auth: Challenge REGISTER with digest auth (realm ``realm``, password
            :data:`TEST_PASSWORD`; the auth user must equal the To user).
        realm: Digest realm.
        max_lifetime_s: Hard bound on Kamailio's life.
        start_timeout_s: How long to wait for it to listen.
    """

    def __init__(self, run_dir: Path, *, port: int | None = None, auth: bool = False,
                 realm: str = "127.0.0.1", max_lifetime_s: float = 300.0,
                 start_timeout_s: float = 15.0) -> None:
        self.run_dir = run_dir
        self.port = free_udp_port() if port is None else port
        self.host = "127.0.0.1"
        self.auth = auth
        self.realm = realm
        self.start_timeout_s = start_timeout_s
        self.config_path = run_dir / "kamailio.cfg"
        self.log_path = run_dir / "kamailio.log"
        self._sock_dir: Path | None = None
        self.ctl_socket = run_dir / "kamailio_ctl"
        if len(str(self.ctl_socket)) > _UNIX_PATH_MAX:
            self._sock_dir = Path(tempfile.mkdtemp(prefix="kam-"))
            self.ctl_socket = self._sock_dir / "kamailio_ctl"
        self._proc = ManagedProcess(
            ["kamailio", "-f", str(self.config_path), "-DD", "-E", "-Y", str(run_dir),
             "-m", "64", "-M", "8"],
            log_path=self.log_path, name="kamailio", max_lifetime_s=max_lifetime_s,
            grace_s=5.0)

    @property
    def address(self) -> str:
        """``host:port``, e.g. a SIPp target."""
        return f"{self.host}:{self.port}"

    @property
    def uri(self) -> str:
        """``sip:host:port``, e.g. a registrar URI."""
        return f"sip:{self.address}"

    def render(self) -> Path:
        """Write the config for this instance; returns its path."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        values = {
            "PORT": str(self.port), "RUNDIR": str(self.ctl_socket.parent),
            "MPATH": module_dir(), "REALM": self.realm, "PASSWORD": TEST_PASSWORD,
            "DEFINES": "#!define WITH_AUTH" if self.auth else "",
        }
        self.config_path.write_text(render_config(CONFIG_TEMPLATE.read_text(), values))
        return self.config_path

    def start(self) -> Self:
        """Render, check and start Kamailio; wait until it listens.

        Raises:
            ProcessError: The config does not parse, or Kamailio did not start in time.
        """
        self.render()
        check = subprocess.run(["kamailio", "-c", "-f", str(self.config_path)],
                               capture_output=True, text=True, timeout=30, check=False)
        if check.returncode != 0:
            raise ProcessError(f"kamailio -c rejected {self.config_path}:\n"
                               f"{check.stderr[-3000:]}")
        self._proc.start()
        try:
            self._proc.wait_ready(lambda _: self.ctl_socket.exists(), port=self.port,
                                  proto="udp", timeout_s=self.start_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop Kamailio (``SIGTERM``, which also ends its workers) and wait for it."""
        try:
            self._proc.stop()
        finally:
            if self._sock_dir is not None:
                shutil.rmtree(self._sock_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def log_text(self) -> str:
        """Kamailio's log so far."""
        return self._proc.log_text()

    def kamcmd(self, *args: str) -> str:
        """Run one ``kamcmd`` command against this instance and return its output.

        Raises:
            ProcessError: kamcmd failed for another reason than "not found".
        """
        proc = subprocess.run(["kamcmd", "-s", f"unix:{self.ctl_socket}", *args],
                              capture_output=True, text=True, timeout=_KAMCMD_TIMEOUT_S,
                              check=False)
        out = proc.stdout + proc.stderr
        if proc.returncode != 0 and "not found" not in out:
            raise ProcessError(f"kamcmd {' '.join(args)} failed ({proc.returncode}): {out}")
        return out

    def registered_contacts(self, user: str) -> list[Contact]:
        """The contacts registered for ``user`` right now (usrloc, no domain)."""
        return parse_ul_lookup(self.kamcmd("ul.lookup", "location", user))

    def wait_registered(self, user: str, timeout_s: float = 10.0) -> list[Contact]:
        """Wait until ``user`` has at least one contact; returns them.

        Raises:
            ProcessError: Not registered within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            contacts = self.registered_contacts(user)
            if contacts:
                return contacts
            if time.monotonic() >= deadline:
                raise ProcessError(f"{user} did not register within {timeout_s} s\n"
                                   f"{self._proc.log_tail()}")
            time.sleep(POLL_S * 5)

    def wait_unregistered(self, user: str, timeout_s: float = 10.0) -> None:
        """Wait until ``user`` has no contact left (un-REGISTER with ``Expires: 0``).

        Raises:
            ProcessError: Still registered after ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while self.registered_contacts(user):
            if time.monotonic() >= deadline:
                raise ProcessError(f"{user} still registered after {timeout_s} s")
            time.sleep(POLL_S * 5)
