"""The dialplan the gateway is running with, swapped atomically on reload.

:class:`DialplanStore` loads a dialplan file once at start (refusing to start on a bad one) and
again on :meth:`DialplanStore.reload` (the lead's SIGHUP handler). A reload either replaces the
whole plan or changes nothing: a file with any error is refused and the old plan keeps serving
calls. Readers take ``store.current`` once per call and use that object throughout, so a call
never sees half of one plan and half of another; replacing the reference is a single attribute
store, safe to read from the SIP thread.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from gateway.dialplan.loader import NO_ENV, load_dialplan
from gateway.dialplan.schema import Dialplan
from gateway.errors import ConfigError, ConfigErrors

#: Checks of a valid plan against the rest of the configuration (e.g. relay routes need
#: ``openai_calls``): the problems, each with its file and line.
PlanCheck = Callable[[Dialplan], list[ConfigError]]


class DialplanStore:
    """Holds the current :class:`Dialplan` loaded from ``path``.

    Python modules the plan names (tools, guardrails, Agents SDK agents) are imported once per
    process: a reload re-reads the YAML but not changed Python code.

    Args:
        path: The dialplan file; includes are resolved relative to it on every load.
        env: Environment for ``${NAME}`` in HTTP tool headers, used on every load.
        check: Further checks every loaded plan must pass (at start and on reload).

    Raises:
        ConfigErrors: From the constructor, when the file is invalid.
    """

    def __init__(self, path: str | Path, env: Mapping[str, str] = NO_ENV,
                 check: PlanCheck | None = None) -> None:
        self._path = Path(path)
        self._env = env
        self._check = check
        self._current = self._load()
        self._generation = 1

    @property
    def path(self) -> Path:
        """The dialplan file."""
        return self._path

    @property
    def current(self) -> Dialplan:
        """The dialplan in force."""
        return self._current

    @property
    def generation(self) -> int:
        """1 after the first load, plus one for every successful reload (for logs)."""
        return self._generation

    def reload(self) -> ConfigErrors | None:
        """Load the file again and switch to it if it is valid.

        Returns:
            ``None`` when the new plan is in force, or the errors that made the store keep the
            old one.
        """
        try:
            plan = self._load()
        except ConfigErrors as exc:
            return exc
        self._current = plan
        self._generation += 1
        return None

    def _load(self) -> Dialplan:
        plan = load_dialplan(self._path, self._env)
        problems = self._check(plan) if self._check is not None else []
        if problems:
            raise ConfigErrors(problems)
        return plan
