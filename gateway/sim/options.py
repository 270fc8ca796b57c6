"""Options of the Realtime API simulator: how it behaves, not what it says (that is the scenario).

One frozen :class:`SimOptions`, validated when built, is handed to
:class:`~gateway.sim.server.SimulatorServer` (which re-exports it): pacing and chunking of the
model's audio, the TTS engine, latency, the default model, how many closed sessions are kept,
the turn log, and for Realtime Calls the webhook target, secret and delivery policy, the ring
timeout and the speed at which a SIP call plays the agent to the caller, and where the SIP
endpoint (:mod:`gateway.sim.siplink`) listens. No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.sim.signing import check_secret
from gateway.sim.tts import ENGINES


@dataclass(frozen=True)
class SimOptions:
    """How the simulator behaves (not what it says: that is the scenario).

    Attributes:
        speed: Audio is sent this many times faster than real time.
        chunk_ms: Audio per ``response.output_audio.delta``.
        tts_engine: ``auto`` (espeak-ng if installed, else tones), ``espeak`` or ``tone``.
        response_latency_ms: Delay between ``response.created`` and the first output.
        default_model: Model reported for ``?call_id=`` sessions.
        keep_closed: Closed sessions kept in :attr:`SimulatorServer.sessions` with their
            event logs. ``None`` keeps all of them, for tests that read them afterwards; a
            long-running simulator (``gateway sim``, the gateway's embedded one) keeps a few,
            because each holds every event of its call (about 50 kB for a short call, all
            its audio for a long one) and keeping all of them grows memory without bound.
        turn_log: Path of a file to append one JSON line per VAD turn to
            (:class:`~gateway.sim.turns.TurnRecord`: when the stop was read, when the first
            audio of its answer was written, the configured latency, the event-loop lag
            around the stop), for benchmarks; ``None`` (default): off, no probe, no cost.
        webhook_url: Where ``realtime.call.incoming`` webhooks are POSTed (the gateway's
            webhook endpoint); ``None``: calls are placed without webhooks.
        webhook_secret: The ``whsec_...`` signing secret (required with ``webhook_url``).
        webhook_attempts: POSTs per webhook at most (retries on non-2xx, timeout, error).
        webhook_backoff_s: Wait before the first retry; doubles for each further one.
        webhook_timeout_s: Time one attempt may take.
        ring_timeout_s: How long a call rings without ``accept``/``reject`` before it times
            out (the caller gets 408).
        playout_speed: How fast a SIP call plays the agent's audio to the caller: 1.0 is real
            time, as RTP is; tests raise it to finish sooner.
        detached_sidebands: A ``?call_id=`` the simulator never placed opens a session with no
            call behind it (the behaviour before Realtime Calls); ``False`` answers 404, as
            the real API does.
        sip_port: Run the SIP endpoint (a pjsua2 process) with UDP and TCP on this port
            (0: a free one, shared by both); ``None`` (default): no SIP endpoint.
        sip_host: Address the SIP endpoint and its RTP bind.
        sip_transports: Which of ``udp``, ``tcp`` listen on ``sip_port``.
        sip_tls_port: Also listen for SIP over TLS on this port (0: a free one); needs
            ``sip_tls_cert_file`` and ``sip_tls_key_file`` (PEM).
        sip_tls_cert_file: The TLS server certificate (PEM).
        sip_tls_key_file: Its private key (PEM).
        sip_rtp_port: First RTP port of the endpoint's calls (0: any free ones).
        sip_log_level: pjsip's own log level (0-5) in the endpoint process.
    """

    speed: float = 4.0
    chunk_ms: int = 100
    tts_engine: str = "auto"
    response_latency_ms: int = 50
    default_model: str = "gpt-realtime-2.1"
    keep_closed: int | None = None
    turn_log: str | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_attempts: int = 4
    webhook_backoff_s: float = 0.5
    webhook_timeout_s: float = 5.0
    ring_timeout_s: float = 30.0
    playout_speed: float = 1.0
    detached_sidebands: bool = True
    sip_port: int | None = None
    sip_host: str = "127.0.0.1"
    sip_transports: tuple[str, ...] = ("udp", "tcp")
    sip_tls_port: int | None = None
    sip_tls_cert_file: str | None = None
    sip_tls_key_file: str | None = None
    sip_rtp_port: int = 0
    sip_log_level: int = 1

    def __post_init__(self) -> None:
        if not self.speed > 0:
            raise ValueError(f"speed must be positive, got {self.speed}")
        if not 10 <= self.chunk_ms <= 2000:
            raise ValueError(f"chunk_ms must be within 10..2000, got {self.chunk_ms}")
        if self.tts_engine not in ENGINES:
            raise ValueError(f"tts_engine must be one of {', '.join(ENGINES)}")
        if self.response_latency_ms < 0:
            raise ValueError("response_latency_ms must not be negative")
        if self.keep_closed is not None and self.keep_closed < 0:
            raise ValueError("keep_closed must not be negative")
        if self.webhook_url is not None:
            if not self.webhook_url.startswith(("http://", "https://")):
                raise ValueError("webhook_url must be an http:// or https:// URL")
            if self.webhook_secret is None:
                raise ValueError("webhook_url needs webhook_secret ('whsec_...')")
        if self.webhook_secret is not None:
            check_secret(self.webhook_secret)
        if self.webhook_attempts < 1:
            raise ValueError("webhook_attempts must be at least 1")
        if self.webhook_backoff_s < 0 or not self.webhook_timeout_s > 0:
            raise ValueError("webhook_backoff_s must be >= 0 and webhook_timeout_s > 0")
        if not self.ring_timeout_s > 0:
            raise ValueError("ring_timeout_s must be positive")
        if not self.playout_speed > 0:
            raise ValueError("playout_speed must be positive")
        self._check_sip()

    def _check_sip(self) -> None:
        for port in (self.sip_port, self.sip_tls_port, self.sip_rtp_port):
            if port is not None and not 0 <= port <= 65535:
                raise ValueError(f"SIP ports must be within 0..65535, got {port}")
        if not self.sip_transports or set(self.sip_transports) - {"udp", "tcp"}:
            raise ValueError("sip_transports must be some of 'udp', 'tcp' (TLS: sip_tls_port)")
        if self.sip_tls_port is not None and self.sip_port is None:
            raise ValueError("sip_tls_port needs sip_port (TLS is an extra transport)")
        if self.sip_tls_port is not None and not (self.sip_tls_cert_file
                                                  and self.sip_tls_key_file):
            raise ValueError("sip_tls_port needs sip_tls_cert_file and sip_tls_key_file")
        if not 0 <= self.sip_log_level <= 5:
            raise ValueError("sip_log_level must be within 0..5")
