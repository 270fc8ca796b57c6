"""A validated :class:`Dialplan` as text, for a SIP worker started from the same installation.

The control process loads and validates the dialplan, which imports the Python tools,
guardrails and Agents SDK agents it names (their descriptions and schemas come from that
code). A SIP worker must not import user code (it runs the audio of every call on its event
loop, and user code belongs in the tool pool), so it never loads the file itself: it gets the
finished plan from the control process, in the ``reload`` message and in the file named by
``gateway worker --plan``. :func:`encode_plan` turns the plan into base64 text of a pickle;
:func:`decode_plan` turns it back with an unpickler that builds only the dialplan's own value
types (classes of :mod:`gateway.dialplan.schema`, :mod:`gateway.dialplan.template`,
:mod:`gateway.agents.spec`, :class:`~gateway.config.Secret`, IP networks and compiled
patterns): anything else, a user class or a callable, is refused, so decoding never runs or
imports user code. Pickle is used because both ends are the same code (the protocol version
and the settings digest check that) and the plan's types are many and all frozen
dataclasses; the text stays on the owner-only control socket and run directory. Secret header
values from ``${ENV}`` are in the text, as in the worker's own environment. Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import copyreg
import io
import pickle
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from gateway.dialplan.schema import Dialplan
from gateway.errors import GatewayError

__all__ = ["PlanWireError", "decode_plan", "encode_plan"]

#: Modules whose classes a plan is made of (any public name in them).
_VALUE_MODULES: Final = frozenset({
    "gateway.agents.spec", "gateway.dialplan.schema", "gateway.dialplan.template",
})
#: Single names a plan may also hold.
_VALUE_NAMES: Final = frozenset({
    ("gateway.config", "Secret"), ("gateway.dialplan.wire", "_frozen_mapping"),
    ("ipaddress", "IPv4Network"), ("ipaddress", "IPv6Network"),
    ("ipaddress", "IPv4Address"), ("ipaddress", "IPv6Address"),
    ("re", "_compile"), ("builtins", "frozenset"), ("builtins", "set"),
})


class PlanWireError(GatewayError):
    """Text that is not an encoded dialplan of this installation."""


def _frozen_mapping(items: dict[Any, Any]) -> Mapping[Any, Any]:
    return MappingProxyType(items)


def _reduce_mapping(value: MappingProxyType[Any, Any]) -> tuple[Any, ...]:
    return (_frozen_mapping, (dict(value),))


class _Pickler(pickle.Pickler):
    dispatch_table = {**copyreg.dispatch_table, MappingProxyType: _reduce_mapping}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = (module in _VALUE_MODULES and not name.startswith("_")) or \
            (module, name) in _VALUE_NAMES
        if not allowed:
            raise PlanWireError(f"an encoded dialplan may not hold {module}.{name}")
        return super().find_class(module, name)


def encode_plan(plan: Dialplan) -> str:
    """``plan`` as ASCII text for :func:`decode_plan` in another process."""
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(plan)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_plan(text: str) -> Dialplan:
    """The dialplan :func:`encode_plan` encoded.

    Raises:
        PlanWireError: ``text`` is not base64, not a pickle of a :class:`Dialplan`, or names a
            class that is not one of the dialplan's value types.
    """
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise PlanWireError("an encoded dialplan must be base64 text") from None
    try:
        plan = _Unpickler(io.BytesIO(data)).load()
    except PlanWireError:
        raise
    except Exception as exc:  # a corrupt pickle raises many types
        raise PlanWireError(f"not an encoded dialplan: {type(exc).__name__}") from None
    if not isinstance(plan, Dialplan):
        raise PlanWireError(f"an encoded dialplan holds a {type(plan).__name__}")
    return plan
