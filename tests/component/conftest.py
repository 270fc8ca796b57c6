"""Component-test fixtures: a running Realtime API simulator on 127.0.0.1.

Use ``simulator`` directly for the defaults (built-in scenario, :class:`SimOptions` defaults),
or parametrize it indirectly with a :class:`SimOptions`, a :class:`ScenarioBook`, or a
``(ScenarioBook, SimOptions)`` tuple::

    @pytest.mark.parametrize("simulator", [SimOptions(speed=20)], indirect=True)
    async def test_fast(simulator: SimulatorServer) -> None: ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.sim.scenario import ScenarioBook
from gateway.sim.server import SimOptions, SimulatorServer


@pytest.fixture
async def simulator(request: pytest.FixtureRequest) -> AsyncIterator[SimulatorServer]:
    """A simulator listening on a free port of 127.0.0.1, stopped after the test."""
    param = getattr(request, "param", None)
    scenarios: ScenarioBook | None = None
    options = SimOptions()
    if isinstance(param, SimOptions):
        options = param
    elif isinstance(param, ScenarioBook):
        scenarios = param
    elif isinstance(param, tuple):
        scenarios, options = param
    elif param is not None:
        raise TypeError(f"simulator param must be SimOptions, ScenarioBook or a tuple: {param!r}")
    async with SimulatorServer(
        host="127.0.0.1", port=0, scenarios=scenarios, options=options
    ) as sim:
        yield sim
