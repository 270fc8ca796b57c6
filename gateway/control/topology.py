"""How a gateway's settings become processes: SIP workers, their slots, and the front's spec.

Pure. :func:`plan` decides whether a Kamailio front runs (``sip.front``: ``auto`` turns it on
when a transport listens beyond loopback or there is more than one worker), how many workers
run (``sip.workers``: ``auto`` is one without a front, else one per core, at least two, so a
worker's death never leaves the address without a worker), and each worker's slot: its id, its
loopback SIP port (``sip.worker_port_start + i``) and an equal share of the RTP port range.
:func:`front_spec` then describes the front for :mod:`gateway.front`: the configured
transports facing the network, the workers as dispatcher destinations with their capacity as
``maxload``, the trunk allow-list and the registrations.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from gateway.config import Settings
from gateway.front.spec import FrontSpec, Listen, Pike, Registration, Worker

#: pike's sampling period: the per-second limit is checked over this many seconds.
_PIKE_UNIT_S = 2

#: RTP ports per call (RTP and RTCP).
_PORTS_PER_CALL = 2


@dataclass(frozen=True, slots=True)
class WorkerSlot:
    """One worker's share of the host: id, loopback SIP port and RTP port range."""

    worker_id: str
    sip_port: int
    rtp_port_start: int
    rtp_port_range: int


@dataclass(frozen=True, slots=True)
class Plan:
    """What the control process runs."""

    front: bool
    workers: tuple[WorkerSlot, ...]
    #: Why the front is on or off, for the start-up log.
    why: str


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def plan(settings: Settings, cpus: int) -> Plan:
    """The processes ``settings`` ask for on a host with ``cpus`` cores."""
    sip = settings.sip
    public = [t for t in sip.transports if not _loopback(t.host)]
    if sip.front == "kamailio":
        front, why = True, "sip.front: kamailio"
    elif sip.front == "none":
        front, why = False, "sip.front: none"
    elif public:
        front, why = True, f"listening beyond loopback ({public[0].host})"
    elif (sip.workers or 1) > 1:
        front, why = True, f"sip.workers: {sip.workers}"
    else:
        front, why = False, "one worker on loopback"
    count = sip.workers or (max(2, cpus) if front else 1)
    share = sip.rtp_port_range // count
    share -= share % _PORTS_PER_CALL
    slots = tuple(WorkerSlot(f"w{i + 1}", sip.worker_port_start + i,
                             sip.rtp_port_start + i * share, share) for i in range(count))
    return Plan(front, slots, why)


def front_spec(settings: Settings, workers: tuple[WorkerSlot, ...], capacity: int,
               run_dir: Path) -> FrontSpec:
    """The Kamailio front for ``workers`` of ``capacity`` calls each."""
    sip = settings.sip
    listen = tuple(Listen(t.type, t.host, t.port,
                          advertise=f"{sip.public_address}:{t.port}" if sip.public_address
                          else None,
                          cert_file=Path(t.cert_file) if t.cert_file else None,
                          key_file=Path(t.key_file) if t.key_file else None)
                   for t in sip.transports)
    regs = tuple(Registration(
        name=a.name, registrar=a.registrar, user=a.user, domain=a.domain,
        auth_user=a.auth_user, password=a.password.value, realm="" if a.realm == "*" else a.realm,
        expires_s=a.expires_s, allow_from=a.allow_from) for a in sip.accounts)
    return FrontSpec(
        listen=listen,
        workers=tuple(Worker(s.worker_id, "127.0.0.1", s.sip_port, capacity) for s in workers),
        run_dir=run_dir, trunk_allow=sip.trunk_allow, registrations=regs,
        pike=(Pike(sampling_time_unit_s=_PIKE_UNIT_S,
                   reqs_density_per_unit=sip.front_invites_per_s * _PIKE_UNIT_S)
              if sip.front_invites_per_s else None))
