"""Render the Kamailio front's files from a :class:`~gateway.front.spec.FrontSpec`; no I/O.

:func:`render` returns every file the front needs as text: ``kamailio.cfg`` (commented so an
admin can read it section by section), the dispatcher list (one line per worker, ``maxload``
= capacity, a unique ``duid``, probing on), the permissions address file (trunk allow-list
and each registration's PBX networks), the TLS module's config, and the two db_text tables
``uac`` reads its registrations from. This module writes the global and module sections;
the route blocks come from :mod:`gateway.front.routing`. The logic is the one verified in
``reference/scale-front.md`` (Kamailio 5.6.3), adapted: nothing a worker must not see gets
past the front, calls are admitted by source and dispatched by call load (alg 10) with
failover, and the config never calls ``dispatcher.reload`` (it zeroes live loads).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from gateway.front.routing import (
    FAILOVER_CODES,
    REGISTRATION_GROUP_BASE,
    TRUNK_GROUP,
    registration_group,
    render_routing,
)
from gateway.front.spec import WORKER_SET, FrontSpec, Listen, Network, Registration

# The uacreg table's header, as /usr/share/kamailio/dbtext/kamailio/uacreg has it (version 5).
UACREG_HEADER = ("id(int,auto) l_uuid(string) l_username(string) l_domain(string) "
                 "r_username(string) r_domain(string) realm(string) auth_username(string) "
                 "auth_password(string) auth_ha1(string) auth_proxy(string) expires(int) "
                 "flags(int) reg_delay(int) contact_addr(string) socket(string)")
VERSION_TABLE = "id(int,auto) table_name(string) table_version(int)\n0:uacreg:5\n"


@dataclass(frozen=True)
class FrontFiles:
    """The rendered files, by role; ``None`` when the spec does not need that file.

    Attributes:
        config: ``kamailio.cfg``.
        dispatcher_list: The dispatcher module's ``list_file``.
        address_list: The permissions module's ``address_file`` (``None``: no allow-list
            entries at all, so every INVITE is refused).
        tls_config: The tls module's config file.
        uacreg_table: db_text table ``uacreg``; contains the passwords (kept out of repr).
        version_table: db_text table ``version``.
    """

    config: str
    dispatcher_list: str
    address_list: str | None
    tls_config: str | None
    uacreg_table: str | None = field(repr=False)
    version_table: str | None


def render(spec: FrontSpec) -> FrontFiles:
    """Every file of the front described by ``spec``."""
    has_regs = bool(spec.registrations)
    return FrontFiles(
        config=render_config(spec),
        dispatcher_list=render_dispatcher_list(spec),
        address_list=render_address_list(spec),
        tls_config=render_tls_config(spec),
        uacreg_table=render_uacreg_table(spec) if has_regs else None,
        version_table=VERSION_TABLE if has_regs else None)


def render_dispatcher_list(spec: FrontSpec) -> str:
    """The dispatcher list: ``setid uri flags priority attrs`` per worker.

    Flag 8 turns OPTIONS probing on. Priorities follow the spec's order (first = highest),
    so ties between equally loaded workers go to the first listed, and the failover order is
    the spec's order too (without priorities it would be the reverse of the file).
    """
    lines = ["# setid uri flags(8=probing) priority attrs(duid: alg 10 call key; maxload: "
             "capacity)"]
    count = len(spec.workers)
    for i, w in enumerate(spec.workers):
        lines.append(f"{WORKER_SET} {w.uri} 8 {count - i} duid={w.id};maxload={w.capacity}")
    return "\n".join(lines) + "\n"


def render_address_list(spec: FrontSpec) -> str | None:
    """The permissions address file (``group address mask port tag``), or ``None`` if empty."""
    lines: list[str] = []
    for net in _permission_nets(spec.trunk_allow):
        lines.append(f"{TRUNK_GROUP} {net.network_address} {net.prefixlen} 0 trunk")
    for i, reg in enumerate(spec.registrations):
        for net in _permission_nets(reg.allow_from):
            lines.append(f"{registration_group(i)} {net.network_address} {net.prefixlen} 0 "
                         f"{reg.name}")
    if not lines:
        return None
    return "# group address netmask port(0=any) tag\n" + "\n".join(lines) + "\n"


def _permission_nets(nets: Iterable[Network]) -> Iterator[Network]:
    """``nets`` with each ``/0`` written as its two halves.

    The permissions module reads a netmask of 0 in its address file as "no mask given", i.e.
    a single host (/32 or /128), so ``0.0.0.0 0`` would admit nobody at all (seen with
    Kamailio 5.6: ``trunk_allow: [0.0.0.0/0]`` got 403 for every INVITE).
    """
    for net in nets:
        if net.prefixlen == 0:
            yield from net.subnets(prefixlen_diff=1)
        else:
            yield net


def render_tls_config(spec: FrontSpec) -> str | None:
    """The tls module's config: one server profile per TLS listen, or ``None``."""
    tls = [t for t in spec.listen if t.transport == "tls"]
    if not tls:
        return None
    out = ["# TLS profiles of the gateway front (Kamailio tls module)."]
    for i, t in enumerate(tls):
        names = [f"server:{t.address}"] + (["server:default"] if i == 0 else [])
        for name in names:
            out += [f"[{name}]", "method = TLSv1.2+", f"certificate = {t.cert_file}",
                    f"private_key = {t.key_file}", "verify_certificate = no",
                    "require_certificate = no", ""]
    # Outgoing TLS (calls the workers place to a sips: target) verifies nothing: there is no
    # CA bundle configured here yet.
    out += ["[client:default]", "method = TLSv1.2+", "verify_certificate = no", ""]
    return "\n".join(out)


def escape_dbtext(value: str) -> str:
    """A value as a db_text string field (backslash, colon, tab, CR, LF and NUL escaped)."""
    out = value.replace("\\", "\\\\").replace(":", "\\:")
    return out.replace("\t", "\\t").replace("\r", "\\r").replace("\n", "\\n").replace(
        "\x00", "\\0")


def render_uacreg_table(spec: FrontSpec) -> str:
    """The db_text ``uacreg`` table: one registration per row (contains passwords)."""
    rows = [UACREG_HEADER]
    for i, reg in enumerate(spec.registrations, start=1):
        rows.append(":".join([str(i), *(escape_dbtext(v) for v in _uacreg_fields(reg))]))
    return "\n".join(rows) + "\n"


def _uacreg_fields(reg: Registration) -> list[str]:
    realm = "" if reg.realm == "*" else reg.realm
    # l_uuid = the extension, so the PBX's INVITE R-URI user is what the worker would have
    # seen had it registered itself; l_username/l_domain only matter to uac_reg_lookup().
    return [reg.user, reg.user, reg.domain, reg.user, reg.domain, realm, reg.auth_user,
            reg.password, "", reg.registrar, str(reg.expires_s), "0", "0", "", ""]


# kamailio.cfg ------------------------------------------------------------------------------

def render_config(spec: FrontSpec, *, header: str | None = None) -> str:
    """``kamailio.cfg`` for ``spec``.

    ``header`` replaces the opening comment block (it must start with ``#!KAMAILIO``); the
    upstream dispatcher (:mod:`gateway.front.upstream`) describes itself there.
    """
    parts = [_header(spec) if header is None else header, _globals(spec), _modules(spec),
             _module_params(spec), render_routing(spec)]
    return "\n".join(parts)


def _header(spec: FrontSpec) -> str:
    workers = "\n".join(f"#   {w.id}: {w.uri}, at most {w.capacity} calls" for w in spec.workers)
    p = spec.paths
    return f"""#!KAMAILIO
#
# Gateway front: generated by gateway.front.render from the gateway configuration.
# Do not edit: the control process rewrites this file each time it starts the front.
#
# Sections:
#   1. Global parameters and the listen sockets.
#   2. Modules and their parameters: dispatcher (the workers), pike (rate limit),
#      permissions (allow-list), uac (registrations), ctl/jsonrpcs (runtime control).
#   3. Routing:
#      request_route                 sanity checks for everything, then by source:
#      route[FROM_OUTSIDE]           callers, trunks, the PBX: only dialogs and new INVITEs
#      route[ADMIT]                  which sources may start calls (403 otherwise)
#      route[DISPATCH]               least-loaded worker with room (alg 10), else 503
#      route[IN_DIALOG]              record-routed requests reach the call's worker
#      route[FROM_WORKER]            the workers' own requests, relayed outwards
#      onreply_route[WORKER_REPLY]   a 2xx confirms the call's load
#      failure_route[WORKER_FAILURE] fail over on {FAILOVER_CODES}, 408 and timeout
#   4. Events: worker up/down in the log.
#
# Workers (dispatcher set {WORKER_SET}):
{workers}
#
# Inspect at runtime:
#   kamcmd -s unix:{p.ctl_socket} dispatcher.list
#   or JSON-RPC datagrams to {p.rpc_socket}
"""


def _listen_line(t: Listen) -> str:
    line = f"listen={t.transport}:{t.address}"
    if t.advertise is not None:
        line += f" advertise {t.public_address}"
    return line


def _globals(spec: FrontSpec) -> str:
    paths = spec.paths
    lines = ["####### 1. Global parameters #######", "",
             f"debug={spec.log_level}", "log_stderror=yes", "fork=yes",
             f"children={spec.children}",
             "# Only the addresses listed here are 'myself'; no reverse DNS of interfaces.",
             "auto_aliases=no", "dns=no", "rev_dns=no",
             f"disable_tcp={'no' if spec.uses_tcp else 'yes'}",
             f"enable_tls={'yes' if spec.uses_tls else 'no'}", "enable_sctp=no",
             "# Our own replies and requests name the gateway, not the Kamailio version.",
             'server_header="Server: gateway-front"',
             'user_agent_header="User-Agent: gateway-front"',
             f"# Run directory (also given as -Y): {paths.run_dir}"]
    if spec.module_dir is not None:
        lines.append(f'mpath="{spec.module_dir}"')
    lines += ["", "# Sockets facing callers, trunks and the PBX."]
    lines += [_listen_line(t) for t in spec.listen]
    listened = {t.address for t in spec.listen} | {t.public_address for t in spec.listen}
    aliases = sorted({t.public_address for t in spec.listen if t.advertise is not None})
    if spec.registrations and spec.contact_address not in listened:
        aliases.append(spec.contact_address)
    if aliases:
        lines += ["# Addresses the outside uses for us (uri==myself)."]
        lines += [f'alias="{a}"' for a in aliases]
    return "\n".join(lines) + "\n"


def _modules(spec: FrontSpec) -> str:
    mods = ["kex", "corex", "tm", "tmx", "sl", "rr", "pv", "maxfwd", "textops", "siputils",
            "sanity", "xlog", "ctl", "jsonrpcs", "dispatcher"]
    if spec.pike is not None:
        mods.append("pike")
    if render_address_list(spec) is not None:
        mods.append("permissions")
    if spec.registrations:
        mods += ["db_text", "uac"]
    if spec.uses_tls:
        mods.append("tls")
    lines = ["####### 2. Modules #######", ""]
    lines += [f'loadmodule "{m}.so"' for m in mods]
    return "\n".join(lines) + "\n"


def _module_params(spec: FrontSpec) -> str:
    p = spec.paths
    lines = [
        "# ----- runtime control: kamcmd (binrpc) and JSON-RPC over a unix datagram socket",
        f'modparam("ctl", "binrpc", "unix:{p.ctl_socket}")',
        'modparam("jsonrpcs", "transport", 4)   # datagram only; no FIFO',
        f'modparam("jsonrpcs", "dgram_socket", "{p.rpc_socket}")',
        'modparam("jsonrpcs", "pretty_format", 0)',
        "",
        "# ----- transactions",
        f'modparam("tm", "fr_timer", {spec.first_reply_timeout_ms})'
        "   # ms until a worker's first reply, else failover",
        f'modparam("tm", "fr_inv_timer", {spec.answer_timeout_ms})'
        "   # ms a call may ring",
        'modparam("tm", "failure_reply_mode", 3)   # a failover branch replaces the failed one',
        "",
        "# ----- record-route (the workers see us as their next hop for the whole dialog)",
        'modparam("rr", "append_fromtag", 0)',
        "",
        "# ----- sanity: we log and exit ourselves; the module sends the 400 when one fails",
        'modparam("sanity", "autodrop", 0)',
        "",
        "# ----- dispatcher: the workers. Alg 10 counts calls per duid by Call-ID and never",
        "# gives a worker more than its maxload. Never 'dispatcher.reload' while calls are up:",
        "# it zeroes those counts (use dispatcher.set_state / add / remove instead).",
        f'modparam("dispatcher", "list_file", "{p.dispatcher_list}")',
        'modparam("dispatcher", "flags", 2)   # keep the other workers for failover',
        'modparam("dispatcher", "ds_hash_size", 9)   # > 0 enables call load (2^9 slots)',
        f'modparam("dispatcher", "ds_hash_expire", {spec.call_expire_s})'
        "   # s: forget a call that never sent BYE",
        f'modparam("dispatcher", "ds_hash_initexpire", {spec.unanswered_expire_s})'
        "   # s: ...or was never answered",
        f'modparam("dispatcher", "ds_ping_interval", {spec.ping_interval_s})',
        'modparam("dispatcher", "ds_probing_mode", 1)   # probe every worker all the time',
        f'modparam("dispatcher", "ds_probing_threshold", {spec.probing_threshold})',
        f'modparam("dispatcher", "ds_inactive_threshold", {spec.inactive_threshold})',
        "# A worker answering OPTIONS with anything but 2xx (503 while draining) goes inactive.",
        f'modparam("dispatcher", "ds_ping_from", "sip:gateway-front@{_ping_host(spec)}")',
    ]
    if spec.pike is not None:
        pk = spec.pike
        lines += [
            "",
            "# ----- pike: per-source INVITE rate limit (blocked between 1x and 3x the density)",
            f'modparam("pike", "sampling_time_unit", {pk.sampling_time_unit_s})',
            f'modparam("pike", "reqs_density_per_unit", {pk.reqs_density_per_unit})',
            f'modparam("pike", "remove_latency", {pk.remove_latency_s})',
        ]
    if render_address_list(spec) is not None:
        lines += [
            "",
            f"# ----- permissions: group {TRUNK_GROUP} = trunk allow-list, group "
            f"{REGISTRATION_GROUP_BASE}+i = registration i's PBX",
            f'modparam("permissions", "address_file", "{p.address_list}")',
        ]
    if spec.registrations:
        lines += [
            "",
            "# ----- uac: the gateway's registrations at the PBX, read from db_text tables.",
            "# Contact: <sip:USER@reg_contact_addr>; the PBX's INVITEs then reach route[ADMIT].",
            'modparam("db_text", "emptystring", 1)   # uacreg columns are NOT NULL',
            'modparam("uac", "restore_mode", "none")   # "auto" needs rr append_fromtag=1',
            f'modparam("uac", "reg_db_url", "text://{p.db_dir}")',
            f'modparam("uac", "reg_contact_addr", "{spec.contact_address}")',
            f'modparam("uac", "reg_timer_interval", {spec.reg_timer_interval_s})',
            f'modparam("uac", "reg_retry_interval", {spec.reg_retry_interval_s})'
            "   # 0 would disable a record after one failure",
            'modparam("uac", "reg_keep_callid", 1)',
        ]
    if spec.uses_tls:
        lines += ["", "# ----- tls: certificates per listen",
                  f'modparam("tls", "config", "{p.tls_config}")']
    return "\n".join(lines) + "\n"


def _ping_host(spec: FrontSpec) -> str:
    return (spec.primary_udp or spec.listen[0]).public_address
