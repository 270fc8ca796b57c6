"""One scripted call for the monitor: a greeting, the caller's question, a handoff, a tool.

Used by the browser test and by ``bench/monitor_screenshot.py``. The front desk greets; the
caller (SIPp playing :func:`caller_audio`) says one sentence after a few seconds, which
:func:`book` transcribes as :data:`CALLER_SAYS` by default (with a little markup in it, which
the page must show as text); the front desk answers and hands the call to the quotes desk,
which reads the quote with the concierge example's ``extract_quote`` tool and says what it
found.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from examples.concierge import tools
from tests.sip.gateway import REPO
from tests.support.audio import silence_pcm16, speech_pcm16, write_g711

QUOTE: Final = "Acme Plumbing: 450 USD for boiler service"
CALLER_SAYS: Final = "I have a quote from <b>Acme</b> Plumbing."
#: The same sentence without markup (what the caller's audio says; for screenshots).
PLAIN_CALLER_SAYS: Final = "I have a quote from Acme Plumbing."
GREETING: Final = "Front desk, how can I help?"
HANDING_OVER: Final = "Let me pass you to our quotes desk."
READING: Final = "Quotes desk here. Reading your quote."


#: The quotes desk's answer as a scenario template (docs/simulator.md, "Templates").
ANSWER_TEMPLATE: Final = ("That is {tool_output.vendor}, {tool_output.amount} "
                          "{tool_output.currency}. Anything else?")


def quote_line() -> str:
    """What the quotes desk says with the tool's output (the tool is deterministic)."""
    found = tools.extract_quote(QUOTE)
    return f"That is {found['vendor']}, {found['amount']} {found['currency']}. Anything else?"


DIALPLAN: Final = f"""
python_path: {REPO}
tools:
  extract_quote: {{python: "examples.concierge.tools:extract_quote"}}
agents:
  frontdesk:
    instructions: You are the front desk of the monitor demo. Pass quotes to the quotes desk.
    greeting: "{GREETING}"
    transcription: gpt-4o-mini-transcribe
    handoffs: [quotes]
  quotes:
    instructions: You run the quotes desk of the monitor demo. Read quotes with extract_quote.
    transcription: gpt-4o-mini-transcribe
    tools: [extract_quote]
routes:
  - name: all
    agent: frontdesk
"""

_BOOK: Final = f"""
scenarios:
  frontdesk:
    match: {{instructions: "(?i)front desk of the monitor demo"}}
    turns:
      - user_says: "@CALLER_SAYS@"
        steps:
          - say: "{HANDING_OVER}"
          - handoff: quotes
    fallback:
      - say: "Anything else?"
  quotes:
    match: {{instructions: "(?i)quotes desk of the monitor demo"}}
    turns:
      - - say: "{READING}"
        - call: {{name: extract_quote, arguments: {{text: "{QUOTE}"}}}}
      - say: "{ANSWER_TEMPLATE}"
    fallback:
      - say: "Anything else?"
"""


def book(caller_says: str = CALLER_SAYS) -> str:
    """The scenario book, the caller's turn transcribed as ``caller_says``."""
    return _BOOK.replace("@CALLER_SAYS@", caller_says)


def caller_audio(directory: Path) -> Path:
    """Raw μ-law for SIPp: silence through the greeting, one sentence, a long silence."""
    pcm = silence_pcm16(5000) + speech_pcm16(PLAIN_CALLER_SAYS) + silence_pcm16(60000)
    return write_g711(directory / "caller.ulaw", pcm)
