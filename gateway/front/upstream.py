"""The upstream dispatcher: one Kamailio in front of several gateway instances; no I/O.

Several hosts each run one gateway instance (``gateway run`` with its own Kamailio front and
workers). One more Kamailio in front of them gives callers a single address. To it, each
instance's front is what a worker is to that front: a SIP next hop taking calls. So the
upstream is described as a :class:`~gateway.front.spec.FrontSpec` whose workers are the
instances' fronts, and :mod:`gateway.front.render` writes it; what the front already does is
what the upstream needs: sanity checks, the ACK-without-To-tag drop, a per-source INVITE rate
limit, call-load dispatching (alg 10) with failover on 500/503/408 and silence but not on 486,
OPTIONS probes, Record-Route, and the guard against the alg-10 slot leak. What differs is
chosen here: the instances have no call limit at the upstream (a full instance's front
answers 503 and the call moves on), any source may call unless an allow-list is given (each
instance admits by the caller's real source), and the caller's source goes out in
:data:`~gateway.sip.message.UPSTREAM_SOURCE_HEADER`, which the instance's front passes on
untouched and its workers believe only from a ``sip.front_upstream`` address.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from pathlib import Path

from gateway.front.render import FrontFiles, render, render_config
from gateway.front.routing import FAILOVER_CODES
from gateway.front.spec import WORKER_SET, FrontSpec, Listen, Network, Pike, Worker, hostport
from gateway.sip.message import UPSTREAM_SOURCE_HEADER

#: Where the upstream keeps its lists and sockets unless told otherwise (Kamailio's ``-Y``).
DEFAULT_RUN_DIR = Path("/run/gateway-upstream")
#: Admit every source: the instances decide, by the caller's real address.
ANY_SOURCE: tuple[Network, ...] = (ipaddress.ip_network("0.0.0.0/0"),
                                   ipaddress.ip_network("::/0"))
#: The dispatcher's ``maxload`` per instance: high enough never to bind, so an instance's own
#: front is its only limit (it answers 503 when full, and the upstream fails over).
NO_CALL_LIMIT = 1_000_000
#: pike's sampling period: the per-second limit is checked over this many seconds.
PIKE_UNIT_S = 2

_HOSTPORT = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]+)):(?P<port>\d{1,5})")


def parse_hostport(value: str) -> tuple[str, int]:
    """``"10.0.0.2:5060"`` or ``"[2001:db8::2]:5060"`` -> ``(host, port)``.

    Raises:
        ValueError: Not ``IP:PORT`` (host names are refused: Kamailio runs with ``dns=no``).
    """
    m = _HOSTPORT.fullmatch(value.strip())
    if m is None:
        raise ValueError(f"{value!r} is not IP:PORT (IPv6 as [ADDR]:PORT)")
    host = m["v6"] or m["host"]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{value!r}: {host!r} is not an IP address") from None
    if (ip.version == 6) != bool(m["v6"]):
        raise ValueError(f"{value!r}: write an IPv6 address in brackets, [ADDR]:PORT")
    port = int(m["port"])
    if not 1 <= port <= 65535:
        raise ValueError(f"{value!r}: port {port} is outside 1..65535")
    return str(ip), port


@dataclass(frozen=True)
class Instance:
    """One gateway instance, as the upstream reaches it: the UDP address of its front.

    Attributes:
        host: IP address of the instance's front (``sip.transports`` of that ``gateway run``).
        port: Its UDP port.
    """

    host: str
    port: int

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            raise ValueError(f"instance {self.host!r}: not an IP address") from None
        if not 1 <= self.port <= 65535:
            raise ValueError(f"instance {self.address}: port outside 1..65535")

    @property
    def address(self) -> str:
        """``host:port`` (IPv6 in brackets)."""
        return hostport(self.host, self.port)


@dataclass(frozen=True)
class UpstreamSpec:
    """An upstream dispatcher in front of several gateway instances.

    Attributes:
        listen: Where callers and trunks reach the upstream.
        instances: The instances' fronts, in priority order (ties go to the first).
        run_dir: Kamailio's ``-Y`` directory: the dispatcher and address lists, the sockets.
        allow: Sources that may start calls here; others get 403. Default: any, because each
            instance applies its own trunk allow-list to the caller's real source.
        invites_per_s: New INVITEs per second one source may send (pike); 0: no limit.
        ping_interval_s: OPTIONS probe period per instance.
        first_reply_timeout_ms: How long an instance's front has to answer at all (its
            100 Trying comes at once) before the call fails over to the next instance.
        answer_timeout_ms: How long a call may ring.
        retry_after_s: ``Retry-After`` of the upstream's own 503 (no instance took the call).
        children: UDP receiver processes per listen socket.
        log_level: Kamailio ``debug`` level (1 errors .. 3 debug; 2 info).
        module_dir: Kamailio's module directory; ``None`` for the one it was built with.
    """

    listen: tuple[Listen, ...]
    instances: tuple[Instance, ...]
    run_dir: Path = DEFAULT_RUN_DIR
    allow: tuple[Network, ...] = ANY_SOURCE
    invites_per_s: int = 50
    ping_interval_s: int = 5
    first_reply_timeout_ms: int = 2000
    answer_timeout_ms: int = 60000
    retry_after_s: int = 5
    children: int = 4
    log_level: int = 2
    module_dir: Path | None = None

    def __post_init__(self) -> None:
        if not self.listen:
            raise ValueError("the upstream needs a listen address")
        if not self.instances:
            raise ValueError("the upstream needs at least one instance")
        seen: set[tuple[str, int]] = set()
        for inst in self.instances:
            if (inst.host, inst.port) in seen:
                raise ValueError(f"instance {inst.address} is listed twice")
            seen.add((inst.host, inst.port))
        mine = {(t.host, t.port) for t in self.listen}
        families = {ipaddress.ip_address(t.host).version for t in self.listen}
        for inst in self.instances:
            if (inst.host, inst.port) in mine:
                raise ValueError(f"instance {inst.address} is the upstream's own address")
            if ipaddress.ip_address(inst.host).version not in families:
                # Kamailio sends from a listen socket, and none has this address family.
                raise ValueError(f"instance {inst.address}: the upstream listens on no IPv"
                                 f"{ipaddress.ip_address(inst.host).version} address")
        if not self.allow:
            raise ValueError("allow is empty: no call could come in (leave it out for any)")
        if self.invites_per_s < 0:
            raise ValueError("invites_per_s must be 0 (no limit) or more")
        self.front_spec()  # everything else is checked where the front checks it

    def front_spec(self) -> FrontSpec:
        """The upstream as the front renderer sees it: the instances are its workers."""
        return FrontSpec(
            listen=self.listen,
            workers=tuple(Worker(instance_id(i), inst.host, inst.port, NO_CALL_LIMIT)
                          for i, inst in enumerate(self.instances)),
            run_dir=self.run_dir, trunk_allow=self.allow,
            pike=(Pike(sampling_time_unit_s=PIKE_UNIT_S,
                       reqs_density_per_unit=self.invites_per_s * PIKE_UNIT_S)
                  if self.invites_per_s else None),
            source_header=UPSTREAM_SOURCE_HEADER, retry_after_s=self.retry_after_s,
            first_reply_timeout_ms=self.first_reply_timeout_ms,
            answer_timeout_ms=self.answer_timeout_ms, ping_interval_s=self.ping_interval_s,
            children=self.children, log_level=self.log_level, module_dir=self.module_dir)


def instance_id(index: int) -> str:
    """The dispatcher ``duid`` of the instance at ``index``: ``i1``, ``i2``, ..."""
    return f"i{index + 1}"


def render_upstream(spec: UpstreamSpec) -> FrontFiles:
    """The upstream's files: ``kamailio.cfg``, the dispatcher list and the address list."""
    front = spec.front_spec()
    return replace(render(front), config=render_config(front, header=_header(spec, front)))


def _header(spec: UpstreamSpec, front: FrontSpec) -> str:
    p = front.paths
    instances = "\n".join(f"#   {instance_id(i)}: sip:{inst.address};transport=udp"
                          for i, inst in enumerate(spec.instances))
    if spec.allow == ANY_SOURCE:
        admits = "any source (each instance applies its trunk allow-list)"
    else:
        admits = ", ".join(str(n) for n in spec.allow) + "; others get 403"
    failover = FAILOVER_CODES.replace("|", ", ")
    limit = (f"{spec.invites_per_s} new INVITEs per second per source (pike)"
             if spec.invites_per_s else "no per-source INVITE limit")
    return f"""#!KAMAILIO
#
# Upstream dispatcher: generated by `gateway front upstream` (gateway.front.upstream).
# One SIP address in front of several gateway instances, each a `gateway run` with its own
# Kamailio front, usually on hosts of their own. To this Kamailio an instance's front is
# what a worker is to that front, so the routing below is the front's: read "worker" in its
# route names and log lines as "instance".
#
# Instances (dispatcher set {WORKER_SET}, no call limit here: a full instance answers 503):
{instances}
#
# What it does:
#   - sanity checks; drops an ACK without To tag; takes only dialogs and new INVITEs;
#   - admits {admits};
#   - limits {limit};
#   - passes the caller's source to the instance in {front.source_header}:
#     <ip>;port=<p>;proto=<udp|tcp|tls>, after removing any copy a caller sent;
#     an instance believes it only from an address in its sip.front_upstream;
#   - sends each call to the least-loaded active instance (dispatcher alg 10) and fails
#     over on {failover}, 408 and silence (not on 486: that is the callee's answer);
#   - probes every instance with OPTIONS every {spec.ping_interval_s} s (an instance's front
#     answers 503 while none of its workers is active);
#   - record-routes, so ACK, BYE, re-INVITE and REFER of a call reach that call's instance.
#
# Files it reads: {p.dispatcher_list}, {p.address_list}
# Run it:  kamailio -f <this file> -DD -E -Y {p.run_dir}
# Inspect: kamcmd -s unix:{p.ctl_socket} dispatcher.list
"""
