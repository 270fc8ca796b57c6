"""Realtime Calls, the OpenAI side of a SIP call: one call's state machine and its REST rules.

A call that reaches OpenAI's SIP endpoint is announced to the project by a
``realtime.call.incoming`` webhook (:func:`incoming_event`) and then controlled over REST:
``POST /v1/realtime/calls/{call_id}/accept`` with a flat session object, ``/reject`` with an
optional SIP ``status_code``, ``/refer`` with a ``target_uri`` and ``/hangup``.
:class:`RealtimeCall` holds one call (``rtc_...``) and decides what each request may do in
each state; a request the call does not allow, or a bad body, raises :class:`CallError`,
which carries the HTTP status and the API's error envelope
``{"error": {"message", "type", "param", "code"}}``. The other inputs are the ring timeout,
the caller (hang-up or CANCEL, the result of a transfer) and the session closing. States::

    incoming --accept--> accepted --refer--> referred --transfer done--> ended (transfer)
      |  |  `--reject--> rejected     |  ^           |
      |  `--ring timeout--> timed_out |  `--transfer failed--'
      `--caller cancels--> ended      `--hangup (API), caller BYE, session end--> ended

Where the real API is undocumented the simulator is strict, so gateway code that works here
works there too: a verb the state does not allow is a 400 ``invalid_call_state`` (accept or
reject twice, reject after accept, refer or hangup while ringing, a second refer while one is
pending), and a call that is over (rejected, timed out, ended) is a 404 ``call_not_found``
like an unknown one. An accept body is validated by :mod:`gateway.sim.validate` as a session
whose ``audio.*.format`` is refused (SIP negotiates the format in SDP). Pure: no I/O and no
clock (every input takes ``now``); randomness only for ids.
"""

from __future__ import annotations

import copy
import enum
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

from gateway.sim.validate import SESSION_KEYS, SessionError, apply_session_update, default_session

#: The webhook event type announcing a call.
INCOMING_EVENT: Final = "realtime.call.incoming"
#: The REST verbs under ``/v1/realtime/calls/{call_id}/``.
VERBS: Final = ("accept", "reject", "refer", "hangup")
#: SIP status sent to the caller by ``reject`` without ``status_code`` (603 Decline).
DEFAULT_REJECT_STATUS: Final = 603
#: SIP final response codes ``reject`` accepts (3xx would need a Contact to redirect to).
REJECT_STATUS_RANGE: Final = (400, 699)
#: SIP status the caller gets when nobody accepts in time (the simulator's choice:
#: 408 Request Timeout; the SIP endpoint sends it).
TIMEOUT_SIP_STATUS: Final = 408
#: Who ended a call that was answered (or, for ``caller``, a ringing call the caller cancelled).
EndedBy = Literal["api", "caller", "transfer", "server"]

_TEL_GLOBAL: Final = re.compile(r"\+[0-9().\-]*[0-9][0-9().\-]*")
_TEL_LOCAL: Final = re.compile(r"[0-9A-Fa-f*#().\-]*[0-9A-Fa-f*#][0-9A-Fa-f*#().\-]*")
_SIP_URI: Final = re.compile(
    r"(?:[^\s<>\"@:;?]+(?::[^\s<>\"@]*)?@)?"  # user[:password]@
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])"  # hostname, IPv4 or [IPv6]
    r"(?::[0-9]{1,5})?"  # port
    r"(?:;[^\s<>\"?]*)?(?:\?[^\s<>\"]*)?"  # ;uri-parameters ?headers
)
_HEADER_NAME: Final = re.compile(r"[A-Za-z0-9!%'*+\-.^_`|~]+")
#: INVITE headers the webhook leaves out ("excluding SIP authorization headers").
AUTH_HEADERS: Final = frozenset({"authorization", "proxy-authorization"})
_REJECT_KEYS: Final = ("status_code",)
_REFER_KEYS: Final = ("target_uri",)


class CallState(enum.StrEnum):
    """Where a Realtime call is; the terminal states are :data:`OVER`."""

    INCOMING = "incoming"
    ACCEPTED = "accepted"
    REFERRED = "referred"
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"
    ENDED = "ended"


#: States in which the call no longer exists for the API (404).
OVER: Final = frozenset({CallState.REJECTED, CallState.TIMED_OUT, CallState.ENDED})
#: States with a running Realtime session (the sideband may attach).
WITH_SESSION: Final = frozenset({CallState.ACCEPTED, CallState.REFERRED})
#: What each REST verb is allowed on, for live calls (over calls are 404 for every verb).
ALLOWED: Final = {
    "accept": frozenset({CallState.INCOMING}),
    "reject": frozenset({CallState.INCOMING}),
    "refer": frozenset({CallState.ACCEPTED}),
    "hangup": frozenset({CallState.ACCEPTED, CallState.REFERRED}),
}
_HINTS: Final = {
    "accept": "Only a ringing call can be accepted, once.",
    "reject": "Only a ringing call can be rejected; end an answered call with hangup.",
    "refer": "Only an answered call without a pending transfer can be referred.",
    "hangup": "A ringing call cannot be hung up; use reject.",
}


class CallError(Exception):
    """A REST request the API refuses; the HTTP answer is :attr:`status` and :meth:`body`.

    Attributes:
        status: HTTP status (400, 401, 404).
        message: The error message.
        type: Error type, ``invalid_request_error``.
        code: Error code, e.g. ``call_not_found``, or ``None``.
        param: The offending field of the body, or ``None``.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param

    def body(self) -> dict[str, Any]:
        """The error envelope: ``{"error": {"message", "type", "param", "code"}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class CallControlError(ValueError):
    """A test-control action (caller hang-up, transfer result, audio) the call cannot take."""


def not_found(call_id: str) -> CallError:
    """The 404 for an unknown call id or a call that is over."""
    return CallError(404, f"Call '{call_id}' not found.", code="call_not_found")


def missing_api_key() -> CallError:
    """The 401 for a request without ``Authorization: Bearer`` (or ``api-key``)."""
    return CallError(
        401,
        "You didn't provide an API key. You need to provide your API key in an Authorization "
        "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        code="invalid_api_key",
    )


def invalid_url(method: str, path: str) -> CallError:
    """The 404 the API gives for a path it does not serve."""
    return CallError(404, f"Invalid URL ({method} {path})")


def new_id(prefix: str) -> str:
    """An id shaped like the API's: ``rtc_``, ``evt_`` or ``wh_`` and 32 hex digits."""
    return f"{prefix}_{secrets.token_hex(16)}"


def parse_body(raw: bytes) -> Any:
    """The JSON of a request body; ``None`` for an empty one.

    Raises:
        CallError: 400, not JSON.
    """
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise CallError(
            400,
            "We could not parse the JSON body of your request. The API expects a JSON payload, "
            "but what was sent was not valid JSON.",
        ) from None


def normalize_sip_headers(raw: Iterable[Any]) -> tuple[tuple[str, str], ...]:
    """INVITE headers as ``(name, value)`` pairs, order and repeats kept, auth headers dropped.

    Args:
        raw: ``(name, value)`` pairs or ``{"name": ..., "value": ...}`` mappings.

    Raises:
        ValueError: Not a header name, or a value with a line break.
    """
    headers: list[tuple[str, str]] = []
    for entry in raw:
        if isinstance(entry, Mapping):
            name, value = entry.get("name"), entry.get("value")
        elif isinstance(entry, list | tuple) and len(entry) == 2:
            name, value = entry
        else:
            raise ValueError(f"a SIP header is a (name, value) pair, got {entry!r}")
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"not a SIP header name: {name!r}")
        if not isinstance(value, str) or "\r" in value or "\n" in value:
            raise ValueError(f"SIP header {name}: the value must be one line of text")
        if name.lower() not in AUTH_HEADERS:
            headers.append((name, value))
    return tuple(headers)


def default_sip_headers(call_id: str) -> tuple[tuple[str, str], ...]:
    """Plausible INVITE headers for a call placed without any (From, To, Call-ID)."""
    tag = call_id[-8:]
    return (
        ("From", f"<sip:+15550100@sim.invalid>;tag={tag}"),
        ("To", "<sip:proj_simulator@sip.api.openai.com>"),
        ("Call-ID", f"{call_id[-32:]}@sim.invalid"),
    )


def incoming_event(call: RealtimeCall, *, event_id: str, created_at: int) -> dict[str, Any]:
    """The ``realtime.call.incoming`` webhook event announcing ``call``.

    Args:
        call: The ringing call.
        event_id: ``evt_...``; a duplicate delivery of the call gets a new one.
        created_at: Unix time (s) of the event.
    """
    data: dict[str, Any] = {
        "call_id": call.call_id,
        "sip_headers": [{"name": n, "value": v} for n, v in call.sip_headers],
    }
    if call.media_security is not None:
        data["sip_media_security"] = call.media_security
    return {
        "object": "event",
        "id": event_id,
        "type": INCOMING_EVENT,
        "created_at": created_at,
        "data": data,
    }


def validate_accept(body: Any, default_model: str) -> dict[str, Any]:
    """The effective session an ``accept`` body configures.

    Args:
        body: The parsed body: a flat GA session object with ``type: "realtime"``.
        default_model: Model of the session when the body names none.

    Returns:
        The full effective session (as ``session.created`` will show it), SIP defaults
        (G.711 μ-law, server VAD) for everything the body leaves out.

    Raises:
        CallError: 400 with the session validation's code and ``param`` (e.g.
            ``audio.output.voice``); ``audio.*.format`` is refused
            (``sip_audio_format_not_allowed``).
    """
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise _not_an_object(body)
    for key in body:
        # Checked first: REST has no beta-shape error (a beta field is just unknown here).
        if key not in SESSION_KEYS:
            raise CallError(
                400, f"Unknown parameter: '{key}'.", code="unknown_parameter", param=key
            )
    model = body.get("model", default_model)
    if not isinstance(model, str) or not model:
        raise CallError(
            400,
            "Invalid type for 'model': expected a non-empty string.",
            code="invalid_type",
            param="model",
        )
    try:
        return apply_session_update(
            default_session(model, sip=True), body, root="", sip_call=True
        )
    except SessionError as exc:
        raise CallError(400, exc.message, code=exc.code, param=exc.param, type=exc.type) from None


def validate_reject(body: Any) -> int:
    """The SIP status a ``reject`` body asks for (:data:`DEFAULT_REJECT_STATUS` if none).

    Raises:
        CallError: 400, not an object, unknown field, or ``status_code`` not an integer from
            400 to 699.
    """
    obj = _flat(body, _REJECT_KEYS)
    if "status_code" not in obj:
        return DEFAULT_REJECT_STATUS
    status = obj["status_code"]
    low, high = REJECT_STATUS_RANGE
    if isinstance(status, bool) or not isinstance(status, int):
        raise CallError(
            400,
            f"Invalid type for 'status_code': expected an integer, but got {status!r} instead.",
            code="invalid_type",
            param="status_code",
        )
    if not low <= status <= high:
        raise CallError(
            400,
            f"Invalid value for 'status_code': {status}. Use a SIP final response code from "
            f"{low} to {high}.",
            code="invalid_value",
            param="status_code",
        )
    return status


def validate_refer(body: Any) -> str:
    """The ``target_uri`` of a ``refer`` body: a ``sip:``, ``sips:`` or ``tel:`` URI.

    Raises:
        CallError: 400, not an object, unknown field, missing or malformed ``target_uri``.
    """
    obj = _flat(body, _REFER_KEYS)
    if "target_uri" not in obj:
        raise CallError(
            400,
            "Missing required parameter: 'target_uri'.",
            code="missing_required_parameter",
            param="target_uri",
        )
    target = obj["target_uri"]
    if not isinstance(target, str):
        raise CallError(
            400,
            f"Invalid type for 'target_uri': expected a string, but got {target!r} instead.",
            code="invalid_type",
            param="target_uri",
        )
    if not _valid_target(target):
        raise CallError(
            400,
            f"Invalid value for 'target_uri': {target!r}. Use a SIP or tel URI such as "
            "'sip:agent@example.com' or 'tel:+14155550123'.",
            code="invalid_value",
            param="target_uri",
        )
    return target


def validate_hangup(body: Any) -> None:
    """Check a ``hangup`` body: none, or an empty object.

    Raises:
        CallError: 400, anything else.
    """
    _flat(body, ())


def _valid_target(target: str) -> bool:
    scheme, sep, rest = target.partition(":")
    if not sep or len(target) > 2048:
        return False
    scheme = scheme.lower()
    if scheme in ("sip", "sips"):
        return bool(_SIP_URI.fullmatch(rest))
    if scheme == "tel":
        number, _, params = rest.partition(";")
        if _TEL_GLOBAL.fullmatch(number):
            return not any(c.isspace() for c in params)
        # RFC 3966 §5.1.5: a local number needs a phone-context.
        return bool(_TEL_LOCAL.fullmatch(number)) and "phone-context=" in params.lower()
    return False


def _not_an_object(body: Any) -> CallError:
    return CallError(
        400,
        f"Invalid type for the request body: expected a JSON object, but got "
        f"{type(body).__name__} instead.",
        code="invalid_type",
    )


def _flat(body: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise _not_an_object(body)
    for key in body:
        if key not in allowed:
            raise CallError(
                400, f"Unknown parameter: '{key}'.", code="unknown_parameter", param=key
            )
    return body


class RealtimeCall:
    """One Realtime call as OpenAI's side sees it.

    Args:
        call_id: ``rtc_...``.
        sip_headers: INVITE headers (no auth headers), order and repeats kept.
        media_security: ``rtp``, ``srtp``, another value, or ``None`` (omitted from the
            webhook: unknown).
        created_at: Unix time the INVITE arrived.
        ring_timeout_s: How long the call rings unanswered before it times out.
        default_model: Model of the session when ``accept`` names none.

    Attributes:
        state: Where the call is.
        session: The effective session the ``accept`` configured, once accepted.
        reject_status: SIP status of the rejection, once rejected.
        refer_target: ``target_uri`` of the latest ``refer``.
        ended_by: Who ended it, once ended.
        history: ``(state, unix time)`` of every state entered, the first being ``incoming``.
    """

    def __init__(
        self,
        call_id: str,
        sip_headers: Iterable[tuple[str, str]],
        media_security: str | None,
        created_at: float,
        ring_timeout_s: float,
        default_model: str,
    ) -> None:
        self.call_id = call_id
        self.sip_headers = tuple(sip_headers)
        self.media_security = media_security
        self.created_at = created_at
        self.ring_timeout_s = ring_timeout_s
        self.default_model = default_model
        self.state = CallState.INCOMING
        self.session: dict[str, Any] | None = None
        self.reject_status: int | None = None
        self.refer_target: str | None = None
        self.ended_by: EndedBy | None = None
        self.history: list[tuple[CallState, float]] = [(CallState.INCOMING, created_at)]

    @property
    def over(self) -> bool:
        """Whether the call no longer exists for the API (rejected, timed out, ended)."""
        return self.state in OVER

    @property
    def has_session(self) -> bool:
        """Whether a Realtime session runs (accepted, possibly with a transfer pending)."""
        return self.state in WITH_SESSION

    @property
    def ring_deadline(self) -> float:
        """Unix time at which an unanswered call times out."""
        return self.created_at + self.ring_timeout_s

    # --- REST -----------------------------------------------------------------------------

    def request(self, verb: str, body: bytes, now: float) -> CallState:
        """Handle ``POST /v1/realtime/calls/{call_id}/{verb}``.

        Args:
            verb: ``accept``, ``reject``, ``refer`` or ``hangup``.
            body: The raw request body.
            now: Unix time of the request.

        Returns:
            The state the call is in afterwards.

        Raises:
            CallError: 404 (unknown verb, or the call is over), 400 (state or body).
        """
        if verb not in ALLOWED:
            raise invalid_url("POST", f"/v1/realtime/calls/{self.call_id}/{verb}")
        if self.over:
            raise not_found(self.call_id)
        if self.state not in ALLOWED[verb]:
            raise CallError(
                400,
                f"Cannot {verb} call '{self.call_id}': it is {self.state}. {_HINTS[verb]}",
                code="invalid_call_state",
            )
        parsed = parse_body(body)
        if verb == "accept":
            self.session = validate_accept(parsed, self.default_model)
            self._enter(CallState.ACCEPTED, now)
        elif verb == "reject":
            self.reject_status = validate_reject(parsed)
            self._enter(CallState.REJECTED, now)
        elif verb == "refer":
            self.refer_target = validate_refer(parsed)
            self._enter(CallState.REFERRED, now)
        else:
            validate_hangup(parsed)
            self._end("api", now)
        return self.state

    # --- other inputs ---------------------------------------------------------------------

    def expire(self, now: float) -> bool:
        """Time the call out if it is still ringing at its deadline; whether it did."""
        if self.state is not CallState.INCOMING or now < self.ring_deadline:
            return False
        self._enter(CallState.TIMED_OUT, now)
        return True

    def caller_hangup(self, now: float) -> bool:
        """The caller hung up (BYE) or cancelled a ringing call (CANCEL); whether it ended."""
        if self.over:
            return False
        self._end("caller", now)
        return True

    def session_closed(self, now: float) -> bool:
        """The Realtime session ended the call (simulated: a scenario ``hangup``)."""
        if not self.has_session:
            return False
        self._end("server", now)
        return True

    def transfer_result(self, ok: bool, now: float) -> None:
        """The outcome of the REFER: done (the call ends) or failed (back to accepted).

        Raises:
            CallControlError: No transfer is pending.
        """
        if self.state is not CallState.REFERRED:
            raise CallControlError(f"call {self.call_id} has no pending transfer ({self.state})")
        if ok:
            self._end("transfer", now)
        else:
            self._enter(CallState.ACCEPTED, now)

    def _end(self, by: EndedBy, now: float) -> None:
        self.ended_by = by
        self._enter(CallState.ENDED, now)

    def _enter(self, state: CallState, now: float) -> None:
        self.state = state
        self.history.append((state, now))

    def to_json(self) -> dict[str, Any]:
        """A JSON summary for the test-control API (``GET /sim/calls/{call_id}``)."""
        return {
            "call_id": self.call_id,
            "state": str(self.state),
            "sip_headers": [{"name": n, "value": v} for n, v in self.sip_headers],
            "media_security": self.media_security,
            "created_at": self.created_at,
            "session": copy.deepcopy(self.session),
            "reject_status": self.reject_status,
            "refer_target": self.refer_target,
            "ended_by": self.ended_by,
            "history": [{"state": str(s), "at": at} for s, at in self.history],
        }
