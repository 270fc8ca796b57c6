"""What the Kamailio front needs to know, as frozen dataclasses validated on construction.

A :class:`FrontSpec` describes one front: the transports it listens on, the SIP workers it
dispatches to (each with its call capacity, which becomes the dispatcher's ``maxload``), the
trunk sources it admits, the per-source INVITE rate limit (``pike``), the upstream
registrations it keeps for the gateway (``uac``), the header that carries the caller's real
source to the workers, and where its run directory and RPC sockets live. This module is pure:
no I/O, no processes, only path arithmetic. The integrator maps ``gateway.config`` into it;
:mod:`gateway.front.render` turns it into Kamailio files and :mod:`gateway.front.kamailio`
runs them. Every value that reaches the generated config is checked here so that rendering
cannot produce a config that means something else (quotes, newlines, spaces). Passwords are
kept out of ``repr``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

#: Transports the front can listen on.
ListenTransport = Literal["udp", "tcp", "tls"]
#: Transports the front can reach a worker over.
WorkerTransport = Literal["udp", "tcp"]
#: A trusted source network (trunk allow-list, a registrar's addresses).
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The dispatcher set every worker belongs to.
WORKER_SET = 1
#: ``sun_path`` is 108 bytes; keep a margin for Kamailio's own suffixes.
MAX_SOCKET_PATH = 100

_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_HEADER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
# SIP user and domain characters we let through to the config and the db_text table: the
# RFC 3261 §25.1 unreserved set plus the user-part escapes we actually meet (+, ;, =, &).
_SIP_USER = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=%-]+")
_HOSTPORT = re.compile(r"\[?[A-Za-z0-9.:-]+\]?(?::\d{1,5})?")
_FORBIDDEN_IN_CONFIG = re.compile(r'["\\\x00-\x1f\x7f]')


def _ip(host: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{what}: {host!r} is not an IP address") from None


def _port(port: int, what: str) -> None:
    if not 1 <= port <= 65535:
        raise ValueError(f"{what}: port {port} is outside 1..65535")


def _safe(value: str, what: str) -> None:
    if _FORBIDDEN_IN_CONFIG.search(value):
        raise ValueError(f"{what}: quotes, backslashes and control characters are not allowed")


def hostport(host: str, port: int) -> str:
    """``host:port`` with IPv6 hosts in brackets (RFC 3261 §19.1.1)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Listen:
    """One transport the front listens on for the outside world.

    Attributes:
        transport: ``udp``, ``tcp`` or ``tls``.
        host: IP address to bind (an address of this host; not a name).
        port: Port to bind.
        advertise: ``host:port`` to put in Via and Record-Route instead of the bound address
            (the public address behind a 1:1 NAT); ``None`` to use the bound one.
        cert_file: TLS certificate chain (PEM); required for ``tls``.
        key_file: TLS private key (PEM); required for ``tls``.
    """

    transport: ListenTransport
    host: str
    port: int
    advertise: str | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def __post_init__(self) -> None:
        what = f"listen {self.transport}:{self.host}:{self.port}"
        if self.transport not in ("udp", "tcp", "tls"):
            raise ValueError(f"{what}: unknown transport")
        _ip(self.host, what)
        _port(self.port, what)
        if self.advertise is not None and not _HOSTPORT.fullmatch(self.advertise):
            raise ValueError(f"{what}: advertise must be host or host:port")
        if self.transport == "tls" and (self.cert_file is None or self.key_file is None):
            raise ValueError(f"{what}: tls needs cert_file and key_file")
        for path in (self.cert_file, self.key_file):
            if path is not None:
                _safe(str(path), what)

    @property
    def address(self) -> str:
        """``host:port`` as bound."""
        return hostport(self.host, self.port)

    @property
    def public_address(self) -> str:
        """``host:port`` as the outside sees it (``advertise`` when set)."""
        if self.advertise is None:
            return self.address
        return self.advertise if _has_port(self.advertise) else f"{self.advertise}:{self.port}"


def _has_port(value: str) -> bool:
    return bool(re.search(r"(?:^[^:\[\]]+|\]):\d+$", value))


@dataclass(frozen=True)
class Worker:
    """One SIP worker process behind the front.

    Attributes:
        id: Unique id; the dispatcher's ``duid``, which alg 10 counts calls by.
        host: IP address the worker binds.
        port: SIP port the worker binds; it must also send its own requests from it (UDP
            does), because the front recognises worker traffic by source address and port.
        capacity: Calls the worker takes at once; the dispatcher's ``maxload``.
        transport: How the front reaches the worker.
    """

    id: str
    host: str
    port: int
    capacity: int
    transport: WorkerTransport = "udp"

    def __post_init__(self) -> None:
        what = f"worker {self.id!r}"
        if not _TOKEN.fullmatch(self.id):
            raise ValueError(f"{what}: id must be letters, digits, '.', '_' or '-'")
        _ip(self.host, what)
        _port(self.port, what)
        if self.capacity < 1:
            raise ValueError(f"{what}: capacity must be at least 1")
        if self.transport not in ("udp", "tcp"):
            raise ValueError(f"{what}: transport must be udp or tcp")

    @property
    def uri(self) -> str:
        """The worker's SIP URI as the dispatcher list and its RPC name it."""
        return f"sip:{hostport(self.host, self.port)};transport={self.transport}"


@dataclass(frozen=True)
class Pike:
    """Per-source request rate limit (Kamailio ``pike``) applied to initial INVITEs.

    A source is blocked once it sends more than ``reqs_density_per_unit`` INVITEs in one
    ``sampling_time_unit_s``; pike's tree needs between 1x and 3x that many hits (IPv4) before
    it reacts. Blocked INVITEs are dropped without a reply, so a flood gets no amplification.

    Attributes:
        sampling_time_unit_s: Sampling period.
        reqs_density_per_unit: INVITEs allowed per period and source.
        remove_latency_s: How long an idle source stays in pike's tree.
    """

    sampling_time_unit_s: int = 2
    reqs_density_per_unit: int = 20
    remove_latency_s: int = 120

    def __post_init__(self) -> None:
        if self.sampling_time_unit_s < 1 or self.reqs_density_per_unit < 1:
            raise ValueError("pike: sampling_time_unit_s and reqs_density_per_unit must be >= 1")
        if self.remove_latency_s < self.sampling_time_unit_s:
            raise ValueError("pike: remove_latency_s must be at least sampling_time_unit_s")


@dataclass(frozen=True)
class Registration:
    """One registration the front keeps at a PBX on the gateway's behalf (``uac`` module).

    The front registers ``sip:<user>@<domain>`` with ``Contact: <sip:<user>@<contact>>``,
    where the contact is :attr:`FrontSpec.registration_contact`; the PBX then sends calls for
    the extension to the front, which dispatches them like trunk calls.

    Attributes:
        name: Unique name (the gateway account's name), used in logs and in the source header.
        registrar: Where to send the REGISTER: ``sip:host[:port]`` (the ``auth_proxy``).
        user: Extension to register; also the user part of the Contact the PBX calls.
        domain: The SIP domain of the address-of-record (the REGISTER's R-URI host).
        auth_user: Digest user name.
        password: Digest password; never logged or shown in ``repr``.
        realm: Digest realm to answer; empty (or ``*``) to answer any.
        expires_s: Registration lifetime asked for.
        allow_from: Source networks whose INVITEs to this extension are admitted (the PBX's
            addresses). Empty: such INVITEs need the trunk allow-list like any other.
    """

    name: str
    registrar: str
    user: str
    domain: str
    auth_user: str
    password: str = field(repr=False)
    realm: str = ""
    expires_s: int = 300
    allow_from: tuple[Network, ...] = ()

    def __post_init__(self) -> None:
        what = f"registration {self.name!r}"
        if not _TOKEN.fullmatch(self.name):
            raise ValueError(f"{what}: name must be letters, digits, '.', '_' or '-'")
        if not re.fullmatch(r"sips?:" + _HOSTPORT.pattern + r"(;[A-Za-z0-9=._-]+)*",
                            self.registrar):
            raise ValueError(f"{what}: registrar must be sip:host[:port]")
        for label, value in (("user", self.user), ("auth_user", self.auth_user)):
            if not _SIP_USER.fullmatch(value):
                raise ValueError(f"{what}: {label} has characters a SIP user part cannot have")
        if not _HOSTPORT.fullmatch(self.domain):
            raise ValueError(f"{what}: domain must be a host name or address")
        if not self.password:
            # uac_reg silently drops records without a password (uac_reg_check_password).
            raise ValueError(f"{what}: a password is required")
        _safe(self.realm, f"{what}: realm")
        if self.expires_s < 10:
            raise ValueError(f"{what}: expires_s must be at least 10")


@dataclass(frozen=True)
class FrontPaths:
    """Where the front's files live; everything defaults to the run directory."""

    run_dir: Path
    config: Path
    dispatcher_list: Path
    address_list: Path
    tls_config: Path
    db_dir: Path
    log: Path
    ctl_socket: Path
    rpc_socket: Path


@dataclass(frozen=True)
class FrontSpec:
    """Everything needed to render and run one Kamailio front.

    Attributes:
        listen: Transports facing the outside world; the first UDP one also sources the
            probes' From host and, by default, the registration contact.
        workers: The SIP workers, all in dispatcher set :data:`WORKER_SET`.
        run_dir: Kamailio's ``-Y`` directory: config, lists, tables, sockets (and the log
            unless ``log_file`` is set). Owned by the front: removed when it stops.
        trunk_allow: Source networks allowed to send INVITEs (trunk calls); others get 403.
            Empty: no trunk calls at all (registration calls only).
        pike: Per-source INVITE rate limit, or ``None`` for none.
        registrations: Upstream registrations (registration mode); empty for trunk only.
        registration_contact: ``host:port`` the PBX should send calls to; default: the first
            UDP listen's public address. Must be reachable from the PBX (not 127.0.0.1 in
            production).
        source_header: Header carrying the caller's real source to the workers; any copy
            arriving from outside is removed first.
        retry_after_s: ``Retry-After`` of the front's own 503 when no worker has room.
        first_reply_timeout_ms: How long a worker has to send its first reply (100 Trying)
            before the call fails over (tm ``fr_timer``).
        answer_timeout_ms: How long a call may ring before it is given up (``fr_inv_timer``).
        ping_interval_s: OPTIONS probe period per worker.
        probing_threshold: Failed probes before a worker is taken out.
        inactive_threshold: Good probes before it is taken back.
        call_expire_s: Forget a call's load after this long even without BYE
            (``ds_hash_expire``): frees the slots of a worker that died.
        unanswered_expire_s: Forget a call that was never answered (``ds_hash_initexpire``).
        reg_timer_interval_s: How often uac checks registrations for refresh.
        reg_retry_interval_s: Delay before retrying a failed registration.
        children: UDP receiver processes per listen socket.
        shm_mb: Shared memory.
        pkg_mb: Private memory per process.
        log_level: Kamailio ``debug`` level (1 errors .. 3 debug; 2 info).
        log_file: Kamailio's log (stderr); default ``run_dir/kamailio.log``.
        rpc_socket: JSON-RPC unix datagram socket; default ``run_dir/kamailio_rpc.sock``.
        ctl_socket: binrpc socket for ``kamcmd``; default ``run_dir/kamailio_ctl``.
        module_dir: Kamailio's module directory; ``None`` for the one it was built with.
    """

    listen: tuple[Listen, ...]
    workers: tuple[Worker, ...]
    run_dir: Path
    trunk_allow: tuple[Network, ...] = ()
    pike: Pike | None = Pike()
    registrations: tuple[Registration, ...] = ()
    registration_contact: str | None = None
    source_header: str = "X-Gateway-Source"
    retry_after_s: int = 5
    first_reply_timeout_ms: int = 2000
    answer_timeout_ms: int = 60000
    ping_interval_s: int = 5
    probing_threshold: int = 1
    inactive_threshold: int = 1
    call_expire_s: int = 14400
    unanswered_expire_s: int = 120
    reg_timer_interval_s: int = 30
    reg_retry_interval_s: int = 30
    children: int = 4
    shm_mb: int = 64
    pkg_mb: int = 8
    log_level: int = 2
    log_file: Path | None = None
    rpc_socket: Path | None = None
    ctl_socket: Path | None = None
    module_dir: Path | None = None

    def __post_init__(self) -> None:
        self._check_listen()
        self._check_workers()
        self._check_registrations()
        if not _HEADER_NAME.fullmatch(self.source_header):
            raise ValueError("source_header must be a header name (letters, digits, '-')")
        if self.source_header.lower() in ("via", "route", "record-route", "contact", "to",
                                          "from", "call-id", "cseq", "max-forwards"):
            raise ValueError("source_header must not be a header SIP routing depends on")
        positive = {"retry_after_s": self.retry_after_s, "ping_interval_s": self.ping_interval_s,
                    "probing_threshold": self.probing_threshold,
                    "inactive_threshold": self.inactive_threshold,
                    "call_expire_s": self.call_expire_s,
                    "unanswered_expire_s": self.unanswered_expire_s,
                    "reg_timer_interval_s": self.reg_timer_interval_s,
                    "reg_retry_interval_s": self.reg_retry_interval_s,
                    "children": self.children, "shm_mb": self.shm_mb, "pkg_mb": self.pkg_mb}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1")
        if not 100 <= self.first_reply_timeout_ms <= self.answer_timeout_ms:
            raise ValueError("first_reply_timeout_ms must be >= 100 and <= answer_timeout_ms")
        if not 0 <= self.log_level <= 4:
            raise ValueError("log_level must be 0..4")
        paths = self.paths
        for path in (paths.run_dir, paths.log, paths.db_dir):
            _safe(str(path), "run_dir/log_file")
        for path in (paths.ctl_socket, paths.rpc_socket):
            _safe(str(path), "rpc socket")
            if len(str(path)) > MAX_SOCKET_PATH:
                raise ValueError(f"socket path {path} is longer than {MAX_SOCKET_PATH} "
                                 "characters (unix socket limit); use a shorter run_dir")
        if self.module_dir is not None:
            _safe(str(self.module_dir), "module_dir")

    def _check_listen(self) -> None:
        if not self.listen:
            raise ValueError("the front needs at least one listen transport")
        seen = {(t.transport, t.host, t.port) for t in self.listen}
        if len(seen) != len(self.listen):
            raise ValueError("a listen transport is listed twice")
        bound = {(t.transport != "udp", t.host, t.port) for t in self.listen}
        if len(bound) != len(self.listen):
            raise ValueError("tcp and tls listens cannot share a host:port")

    def _check_workers(self) -> None:
        if not self.workers:
            raise ValueError("the front needs at least one worker")
        if len({w.id for w in self.workers}) != len(self.workers):
            raise ValueError("worker ids must be unique")
        if len({(w.host, w.port) for w in self.workers}) != len(self.workers):
            raise ValueError("two workers share a host:port")
        mine = {(t.host, t.port) for t in self.listen}
        if any((w.host, w.port) in mine for w in self.workers):
            raise ValueError("a worker uses one of the front's own addresses")

    def _check_registrations(self) -> None:
        regs = self.registrations
        if len({r.name for r in regs}) != len(regs):
            raise ValueError("registration names must be unique")
        if len({r.user for r in regs}) != len(regs):
            # The user is uac's l_uuid: the key both the table and the PBX's INVITE use.
            raise ValueError("two registrations register the same user")
        for reg in regs:
            if reg.expires_s <= self.reg_timer_interval_s + 3:
                raise ValueError(f"registration {reg.name!r}: expires_s must exceed "
                                 "reg_timer_interval_s + 3, or it is refreshed every tick")
        if self.registration_contact is not None:
            if not _HOSTPORT.fullmatch(self.registration_contact):
                raise ValueError("registration_contact must be host:port")
        elif regs and self.primary_udp is None:
            raise ValueError("registrations need registration_contact or a udp listen")

    @property
    def primary_udp(self) -> Listen | None:
        """The first UDP listen, if any."""
        return next((t for t in self.listen if t.transport == "udp"), None)

    @property
    def contact_address(self) -> str:
        """``host:port`` the registrations advertise as Contact."""
        if self.registration_contact is not None:
            return self.registration_contact
        udp = self.primary_udp
        return (udp or self.listen[0]).public_address

    @property
    def paths(self) -> FrontPaths:
        """Every file the front uses."""
        run = self.run_dir
        return FrontPaths(
            run_dir=run, config=run / "kamailio.cfg", dispatcher_list=run / "dispatcher.list",
            address_list=run / "address.list", tls_config=run / "tls.cfg", db_dir=run / "db",
            log=self.log_file or run / "kamailio.log",
            ctl_socket=self.ctl_socket or run / "kamailio_ctl",
            rpc_socket=self.rpc_socket or run / "kamailio_rpc.sock")

    @property
    def uses_tcp(self) -> bool:
        """Whether any listen or worker needs Kamailio's TCP stack."""
        return any(t.transport != "udp" for t in self.listen) or any(
            w.transport == "tcp" for w in self.workers)

    @property
    def uses_tls(self) -> bool:
        """Whether any listen is TLS (needs ``kamailio-tls-modules``)."""
        return any(t.transport == "tls" for t in self.listen)

    def worker(self, worker_id: str) -> Worker:
        """The worker with ``worker_id``.

        Raises:
            KeyError: No such worker.
        """
        for w in self.workers:
            if w.id == worker_id:
                return w
        raise KeyError(worker_id)
