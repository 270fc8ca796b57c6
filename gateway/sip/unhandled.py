"""What to answer a request no part of pjsip handled, as a pure function.

pjsip drops an out-of-dialog request nobody claims (an unknown method, an INFO or BYE without a
To tag), so the sender retransmits it for 32 s (RFC 3261 §17.1.2.2, Timer F) and learns nothing.
RFC 3261 §8.2.1 says what a UAS answers instead: 405 with ``Allow`` for a method it knows but
does not take here, 501 for one it does not implement at all; and §12.2.2 gives 481 for a
request that only makes sense inside a dialog that does not exist. ACK is never answered.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Methods that are only valid inside a dialog (RFC 3261 §12.2, RFC 6086, RFC 3262,
#: RFC 3311, RFC 6665 NOTIFY without a subscription).
IN_DIALOG_ONLY = frozenset({"BYE", "INFO", "PRACK", "UPDATE", "NOTIFY", "CANCEL"})
#: Methods the gateway knows of but does not accept out of a dialog.
NOT_ALLOWED_HERE = frozenset({"REGISTER", "PUBLISH", "SUBSCRIBE", "MESSAGE", "REFER",
                              "OPTIONS", "INVITE"})


@dataclass(frozen=True)
class UnhandledAnswer:
    """The stateless response to send."""

    status: int
    reason: str
    #: Whether the response carries the endpoint's ``Allow`` header.
    allow: bool


def answer_unhandled(method: str) -> UnhandledAnswer | None:
    """The response for an unclaimed request of ``method``, or ``None`` to stay silent."""
    name = method.strip().upper()
    if not name or name == "ACK":
        return None
    if name in IN_DIALOG_ONLY:
        return UnhandledAnswer(481, "Call/Transaction Does Not Exist", allow=False)
    if name in NOT_ALLOWED_HERE:
        return UnhandledAnswer(405, "Method Not Allowed", allow=True)
    return UnhandledAnswer(501, "Not Implemented", allow=True)


def method_of(info: str) -> str:
    """The method in pjsip's ``pjsip_rx_data_get_info`` text (``Request msg FOO/cseq=1 ...``)."""
    if not info.startswith("Request msg "):
        return ""
    return info[len("Request msg "):].split("/", 1)[0].split(" ", 1)[0]
