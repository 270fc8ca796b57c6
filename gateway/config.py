"""Typed, frozen gateway configuration: one YAML file plus environment variables.

The file (default ``gateway.yaml``; absent means "all defaults") is validated once at start with
every error reported as ``file:line: field: reason``; environment variables override a few
operational fields and carry every secret (API key, SIP passwords), so secrets never need to be
written in the file. This is the only module that reads ``os.environ``: it receives the mapping
as an argument and components get their slice of :class:`Settings` as arguments. No value that
may be a secret is ever put in an error message or a ``repr``.
"""

from __future__ import annotations

import ipaddress
import os.path
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gateway.errors import ConfigError, ConfigErrors
from gateway.realtime.retry import RetryPolicy
from gateway.yamlsrc import Reader, YamlDoc, load_yaml

#: ``realtime.url`` value meaning "start the local simulator inside the gateway and use it".
EMBEDDED = "embedded"
DEFAULT_MODEL = "gpt-realtime-2.1"
DEFAULT_CONFIG_FILE = "gateway.yaml"
DEFAULT_DIALPLAN = "dialplans/default.yaml"
#: The checkout the package runs from (an editable install, as ``scripts/dev.sh`` makes).
_SOURCE_TREE = Path(__file__).resolve().parents[1]
#: Upper bound of ``sip.max_calls``; the binding's call slots cap it further at start.
MAX_CALLS_PER_PROCESS = 2000

LogFormat = Literal["text", "json"]
TransportType = Literal["udp", "tcp", "tls"]
Codec = Literal["PCMU", "PCMA"]
#: RFC 4028 session timers: off, offered when the peer supports them, required, always used.
SessionTimers = Literal["off", "optional", "required", "always"]
#: SDES-SRTP (RFC 4568) on bridged calls: off, used when offered, or mandatory.
SrtpMode = Literal["off", "optional", "mandatory"]
MediaPortMode = Literal["auto", "native", "python"]
FrontMode = Literal["auto", "kamailio", "none"]
#: Most SIP worker processes one control process runs.
MAX_WORKERS = 64


@dataclass(frozen=True)
class Secret:
    """A secret string that never shows its value in ``repr`` or ``str``."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret(***)" if self.value else "Secret(<empty>)"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self.value)


@dataclass(frozen=True)
class RealtimeSettings:
    """Where and how to reach the Realtime API."""

    url: str = EMBEDDED
    model: str = DEFAULT_MODEL
    api_key: Secret = Secret("")
    #: Extra handshake headers (e.g. Azure ``api-key``); values come from the environment.
    headers: Mapping[str, Secret] = field(default_factory=dict)
    open_timeout_s: float = 10.0
    ping_interval_s: float = 20.0
    #: Attempts to open a call's Realtime session before the caller gets 503 (with the
    #: backoff between them this bounds how long a caller rings: see ``connect_budget_s``).
    connect_attempts: int = 3
    #: How long a call waits for a dropped Realtime session to come back (then it is
    #: transferred to its fallback or hung up: ``calls.on_realtime_lost``).
    reconnect_budget_s: float = 10.0
    #: Replace a call's Realtime session with a fresh one (context replayed) after this many
    #: seconds, before the API's 60-minute limit; 0 turns rotation off.
    rotate_after_s: float = 3300.0

    @property
    def retry(self) -> RetryPolicy:
        """How a call opens its Realtime session: ``connect_attempts`` attempts, backing off."""
        return RetryPolicy(max_attempts=self.connect_attempts)

    @property
    def connect_budget_s(self) -> float:
        """Longest time opening a Realtime session can take.

        Every attempt timing out, plus the backoff between attempts (jitter only shortens it).
        """
        return self.connect_attempts * self.open_timeout_s + self.retry.longest_wait_s()

    @property
    def embedded(self) -> bool:
        """Whether the gateway runs the local simulator itself."""
        return self.url == EMBEDDED


@dataclass(frozen=True)
class SimulatorSettings:
    """The local Realtime simulator (``gateway sim``, or embedded)."""

    host: str = "127.0.0.1"
    port: int = 8765
    scenarios: str | None = None
    speed: float = 4.0
    tts: Literal["auto", "espeak", "tone"] = "auto"


@dataclass(frozen=True)
class TransportSettings:
    """One SIP listening transport."""

    type: TransportType = "udp"
    host: str = "127.0.0.1"
    port: int = 5060
    cert_file: str | None = None
    key_file: str | None = None
    #: CA certificates outgoing TLS connections verify the server against (e.g. the PBX's
    #: CA). Without it, verification fails: there is no implicit system bundle, because
    #: pjsip also lists these CAs to TLS clients and a large bundle breaks their handshakes.
    ca_file: str | None = None
    #: Verify the server certificate (chain and name) of outgoing TLS connections, e.g. a
    #: registration to a PBX over TLS. Turning it off allows a man in the middle.
    verify_server: bool = True


@dataclass(frozen=True)
class AccountSettings:
    """A registration account at a PBX or registrar."""

    name: str
    registrar: str
    user: str
    domain: str
    auth_user: str
    password: Secret
    realm: str = "*"
    expires_s: int = 300
    proxy: str | None = None
    #: Source networks whose INVITEs this account takes. Empty: the addresses the registrar
    #: and proxy hosts resolve to. pjsua matches an INVITE to an account by its user part
    #: alone, so without this anyone could reach the account's routes directly.
    allow_from: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


@dataclass(frozen=True)
class SipSettings:
    """The SIP user agent."""

    transports: tuple[TransportSettings, ...] = (TransportSettings(),)
    #: Source networks allowed to send INVITEs straight to us (trunk mode); others get 403.
    trunk_allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
    )
    accounts: tuple[AccountSettings, ...] = ()
    codecs: tuple[Codec, ...] = ("PCMU", "PCMA")
    #: Calls per process; ``None``: as many as the pjsua2 binding has call slots, minus a few
    #: kept free so the calls beyond get 503 + Retry-After from us instead of pjsua's bare
    #: 486 (the PyPI wheel: 3; the source build: 504). A larger number is capped likewise.
    max_calls: int | None = None
    rtp_port_start: int = 20000
    rtp_port_range: int = 2000
    #: Address RTP (and a relayed call's TLS leg to OpenAI) binds; ``None``: the first
    #: transport's host. Behind the front a worker's SIP is on loopback, its media is not.
    rtp_host: str | None = None
    public_address: str | None = None
    user_agent: str = "gateway"
    #: Refer-To URIs (regular expressions, matched in full) a caller's in-dialog REFER may
    #: send the call to. Empty (the default): every caller REFER is refused with 403, so a
    #: caller can never make the gateway place a call.
    caller_refer_allow: tuple[str, ...] = ()
    #: SIP URIs (regular expressions, matched in full) the control API may place calls to.
    #: Empty (the default): outbound calls are off.
    outbound_allow: tuple[str, ...] = ()
    #: End a call (BYE) when no RTP arrived from the caller for this long while media is
    #: expected (not on hold); 0 turns the check off.
    rtp_timeout_s: float = 30.0
    session_timers: SessionTimers = "optional"
    session_expires_s: int = 1800
    session_min_se_s: int = 90
    srtp: SrtpMode = "off"
    #: What SDES-SRTP requires of the signalling that carries its keys: 0 nothing, 1 TLS on
    #: this hop, 2 sips: end to end (pjsua ``srtpSecureSignaling``).
    srtp_secure_signaling: int = 1
    #: Who moves each 20 ms audio frame between pjsua's bridge and the call: ``native`` the
    #: gateway's C port (source build; no Python per frame), ``python`` pjsua2's
    #: AudioMediaPort (works on every binding), ``auto`` native where it is built.
    media_port: MediaPortMode = "auto"
    #: SIP worker processes: ``None`` (auto) picks from the CPU count and the binding (one
    #: without a front). Each takes ``max_calls`` calls on its own loopback port.
    workers: int | None = None
    #: The SIP front: ``kamailio`` (a Kamailio dispatcher faces the network and shields the
    #: workers), ``none`` (one worker binds the transports itself: development on loopback),
    #: ``auto`` (Kamailio when a transport listens beyond loopback or workers > 1).
    front: FrontMode = "auto"
    #: First loopback port of the workers (worker i listens on worker_port_start + i).
    worker_port_start: int = 5200
    #: New INVITEs per second one source may send the front (Kamailio pike) before it is
    #: dropped for a while; 0 turns the limit off. A trunk sends every call from one address,
    #: so this is the trunk's call rate limit too.
    front_invites_per_s: int = 50
    #: Addresses of upstream dispatchers (``gateway front upstream``) in front of this
    #: instance. Only on a call relayed from one of them is its ``X-Gateway-Upstream-Source``
    #: believed: the caller's real source, which the trunk allow-list and dialplan ``source``
    #: matches then use. Each must be in ``trunk_allow`` (the front admits the upstream).
    front_upstream: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = ()


@dataclass(frozen=True)
class ControlSettings:
    """The aiohttp control and webhook server."""

    host: str = "127.0.0.1"
    port: int = 8080
    #: On SIGTERM, how long live calls may go on (new ones get 503) before they get BYE.
    drain_timeout_s: float = 30.0
    #: Bearer tokens of the control API, from ``$GATEWAY_API_TOKENS`` (comma-separated;
    #: ``control.api_tokens_env``). None: every ``/v1`` endpoint answers 401.
    api_tokens: tuple[Secret, ...] = ()
    #: Whether ``/metrics`` answers without a token (``/healthz`` and ``/readyz`` always do).
    metrics_open: bool = True
    #: Signing secret (``whsec_...``) of outbound calls' status webhooks, from
    #: ``$GATEWAY_STATUS_WEBHOOK_SECRET`` (``control.status_webhook_secret_env``).
    status_webhook_secret: Secret = Secret("")


@dataclass(frozen=True)
class RecordSettings:
    """Call records in a database, written by the control process (``gateway.records``)."""

    enabled: bool = True
    #: An SQLite file (relative: beside the config file) or a ``postgresql://`` URL without
    #: a password (that comes from ``password``).
    database: str = "calls.db"
    #: PostgreSQL password, from ``$GATEWAY_RECORDS_PASSWORD`` (``records.password_env``).
    password: Secret = Secret("")
    #: Records older than this are pruned (checked hourly); 0 keeps them forever.
    retention_days: float = 90.0
    #: Whether the caller's and agent's transcript turns are stored.
    transcripts: bool = True


@dataclass(frozen=True)
class OpenAICallsSettings:
    """Calls that reach OpenAI's SIP endpoint: its ``realtime.call.incoming`` webhook.

    OpenAI answers the SIP leg and posts the webhook to the control process, which routes the
    call with the dialplan (``ingress: openai``), accepts, rejects or refers it over the Calls
    REST API and runs the agent on a sideband WebSocket by ``call_id``.
    """

    enabled: bool = False
    #: Path of the webhook on the control HTTP server.
    webhook_path: str = "/openai/webhook"
    #: Standard Webhooks signing secret (``whsec_...``), from ``$OPENAI_WEBHOOK_SECRET``.
    webhook_secret: Secret = Secret("")
    #: Calls REST API base (``.../v1``); ``embedded``: the embedded simulator's.
    api_url: str = EMBEDDED
    #: SIP status a webhook call without a matching route is rejected with.
    no_route_status: int = 404
    #: Per Calls REST request (accept, reject, refer, hangup).
    request_timeout_s: float = 10.0
    #: Attempts of one REST request on 429, 5xx and network errors (backoff between).
    request_attempts: int = 3
    #: Sideband sessions the control process runs at once; more are rejected with 486.
    max_sessions: int = 500
    #: OpenAI's SIP endpoint, which ``relay:`` routes dial
    #: (``sip:$PROJECT_ID@sip.api.openai.com;transport=tls``); ``None``: no relay routes.
    sip_uri: str | None = None
    #: SRTP on the relayed leg: ``off``, ``optional`` or ``mandatory`` (SDES over TLS).
    sip_srtp: SrtpMode = "mandatory"
    #: CA bundle the relayed leg checks OpenAI's TLS certificate against.
    sip_ca_file: str = "/etc/ssl/certs/ca-certificates.crt"
    #: Check the TLS server's certificate and name (off only against a test endpoint).
    sip_verify_server: bool = True
    #: A relayed call OpenAI has not answered after this long is refused with 503.
    relay_answer_timeout_s: float = 20.0


@dataclass(frozen=True)
class CallSettings:
    """Limits that apply to every call unless the agent overrides them."""

    max_duration_s: int = 3600
    #: Chunk of caller audio per ``input_audio_buffer.append``; 40 ms halves the messages.
    append_chunk_ms: int = 40
    playout_capacity_ms: int = 120_000
    #: Worker processes running Python tools and guardrails (user code never runs in the
    #: process that carries the audio). Started only when the dialplan has such tools.
    tool_workers: int = 2
    #: Said by the agent after a Realtime reconnect the caller noticed ("" says nothing).
    reconnect_apology: str = "Sorry, the line dropped for a moment."
    #: When the Realtime session cannot come back: ``transfer`` to the route's (or agent's)
    #: ``fallback`` URI, hanging up when there is none, or always ``hangup``.
    on_realtime_lost: Literal["transfer", "hangup"] = "transfer"
    #: Where ``recording:`` routes write their stereo WAV files (relative: beside the config
    #: file); made at start when the dialplan records, and again before each recorded call.
    recordings_dir: str = "recordings"


@dataclass(frozen=True)
class LogSettings:
    """Logging."""

    level: str = "INFO"
    format: LogFormat = "text"
    #: Log transcripts, caller numbers and tool arguments (off: content is redacted).
    call_content: bool = False
    #: PJSIP's own log level (0-5); 1-2 in production.
    pjsip_level: int = 1


@dataclass(frozen=True)
class Settings:
    """The whole validated configuration."""

    source: str = "<defaults>"
    realtime: RealtimeSettings = RealtimeSettings()
    simulator: SimulatorSettings = SimulatorSettings()
    sip: SipSettings = SipSettings()
    control: ControlSettings = ControlSettings()
    calls: CallSettings = CallSettings()
    logging: LogSettings = LogSettings()
    dialplan: str = DEFAULT_DIALPLAN
    openai_calls: OpenAICallsSettings = OpenAICallsSettings()
    records: RecordSettings = RecordSettings()


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def load_settings(path: str | Path | None, env: Mapping[str, str]) -> Settings:
    """Read and validate the configuration.

    Args:
        path: YAML file; ``None`` uses ``$GATEWAY_CONFIG`` or ``gateway.yaml`` when it exists,
            else the defaults. An explicitly named file that does not exist is an error.
        env: The process environment (passed in; this module never reads ``os.environ``).

    Raises:
        ConfigErrors: Every problem found, each with file, line and field.
    """
    explicit = path is not None or bool(env.get("GATEWAY_CONFIG"))
    chosen = Path(path if path is not None else env.get("GATEWAY_CONFIG") or DEFAULT_CONFIG_FILE)
    if chosen.exists():
        try:
            text = chosen.read_text(encoding="utf-8")
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConfigErrors([ConfigError(str(chosen), None, "", reason)]) from None
        try:
            doc = load_yaml(text, str(chosen))
        except ConfigError as exc:
            raise ConfigErrors([exc]) from None
    elif explicit:
        raise ConfigErrors([ConfigError(str(chosen), None, "", "file not found")])
    else:
        doc = YamlDoc("<defaults>", {})
    return parse_settings(doc, env)


def parse_settings(doc: YamlDoc, env: Mapping[str, str]) -> Settings:
    """Build :class:`Settings` from a parsed document and the environment."""
    root = Reader(doc)
    realtime = _realtime(root.sub("realtime"), env)
    simulator = _simulator(root.sub("simulator"))
    sip = _sip(root.sub("sip"), env)
    control = _control(root.sub("control"), env)
    calls = _calls(root.sub("calls"))
    openai_calls = _openai_calls(root.sub("openai_calls"), env, realtime)
    logs = _logging(root.sub("logging"), env)
    records = _records(root.sub("records"), env)
    dialplan = _override(env, "GATEWAY_DIALPLAN",
                         _beside(doc.source, root.str("dialplan", DEFAULT_DIALPLAN)))
    if dialplan == DEFAULT_DIALPLAN and not Path(dialplan).exists() \
            and (_SOURCE_TREE / DEFAULT_DIALPLAN).exists():
        # `gateway run` outside the checkout it was installed from still finds the default.
        dialplan = str(_SOURCE_TREE / DEFAULT_DIALPLAN)
    root.finish()
    root.raise_errors()
    return Settings(source=doc.source, realtime=realtime, simulator=simulator, sip=sip,
                    control=control, calls=calls, logging=logs, dialplan=dialplan,
                    openai_calls=openai_calls, records=records)


def _override(env: Mapping[str, str], name: str, file_value: str) -> str:
    """The environment variable ``name`` when set and non-empty, else the file's value."""
    return env.get(name) or file_value


def _beside(source: str, path: str) -> str:
    """Where a file named in the config file ``source`` is.

    ``path`` as written when it is absolute or exists from the working directory, else
    relative to the config file's directory when it exists there, so that ``gateway run -c
    some/dir/gateway.yaml`` works from any directory.
    """
    if not path or Path(path).is_absolute() or Path(path).exists() or source.startswith("<"):
        return path
    candidate = Path(source).parent / path
    return os.path.normpath(candidate) if candidate.exists() else path


def _env_error(name: str, reason: str) -> ConfigError:
    return ConfigError("environment", None, name, reason)


def _realtime(r: Reader, env: Mapping[str, str]) -> RealtimeSettings:
    url = _override(env, "GATEWAY_REALTIME_URL", r.str("url", EMBEDDED))
    if url != EMBEDDED and not url.startswith(("ws://", "wss://")):
        r.error("url", f"must be {EMBEDDED!r} or a ws:// or wss:// URL")
    model = _override(env, "GATEWAY_REALTIME_MODEL", r.str("model", DEFAULT_MODEL))
    key_var = r.str("api_key_env", "OPENAI_API_KEY", pattern=r"[A-Za-z_][A-Za-z0-9_]*")
    headers: dict[str, Secret] = {}
    for name, value in (r.raw("headers_from_env") or {}).items():
        # Header values are secrets (e.g. Azure api-key): the file names the variable only.
        if not isinstance(value, str) or value not in env:
            r.error("headers_from_env", f"header {name!r}: environment variable not set")
            continue
        headers[str(name)] = Secret(env[value])
    settings = RealtimeSettings(
        url=url, model=model, api_key=Secret(env.get(key_var, "")), headers=headers,
        open_timeout_s=r.float("open_timeout_s", 10.0, min=0.1, max=120),
        ping_interval_s=r.float("ping_interval_s", 20.0, min=1, max=300),
        connect_attempts=r.int("connect_attempts", 3, min=1, max=10),
        reconnect_budget_s=r.float("reconnect_budget_s", 10.0, min=0.1, max=300),
        rotate_after_s=r.float("rotate_after_s", 3300.0, min=0, max=3590),
    )
    if not settings.embedded and not settings.api_key and not headers:
        r.error("api_key_env", f"{url} needs an API key: set ${key_var} (or headers_from_env)")
    r.finish()
    return settings


def _control(r: Reader, env: Mapping[str, str]) -> ControlSettings:
    tokens_var = r.str("api_tokens_env", "GATEWAY_API_TOKENS",
                       pattern=r"[A-Za-z_][A-Za-z0-9_]*")
    tokens = tuple(Secret(t.strip()) for t in env.get(tokens_var, "").split(",") if t.strip())
    hook_var = r.str("status_webhook_secret_env", "GATEWAY_STATUS_WEBHOOK_SECRET",
                     pattern=r"[A-Za-z_][A-Za-z0-9_]*")
    hook_secret = Secret(env.get(hook_var, ""))
    if hook_secret and not hook_secret.value.startswith("whsec_"):
        r.errors.append(_env_error(hook_var, "must be a Standard Webhooks secret (whsec_ + "
                                             "base64), e.g. whsec_$(openssl rand -base64 32)"))
        hook_secret = Secret("")
    out = ControlSettings(host=r.str("host", "127.0.0.1"),
                          port=r.int("port", 8080, min=0, max=65535),
                          drain_timeout_s=r.float("drain_timeout_s", 30.0, min=0, max=86400),
                          api_tokens=tokens, metrics_open=r.bool("metrics_open", True),
                          status_webhook_secret=hook_secret)
    short = [t for t in tokens if len(t.value) < 16]
    if short:
        r.errors.append(_env_error(tokens_var, f"{len(short)} token(s) shorter than 16 "
                                               "characters: use long random tokens"))
    r.finish()
    return out


def _records(r: Reader, env: Mapping[str, str]) -> RecordSettings:
    password_var = r.str("password_env", "GATEWAY_RECORDS_PASSWORD",
                         pattern=r"[A-Za-z_][A-Za-z0-9_]*")
    database = r.str("database", "calls.db")
    if re.match(r"postgres(?:ql)?://[^/@]*:[^/@]*@", database):
        r.error("database", f"put no password in the URL: set ${password_var} instead")
    out = RecordSettings(
        enabled=r.bool("enabled", True),
        database=database,
        password=Secret(env.get(password_var, "")),
        retention_days=r.float("retention_days", 90.0, min=0, max=36500),
        transcripts=r.bool("transcripts", True),
    )
    r.finish()
    return out


def records_database(settings: Settings) -> str:
    """``records.database`` as opened: a relative SQLite file is beside the config file."""
    database = settings.records.database
    if database.startswith(("postgresql://", "postgres://")) or Path(database).is_absolute() \
            or settings.source.startswith("<"):
        return database
    return os.path.normpath(Path(settings.source).parent / database)


def recordings_dir(settings: Settings) -> str:
    """``calls.recordings_dir`` as used: a relative directory is beside the config file."""
    directory = settings.calls.recordings_dir
    if Path(directory).is_absolute() or settings.source.startswith("<"):
        return os.path.abspath(directory)
    return os.path.normpath(Path(settings.source).parent.resolve() / directory)


def _openai_calls(r: Reader, env: Mapping[str, str],
                  realtime: RealtimeSettings) -> OpenAICallsSettings:
    secret_var = r.str("webhook_secret_env", "OPENAI_WEBHOOK_SECRET",
                       pattern=r"[A-Za-z_][A-Za-z0-9_]*")
    default_api = EMBEDDED if realtime.embedded else "https://api.openai.com/v1"
    out = OpenAICallsSettings(
        enabled=r.bool("enabled", False),
        webhook_path=r.str("webhook_path", "/openai/webhook", pattern=r"/[A-Za-z0-9/_.-]*"),
        webhook_secret=Secret(env.get(secret_var, "")),
        api_url=r.str("api_url", default_api),
        no_route_status=r.int("no_route_status", 404, min=400, max=699),
        request_timeout_s=r.float("request_timeout_s", 10.0, min=0.1, max=120),
        request_attempts=r.int("request_attempts", 3, min=1, max=10),
        max_sessions=r.int("max_sessions", 500, min=1, max=100_000),
        sip_uri=r.str("sip_uri", "") or None,
        sip_srtp=_mode(r, "sip_srtp", "mandatory",  # type: ignore[arg-type]
                       ("off", "optional", "mandatory")),
        sip_ca_file=_beside(r.doc.source, r.str("sip_ca_file",
                                                "/etc/ssl/certs/ca-certificates.crt")),
        sip_verify_server=r.bool("sip_verify_server", True),
        relay_answer_timeout_s=r.float("relay_answer_timeout_s", 20.0, min=1, max=120),
    )
    if out.sip_uri is not None and not re.fullmatch(r"sips?:[^\s<>\"]+", out.sip_uri):
        r.error("sip_uri", "must be a sip: or sips: URI, e.g. "
                           "sip:proj_...@sip.api.openai.com;transport=tls")
    if out.api_url != EMBEDDED and not out.api_url.startswith(("http://", "https://")):
        r.error("api_url", f"must be {EMBEDDED!r} or an http:// or https:// URL")
    if out.api_url == EMBEDDED and not realtime.embedded:
        r.error("api_url", "is the embedded simulator's, but realtime.url is not embedded")
    if out.enabled and not out.webhook_secret:
        r.error("webhook_secret_env", f"webhooks cannot be verified: set ${secret_var} to the"
                                      " project webhook's signing secret (whsec_...)")
    r.finish()
    return out


def _simulator(r: Reader) -> SimulatorSettings:
    out = SimulatorSettings(
        host=r.str("host", "127.0.0.1"),
        port=r.int("port", 8765, min=0, max=65535),
        scenarios=_beside(r.doc.source, r.str("scenarios")) if r.has("scenarios") else None,
        speed=r.float("speed", 4.0, min=0.1, max=100),
        tts=r.str("tts", "auto", choices=("auto", "espeak", "tone")),  # type: ignore[arg-type]
    )
    r.finish()
    return out


def _sip(r: Reader, env: Mapping[str, str]) -> SipSettings:
    transports = tuple(_transport(t) for t in r.items("transports")) or (TransportSettings(),)
    seen: set[tuple[str, int]] = set()
    for i, t in enumerate(transports):
        key = (t.type, t.port)
        if key in seen and t.port:
            r.error("transports", f"transport {i}: {t.type} port {t.port} listed twice")
        seen.add(key)
    allow = _networks(r, "trunk_allow", ["127.0.0.0/8"])
    accounts = tuple(_account(a, env) for a in r.items("accounts"))
    names = [a.name for a in accounts]
    for name in {n for n in names if names.count(n) > 1}:
        r.error("accounts", f"account name {name!r} used twice")
    codecs = r.str_list("codecs", ["PCMU", "PCMA"])
    for c in codecs:
        if c not in ("PCMU", "PCMA"):
            r.error("codecs", f"unsupported codec {c!r}; use PCMU and/or PCMA")
    if not codecs:
        r.error("codecs", "needs at least one codec")
    out = SipSettings(
        transports=transports, trunk_allow=allow, accounts=accounts,
        codecs=tuple(c for c in codecs if c in ("PCMU", "PCMA")),  # type: ignore[misc]
        max_calls=(r.int("max_calls", None, min=1, max=MAX_CALLS_PER_PROCESS)
                   if r.has("max_calls") else None),
        rtp_port_start=r.int("rtp_port_start", 20000, min=1024, max=65000),
        rtp_port_range=r.int("rtp_port_range", 2000, min=8, max=40000),
        rtp_host=r.str("rtp_host", None) if r.has("rtp_host") else None,
        public_address=r.str("public_address", None) if r.has("public_address") else None,
        user_agent=r.str("user_agent", "gateway"),
        caller_refer_allow=_patterns(r, "caller_refer_allow"),
        outbound_allow=_patterns(r, "outbound_allow"),
        rtp_timeout_s=r.float("rtp_timeout_s", 30.0, min=0, max=3600),
        session_timers=_mode(  # type: ignore[arg-type]
            r, "session_timers", "optional", ("off", "optional", "required", "always")),
        session_expires_s=r.int("session_expires_s", 1800, min=90, max=86400),
        session_min_se_s=r.int("session_min_se_s", 90, min=90, max=86400),
        srtp=_mode(r, "srtp", "off", ("off", "optional", "mandatory")),  # type: ignore[arg-type]
        srtp_secure_signaling=r.int("srtp_secure_signaling", 1, min=0, max=2),
        media_port=_mode(  # type: ignore[arg-type]
            r, "media_port", "auto", ("auto", "native", "python")),
        workers=(r.int("workers", None, min=1, max=MAX_WORKERS)
                 if r.has("workers") and r.raw("workers") != "auto" else None),
        front=_mode(r, "front", "auto", ("auto", "kamailio", "none")),  # type: ignore[arg-type]
        worker_port_start=r.int("worker_port_start", 5200, min=1024, max=65000),
        front_invites_per_s=r.int("front_invites_per_s", 50, min=0, max=100_000),
        front_upstream=_addresses(r, "front_upstream"),
    )
    r.check("session_min_se_s", out.session_min_se_s <= out.session_expires_s,
            "must not exceed session_expires_s")
    r.check("workers", out.front != "none" or (out.workers or 1) == 1,
            "more than one worker needs a front (sip.front: kamailio or auto): workers share "
            "one SIP address only behind it")
    r.check("rtp_timeout_s", out.rtp_timeout_s == 0 or out.rtp_timeout_s >= 2,
            "must be 0 (off) or at least 2 s")
    for ip in out.front_upstream:
        # The front admits by the packet's source, which is the upstream, not the caller.
        r.check("front_upstream", any(ip in net for net in out.trunk_allow),
                f"{ip} is not in trunk_allow: the front would refuse its calls with 403")
    r.finish()
    return out


def _mode(r: Reader, key: str, default: str, choices: tuple[str, ...]) -> str:
    """A choice whose ``off`` may be written bare: YAML 1.1 reads ``off`` as ``false``."""
    if r.raw(key) is False:
        return "off"
    return r.str(key, default, choices=choices)


def _patterns(r: Reader, key: str) -> tuple[str, ...]:
    out: list[str] = []
    for pattern in r.str_list(key, []):
        try:
            re.compile(pattern)
        except re.error as exc:
            r.error(key, f"not a regular expression: {pattern!r}: {exc}")
            continue
        out.append(pattern)
    return tuple(out)


def _networks(r: Reader, key: str, default: list[str]
              ) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for net in r.str_list(key, default):
        try:
            nets.append(ipaddress.ip_network(net, strict=False))
        except ValueError:
            r.error(key, f"not an IP network: {net!r}")
    return tuple(nets)


def _addresses(r: Reader, key: str
               ) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
    out: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for value in r.str_list(key, []):
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            r.error(key, f"not an IP address: {value!r}")
            continue
        if ip in out:
            r.error(key, f"{value} listed twice")
            continue
        out.append(ip)
    return tuple(out)


def _transport(r: Reader) -> TransportSettings:
    kind = r.str("type", "udp", choices=("udp", "tcp", "tls"))
    t = TransportSettings(
        type=kind,  # type: ignore[arg-type]
        host=r.str("host", "127.0.0.1"),
        port=r.int("port", 5061 if kind == "tls" else 5060, min=0, max=65535),
        cert_file=r.str("cert_file", None) if r.has("cert_file") else None,
        key_file=r.str("key_file", None) if r.has("key_file") else None,
        ca_file=r.str("ca_file", None) if r.has("ca_file") else None,
        verify_server=r.bool("verify_server", True),
    )
    if kind == "tls" and not (t.cert_file and t.key_file):
        r.error(None, "tls transport needs cert_file and key_file")
    r.finish()
    return t


def _account(r: Reader, env: Mapping[str, str]) -> AccountSettings:
    name = r.str("name", pattern=r"[A-Za-z0-9_.-]+")
    user = r.str("user")
    password_env = r.str("password_env", "", pattern=r"[A-Za-z_][A-Za-z0-9_]*|")
    if password_env and password_env not in env:
        r.error("password_env", f"environment variable {password_env} is not set")
    registrar = r.str("registrar")
    if registrar and not registrar.startswith(("sip:", "sips:")):
        r.error("registrar", "must be a sip: or sips: URI")
    acct = AccountSettings(
        name=name, registrar=registrar, user=user,
        domain=r.str("domain", "") or registrar.split(":", 1)[-1].split(";")[0],
        auth_user=r.str("auth_user", "") or user,
        password=Secret(env.get(password_env, "")) if password_env else Secret(""),
        realm=r.str("realm", "*"),
        expires_s=r.int("expires_s", 300, min=30, max=86400),
        proxy=r.str("proxy", None) if r.has("proxy") else None,
        allow_from=_networks(r, "allow_from", []),
    )
    r.finish()
    return acct


def _calls(r: Reader) -> CallSettings:
    out = CallSettings(
        max_duration_s=r.int("max_duration_s", 3600, min=1, max=86400),
        append_chunk_ms=r.int("append_chunk_ms", 40, min=20, max=200),
        playout_capacity_ms=r.int("playout_capacity_ms", 120_000, min=1000, max=600_000),
        tool_workers=r.int("tool_workers", 2, min=1, max=64),
        reconnect_apology=r.str("reconnect_apology", CallSettings.reconnect_apology),
        on_realtime_lost=r.str("on_realtime_lost", "transfer",  # type: ignore[arg-type]
                               choices=("transfer", "hangup")),
        recordings_dir=r.str("recordings_dir", "recordings"),
    )
    r.check("recordings_dir", bool(out.recordings_dir), "must name a directory")
    r.check("append_chunk_ms", out.append_chunk_ms % 20 == 0, "must be a multiple of 20 ms")
    r.finish()
    return out


def _logging(r: Reader, env: Mapping[str, str]) -> LogSettings:
    level = _override(env, "GATEWAY_LOG_LEVEL", r.str("level", "INFO")).upper()
    if level not in _LOG_LEVELS:
        r.error("level", f"must be one of {', '.join(_LOG_LEVELS)}")
        level = "INFO"
    fmt = _override(env, "GATEWAY_LOG_FORMAT", r.str("format", "text", choices=("text", "json")))
    if fmt not in ("text", "json"):
        r.errors.append(_env_error("GATEWAY_LOG_FORMAT", "must be text or json"))
        fmt = "text"
    content_env = env.get("GATEWAY_LOG_CALL_CONTENT")
    content = r.bool("call_content", False)
    if content_env is not None:
        if content_env.lower() not in ("1", "0", "true", "false", "yes", "no"):
            r.errors.append(_env_error("GATEWAY_LOG_CALL_CONTENT", "must be 1/0/true/false"))
        content = content_env.lower() in ("1", "true", "yes")
    out = LogSettings(level=level, format=fmt,  # type: ignore[arg-type]
                      call_content=content, pjsip_level=r.int("pjsip_level", 1, min=0, max=5))
    r.finish()
    return out
