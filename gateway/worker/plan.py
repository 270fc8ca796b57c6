"""The dialplan a SIP worker runs: the finished plan its control process pushed.

A worker never loads the dialplan file (that would import the plan's Python code into the
process that carries every call's audio). It starts with the plan file the control process
wrote (``gateway worker --plan``, a ``reload`` message as JSON) and switches on every later
``reload`` message with a newer version. A message that cannot be decoded is logged and the
old plan stays; decoding is a fraction of a millisecond for a typical plan and runs no user
code (:mod:`gateway.dialplan.wire`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from gateway.dialplan.schema import Dialplan
from gateway.dialplan.wire import PlanWireError, decode_plan
from gateway.errors import ConfigError, ConfigErrors, GatewayError
from gateway.ipc.messages import Reload, decode_from_control
from gateway.logs import add_secrets

__all__ = ["PushedPlan"]

log = logging.getLogger("gateway.worker")


class PushedPlan:
    """The plan in force; implements :class:`~gateway.app.PlanSource`.

    Args:
        message: The first plan.

    Raises:
        PlanWireError: ``message`` does not hold a plan of this installation.
    """

    def __init__(self, message: Reload) -> None:
        self._current = decode_plan(message.plan)
        self._path = Path(message.path)
        self._version = message.version
        add_secrets(s.value for s in self._current.env_secrets)

    @classmethod
    def from_file(cls, path: str | Path) -> PushedPlan:
        """The plan in the file the control process wrote.

        Raises:
            ConfigErrors: The file is missing, unreadable or holds no valid plan.
        """
        try:
            msg = decode_from_control(json.loads(Path(path).read_text(encoding="utf-8")))
            if not isinstance(msg, Reload):
                raise PlanWireError(f"holds a {msg.type} message, not a plan")
            return cls(msg)
        except (OSError, ValueError, GatewayError) as exc:
            raise ConfigErrors([ConfigError(str(path), None, "",
                                            f"not a dialplan from the control process: {exc}")]
                               ) from None

    @property
    def current(self) -> Dialplan:
        """The dialplan in force."""
        return self._current

    @property
    def path(self) -> Path:
        """The dialplan file the control process loaded it from (for logs)."""
        return self._path

    @property
    def version(self) -> int:
        """The control process's generation of the plan in force."""
        return self._version

    def switch(self, message: Reload) -> bool:
        """Switch to the plan in ``message`` if it is newer; whether it is now in force."""
        if message.version <= self._version:
            return message.version == self._version
        try:
            plan = decode_plan(message.plan)
        except PlanWireError as exc:
            log.error("dialplan %d from the control process refused, keeping %d: %s",
                      message.version, self._version, exc)
            return False
        add_secrets(s.value for s in plan.env_secrets)
        self._current, self._path, self._version = plan, Path(message.path), message.version
        log.info("dialplan %s (generation %d) in force", message.path, message.version)
        return True
