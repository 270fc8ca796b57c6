"""The OpenAPI document lists exactly the routes the control application serves."""

from __future__ import annotations

import pytest

from gateway.control.actions import CallActions
from gateway.control.api import ApiContext, install_api
from gateway.control.commands import CommandDesk
from gateway.control.directory import CallDirectory
from gateway.control.feed import CallFeed
from gateway.control.http import ControlState, build_app
from gateway.control.metrics import ControlMetrics
from gateway.control.monitor import install_monitor
from gateway.control.openapi import openapi_document
from gateway.control.readiness import Readiness
from gateway.ipc.messages import ControlMessage

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


async def _send(worker_id: str, msg: ControlMessage) -> None:
    raise AssertionError("nothing is sent")


def test_every_served_route_is_documented_and_nothing_else() -> None:
    directory = CallDirectory()
    app = build_app(ControlState(directory, ControlMetrics(directory), Readiness("starting")))
    install_api(app, ApiContext(directory, CallActions(directory, CommandDesk(_send),
                                                       lambda: None), CallFeed(), list))
    install_monitor(app)  # the monitor's page is not part of the API
    served = {(route.method.lower(), route.resource.canonical) for route in app.router.routes()
              if route.method != "HEAD" and route.resource is not None
              and not route.resource.canonical.startswith("/monitor")}
    document = openapi_document()
    documented = {(method, path) for path, item in document["paths"].items()
                  for method in item}
    assert served == documented
    assert document["openapi"] == "3.1.0"
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
