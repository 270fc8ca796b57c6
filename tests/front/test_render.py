"""The rendered Kamailio files: what each section must contain (pure), and that Kamailio
itself accepts every variant (``kamailio -c``)."""

from __future__ import annotations

import asyncio
import ipaddress
import re
from pathlib import Path

import pytest

from gateway.front.kamailio import (
    check_config,
    explain_check_failure,
    find_kamailio,
    write_run_dir,
)
from gateway.front.render import UACREG_HEADER, escape_dbtext, render
from gateway.front.routing import REGISTRATION_GROUP_BASE, SANITY_CHECKS, TRUNK_GROUP
from gateway.front.spec import FrontSpec, Listen, Registration, Worker
from tests.support.kamailio import module_dir

RUN = Path("/run/gw-front")
PASSWORD = "pa:ss\\word"  # nosec: a test value with the characters db_text must escape


def make_spec(run_dir: Path = RUN, **overrides: object) -> FrontSpec:
    settings: dict[str, object] = {
        "listen": (Listen("udp", "127.0.0.1", 35060), Listen("tcp", "127.0.0.1", 35060)),
        "workers": (Worker("w1", "127.0.0.1", 35071, 3), Worker("w2", "127.0.0.1", 35072, 2)),
        "run_dir": run_dir,
        "trunk_allow": (ipaddress.ip_network("203.0.113.0/24"),
                        ipaddress.ip_network("2001:db8::/32")),
        "registrations": (Registration(
            name="pbx", registrar="sip:pbx.example.com:5060", user="7001",
            domain="pbx.example.com", auth_user="7001", password=PASSWORD,
            allow_from=(ipaddress.ip_network("198.51.100.7/32"),)),)}
    settings.update(overrides)
    return FrontSpec(**settings)  # type: ignore[arg-type]


def route_body(config: str, name: str) -> str:
    """The text of one route block (up to the next top-level closing brace)."""
    start = config.index(f"{name} {{")
    return config[start:config.index("\n}\n", start)]


@pytest.mark.unit
def test_dispatcher_list_has_one_probed_worker_per_line_with_its_capacity() -> None:
    files = render(make_spec())
    assert files.dispatcher_list.splitlines()[1:] == [
        "1 sip:127.0.0.1:35071;transport=udp 8 2 duid=w1;maxload=3",
        "1 sip:127.0.0.1:35072;transport=udp 8 1 duid=w2;maxload=2"]


@pytest.mark.unit
def test_address_list_holds_the_trunks_and_each_pbx() -> None:
    files = render(make_spec())
    assert files.address_list is not None
    assert files.address_list.splitlines()[1:] == [
        f"{TRUNK_GROUP} 203.0.113.0 24 0 trunk", f"{TRUNK_GROUP} 2001:db8:: 32 0 trunk",
        f"{REGISTRATION_GROUP_BASE} 198.51.100.7 32 0 pbx"]
    bare = render(make_spec(trunk_allow=(), registrations=()))
    assert bare.address_list is None
    assert 'loadmodule "permissions.so"' not in bare.config
    # Nobody may call: route[ADMIT] says 403 to everyone.
    assert "allow_source_address" not in route_body(bare.config, "route[ADMIT]")


@pytest.mark.unit
def test_a_zero_prefix_is_written_as_two_halves() -> None:
    # permissions reads netmask 0 as "none given": a single host, so /0 would admit nobody.
    anyone = render(make_spec(trunk_allow=(ipaddress.ip_network("0.0.0.0/0"),
                                           ipaddress.ip_network("::/0")), registrations=()))
    assert anyone.address_list is not None
    assert anyone.address_list.splitlines()[1:] == [
        f"{TRUNK_GROUP} 0.0.0.0 1 0 trunk", f"{TRUNK_GROUP} 128.0.0.0 1 0 trunk",
        f"{TRUNK_GROUP} :: 1 0 trunk", f"{TRUNK_GROUP} 8000:: 1 0 trunk"]


@pytest.mark.unit
def test_the_config_checks_everything_before_a_worker_sees_it() -> None:
    config = render(make_spec()).config
    main = route_body(config, "request_route")
    assert f'sanity_check("{SANITY_CHECKS}", "15")' in main
    assert main.index("sanity_check") < main.index("ds_is_from_list")
    outside = route_body(config, "route[FROM_OUTSIDE]")
    # The ACK that aborts pjsip never goes further than tm.
    assert 'if (is_method("ACK") && !has_totag()) {' in outside
    # Forged source headers are removed first; the real one is added for the worker.
    assert outside.index('remove_hf("X-Gateway-Source")') < outside.index("append_hf")
    assert ('append_hf("X-Gateway-Source: $si;port=$sp;proto=$pr;account=$var(account)\\r\\n")'
            in outside)
    assert outside.index("pike_check_req()") < outside.index("route(ADMIT)") < \
        outside.index("record_route()") < outside.index("route(DISPATCH)")
    admit = route_body(config, "route[ADMIT]")
    assert f'$rU == "7001" && allow_source_address("{REGISTRATION_GROUP_BASE}")' in admit
    assert f'allow_source_address("{TRUNK_GROUP}")' in admit
    assert 'sl_send_reply("403", "Forbidden")' in admit
    in_dialog = route_body(config, "route[IN_DIALOG]")
    assert 'ds_is_from_list("1", "2", "$var(next)")' in in_dialog


@pytest.mark.unit
def test_the_config_dispatches_by_call_load_with_the_known_traps_avoided() -> None:
    spec = make_spec()
    config = render(spec).config
    for param in ('"flags", 2', '"ds_hash_size", 9', '"ds_probing_mode", 1',
                  '"ds_ping_interval", 5', '"ds_hash_initexpire", 120'):
        assert f'modparam("dispatcher", {param})' in config
    dispatch = route_body(config, "route[DISPATCH]")
    assert 'ds_select_dst("1", "10")' in dispatch
    assert 'append_to_reply("Retry-After: 5\\r\\n");' in dispatch
    failure = route_body(config, "failure_route[WORKER_FAILURE]")
    assert 't_check_status("500|503")' in failure
    assert "t_branch_timeout() && !t_branch_replied()" in failure
    # Trap 1: ds_next_dst() only when a next destination exists, then unset on giving up.
    assert "$xavp(_dsdst_[1]=>uri) != $null && ds_next_dst()" in failure
    assert failure.index("ds_next_dst()") < failure.index("ds_load_unset()")
    assert 't_reply("503", "Service Unavailable")' in failure
    assert "ds_load_update()" in route_body(config, "onreply_route[WORKER_REPLY]")
    assert "ds_load_unset" not in route_body(config, "onreply_route[WORKER_REPLY]")
    assert "ds_load_update()" in route_body(config, "route[IN_DIALOG]")  # BYE
    # Trap 2: nothing in the config reloads the dispatcher (only a comment warns about it).
    code = [ln for ln in config.splitlines() if not ln.lstrip().startswith("#")]
    assert not [ln for ln in code if "reload" in ln]


@pytest.mark.unit
def test_registrations_use_uac_with_db_text_and_keep_the_password_in_the_table() -> None:
    spec = make_spec()
    files = render(spec)
    assert f'modparam("uac", "reg_db_url", "text://{RUN}/db")' in files.config
    assert 'modparam("uac", "reg_contact_addr", "127.0.0.1:35060")' in files.config
    assert 'modparam("db_text", "emptystring", 1)' in files.config
    assert files.uacreg_table is not None and files.version_table is not None
    header, row = files.uacreg_table.splitlines()
    assert header == UACREG_HEADER
    assert row == ("1:7001:7001:pbx.example.com:7001:pbx.example.com::7001:pa\\:ss\\\\word::"
                   "sip\\:pbx.example.com\\:5060:300:0:0::")
    assert PASSWORD not in files.config and "pa\\:ss" not in files.config
    assert "pa:ss" not in repr(files)
    assert files.version_table.splitlines()[1] == "0:uacreg:5"
    plain = render(make_spec(registrations=()))
    assert plain.uacreg_table is None and "uac.so" not in plain.config


@pytest.mark.unit
def test_listen_lines_aliases_and_tls_profiles() -> None:
    tls = Listen("tls", "10.0.0.5", 5061, advertise="203.0.113.5",
                 cert_file=Path("/etc/gw/cert.pem"), key_file=Path("/etc/gw/key.pem"))
    spec = make_spec(listen=(Listen("udp", "10.0.0.5", 5060, advertise="203.0.113.5:5060"),
                             tls))
    files = render(spec)
    assert "listen=udp:10.0.0.5:5060 advertise 203.0.113.5:5060" in files.config
    assert "listen=tls:10.0.0.5:5061 advertise 203.0.113.5:5061" in files.config
    assert 'alias="203.0.113.5:5060"' in files.config
    assert "enable_tls=yes" in files.config and "disable_tcp=no" in files.config
    assert f'modparam("tls", "config", "{RUN}/tls.cfg")' in files.config
    assert files.tls_config is not None
    assert "[server:10.0.0.5:5061]" in files.tls_config
    assert "[server:default]" in files.tls_config
    assert "certificate = /etc/gw/cert.pem" in files.tls_config
    # The registration contact is the advertised address.
    assert 'modparam("uac", "reg_contact_addr", "203.0.113.5:5060")' in files.config


@pytest.mark.unit
def test_every_section_is_commented_for_an_admin() -> None:
    config = render(make_spec()).config
    assert config.startswith("#!KAMAILIO\n#\n# Gateway front: generated by gateway.front.render")
    for heading in ("####### 1. Global parameters", "####### 2. Modules", "####### 3. Routing",
                    "####### 4. Events"):
        assert heading in config
    blocks = re.findall(r"^(?:route|failure_route|onreply_route)\[\w+\] \{", config, re.M)
    assert len(blocks) == 7
    for block in blocks:
        before = config[:config.index(block)].rstrip().splitlines()[-1]
        assert before.startswith("#"), f"{block} has no comment above it"
    assert "kamcmd -s unix:/run/gw-front/kamailio_ctl dispatcher.list" in config
    assert "#   w2: sip:127.0.0.1:35072;transport=udp, at most 2 calls" in config


@pytest.mark.unit
def test_escape_dbtext() -> None:
    assert escape_dbtext("a:b\\c\td\ne\rf\x00") == "a\\:b\\\\c\\td\\ne\\rf\\0"


VARIANTS = {
    "trunk+registration+tcp": {},
    "trunk only, udp": {"registrations": (), "listen": (Listen("udp", "127.0.0.1", 35060),)},
    "no pike, no allow-list": {"pike": None, "trunk_allow": (), "registrations": ()},
    "advertised": {"listen": (Listen("udp", "127.0.0.1", 35060, advertise="192.0.2.1"),)},
    "tcp worker": {"workers": (Worker("w1", "127.0.0.1", 35071, 3, transport="tcp"),)},
}


@pytest.mark.sip
@pytest.mark.timeout(60)
@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_kamailio_accepts_every_variant(variant: str, run_dir: Path) -> None:
    spec = make_spec(run_dir, **VARIANTS[variant])  # type: ignore[arg-type]
    paths = write_run_dir(spec, render(spec))
    await check_config(find_kamailio(), paths.config)


@pytest.mark.sip
@pytest.mark.timeout(60)
async def test_kamailio_accepts_the_tls_variant(run_dir: Path) -> None:
    if not await asyncio.to_thread(Path(module_dir(), "tls.so").exists):
        pytest.skip("kamailio-tls-modules is not installed")
    tls = Listen("tls", "127.0.0.1", 35061, cert_file=run_dir / "c.pem",
                 key_file=run_dir / "k.pem")
    spec = make_spec(run_dir, listen=(Listen("udp", "127.0.0.1", 35060), tls))
    paths = write_run_dir(spec, render(spec))
    await check_config(find_kamailio(), paths.config)


@pytest.mark.unit
def test_a_missing_tls_module_is_explained_with_the_lines_and_the_package() -> None:
    # What kamailio -c printed here for a TLS listen without kamailio-tls-modules.
    output = (
        " 0(1) ERROR: <core> [core/sr_module.c:510]: ksr_locate_module(): could not find "
        "module <tls> in </usr/lib/x86_64-linux-gnu/kamailio/modules>\n"
        " 0(1) CRITICAL: <core> [core/cfg.y:3787]: yyerror_at(): parse error in config file "
        "/run/f/kamailio.cfg, line 2, column 12-19: failed to load module\n")
    text = explain_check_failure(output, '#!KAMAILIO\nloadmodule "tls.so"\n')
    assert '  line 2: loadmodule "tls.so"' in text
    assert text.endswith("apt-get install kamailio-tls-modules")
