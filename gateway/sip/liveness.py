"""Is the caller still there? RTP inactivity as a pure state machine.

A caller who vanishes (power loss, a killed softphone, a NAT binding that expired) sends no
BYE; only the missing RTP tells. :class:`RtpWatch` is fed the stream's received-packet counter
about once a second and says when nothing has arrived for the timeout. While no RTP is expected
(the call is on hold: sendonly, inactive or ``c=0.0.0.0``, RFC 3264 §8.4), the watch pauses and
starts over when media resumes, so a long hold never ends a call. No I/O, no clock: the caller
passes the time.
"""

from __future__ import annotations


class RtpWatch:
    """Detects ``timeout_s`` without a new RTP packet while RTP is expected.

    Args:
        timeout_s: Silence on the wire (not silence in the audio: comfort noise and silent
            frames are packets too) after which the caller is considered gone.
    """

    def __init__(self, timeout_s: float) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.timeout_s = timeout_s
        self._packets: int | None = None
        self._since: float | None = None

    def observe(self, now: float, packets: int | None) -> bool:
        """Record the counter at ``now``; ``True`` once the timeout has passed.

        Args:
            now: Monotonic time in seconds.
            packets: Packets received so far on the stream, or ``None`` while no RTP is
                expected (on hold, no audio stream yet): the watch restarts.
        """
        if packets is None:
            self._packets = self._since = None
            return False
        if self._packets is None or packets != self._packets:
            self._packets, self._since = packets, now
            return False
        assert self._since is not None
        return now - self._since >= self.timeout_s
