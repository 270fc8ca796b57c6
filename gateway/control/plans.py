"""The dialplan the control process validated, handed to every SIP worker as a finished plan.

The control process loads the dialplan (the only process that imports the plan's Python code,
besides the tool pool), then publishes it: as a file in the run directory that a starting
worker reads (``gateway worker --plan``; written atomically, owner-only) and, after a SIGHUP
reload, as a ``reload`` message to every connected worker. The file holds the same ``reload``
message as JSON, so both paths decode alike (:mod:`gateway.worker.plan`). A reload runs the
loader in a thread, so importing user code never stalls the control process's event loop;
a bad file is refused and nothing is sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

from gateway.config import OpenAICallsSettings
from gateway.dialplan.schema import AgentAction, Dialplan
from gateway.dialplan.store import DialplanStore
from gateway.dialplan.wire import encode_plan
from gateway.errors import ConfigError
from gateway.ipc.messages import Reload, encode
from gateway.logs import add_secrets

__all__ = ["PlanPublisher", "relay_errors"]

log = logging.getLogger("gateway.control")


class PlanPublisher:
    """Publishes ``store``'s plan to ``path`` and as :class:`Reload` messages.

    Args:
        store: The control process's dialplan store.
        path: The plan file workers read at start.
    """

    def __init__(self, store: DialplanStore, path: Path) -> None:
        self.store = store
        self.path = path
        self._message = self._encode()

    @property
    def message(self) -> Reload:
        """The ``reload`` message of the plan in force."""
        return self._message

    def write(self) -> None:
        """Write the plan file (a temporary file renamed over it, mode 0600)."""
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(encode(self._message), out, separators=(",", ":"))
        os.replace(tmp, self.path)

    async def reload(self) -> Reload | None:
        """Load the dialplan file again (in a thread); the new message, or ``None`` if refused."""
        errors = await asyncio.to_thread(self.store.reload)
        if errors is not None:
            for err in errors.errors:
                log.error("dialplan reload refused, keeping the old one (no worker gets it): "
                          "%s", err)
            return None
        add_secrets(s.value for s in self.store.current.env_secrets)
        self._message = self._encode()
        self.write()
        return self._message

    def _encode(self) -> Reload:
        return Reload(version=self.store.generation, path=str(self.store.path),
                      plan=encode_plan(self.store.current))


def relay_errors(plan: Dialplan, settings: OpenAICallsSettings) -> list[ConfigError]:
    """Problems of ``plan``'s ``relay:`` routes with these ``openai_calls`` settings.

    A relayed call needs the webhook (OpenAI's ``realtime.call.incoming`` for the relay leg
    brings the agent in) and a SIP URI to dial.
    """
    errors: list[ConfigError] = []
    for route in plan.routes:
        action = route.action
        if not isinstance(action, AgentAction) or action.relay is None:
            continue
        if not settings.enabled:
            errors.append(ConfigError(route.source, route.line, "relay",
                                      f"route {route.name} relays calls to OpenAI's SIP "
                                      "endpoint: set openai_calls.enabled (its webhook runs "
                                      "the agent)"))
        elif action.relay.uri is None and settings.sip_uri is None:
            errors.append(ConfigError(route.source, route.line, "relay",
                                      f"route {route.name} relays to openai_calls.sip_uri, "
                                      "which is not set (sip:$PROJECT_ID@sip.api.openai.com;"
                                      "transport=tls)"))
    return errors
