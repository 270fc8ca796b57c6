"""Log redaction: secrets never reach a log line, in messages, tracebacks or stack dumps."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from gateway.dialplan import parse_dialplan
from gateway.logs import JsonFormatter, RedactFilter, TextFormatter, add_secrets, setup_logging

pytestmark = pytest.mark.unit

SECRET = "sk-proj-4b8f1c2d9e7a6b5c"
HEADER_TOKEN = "orders-token-77e1a9f03c"

PLAN = """
tools:
  lookup_order:
    http:
      url: "http://127.0.0.1:9/orders"
      headers: {Authorization: "Bearer ${ORDERS_TOKEN}", X-Static: application/json}
    description: Look up an order.
    parameters: {type: object, properties: {order_id: {type: string}}}
agents:
  desk:
    instructions: You look up orders.
    tools: [lookup_order]
routes:
  - name: all
    agent: desk
"""


def _handler(fmt: logging.Formatter, secrets: tuple[str, ...]) -> tuple[logging.Logger,
                                                                         io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(fmt)
    handler.addFilter(RedactFilter(secrets))
    logger = logging.getLogger(f"test.logs.{id(out)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, out


def _fail_with_secret() -> None:
    try:
        raise ConnectionError(f"handshake with key {SECRET} refused")
    except ConnectionError as exc:
        raise RuntimeError(f"could not connect using {SECRET}") from exc


@pytest.mark.parametrize("fmt", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
def test_a_secret_in_an_exception_is_redacted_from_the_traceback(
        fmt: logging.Formatter) -> None:
    logger, out = _handler(fmt, (SECRET,))
    try:
        _fail_with_secret()
    except RuntimeError:
        logger.exception("connect failed for %s", SECRET)
    text = out.getvalue()
    assert SECRET not in text
    assert "Traceback (most recent call last)" in text or '"exc": "Traceback' in text
    assert "could not connect using ***" in text
    assert "handshake with key *** refused" in text  # the chained cause too
    assert "connect failed for ***" in text
    if isinstance(fmt, JsonFormatter):
        record = json.loads(text)
        assert "RuntimeError: could not connect using ***" in record["exc"]


@pytest.mark.parametrize("fmt", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
def test_a_secret_in_stack_info_is_redacted(fmt: logging.Formatter) -> None:
    logger, out = _handler(fmt, (SECRET,))
    # A stack dump quotes source lines, and a source line can hold a literal secret.
    stack = f'Stack (most recent call last):\n  File "x.py", line 1\n    key = "{SECRET}"'
    logger.handle(logger.makeRecord(logger.name, logging.WARNING, __file__, 1, "where", (),
                                    None, sinfo=stack))
    text = out.getvalue()
    assert SECRET not in text
    assert "Stack (most recent call last)" in text
    assert 'key = "***"' in text.replace('\\"', '"')


@pytest.fixture
def root_logging() -> Iterator[io.StringIO]:
    """The process logging as ``gateway run`` sets it up, writing to a buffer."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    setup_logging("INFO", "text", ())
    out = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    try:
        yield out
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def test_a_dialplan_http_header_secret_from_the_environment_is_redacted(
        root_logging: io.StringIO) -> None:
    plan = parse_dialplan(PLAN, "<plan>", env={"ORDERS_TOKEN": HEADER_TOKEN})
    assert [s.value for s in plan.env_secrets] == [HEADER_TOKEN]
    assert HEADER_TOKEN not in repr(plan.env_secrets)
    log = logging.getLogger("gateway.test")
    log.warning("before: %s", HEADER_TOKEN)
    add_secrets(s.value for s in plan.env_secrets)
    log.warning("after: Authorization: Bearer %s; X-Static: application/json", HEADER_TOKEN)
    try:
        raise ValueError(f"HTTP 401 for token {HEADER_TOKEN}")
    except ValueError:
        log.exception("tool failed")
    lines = root_logging.getvalue().splitlines()
    assert HEADER_TOKEN in lines[0]  # not known yet: the filter cannot know every value
    rest = "\n".join(lines[1:])
    assert HEADER_TOKEN not in rest
    # Values written in the file are not secrets: only what came from the environment goes.
    assert "after: Authorization: Bearer ***; X-Static: application/json" in rest
    assert "ValueError: HTTP 401 for token ***" in rest


def test_short_values_are_not_redacted() -> None:
    logger, out = _handler(TextFormatter(), ("abc", SECRET))
    logger.warning("abc and %s", SECRET)
    assert "abc and ***" in out.getvalue()
