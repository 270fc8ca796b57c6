"""``gateway call-out``: have a running gateway place a call with an agent (``POST /v1/calls``).

A thin client of the control API on ``control.host:control.port`` of the configuration (or
``--control URL``), authenticated with the first token of ``$GATEWAY_API_TOKENS``. It prints
the API's JSON answer and exits 0 when the call was placed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request

from gateway.config import load_settings

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``call-out`` on the command line."""
    p = sub.add_parser("call-out", help="have the running gateway call someone with an agent",
                       description="Ask the running gateway (its control API) to place a call "
                       "to SIP_URI with AGENT; the URI must match sip.outbound_allow.")
    p.add_argument("uri", metavar="SIP_URI", help="e.g. sip:+15550100@pbx.example.com")
    p.add_argument("--agent", required=True, help="agent name in the dialplan")
    p.add_argument("--context", action="append", default=[], metavar="KEY=VALUE",
                   help="a {var.KEY} value for the agent's instructions (repeatable)")
    p.add_argument("--max-duration", type=float, default=0.0, metavar="S",
                   help="end the call after S seconds (default: the agent's limit)")
    p.add_argument("--ring-timeout", type=float, default=30.0, metavar="S",
                   help="give up when unanswered after S seconds (default 30)")
    p.add_argument("--status-webhook", metavar="URL", help="POST each status change here")
    p.add_argument("-c", "--config", help="the gateway's configuration (for control.host/port)")
    p.add_argument("--control", metavar="URL",
                   help="control API base URL (default http://control.host:control.port)")


def run(args: argparse.Namespace) -> int:
    """Place the call; 0 when the gateway placed it."""
    settings = load_settings(args.config, os.environ)
    tokens = settings.control.api_tokens
    if not tokens:
        print("gateway call-out: set $GATEWAY_API_TOKENS (the running gateway's API token)",
              file=sys.stderr)
        return 1
    context: dict[str, str] = {}
    for item in args.context:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"gateway call-out: --context {item!r} is not KEY=VALUE", file=sys.stderr)
            return 1
        context[key] = value
    body: dict[str, object] = {"to": args.uri, "agent": args.agent, "context": context,
                               "max_duration_s": args.max_duration,
                               "ring_timeout_s": args.ring_timeout}
    if args.status_webhook:
        body["status_webhook"] = args.status_webhook
    host = settings.control.host if settings.control.host not in ("0.0.0.0", "::") \
        else "127.0.0.1"
    base = (args.control or f"http://{host}:{settings.control.port}").rstrip("/")
    request = urllib.request.Request(
        f"{base}/v1/calls", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {tokens[0].value}",
                 "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=15) as resp:
            print(resp.read().decode())
            return 0
    except urllib.error.HTTPError as exc:
        print(exc.read().decode(), file=sys.stderr)
    except OSError as exc:
        print(f"gateway call-out: cannot reach the gateway at {base}: {exc}", file=sys.stderr)
    return 1
