"""The front's spec validation and the parsing of its runtime state (pure, with fixtures
recorded from Kamailio 5.6.3)."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.front.errors import FrontRpcError
from gateway.front.spec import FrontSpec, Listen, Pike, Registration, Worker
from gateway.front.state import (
    decode_response,
    encode_request,
    parse_dispatcher_list,
    parse_reg_dump,
    response_id,
)

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).with_name("fixtures")
RUN = Path("/run/gateway-front")


def spec(**overrides: object) -> FrontSpec:
    settings: dict[str, object] = {
        "listen": (Listen("udp", "192.0.2.10", 5060),),
        "workers": (Worker("w1", "127.0.0.1", 5071, 3), Worker("w2", "127.0.0.1", 5072, 3)),
        "run_dir": RUN}
    settings.update(overrides)
    return FrontSpec(**settings)  # type: ignore[arg-type]


def registration(**overrides: object) -> Registration:
    settings: dict[str, object] = {
        "name": "pbx", "registrar": "sip:pbx.example.com:5060", "user": "7001",
        "domain": "pbx.example.com", "auth_user": "7001", "password": "s3cret-pass"}
    settings.update(overrides)
    return Registration(**settings)  # type: ignore[arg-type]


def test_defaults_and_derived_paths() -> None:
    s = spec()
    assert s.paths.config == RUN / "kamailio.cfg"
    assert s.paths.rpc_socket == RUN / "kamailio_rpc.sock"
    assert s.paths.ctl_socket == RUN / "kamailio_ctl"
    assert s.contact_address == "192.0.2.10:5060"
    assert s.workers[0].uri == "sip:127.0.0.1:5071;transport=udp"
    assert not s.uses_tcp and not s.uses_tls
    assert s.worker("w2").port == 5072
    with pytest.raises(KeyError):
        s.worker("w9")


def test_advertised_address_becomes_the_contact() -> None:
    s = spec(listen=(Listen("udp", "10.0.0.5", 5060, advertise="203.0.113.5"),))
    assert s.listen[0].public_address == "203.0.113.5:5060"
    assert s.contact_address == "203.0.113.5:5060"
    v6 = Listen("tls", "::1", 5061, cert_file=Path("/c.pem"), key_file=Path("/k.pem"))
    assert v6.address == "[::1]:5061"
    assert spec(listen=(v6,)).uses_tls


def test_the_password_stays_out_of_repr() -> None:
    s = spec(registrations=(registration(),))
    assert "s3cret-pass" not in repr(s)
    assert "s3cret-pass" not in str(s.registrations[0])


@pytest.mark.parametrize(("overrides", "message"), [
    ({"listen": ()}, "at least one listen"),
    ({"workers": ()}, "at least one worker"),
    ({"workers": (Worker("w1", "127.0.0.1", 1, 1), Worker("w1", "127.0.0.1", 2, 1))},
     "ids must be unique"),
    ({"workers": (Worker("a", "127.0.0.1", 1, 1), Worker("b", "127.0.0.1", 1, 1))},
     "share a host:port"),
    ({"workers": (Worker("a", "192.0.2.10", 5060, 1),)}, "front's own addresses"),
    ({"source_header": "Via"}, "routing depends on"),
    ({"source_header": "X Bad"}, "header name"),
    ({"first_reply_timeout_ms": 90_000}, "first_reply_timeout_ms"),
    ({"run_dir": Path("/tmp/" + "x" * 100)}, "unix socket limit"),
    ({"run_dir": Path('/tmp/a"b')}, "quotes"),
    ({"registrations": (registration(), registration(name="other"))}, "same user"),
    ({"registrations": (registration(expires_s=20),), "reg_timer_interval_s": 30},
     "exceed reg_timer_interval_s"),
])
def test_invalid_specs_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spec(**overrides)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Listen("udp", "front.example.com", 5060), "not an IP address"),
    (lambda: Listen("tls", "127.0.0.1", 5061), "cert_file and key_file"),
    (lambda: Listen("udp", "127.0.0.1", 0), "outside 1..65535"),
    (lambda: Worker("w 1", "127.0.0.1", 5071, 3), "id must be"),
    (lambda: Worker("w1", "127.0.0.1", 5071, 0), "capacity"),
    (lambda: Pike(reqs_density_per_unit=0), "pike"),
    (lambda: registration(password=""), "password is required"),
    (lambda: registration(user='70"01'), "user has characters"),
    (lambda: registration(registrar="pbx.example.com"), "registrar must be"),
    (lambda: registration(realm='a"b'), "quotes"),
])
def test_invalid_parts_are_refused(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


def test_json_rpc_framing() -> None:
    assert encode_request("dispatcher.set_state", ["d", 1, "sip:127.0.0.1:5071"], 7) == (
        b'{"jsonrpc":"2.0","method":"dispatcher.set_state","id":7,'
        b'"params":["d",1,"sip:127.0.0.1:5071"]}')
    assert encode_request("core.version", [], 1) == (
        b'{"jsonrpc":"2.0","method":"core.version","id":1}')
    ok = b'{"jsonrpc":"2.0","result":"kamailio 5.6.3 (x86_64/linux) ","id":7}'
    assert response_id(ok) == 7
    assert decode_response(ok, "core.version") == "kamailio 5.6.3 (x86_64/linux) "
    error = b'{"jsonrpc":"2.0","error":{"code":500,"message":"State Update Failed"},"id":9}'
    with pytest.raises(FrontRpcError, match="State Update Failed") as info:
        decode_response(error, "dispatcher.set_state")
    assert info.value.code == 500
    assert response_id(b"garbage") is None
    with pytest.raises(FrontRpcError, match="not JSON"):
        decode_response(b"garbage", "x")


def test_dispatcher_list_from_kamailio() -> None:
    raw = (FIXTURES / "dispatcher_list.json").read_bytes()
    w1, w2, w3 = parse_dispatcher_list(decode_response(raw, "dispatcher.list"))
    assert (w1.worker_id, w1.flags, w1.state, w1.probing, w1.load, w1.maxload) == (
        "w1", "AP", "active", True, 1, 3)
    assert w1.accepting and w1.priority == 3
    assert (w2.state, w2.probing, w2.accepting) == ("disabled", False, False)  # drained
    assert (w3.state, w3.probing, w3.accepting) == ("inactive", True, False)  # OPTIONS 503
    assert w3.uri.endswith(";transport=udp")
    with pytest.raises(FrontRpcError):
        parse_dispatcher_list({"RECORDS": [{"SET": {}}]})


def test_registrations_from_kamailio_lose_their_secrets() -> None:
    raw = (FIXTURES / "uac_reg_dump.json").read_bytes()
    (reg,) = parse_reg_dump(decode_response(raw, "uac.reg_dump"))
    assert (reg.user, reg.registrar, reg.expires_s) == ("7001", "sip:127.0.0.1:9", 300)
    assert not reg.online and not reg.disabled  # flags 18: ongoing + init, not yet online
    assert "fixture-password" not in repr(reg)


PROBE = """
import sys
for name in ("asyncio", "socket", "subprocess", "pjsua2", "websockets", "aiohttp"):
    sys.modules[name] = None
import gateway.front.spec, gateway.front.render, gateway.front.routing
import gateway.front.state, gateway.front.errors
"""


def test_the_pure_modules_import_no_io_library() -> None:
    proc = subprocess.run([sys.executable, "-W", "error", "-c", PROBE], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


def test_networks_are_plain_ipaddress_networks() -> None:
    s = spec(trunk_allow=(ipaddress.ip_network("198.51.100.0/24"),))
    assert str(s.trunk_allow[0]) == "198.51.100.0/24"
