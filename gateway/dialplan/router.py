"""Pick the route for an incoming call and render what its agent needs.

The SIP side describes an INVITE as a :class:`CallInfo` (user parts of To and From, the
Request-URI, headers, the ingress account and the source address) and calls :func:`route_call`.
Routes are tried in order and the first whose conditions all hold wins; its action is returned
with the merged variables and, for an agent, the rendered instructions and greeting, the agents
its handoffs can reach (the call session switches to them) and the render context to fill in
their templates with. The agent's tools, handoffs, guardrails and DTMF handling travel on it as
``decision.agent.capabilities``. No match raises :class:`~gateway.errors.NoRouteError`, which
the SIP adapter answers with 404. Patterns were compiled at load time, so routing is string
comparisons only. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from types import MappingProxyType

from gateway.dialplan.schema import Action, AgentAction, AgentSpec, Dialplan, Ingress, Route
from gateway.dialplan.template import RenderContext
from gateway.errors import NoRouteError


def _no_agents() -> Mapping[str, AgentSpec]:
    return MappingProxyType({})


def _parse_ip(text: str) -> IPv4Address | IPv6Address | None:
    try:
        ip = ip_address(text)
    except ValueError:
        return None
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; match them against IPv4 nets.
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def first_values(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """One value per header name: the first of each, names compared case-insensitively.

    A header repeated in an INVITE (two ``X-Route`` lines) routes on its first value, as the
    SIP adapter reads it: for a header allowed only once, the first is authoritative (RFC 3261
    §7.3), and routing must not depend on which copy a proxy appended.

    Args:
        headers: ``(name, value)`` pairs in message order.
    """
    out: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in headers:
        if name.lower() not in seen:
            seen.add(name.lower())
            out[name] = value
    return out


@dataclass(frozen=True)
class CallInfo:
    """What the router knows about an incoming call.

    Attributes:
        to_user: User part of the To URI (the number dialled).
        from_user: User part of the From URI (the caller).
        request_uri: The full Request-URI, e.g. ``sip:+18005550100@gw.example.com``.
        headers: SIP headers; looked up case-insensitively through :meth:`header`. Build it
            with :func:`first_values` from the message's header list; names differing only in
            case keep the first of them here too.
        account: Name of the ingress account or transport, if known.
        source_ip: Address the INVITE came from.
        caller_name: Display name of the From header, if any.
        ingress: ``sip`` (an INVITE to a SIP worker) or ``openai`` (a Realtime Calls webhook,
            whose ``sip_headers`` gave the rest).
    """

    to_user: str
    from_user: str
    request_uri: str
    headers: Mapping[str, str]
    account: str | None
    source_ip: str
    caller_name: str | None = None
    ingress: Ingress = "sip"
    _by_lower: Mapping[str, str] = field(init=False, repr=False, compare=False)
    _ip: IPv4Address | IPv6Address | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_lower: dict[str, str] = {}
        for name, value in self.headers.items():
            by_lower.setdefault(name.lower(), value)
        object.__setattr__(self, "_by_lower", MappingProxyType(by_lower))
        object.__setattr__(self, "_ip", _parse_ip(self.source_ip))

    def header(self, name: str) -> str | None:
        """Value of header ``name`` (any case), or ``None`` when absent."""
        return self._by_lower.get(name.lower())

    @property
    def lower_headers(self) -> Mapping[str, str]:
        """All headers keyed by lower-case name."""
        return self._by_lower

    @property
    def ip(self) -> IPv4Address | IPv6Address | None:
        """``source_ip`` parsed (IPv4-mapped IPv6 unwrapped), or ``None`` if it is not an IP."""
        return self._ip


@dataclass(frozen=True)
class RouteDecision:
    """What to do with a call.

    Attributes:
        route: The route that matched.
        action: Its action (``AgentAction``, ``RejectAction`` or ``ReferAction``).
        variables: Top-level variables overridden by the route's.
        agent: The agent, for an ``AgentAction``.
            For an ``sdk_agent:`` route it is the starting ``RealtimeAgent``. Its
            ``capabilities`` are the tools, handoffs, guardrails and DTMF handling.
        instructions: The agent's rendered instructions, for an ``AgentAction``.
        greeting: The agent's rendered greeting, when it has one.
        handoff_agents: ``agent`` and every agent its handoffs reach (directly or through
            other agents), by name; a handoff's target is always in here.
        context: What templates are rendered with on this call (see :meth:`render`).
    """

    route: Route
    action: Action
    variables: Mapping[str, str]
    agent: AgentSpec | None = None
    instructions: str | None = None
    greeting: str | None = None
    handoff_agents: Mapping[str, AgentSpec] = field(default_factory=_no_agents)
    context: RenderContext | None = None

    def render(self, agent: AgentSpec) -> tuple[str, str | None]:
        """``agent``'s instructions and greeting for this call (e.g. after a handoff).

        Raises:
            ValueError: The decision is not for an agent (no render context).
        """
        if self.context is None:
            raise ValueError("this call is not routed to an agent")
        greeting = agent.greeting.render(self.context) if agent.greeting is not None else None
        return agent.instructions.render(self.context), greeting


def route_named(dialplan: Dialplan, name: str) -> Route | None:
    """The route called ``name``, or ``None`` (e.g. a reload removed it)."""
    return next((route for route in dialplan.routes if route.name == name), None)


def find_route(dialplan: Dialplan, call: CallInfo) -> Route | None:
    """The first route whose conditions ``call`` meets, or ``None``."""
    for route in dialplan.routes:
        if route.match.matches(call):
            return route
    return None


def route_call(dialplan: Dialplan, call: CallInfo) -> RouteDecision:
    """Decide what to do with ``call``.

    Raises:
        NoRouteError: When no route matches (the SIP answer is 404).
    """
    route = find_route(dialplan, call)
    if route is None:
        raise NoRouteError()
    return decide(dialplan, route, call)


def decide(dialplan: Dialplan, route: Route, call: CallInfo) -> RouteDecision:
    """What ``route`` of ``dialplan`` does with ``call`` (whether or not its match holds).

    The control process uses it for a relayed call's webhook: the SIP worker already routed
    the caller's INVITE, and the webhook names that route.
    """
    variables: Mapping[str, str] = MappingProxyType({**dialplan.variables, **route.variables})
    action = route.action
    if not isinstance(action, AgentAction):
        return RouteDecision(route, action, variables)
    # The loader guarantees the agent exists; a KeyError here is a loader bug, not bad input.
    agent = dialplan.agents[action.agent]
    context = RenderContext(
        call={
            "caller": call.from_user,
            "callee": call.to_user,
            "caller_name": call.caller_name or "",
            "request_uri": call.request_uri,
            "route": route.name,
        },
        headers=call.lower_headers,
        variables=variables,
    )
    greeting = agent.greeting.render(context) if agent.greeting is not None else None
    reachable = MappingProxyType({a.name: a for a in dialplan.reachable(agent.name)})
    return RouteDecision(route, action, variables, agent, agent.instructions.render(context),
                         greeting, reachable, context)
