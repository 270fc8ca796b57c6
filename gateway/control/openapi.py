"""The control API's OpenAPI 3.1 document, served at ``GET /v1/openapi.json``.

Written by hand next to the handlers (:mod:`gateway.control.http`, :mod:`gateway.control.api`);
``tests/unit/test_control_openapi.py`` checks that every route the application serves is in
here and nothing else.
"""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_document"]

_ERROR = {"$ref": "#/components/schemas/Error"}
_CALL_ID = {"name": "call_id", "in": "path", "required": True, "schema": {"type": "string"},
            "description": "The gateway's call id (`worker:leg`), or OpenAI's `rtc_...` id of "
                           "a direct call."}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {400: "Bad request body (the field is named)", 401: "Missing or wrong bearer token",
            404: "No such call", 409: "The call has ended", 502: "The worker or API failed",
            503: "Too many event streams"}
    return {str(s): {"description": text[s],
                     "content": {"application/json": {"schema": _ERROR}}} for s in statuses}


def _action(summary: str, body: dict[str, Any] | None, required: list[str]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary, "parameters": [_CALL_ID],
        "responses": {"200": {"description": "Done", "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/ActionResult"}}}},
            **_errors(400, 401, 404, 409, 502)}}
    if body is not None:
        op["requestBody"] = {"required": bool(required), "content": {"application/json": {
            "schema": {"type": "object", "additionalProperties": False,
                       "required": required, "properties": body}}}}
    return {"post": op}


_LAST_EVENT_ID = {"name": "Last-Event-ID", "in": "header", "required": False,
                  "schema": {"type": "string", "pattern": "^[0-9]+$"},
                  "description": "The `id:` of the last event a reconnecting client got: "
                                 "only kept events after it are replayed."}


def _sse(summary: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    return {"get": {"summary": summary, "parameters": [*parameters, _LAST_EVENT_ID],
                    "responses": {
        "200": {"description": "Server-Sent Events: `snapshot`, then the live calls' kept "
                               "history (data marked `replay: true`), then `offered`, "
                               "`started`, `state`, `tool`, `handoff`, `guardrail`, `dtmf`, "
                               "`barge_in`, `transfer`, `transcript`, `levels`, `lost`, "
                               "`ended`; each event's feed seq as `id:`",
                "content": {"text/event-stream": {"schema": {"type": "string"}}}},
        **_errors(401, 404, 503)}}}


def openapi_document() -> dict[str, Any]:
    """The document (a fresh dict each time)."""
    plain = {"200": {"description": "OK"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "gateway control API", "version": "1",
                 "description": "Live calls and their control. Every /v1 endpoint needs "
                                "`Authorization: Bearer <token>` ($GATEWAY_API_TOKENS)."},
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": plain}},
            "/readyz": {"get": {"summary": "Readiness (503 while starting or draining)",
                                "security": [], "responses": plain}},
            "/metrics": {"get": {"summary": "Prometheus metrics (open unless "
                                            "control.metrics_open is false)",
                                 "responses": plain}},
            "/v1/calls": {
                "get": {"summary": "Live calls and the workers",
                        "responses": {**plain, **_errors(401)}},
                "post": {
                    "summary": "Place a call with an agent (the URI must match "
                               "sip.outbound_allow)",
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": {"type": "object", "additionalProperties": False,
                                   "required": ["to", "agent"], "properties": {
                                       "to": {"type": "string",
                                              "description": "sip: or sips: URI"},
                                       "agent": {"type": "string"},
                                       "context": {"type": "object",
                                                   "additionalProperties": {
                                                       "type": "string"},
                                                   "description": "{var.NAME} values"},
                                       "max_duration_s": {"type": "number"},
                                       "ring_timeout_s": {"type": "number"},
                                       "status_webhook": {
                                           "type": "string", "format": "uri",
                                           "description": "POSTed each status change, "
                                                          "signed (Standard Webhooks)"}}}}}},
                    "responses": {
                        "201": {"description": "Placed: {call_id, status: queued}"},
                        **_errors(400, 401, 404), "403": {"description": "Not allowed"},
                        "503": {"description": "No worker can place it"}}}},
            "/v1/calls/{call_id}": {"get": {"summary": "One live or recently ended call",
                                            "parameters": [_CALL_ID],
                                            "responses": {**plain, **_errors(401, 404)}}},
            "/v1/calls/{call_id}/hangup": _action(
                "End the call", {"reason": {"type": "string", "maxLength": 256}}, []),
            "/v1/calls/{call_id}/transfer": _action(
                "Blind-transfer the caller (REFER); answers when it took or failed",
                {"target": {"type": "string", "description": "sip:, sips: or tel: URI"}},
                ["target"]),
            "/v1/calls/{call_id}/say": _action(
                "The agent says the text word for word next",
                {"text": {"type": "string", "maxLength": 2000}}, ["text"]),
            "/v1/calls/{call_id}/events": _sse("The call's events", [_CALL_ID]),
            "/v1/events": _sse("Every call's events", []),
            "/v1/openapi.json": {"get": {"summary": "This document", "responses": plain}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error", "reason"], "properties": {
                    "error": {"type": "string"}, "reason": {"type": "string"}}},
                "ActionResult": {"type": "object", "required": ["ok", "call_id", "result"],
                                 "properties": {"ok": {"const": True},
                                                "call_id": {"type": "string"},
                                                "result": {"type": "string"}}},
            },
        },
    }
