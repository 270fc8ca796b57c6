"""Where a registration account's INVITEs may come from: its registrar's and proxy's addresses.

pjsua hands an INVITE to a registration account when its user part matches, whatever its
source; without a source check anyone reaching the SIP port could use the account's routes
and skip ``trunk_allow``. ``accounts[].allow_from`` says where from; by default the PBX's own
addresses are trusted: those of the registrar and the outbound proxy, resolved at start. Used
by the call manager (single process, SIP worker) and by the control process for the front.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging

from gateway.config import AccountSettings
from gateway.sip.message import uri_host

log = logging.getLogger("gateway.sip")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


async def account_sources(account: AccountSettings) -> tuple[Network, ...]:
    """``account.allow_from``, or its registrar's and proxy's addresses resolved now."""
    if account.allow_from:
        return account.allow_from
    loop = asyncio.get_running_loop()
    nets: list[Network] = []
    for uri in (account.registrar, account.proxy or ""):
        host = uri_host(uri)
        if not host:
            continue
        try:
            infos = await loop.getaddrinfo(host, None)
        except OSError as exc:
            log.warning("account %s: cannot resolve %s (%s); its INVITEs need allow_from",
                        account.name, host, exc.strerror or exc)
            continue
        nets.extend(ipaddress.ip_network(info[4][0]) for info in infos)
    return tuple(dict.fromkeys(nets))
