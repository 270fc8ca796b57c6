"""The SIP user agent: one pjsua2 endpoint on its own thread, driven by commands, emitting events.

Threading (pjsua2-notes §5.2): the endpoint is created, run and destroyed on one Python thread,
``sip``, which polls ``libHandleEvents`` and executes commands queued by the asyncio loop; pjsua
callbacks (incoming call, call state, media state, registration, DTMF, transfer) run there too,
do O(1) work and hand a plain event to the loop with ``call_soon_threadsafe``. The conference
clock thread runs each call's :class:`MediaPort` frame callbacks, which only touch that call's
:class:`~gateway.media.channel.MediaChannel`. No other thread ever calls pjsua2, and no pjsua2
object leaves this module. Nothing in a callback may raise into pjsua2: every callback body is
wrapped, logged and counted.

Capacity: pjsua has a compiled number of call slots (``PJSUA_MAX_CALLS``: 4 in the PyPI
wheel, hundreds in our source build) and answers 486 itself when all are taken. We ask for
``max_calls + 1`` slots (or all it has when ``sip.max_calls`` is automatic), read back what
pjsua really gave (:mod:`gateway.sip.binding`), and refuse the call beyond ``max_calls``
ourselves with 503 and ``Retry-After``, so a full gateway says "try later", not "busy".
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import queue
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from gateway.config import AccountSettings, SipSettings, TransportSettings
from gateway.errors import CallRejected, CapacityExceeded, GatewayError
from gateway.media.channel import MediaChannel
from gateway.media.playout import PlayoutBuffer
from gateway.sip import binding, message
from gateway.sip._pj import create_endpoint, error_text, pj
from gateway.sip.doorbell import Doorbell
from gateway.sip.events import (
    CallerRefer,
    CallRefused,
    IncomingCall,
    LegEnded,
    SipEvent,
)
from gateway.sip.fallback import RequestGuards
from gateway.sip.legs import Leg, LogWriter, UaAccount, UaEndpoint, UaStats
from gateway.sip.levels import LevelSample, LevelWatch, leg_levels
from gateway.sip.liveness import RtpWatch
from gateway.sip.native import NativeChannel, NativeMedia, load as load_native_media
from gateway.sip.offer import Refusal, content_length_refusal, offer_refusal
from gateway.sip.recorder import LegRecording
from gateway.sip.reject import DEFAULT_RETRY_AFTER_S, rejection_response
from gateway.sip.relay import RelayConfig, Relays

log = logging.getLogger("gateway.sip")

#: An INVITE the loop has not answered after this long gets 503, so no caller hangs forever.
#: The app passes a deadline longer than the Realtime connect budget (see ``answer_deadline_s``).
ANSWER_DEADLINE_S = 45.0
#: How often the RTP inactivity check reads each call's receive counters.
_MEDIA_CHECK_S = 1.0
#: How often unanswered legs are checked against the answer deadline (not on every poll:
#: with hundreds of calls up, that walked every leg a hundred times a second).
_EXPIRY_CHECK_S = 0.25
#: ``libHandleEvents`` timeout with calls up or commands waiting, when there is no UDP
#: transport to ring (``gateway/sip/doorbell.py``): a queued command (answer, hang up,
#: REFER...) waits at most this long for the SIP thread.
_BUSY_POLL_MS: Final = 10
#: ... and when there is one: the bell wakes the thread for a command at once, so the poll
#: only paces the periodic checks (answer deadline 0.25 s, level meters 4 Hz).
_RUNG_POLL_MS: Final = 50
#: ... and with neither: an idle worker wakes 10 times a second, not 100 (a command queued
#: then, e.g. a registration change, waits up to this long).
_IDLE_POLL_MS: Final = 100
_COMMAND_QUEUE_SIZE = 1024

_TRANSPORTS = {"udp": "PJSIP_TRANSPORT_UDP", "tcp": "PJSIP_TRANSPORT_TCP",
               "tls": "PJSIP_TRANSPORT_TLS"}
_TIMERS = {"off": "PJSUA_SIP_TIMER_INACTIVE", "optional": "PJSUA_SIP_TIMER_OPTIONAL",
           "required": "PJSUA_SIP_TIMER_REQUIRED", "always": "PJSUA_SIP_TIMER_ALWAYS"}
_SRTP = {"off": "PJMEDIA_SRTP_DISABLED", "optional": "PJMEDIA_SRTP_OPTIONAL",
         "mandatory": "PJMEDIA_SRTP_MANDATORY"}


@dataclass(frozen=True)
class FrontTrust:
    """The SIP front a worker sits behind.

    Attributes:
        addresses: Source IPs of the front's requests (the worker trusts only these).
        header: The header in which the front passes the caller's real source.
        proxy: The front's URI (``sip:host:port;lr``): calls the worker places leave
            through it (the trunk account's outbound proxy), so the far end sees the front.
    """

    addresses: frozenset[str]
    header: str = "X-Gateway-Source"
    proxy: str | None = None


@dataclass(frozen=True)
class BoundTransport:
    """A listening transport with its actual port (``port: 0`` resolves at start)."""

    type: str
    host: str
    port: int


class SipUserAgent:
    """Owns the pjsua2 endpoint and its thread; the asyncio side talks to it by commands.

    Args:
        settings: The SIP section of the configuration.
        playout_capacity_ms: Agent audio each call may buffer ahead of the caller.
        pjsip_log_level: PJSIP's own log level (0-5).
        answer_deadline_s: An INVITE the loop has not answered after this long gets 503.
        log_content: Whether logs may show call content (REFER targets).
        front: The SIP front this worker sits behind, if any.
        relay: How relay legs to OpenAI's SIP endpoint are placed; ``None``: no relays.
        poll_ms: The SIP thread's longest wait in ``libHandleEvents`` with calls up
            (default: 50 ms when a UDP transport carries the doorbell, else 10 ms).
    """

    def __init__(self, settings: SipSettings, *, playout_capacity_ms: int = 120_000,
                 pjsip_log_level: int = 1, answer_deadline_s: float = ANSWER_DEADLINE_S,
                 log_content: bool = False, front: FrontTrust | None = None,
                 relay: RelayConfig | None = None, poll_ms: int | None = None) -> None:
        self.settings = settings
        self._poll_ms = poll_ms
        #: Rung by ``_submit`` so the SIP thread takes a command at once; None without UDP.
        self.doorbell: Doorbell | None = None
        #: Relayed calls (``relay:`` routes), when webhook calls are on.
        self.relays = Relays(self, relay) if relay is not None else None
        #: The SIP front this worker sits behind, if any: its requests carry the real source.
        self.front = front
        self.draining = False
        self._playout_capacity_ms = playout_capacity_ms
        self._log_level = pjsip_log_level
        self._answer_deadline_s = answer_deadline_s
        self._log_content = log_content
        self._refer_allow = tuple(re.compile(p) for p in settings.caller_refer_allow)
        self._commands: queue.Queue[Callable[[], None]] = queue.Queue(_COMMAND_QUEUE_SIZE)
        # Work a pjsua callback must not do inside itself (a final response to the INVITE
        # whose callback is running): run on the sip thread right after the callback returns.
        # Bounded by the call slots: one entry per offered call at most.
        self._after_callbacks: deque[Callable[[], None]] = deque()
        self._next_media_check = 0.0
        self._next_expiry_check = 0.0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_event: Callable[[SipEvent], None] | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._stopping = threading.Event()
        self._legs: dict[int, Leg] = {}
        self._levels = LevelWatch()  # the monitor's meters (gateway/sip/levels.py)
        self._on_levels: Callable[[list[LevelSample]], None] | None = None
        #: Session leg id -> the leg that carries that call now (differs after a caller
        #: REFER the policy allowed).
        self._current: dict[int, int] = {}
        #: Leg ids, drawn on the sip thread (incoming) and the loop (outbound calls).
        self._leg_ids = itertools.count(1)
        self._accounts: list[UaAccount] = []
        self.stats = UaStats()
        self.transports: list[BoundTransport] = []
        #: The pjsua2 binding and the calls it allows; known once the endpoint started.
        self.binding: binding.Binding | None = None
        self.max_calls = settings.max_calls or 1
        #: The native media port library, or None for pjsua2's Python port.
        self.native_media: NativeMedia | None = None
        self.media_port = "python"

    # Lifecycle (loop thread) -------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop, on_event: Callable[[SipEvent], None],
              timeout_s: float = 10.0) -> None:
        """Start the endpoint thread; returns once transports listen and accounts exist.

        Raises:
            GatewayError: The endpoint could not start (e.g. the port is taken).
        """
        self._loop, self._on_event = loop, on_event
        self._thread = threading.Thread(target=self._run, name="sip", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout_s):
            raise GatewayError("SIP endpoint did not start in time")
        if self._start_error is not None:
            self._thread.join(timeout_s)
            err = self._start_error
            raise GatewayError(str(err) if isinstance(err, GatewayError)
                               else f"SIP endpoint failed to start: {error_text(err)}")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Hang up every call, unregister, destroy the endpoint and join the thread."""
        self._stopping.set()
        self._ring()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error("SIP thread did not stop within %.0f s", timeout_s)

    @property
    def active_calls(self) -> int:
        """Call slots in use right now (a relayed call holds two)."""
        return len(self._legs) + (self.relays.count if self.relays is not None else 0)

    def drain(self) -> None:
        """Refuse new calls and OPTIONS probes with 503 from now on; live calls go on."""
        self.draining = True
        guards = getattr(self, "_guards", None)
        if guards is not None:
            guards.draining = True
        log.info("draining: new calls get 503 + Retry-After, %d live call(s) go on",
                 len(self._legs))

    # Commands (any thread; run on the sip thread) ----------------------------------------

    def answer(self, leg_id: int, status: int, reason: str = "",
               headers: tuple[tuple[str, str], ...] = ()) -> None:
        """Send a provisional (1xx) or final response to the leg's INVITE."""
        self._submit(lambda: self._answer(leg_id, status, reason, headers))

    def reject(self, leg_id: int, err: CallRejected) -> None:
        """Refuse the leg's INVITE with the status ``err`` carries."""
        status, reason, headers = rejection_response(err)
        self.answer(leg_id, status, reason, headers)

    def hangup(self, leg_id: int, status: int = 503, reason: str = "") -> None:
        """End the call: a final response before answer, BYE after.

        The default refusal is 503 with ``Retry-After``, never 603 Decline: a gateway-side
        failure must let an upstream proxy or PBX try another destination (RFC 3261 §21.6.2
        says 603 means "do not try elsewhere").
        """
        self._submit(lambda: self._hangup(leg_id, status, reason))

    def transfer(self, leg_id: int, target_uri: str) -> None:
        """Blind transfer: send REFER to ``target_uri`` (progress as TransferProgress events)."""
        self._submit(lambda: self._with_leg(leg_id, lambda leg: leg.xfer(target_uri,
                                                                           pj.CallOpParam(True))))

    def relay(self, leg_id: int, uri: str, headers: tuple[tuple[str, str], ...]) -> None:
        """Place the leg's relay call to ``uri`` (:mod:`gateway.sip.relay`); 503 if it fails."""
        def go(leg: Leg) -> None:
            if self.relays is None:
                leg.cause = "relayed calls need openai_calls.enabled"
                self.answer_leg(leg, 503, "Relay Not Configured")
                return
            self.relays.dial(leg, uri, headers)
        self._submit(lambda: self._with_leg(leg_id, go))

    def new_leg_id(self) -> int:
        """A leg id no other leg has (any thread)."""
        return next(self._leg_ids)

    def new_channel(self) -> MediaChannel:
        """A media channel for a new leg (native when the native port is loaded)."""
        playout = PlayoutBuffer(capacity_ms=self._playout_capacity_ms)
        return (NativeChannel(self.native_media, playout) if self.native_media is not None
                else MediaChannel(playout))

    def originate(self, leg_id: int, channel: MediaChannel, uri: str,
                  account: str | None = None) -> None:
        """Call ``uri`` as leg ``leg_id`` from ``account`` (a registration; else the trunk).

        Its progress comes as ``CallState``/``MediaActive`` events; a call that could not be
        placed ends at once with ``LegEnded`` (cause says why).
        """
        self._submit(lambda: self._originate(leg_id, channel, uri, account))

    def _originate(self, leg_id: int, channel: MediaChannel, uri: str,
                   account: str | None) -> None:
        owner = next((a for a in self._accounts if a.name == account), None) \
            if account is not None else None
        owner = owner or self._accounts[0]
        leg = Leg(self, owner, pj.PJSUA_INVALID_ID, leg_id, channel)
        leg.answered = True  # an outgoing call: nothing of ours to answer
        self._legs[leg_id] = leg
        self._current[leg_id] = leg_id
        prm = pj.CallOpParam(True)
        prm.opt.audioCount = 1
        prm.opt.videoCount = 0
        try:
            leg.makeCall(uri, prm)
        except Exception as exc:  # pjsua2.Error: no slot, bad URI, no transport
            self._legs.pop(leg_id, None)
            self._current.pop(leg_id, None)
            channel.closed = True
            log.warning("leg %d: outbound call not placed: %s", leg_id, error_text(exc))
            self.emit(LegEnded(leg_id, 500, "Not Placed",
                               cause=f"call not placed: {error_text(exc)}"))
            return
        log.info("leg %d: calling out from account %s", leg_id, owner.name)

    def send_dtmf(self, leg_id: int, digits: str) -> None:
        """Send ``digits`` as RFC 4733 telephone-events."""
        def go(leg: Leg) -> None:
            prm = pj.CallSendDtmfParam()
            prm.digits = digits
            prm.method = pj.PJSUA_DTMF_METHOD_RFC2833
            leg.sendDtmf(prm)
        self._submit(lambda: self._with_leg(leg_id, go))

    def record(self, leg_id: int, caller_path: str, agent_path: str) -> None:
        """Record the leg's two sides into mono WAV files once its media is up (recorder)."""
        def go(leg: Leg) -> None:
            leg.recording = LegRecording(caller_path, agent_path)
            leg.start_recording()  # media may be up already
        self._submit(lambda: self._with_leg(leg_id, go))

    def watch_levels(self, all_calls: bool, leg_ids: tuple[int, ...],
                     on_levels: Callable[[list[LevelSample]], None]) -> None:
        """Sample these legs' (every leg's: ``all_calls``) levels ~4 Hz for ``on_levels``."""
        def go() -> None:
            self._on_levels = on_levels
            self._levels.watch(all_calls, leg_ids)
        self._submit(go)

    def _sample_levels(self) -> None:
        if not self._levels.active:
            return
        legs = ((leg.session_leg, leg) for leg in self._legs.values() if self.is_current(leg))
        samples = self._levels.sample(time.monotonic(), legs, leg_levels)
        if samples and self._loop is not None and self._on_levels is not None:
            try:
                self._loop.call_soon_threadsafe(self._on_levels, samples)
            except RuntimeError:  # loop closed during shutdown
                pass

    def _submit(self, command: Callable[[], None]) -> None:
        try:
            self._commands.put_nowait(command)
        except queue.Full:
            # 1024 pending commands means the sip thread is stuck; refusing loudly beats
            # blocking the event loop.
            raise GatewayError("SIP command queue is full; the SIP thread is not keeping up")\
                from None
        self._ring()

    def _ring(self) -> None:
        if self.doorbell is not None:
            self.doorbell.ring()

    # The sip thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            ep = create_endpoint(lambda: UaEndpoint(self))
        except BaseException as exc:  # reported to start()
            self._start_error = exc
            self._started.set()
            return
        try:
            self._create(ep)
        except BaseException as exc:
            self._start_error = exc
            self._started.set()
            self._destroy(ep)
            return
        self._started.set()
        busy_poll_ms = self._poll_ms or (_RUNG_POLL_MS if self.doorbell else _BUSY_POLL_MS)
        idle_poll_ms = max(busy_poll_ms, _IDLE_POLL_MS)
        doorbell = self.doorbell
        try:
            while not self._stopping.is_set():
                # Idle (no call, no command waiting), poll at 10 Hz: a SIP request or the
                # doorbell wakes libHandleEvents at once.
                busy = self._legs or not self._commands.empty()
                ep.libHandleEvents(busy_poll_ms if busy else idle_poll_ms)
                if doorbell is not None:
                    doorbell.answer()
                self._run_after_callbacks()
                self._run_commands()
                self._expire_unanswered()
                self._check_media()
                self._sample_levels()
        finally:
            self._shutdown(ep)

    def _create(self, ep: Any) -> None:
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0  # we poll libHandleEvents on this thread
        cfg.uaConfig.mainThreadOnly = False
        wanted = self.settings.max_calls
        cfg.uaConfig.maxCalls = (wanted + binding.REFUSAL_SLOTS if wanted
                                 else binding.AUTO_SLOTS)
        cfg.uaConfig.userAgent = self.settings.user_agent
        cfg.logConfig.level = self._log_level
        cfg.logConfig.consoleLevel = self._log_level
        self._writer = LogWriter()
        cfg.logConfig.writer = self._writer
        cfg.logConfig.decor = 0
        # 8 kHz clock: G.711 ports need no resampling inside the bridge (16 kHz costs 2.9x CPU).
        cfg.medConfig.clockRate = 8000
        cfg.medConfig.sndClockRate = 0
        cfg.medConfig.channelCount = 1
        cfg.medConfig.audioFramePtime = 20
        cfg.medConfig.ecTailLen = 0
        cfg.medConfig.noVad = True
        cfg.medConfig.threadCnt = 1
        # Two bridge ports per call (the call's stream and ours). pjsua does not clamp this to
        # the slots it really has; an unused bridge slot costs a few bytes per port, and the
        # clock thread only walks the ports in use.
        cfg.medConfig.maxMediaPorts = max(254, 2 * cfg.uaConfig.maxCalls + 8)
        ep.libInit(cfg)
        self.binding = binding.detect(ep)
        self.max_calls = self._capacity(self.binding)
        self.native_media, media_port = load_native_media(self.settings.media_port)
        self.media_port = "native" if self.native_media is not None else "python"
        log.info("media: %s", media_port)
        # Kept until after libDestroy: pjsip holds pointers into it.
        self._guards = RequestGuards(DEFAULT_RETRY_AFTER_S)
        ep.audDevManager().setNullDev()
        self._set_codecs(ep)
        first: BoundTransport | None = None
        for t in self.settings.transports:
            try:
                bound = self._create_transport(ep, t)
            except Exception as exc:  # pjsua2.Error: its str() is empty
                raise GatewayError(f"cannot listen on {t.type}:{t.host}:{t.port}: "
                                   f"{error_text(exc)}") from None
            self.transports.append(bound)
            first = first or bound
            if t.type == "udp" and self.doorbell is None:
                self.doorbell = self._make_doorbell(t.host, bound.port)
        ep.libStart()
        assert first is not None
        trunk = UaAccount(self, "trunk")
        trunk_config = self.account_config(f"sip:gateway@{first.host}:{first.port}")
        if self.front is not None and self.front.proxy is not None:
            trunk_config.sipConfig.proxies.append(self.front.proxy)
        trunk.create(trunk_config, True)
        self._accounts.append(trunk)
        if self.relays is not None:
            try:
                self.relays.create(ep, self.media_host)
            except Exception as exc:  # pjsua2.Error
                raise GatewayError(f"cannot create the relay's TLS transport: "
                                   f"{error_text(exc)}") from None
        if self.front is None:  # behind a front, the front registers the extension once
            for acct in self.settings.accounts:
                self._accounts.append(self._create_registration(acct))
        if self.native_media is None:
            # The Python port's clock thread takes the GIL 100 times per call per second; a
            # short switch interval bounds how long the loop thread can hold it (pjsua2-notes
            # §3.3). The native port's clock thread never takes it.
            sys.setswitchinterval(0.001)
        log.info("SIP listening on %s", ", ".join(f"{t.type}:{t.host}:{t.port}"
                                                 for t in self.transports))

    @staticmethod
    def _make_doorbell(host: str, port: int) -> Doorbell | None:
        try:
            bell = Doorbell(host, port)
        except OSError as exc:
            log.warning("no doorbell for the SIP thread (%s:%d: %s): it polls every %d ms "
                        "with calls up", host, port, exc, _BUSY_POLL_MS)
            return None
        log.debug("SIP thread doorbell: udp %s:%d", *bell.target)
        return bell

    def _capacity(self, found: binding.Binding) -> int:
        """Calls this process takes: the configured number, never more than pjsua has."""
        wanted = self.settings.max_calls
        capacity = found.max_calls if not wanted else min(wanted, found.max_calls)
        if wanted and wanted > found.max_calls:
            log.warning("sip.max_calls %d is more than this pjsua2 allows (%d call slots, some "
                        "kept for refusals): taking %d calls", wanted, found.call_slots,
                        capacity)
        limit = binding.raise_open_files(capacity)
        log.info("pjsua2: pjproject %s (%s, %s), %d call slots: up to %d calls; open-files "
                 "limit %d", found.version, "PyPI wheel" if found.kind == "wheel"
                 else "source build", found.distribution, found.call_slots, capacity, limit)
        return capacity

    def _set_codecs(self, ep: Any) -> None:
        for codec in ep.codecEnum2():
            ep.codecSetPriority(codec.codecId, 0)
        priority = 254
        for name in self.settings.codecs:
            ep.codecSetPriority(f"{name}/8000/1", priority)
            priority -= 1

    def _create_transport(self, ep: Any, t: TransportSettings) -> BoundTransport:
        tc = pj.TransportConfig()
        tc.port = t.port
        tc.boundAddress = t.host
        # Behind the front the Contact must stay the bound loopback address (the front routes
        # in-dialog requests to workers by it); only the media (SDP c=) takes the public one.
        if self.settings.public_address and self.front is None:
            tc.publicAddress = self.settings.public_address
        if t.type == "tls":
            tc.tlsConfig.certFile = t.cert_file or ""
            tc.tlsConfig.privKeyFile = t.key_file or ""
            # No implicit system bundle: pjsip also sends the CA file's names in its
            # CertificateRequest as a server, and the ~140 of a system bundle made incoming
            # TLS handshakes fail. Name the PBX's CA (or a bundle) explicitly.
            tc.tlsConfig.CaListFile = t.ca_file or ""
            if t.verify_server and not t.ca_file:
                log.warning("tls transport %s:%d verifies servers but has no ca_file: "
                            "outgoing TLS (registrations) will fail verification until "
                            "ca_file names the CA", t.host, t.port)
            tc.tlsConfig.method = pj.PJSIP_TLSV1_2_METHOD
            # Outgoing TLS (a registration to a PBX) checks the server's chain and name;
            # without it anyone on the path could pose as the PBX.
            tc.tlsConfig.verifyServer = t.verify_server
        tid = ep.transportCreate(getattr(pj, _TRANSPORTS[t.type]), tc)
        local = str(ep.transportGetInfo(tid).localName)
        host, _, port = local.rpartition(":")
        return BoundTransport(t.type, host or t.host, int(port or t.port))

    @property
    def media_host(self) -> str:
        """The address RTP binds (``sip.rtp_host``, else the first transport's host)."""
        return self.settings.rtp_host or self.settings.transports[0].host

    def account_config(self, id_uri: str) -> Any:
        """An ``AccountConfig`` with the gateway's media, timer and SRTP settings."""
        ac = pj.AccountConfig()
        ac.idUri = id_uri
        media = ac.mediaConfig.transportConfig
        media.port = self.settings.rtp_port_start
        media.portRange = self.settings.rtp_port_range
        media.boundAddress = self.media_host
        if self.settings.public_address:
            media.publicAddress = self.settings.public_address
        sip = self.settings
        # RFC 4028 session timers: a peer that supports them refreshes the session, and a
        # session nobody refreshes ends (BYE) instead of lingering.
        ac.callConfig.timerUse = getattr(pj, _TIMERS[sip.session_timers])
        ac.callConfig.timerSessExpiresSec = sip.session_expires_s
        ac.callConfig.timerMinSESec = sip.session_min_se_s
        ac.mediaConfig.srtpUse = getattr(pj, _SRTP[sip.srtp])
        ac.mediaConfig.srtpSecureSignaling = sip.srtp_secure_signaling
        return ac

    def _create_registration(self, acct: AccountSettings) -> UaAccount:
        ac = self.account_config(f"sip:{acct.user}@{acct.domain}")
        ac.regConfig.registrarUri = acct.registrar
        ac.regConfig.timeoutSec = acct.expires_s
        ac.regConfig.retryIntervalSec = 30
        if acct.password:
            ac.sipConfig.authCreds.append(
                pj.AuthCredInfo("digest", acct.realm, acct.auth_user, 0, acct.password.value))
        if acct.proxy:
            ac.sipConfig.proxies.append(acct.proxy)
        account = UaAccount(self, acct.name)
        account.create(ac)
        return account

    def _run_after_callbacks(self) -> None:
        while self._after_callbacks:
            self.guard(self._after_callbacks.popleft())

    def _run_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            self.guard(command)

    def guard(self, fn: Callable[[], object]) -> None:
        """Run a callback body (its result is ignored); nothing may propagate into pjsua2."""
        try:
            fn()
        except Exception:
            self.stats.callback_errors += 1
            log.exception("error in SIP callback")

    def emit(self, event: SipEvent) -> None:
        """Hand an event to the loop (any thread)."""
        loop, on_event = self._loop, self._on_event
        if loop is None or on_event is None:
            return
        try:
            loop.call_soon_threadsafe(on_event, event)
        except RuntimeError:  # loop closed during shutdown
            pass

    def incoming(self, account: UaAccount, prm: Any) -> None:
        """A new INVITE (``onIncomingCall``): refuse it here or hand it to the loop."""
        leg_id = self.new_leg_id()
        channel = self.new_channel()
        leg = Leg(self, account, prm.callId, leg_id, channel)
        self._legs[leg_id] = leg
        self._current[leg_id] = leg_id
        self.stats.calls_offered += 1
        rdata = prm.rdata
        whole = str(rdata.wholeMsg)
        start, header_list = message.parse_headers(whole)
        headers = tuple(header_list)
        via = message.header(headers, "Via") or ""
        transport = via.split()[0].rsplit("/", 1)[-1].lower() if via else "udp"
        source = str(rdata.srcAddress)
        src_ip, _, src_port = source.rpartition(":")
        src_ip = src_ip.strip("[]")
        account_name = account.name
        if self.front is not None and src_ip in self.front.addresses:
            relayed = message.front_source(message.header(headers, self.front.header) or "")
            if relayed is not None:
                src_ip, src_port, transport = relayed.ip, str(relayed.port), relayed.transport
                account_name = relayed.account or account_name
        # Behind an upstream dispatcher (sip.front_upstream), the caller is further out still.
        caller = message.upstream_source(headers, src_ip, self.settings.front_upstream)
        if caller is not None:
            src_ip, src_port, transport = caller.ip, str(caller.port), caller.transport
        sip_call_id = message.header(headers, "Call-ID") or ""
        refusal = self._refusal(leg, whole, headers, transport)
        if refusal is not None:
            # Never send a final response from inside pjsua's incoming-call callback: for an
            # INVITE without SDP the ACK of that response aborted the process (pjsip asserts
            # in pjsip_rx_data_free_cloned). After the callback returns it is an ordinary
            # answer on a fully created INVITE session.
            self._after_callbacks.append(
                lambda: self._answer(leg_id, refusal.status, refusal.reason, refusal.headers))
            self.emit(CallRefused(leg_id, sip_call_id, refusal.status, refusal.reason,
                                   refusal.detail, src_ip))
            return
        from_value = message.header(headers, "From") or ""
        to_value = message.header(headers, "To") or ""
        from_uri, to_uri = message.name_addr_uri(from_value), message.name_addr_uri(to_value)
        self.emit(IncomingCall(
            leg_id=leg_id,
            sip_call_id=sip_call_id,
            from_uri=from_uri, from_user=message.uri_user(from_uri),
            from_name=message.display_name(from_value),
            to_uri=to_uri, to_user=message.uri_user(to_uri),
            request_uri=message.request_uri(start),
            headers=headers,
            source_ip=src_ip, source_port=int(src_port or 0),
            transport=transport,
            account=account_name, media=channel,
        ))

    def rejected_by_pjsua(self, prm: Any) -> None:
        """An INVITE pjsua refused itself: it still gets a record."""
        _, headers = message.parse_headers(str(prm.rdata.wholeMsg))
        src_ip = str(prm.rdata.srcAddress).rpartition(":")[0].strip("[]")
        status, reason = int(prm.statusCode), str(prm.reason)
        log.info("INVITE refused by pjsua: %d %s", status, reason)
        self.emit(CallRefused(0, message.header(headers, "Call-ID") or "", status, reason,
                               "refused by pjsua before routing", src_ip))

    def _refusal(self, leg: Leg, whole: str, headers: tuple[tuple[str, str], ...],
                 transport: str) -> Refusal | None:
        """What pjsua let through but the gateway must refuse before routing, if anything."""
        if self.active_calls > self.max_calls:
            self.stats.calls_refused_capacity += 1
            log.warning("at capacity (%d calls): refusing call with 503", self.max_calls)
            status, reason, extra = rejection_response(CapacityExceeded())
            return Refusal(status, reason, extra, detail="at capacity")
        refusal = content_length_refusal(whole, transport)
        if refusal is None:
            refusal = offer_refusal(message.body(whole), message.header(headers, "Content-Type"),
                                    codecs=self.settings.codecs, srtp=self.settings.srtp)
        if refusal is not None:
            self.stats.calls_refused_offer += 1
            log.info("leg %d refused: %d %s (%s)", leg.leg_id, refusal.status, refusal.reason,
                     refusal.detail)
        return refusal

    def _answer(self, leg_id: int, status: int, reason: str,
                headers: tuple[tuple[str, str], ...]) -> None:
        self._with_leg(leg_id, lambda leg: self.answer_leg(leg, status, reason, headers))

    def answer_leg(self, leg: Leg, status: int, reason: str,
                   headers: tuple[tuple[str, str], ...] = ()) -> None:
        """Respond to ``leg``'s INVITE (``sip`` thread)."""
        if status >= 200:
            leg.answered = True
        leg.answer(_op_param(status, reason, headers))

    def _hangup(self, leg_id: int, status: int, reason: str) -> None:
        def go(leg: Leg) -> None:
            self.end_leg(leg, status, reason)
        self._with_leg(leg_id, go)

    def end_leg(self, leg: Leg, status: int, reason: str = "") -> None:
        """End ``leg``: a final response before answer, BYE after (``sip`` thread)."""
        headers: tuple[tuple[str, str], ...] = ()
        if not leg.answered:  # a final response: a 503 says when to retry
            _, _, headers = rejection_response(CallRejected(reason, sip_status=status))
        prm = _op_param(status, reason, headers)
        leg.answered = True
        leg.local_hangup = True
        leg.hangup(prm)

    def _with_leg(self, leg_id: int, fn: Callable[[Leg], Any]) -> None:
        leg = self._legs.get(self._current.get(leg_id, leg_id))
        if leg is None:
            log.debug("command for leg %d ignored: call already ended", leg_id)
            return
        fn(leg)

    def is_current(self, leg: Leg) -> bool:
        """Whether ``leg`` carries its call now (not a replaced or pending transfer leg)."""
        return self._current.get(leg.session_leg) == leg.leg_id

    def _expire_unanswered(self) -> None:
        now = time.monotonic()
        if now < self._next_expiry_check:
            return
        self._next_expiry_check = now + _EXPIRY_CHECK_S
        for leg in list(self._legs.values()):
            if not leg.answered and now - leg.offered_at > self._answer_deadline_s:
                # Each leg guarded: one that pjsua2 refuses must not end the SIP thread.
                self.guard(functools.partial(self._expire, leg))

    def _expire(self, leg: Leg) -> None:
        self.stats.answer_deadline_expired += 1
        log.error("leg %d not answered within %.0f s: 503", leg.leg_id, self._answer_deadline_s)
        self.answer_leg(leg, *rejection_response(
            CallRejected("No Answer From Gateway", sip_status=503)))

    def _check_media(self) -> None:
        """End calls whose caller stopped sending RTP (vanished without a BYE)."""
        timeout = self.settings.rtp_timeout_s
        now = time.monotonic()
        if not timeout or now < self._next_media_check:
            return
        self._next_media_check = now + _MEDIA_CHECK_S
        for leg in list(self._legs.values()):
            if leg.confirmed and not leg.local_hangup and self.is_current(leg):
                self.guard(functools.partial(self._watch_rtp, leg, now, timeout))

    def _watch_rtp(self, leg: Leg, now: float, timeout: float) -> None:
        if leg.rtp_watch is None:
            leg.rtp_watch = RtpWatch(timeout)
        packets = leg.rx_packets() if leg.expect_rtp else None
        if leg.rtp_watch.observe(now, packets):
            self.stats.rtp_timeouts += 1
            log.warning("leg %d: no RTP from the caller for %.0f s: hanging up",
                        leg.leg_id, timeout)
            leg.cause = f"no RTP from the caller for {timeout:g} s"
            self.end_leg(leg, 200)

    def leg_confirmed(self, leg: Leg) -> None:
        """A leg reached CONFIRMED; a transfer leg then takes over its call."""
        if self.is_current(leg):
            return
        # The call a caller's REFER asked for is up: it carries the conversation now, and
        # the old leg (on hold, about to be hung up by the transferor) stops taking audio.
        old = self._legs.get(self._current.get(leg.session_leg, -1))
        self._current[leg.session_leg] = leg.leg_id
        if old is not None:
            old.destroy_port()
        log.info("leg %d: transfer target answered; the call continues on leg %d",
                 leg.session_leg, leg.leg_id)

    def caller_refer(self, leg: Leg, prm: Any) -> None:
        """Decide on the caller's REFER; ``prm.statusCode`` is already 403."""
        target = str(prm.dstUri)
        uri = message.name_addr_uri(target)
        shown = uri if self._log_content else "(hidden; logging.call_content shows it)"
        allowed = ("?" not in uri and leg.confirmed and self.is_current(leg)
                   and any(p.fullmatch(uri) for p in self._refer_allow))
        if not allowed:
            self.stats.caller_refers_refused += 1
            log.warning("leg %d: caller REFER to %s refused with 403 (sip.caller_refer_allow)",
                        leg.session_leg, shown)
            self.emit(CallerRefer(leg.session_leg, 403, False))
            return
        # Allowed: pjsua places the call with a Call object we own, tied to the same media
        # channel and session (pjsua2 asserts the account is the original one).
        leg_id = self.new_leg_id()
        new = Leg(self, leg.account, pj.PJSUA_INVALID_ID, leg_id, leg.channel,
                   session_leg=leg.session_leg)
        new.answered = True  # an outgoing call: nothing of ours to answer
        self._legs[leg_id] = new
        prm.newCall = new
        prm.statusCode = 202
        log.warning("leg %d: caller REFER to %s allowed by sip.caller_refer_allow: calling it "
                    "as leg %d", leg.session_leg, shown, leg_id)
        self.emit(CallerRefer(leg.session_leg, 202, True))

    def leg_gone(self, leg: Leg, status: int, reason: str) -> None:
        """A leg is DISCONNECTED: free it, and end its call unless another leg carries it."""
        if leg.confirmed and leg.local_hangup:
            # pjsua reports the status we passed to hangup(); an established call we ended
            # was cleared normally by our BYE.
            status, reason = 200, "Normal call clearing (BYE sent)"
        elif leg.confirmed and status == 408 and reason.startswith("No session refresh"):
            # pjsip's RFC 4028 timer ended a session the peer stopped refreshing.
            leg.cause = leg.cause or "SIP session timer expired (no refresh, RFC 4028)"
        leg.destroy_port()  # leg.rtp_quality: read as its stream went (onStreamDestroyed)
        leg.gone = True
        if self.relays is not None:
            self.relays.caller_gone(leg)
        # Drop the Call inside its DISCONNECTED callback so a reused slot never sees it
        # (pjsua2-notes §4.2).
        self._legs.pop(leg.leg_id, None)
        session = leg.session_leg
        if not self.is_current(leg):
            log.info("leg %d (for call %d) ended: %d %s", leg.leg_id, session, status, reason)
            return
        successor = next((other for other in self._legs.values()
                          if other.session_leg == session), None)
        if successor is not None:
            # The caller left after a transfer that is still being set up: the call goes on
            # if the target answers.
            self._current[session] = successor.leg_id
            return
        self._current.pop(session, None)
        leg.channel.closed = True
        self.emit(LegEnded(session, status, reason, cause=leg.cause, rtp=leg.rtp_quality))

    def _shutdown(self, ep: Any) -> None:
        try:
            ep.hangupAllCalls()
            deadline = time.monotonic() + 3.0
            while (self._legs or self.active_calls) and time.monotonic() < deadline:
                ep.libHandleEvents(10)
            for leg in list(self._legs.values()):  # peers that never answered our BYE
                leg.destroy_port()
            self._legs.clear()
            registered = [a for a in self._accounts
                          if a.name != "trunk" and a.isValid() and a.getInfo().regIsActive]
            for account in registered:
                account.setRegistration(False)  # un-REGISTER (expires=0)
            deadline = time.monotonic() + 2.0
            while registered and time.monotonic() < deadline:
                ep.libHandleEvents(10)
                registered = [a for a in registered if a.getInfo().regIsActive]
            if self.relays is not None:
                self.relays.shutdown()
            for account in self._accounts:
                account.shutdown()
            self._accounts.clear()
        except Exception:
            log.exception("error while shutting down SIP")
        finally:
            self._destroy(ep)

    def _destroy(self, ep: Any) -> None:
        self._legs.clear()
        self._accounts.clear()
        if self.doorbell is not None:
            self.doorbell.close()
        try:
            ep.libDestroy()
        except Exception:
            log.exception("libDestroy failed")


def _op_param(status: int, reason: str, headers: tuple[tuple[str, str], ...]) -> Any:
    """A ``CallOpParam`` for a response or hangup with ``status``, ``reason`` and headers."""
    prm = pj.CallOpParam()
    prm.statusCode = status
    if reason:
        prm.reason = reason
    for name, value in headers:
        h = pj.SipHeader()
        h.hName, h.hValue = name, value
        prm.txOption.headers.append(h)
    return prm
