"""The upstream dispatcher's rendered files, the trust in its header, its setting and command.

Pure except the last test, which has Kamailio itself check the rendered config
(``kamailio -c``). The behaviour of the running upstream is in tests/sip/test_multi_instance.py.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import parse_settings
from gateway.errors import ConfigErrors
from gateway.front.errors import KamailioNotFound
from gateway.front.kamailio import check_config, find_kamailio
from gateway.front.render import render_config
from gateway.front.routing import SANITY_CHECKS
from gateway.front.spec import Listen
from gateway.front.upstream import (
    ANY_SOURCE,
    NO_CALL_LIMIT,
    Instance,
    UpstreamSpec,
    parse_hostport,
    render_upstream,
)
from gateway.sip.message import UPSTREAM_SOURCE_HEADER, FrontSource, upstream_source
from gateway.yamlsrc import load_yaml

RUN = Path("/run/gw-upstream")
HEADER = "X-Gateway-Upstream-Source"


def make_spec(run_dir: Path = RUN, **overrides: object) -> UpstreamSpec:
    settings: dict[str, object] = {
        "listen": (Listen("udp", "203.0.113.10", 5060),),
        "instances": (Instance("10.0.0.2", 5060), Instance("10.0.0.3", 5070)),
        "run_dir": run_dir}
    settings.update(overrides)
    return UpstreamSpec(**settings)  # type: ignore[arg-type]


def route_body(config: str, name: str) -> str:
    """The text of one route block (up to the next top-level closing brace)."""
    start = config.index(f"{name} {{")
    return config[start:config.index("\n}\n", start)]


# Addresses on the command line -------------------------------------------------------------

@pytest.mark.unit
@pytest.mark.parametrize(("text", "expected"), [
    ("10.0.0.2:5060", ("10.0.0.2", 5060)),
    (" 127.0.0.1:1 ", ("127.0.0.1", 1)),
    ("[2001:db8::2]:5062", ("2001:db8::2", 5062)),
])
def test_parse_hostport(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text) == expected


@pytest.mark.unit
@pytest.mark.parametrize(("text", "reason"), [
    ("10.0.0.2", "is not IP:PORT"),
    ("gw1.example.com:5060", "'gw1.example.com' is not an IP address"),
    ("2001:db8::2:5060", "is not IP:PORT"),
    ("[10.0.0.2]:5060", "write an IPv6 address in brackets"),
    ("10.0.0.2:0", "port 0 is outside 1..65535"),
    ("10.0.0.2:70000", "port 70000 is outside 1..65535"),
])
def test_parse_hostport_refuses(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_hostport(text)


@pytest.mark.unit
@pytest.mark.parametrize(("overrides", "reason"), [
    ({"instances": ()}, "at least one instance"),
    ({"listen": ()}, "needs a listen address"),
    ({"instances": (Instance("10.0.0.2", 5060),) * 2}, "instance 10.0.0.2:5060 is listed twice"),
    ({"instances": (Instance("203.0.113.10", 5060),)}, "is the upstream's own address"),
    ({"instances": (Instance("2001:db8::2", 5060),)}, "listens on no IPv6 address"),
    ({"allow": ()}, "allow is empty"),
    ({"invites_per_s": -1}, "invites_per_s must be 0"),
    ({"ping_interval_s": 0}, "ping_interval_s must be at least 1"),
])
def test_the_spec_refuses_what_cannot_work(overrides: dict[str, object], reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        make_spec(RUN, **overrides)


@pytest.mark.unit
def test_an_instance_must_be_an_ip_address() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        Instance("gw1.example.com", 5060)


# The rendered files -------------------------------------------------------------------------

@pytest.mark.unit
def test_dispatcher_list_has_one_probed_line_per_instance_in_priority_order() -> None:
    files = render_upstream(make_spec())
    assert files.dispatcher_list.splitlines()[1:] == [
        f"1 sip:10.0.0.2:5060;transport=udp 8 2 duid=i1;maxload={NO_CALL_LIMIT}",
        f"1 sip:10.0.0.3:5070;transport=udp 8 1 duid=i2;maxload={NO_CALL_LIMIT}"]
    assert files.tls_config is None and files.uacreg_table is None


@pytest.mark.unit
def test_any_source_is_admitted_and_a_zero_prefix_is_split_for_permissions() -> None:
    files = render_upstream(make_spec())
    assert files.address_list is not None
    # permissions reads mask 0 as "a single host": /0 must be written as two halves.
    assert files.address_list.splitlines()[1:] == [
        "1 0.0.0.0 1 0 trunk", "1 128.0.0.0 1 0 trunk", "1 :: 1 0 trunk", "1 8000:: 1 0 trunk"]
    assert make_spec().allow == ANY_SOURCE
    only = render_upstream(make_spec(allow=(ipaddress.ip_network("198.51.100.0/24"),)))
    assert only.address_list is not None
    assert only.address_list.splitlines()[1:] == ["1 198.51.100.0 24 0 trunk"]
    assert "admits 198.51.100.0/24; others get 403" in only.config


@pytest.mark.unit
def test_the_caller_source_goes_out_in_the_upstream_header_and_a_forged_one_is_removed() -> None:
    assert UPSTREAM_SOURCE_HEADER == HEADER
    config = render_upstream(make_spec()).config
    outside = route_body(config, "route[FROM_OUTSIDE]")
    removed = outside.index(f'remove_hf("{HEADER}");')
    added = outside.index(f'append_hf("{HEADER}: $si;port=$sp;proto=$pr;account=$var(account)')
    assert removed < outside.index("route(ADMIT);") < added
    assert outside.index("record_route();") > added
    # The instance's own front header is not the upstream's to write.
    assert "X-Gateway-Source" not in config


@pytest.mark.unit
def test_calls_go_by_load_with_failover_but_not_on_486() -> None:
    config = render_upstream(make_spec(first_reply_timeout_ms=1500)).config
    assert 'ds_select_dst("1", "10")' in route_body(config, "route[DISPATCH]")
    failure = route_body(config, "failure_route[WORKER_FAILURE]")
    assert 't_check_status("500|503")' in failure
    assert "486" not in failure.replace("not on 486", "")
    assert "$xavp(_dsdst_[1]=>uri) != $null && ds_next_dst()" in failure  # trap 1 guard
    assert 'modparam("tm", "fr_timer", 1500)' in config
    assert "dispatcher.reload" not in config.replace("Never 'dispatcher.reload'", "")
    assert "over on 500, 503, 408 and silence (not on 486" in config


@pytest.mark.unit
def test_probes_sanity_and_the_per_source_rate_limit() -> None:
    config = render_upstream(make_spec(ping_interval_s=3, invites_per_s=30)).config
    assert 'modparam("dispatcher", "ds_ping_interval", 3)' in config
    assert f'sanity_check("{SANITY_CHECKS}", "15")' in route_body(config, "request_route")
    assert 'modparam("pike", "reqs_density_per_unit", 60)' in config  # 30/s over 2 s
    assert 'modparam("pike", "sampling_time_unit", 2)' in config
    assert "pike_check_req()" in route_body(config, "route[FROM_OUTSIDE]")
    unlimited = render_upstream(make_spec(invites_per_s=0)).config
    assert "pike" not in unlimited.split("####### 1.")[1]
    assert "no per-source INVITE limit" in unlimited


@pytest.mark.unit
def test_the_header_describes_the_upstream_and_the_rest_is_the_fronts_config() -> None:
    spec = make_spec()
    config = render_upstream(spec).config
    header, body = config.split("####### 1. Global parameters", 1)
    assert header.startswith("#!KAMAILIO\n#\n# Upstream dispatcher: generated by "
                             "`gateway front upstream`")
    assert "#   i1: sip:10.0.0.2:5060;transport=udp" in header
    assert "#   i2: sip:10.0.0.3:5070;transport=udp" in header
    assert "sip.front_upstream" in header
    assert f"Run it:  kamailio -f <this file> -DD -E -Y {RUN}" in header
    assert f"kamcmd -s unix:{RUN}/kamailio_ctl dispatcher.list" in header
    assert all(line.startswith("#") or not line for line in header.splitlines())
    # Below the header, exactly what the front renderer writes for the same spec.
    front = render_config(spec.front_spec())
    assert front.endswith("####### 1. Global parameters" + body)
    assert "listen=udp:203.0.113.10:5060" in body


@pytest.mark.unit
def test_the_upstream_module_is_pure() -> None:
    probe = ("import sys\n"
             "for name in ('pjsua2', 'websockets', 'aiohttp', 'asyncio'):\n"
             "    sys.modules[name] = None\n"
             "import gateway.front.upstream\n")
    proc = subprocess.run([sys.executable, "-W", "error", "-c", probe], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


# The instance's side: who is believed ------------------------------------------------------

UPSTREAMS = (ipaddress.ip_address("10.0.0.9"), ipaddress.ip_address("2001:db8::9"))
RELAYED = ((HEADER, "198.51.100.7;port=5062;proto=tcp;account=trunk"), ("Via", "x"))


@pytest.mark.unit
def test_the_upstream_header_is_believed_only_from_an_upstream() -> None:
    assert upstream_source(RELAYED, "10.0.0.9", UPSTREAMS) == FrontSource(
        "198.51.100.7", 5062, "tcp", "trunk")
    assert upstream_source(RELAYED, "2001:db8::9", UPSTREAMS) is not None
    # A caller reaching the instance directly writes what it likes: ignored.
    assert upstream_source(RELAYED, "198.51.100.7", UPSTREAMS) is None
    assert upstream_source(RELAYED, "10.0.0.9", ()) is None
    assert upstream_source(RELAYED, "not-an-ip", UPSTREAMS) is None
    # From the upstream, but without (or with a broken) header: the sender stays the source.
    assert upstream_source((("Via", "x"),), "10.0.0.9", UPSTREAMS) is None
    assert upstream_source(((HEADER, "somewhere;port=1"),), "10.0.0.9", UPSTREAMS) is None


@pytest.mark.unit
def test_front_upstream_setting() -> None:
    text = "sip:\n  trunk_allow: [10.0.0.0/8, 198.51.100.0/24]\n  front_upstream: [10.0.0.9]\n"
    settings = parse_settings(load_yaml(text, "gw.yaml"), {})
    assert settings.sip.front_upstream == (ipaddress.ip_address("10.0.0.9"),)
    assert parse_settings(load_yaml("", "gw.yaml"), {}).sip.front_upstream == ()


@pytest.mark.unit
@pytest.mark.parametrize(("value", "reason"), [
    ("[upstream.example.com]", "sip.front_upstream: not an IP address: 'upstream.example.com'"),
    ("[127.0.0.1, 127.0.0.1]", "sip.front_upstream: 127.0.0.1 listed twice"),
    ("[10.0.0.9]", "sip.front_upstream: 10.0.0.9 is not in trunk_allow: the front would "
                   "refuse its calls with 403"),
])
def test_front_upstream_setting_errors(value: str, reason: str) -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_settings(load_yaml(f"sip:\n  front_upstream: {value}\n", "gw.yaml"), {})
    assert f"gw.yaml:2: {reason}" in [str(e) for e in info.value.errors]


# The command line ---------------------------------------------------------------------------

ARGS = ["front", "upstream", "--listen", "127.0.0.1:35260",
        "--instance", "127.0.0.1:35261", "--instance", "127.0.0.1:35262"]


@pytest.mark.unit
def test_the_command_prints_the_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*ARGS, "--run-dir", str(RUN), "--invites-per-s", "20"]) == 0
    out, err = capsys.readouterr()
    expected = render_upstream(UpstreamSpec(
        listen=(Listen("udp", "127.0.0.1", 35260),),
        instances=(Instance("127.0.0.1", 35261), Instance("127.0.0.1", 35262)),
        run_dir=RUN, invites_per_s=20))
    assert out == expected.config
    assert "use -o FILE" in err


@pytest.mark.unit
def test_the_command_writes_the_config_and_its_lists(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, config = tmp_path / "run", tmp_path / "upstream.cfg"
    assert main([*ARGS, "--run-dir", str(run_dir), "-o", str(config),
                 "--allow", "198.51.100.0/24", "--ping-interval", "2"]) == 0
    err = capsys.readouterr().err
    assert f"run: kamailio -f {config} -DD -E -Y {run_dir}" in err
    assert 'modparam("dispatcher", "ds_ping_interval", 2)' in config.read_text()
    assert (run_dir / "dispatcher.list").read_text().count("duid=") == 2
    assert (run_dir / "address.list").read_text().splitlines()[1:] == [
        "1 198.51.100.0 24 0 trunk"]
    assert run_dir.stat().st_mode & 0o777 == 0o700
    for path in (config, run_dir / "dispatcher.list", run_dir / "address.list"):
        assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.unit
@pytest.mark.parametrize(("extra", "message"), [
    (["--instance", "gw2:5060"], "argument --instance: 'gw2:5060': 'gw2' is not an IP address"),
    (["--allow", "10.0.0.0/33"], "argument --allow: '10.0.0.0/33' is not an IP network"),
    (["--instance", "127.0.0.1:35261"], "error: instance 127.0.0.1:35261 is listed twice"),
    (["--instance", "127.0.0.1:35260"], "error: instance 127.0.0.1:35260 is the upstream's own"),
])
def test_the_command_explains_bad_input(extra: list[str], message: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    try:
        status = main([*ARGS, *extra])
    except SystemExit as exc:  # argparse's own usage errors
        status = int(exc.code or 0)
    assert status == 2
    assert message in capsys.readouterr().err


@pytest.mark.unit
def test_the_command_says_when_it_cannot_write(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main([*ARGS, "--run-dir", str(blocker / "run"), "-o", str(tmp_path / "u.cfg")]) == 1
    assert f"error: cannot write {blocker / 'run'}" in capsys.readouterr().err


@pytest.mark.unit
def test_the_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["front", "upstream", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--listen IP:PORT", "--instance IP:PORT", "--allow NET", "-o FILE",
                   "--run-dir DIR", "sip.front_upstream"):
        assert option in out


# Kamailio's own check -------------------------------------------------------------------------

@pytest.mark.sip
@pytest.mark.timeout(60)
async def test_kamailio_accepts_the_rendered_config(run_dir: Path) -> None:
    try:
        binary = find_kamailio()
    except KamailioNotFound as exc:
        pytest.skip(str(exc))
    spec = make_spec(run_dir, listen=(Listen("udp", "127.0.0.1", 35260),),
                     instances=(Instance("127.0.0.1", 35261), Instance("127.0.0.1", 35262)))
    files = render_upstream(spec)
    paths = spec.front_spec().paths
    config = run_dir / "upstream.cfg"
    config.write_text(files.config)
    paths.dispatcher_list.write_text(files.dispatcher_list)
    assert files.address_list is not None
    paths.address_list.write_text(files.address_list)
    await check_config(binary, config)
