"""The ``recording:`` field of a route: whether and how a call is recorded.

``recording: true`` records in WAV without a consent prompt; ``recording: {format: wav,
consent: "..."}`` names the format and a line the agent says before its greeting. Ogg Vorbis
is refused here: no Vorbis encoder is in the gateway's dependencies, and a route that asked
for it must fail at load, not write something else. A route that is not an agent route has
no call to record, and a ``relay:`` route cannot have it yet (its two legs meet in the
conference bridge, but their recorders are not built). Pure: no I/O.
"""

from __future__ import annotations

from typing import Final

from gateway.dialplan.schema import Recording
from gateway.yamlsrc import Reader

#: Longest consent line (it is spoken word for word).
MAX_CONSENT_CHARS: Final = 1000


def parse_recording(r: Reader, *, agent_route: bool, relayed: bool) -> Recording | None:
    """The route's ``recording:`` (``None`` when absent or false); errors go to ``r``."""
    value = r.raw("recording")
    if value is None or value is False:
        return None
    recording: Recording | None = None
    if value is True:
        recording = Recording()
    elif not isinstance(value, dict):
        r.error("recording", "must be true or {format: wav, consent: TEXT}")
        return None
    else:
        rr = r.sub("recording")
        fmt = rr.str("format", "wav")
        if fmt == "ogg":
            rr.error("format", "ogg is not available: no Vorbis encoder is installed; use wav")
        elif fmt != "wav":
            rr.error("format", f"must be wav; got {fmt!r}")
        consent = rr.str("consent", "") or None
        if consent is not None and (not consent.strip() or len(consent) > MAX_CONSENT_CHARS):
            rr.error("consent", f"must be a non-empty line of at most {MAX_CONSENT_CHARS}"
                                " characters")
        rr.finish()
        recording = Recording("wav", consent.strip() if consent else None)
    if not agent_route:
        r.error("recording", "applies to agent routes only (agent or sdk_agent)")
        return None
    if relayed:
        r.error("recording", "is not available on relay routes yet")
        return None
    return recording
