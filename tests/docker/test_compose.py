"""Every compose file in ``docker/`` is valid for Compose (Debian's ``docker-compose config``).

``docker-compose config`` parses the file against the Compose schema, interpolates the
variables and resolves paths, without a Docker daemon. The configs the stacks mount exist,
the gateway configurations load, the FreeSWITCH samples are well-formed XML, and the OpenAI
stack refuses to start without its secrets rather than start without them.
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from gateway.config import load_settings
from tests.conftest import scaled

pytestmark = [pytest.mark.docker, pytest.mark.timeout(scaled(120))]

DOCKER = Path(__file__).resolve().parents[2] / "docker"
COMPOSE_FILES = sorted(DOCKER.glob("compose*.yaml"))
#: What the OpenAI stack needs from .env (dummies here: nothing is called).
OPENAI_ENV = {"OPENAI_API_KEY": "sk-test-not-a-key",
              "OPENAI_WEBHOOK_SECRET": "whsec_dGVzdC1zZWNyZXQtbm90LXJlYWwtMDEyMzQ1Njc4OQ=="}


def compose(*args: str, env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # Only the variables given: the test must not depend on what the caller exported.
    base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run(["docker-compose", *args], env={**base, **env}, cwd=cwd,
                          capture_output=True, text=True, timeout=scaled(60), check=False)


def mounts(service: Mapping[str, object]) -> list[tuple[str, str]]:
    """``(source, target)`` of a service's volumes, in v1's short or v2's long form."""
    out: list[tuple[str, str]] = []
    for volume in service.get("volumes", []):  # type: ignore[attr-defined]
        if isinstance(volume, dict):
            out.append((str(volume.get("source", "")), str(volume["target"])))
        else:
            source, target = str(volume).split(":")[:2]
            out.append((source, target))
    return out


def test_there_are_compose_files() -> None:
    assert [p.name for p in COMPOSE_FILES] == ["compose.openai.yaml", "compose.yaml"]


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_file_is_valid(path: Path, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in OPENAI_ENV.items()))
    profiles = ["--profile", "asterisk", "--profile", "freeswitch"]
    done = compose("-f", str(path), "--env-file", str(env_file), *profiles, "config",
                   env={}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    services = config["services"]
    assert services["gateway"]["image"] == "gateway:latest"
    assert services["gateway"]["build"]["context"] == str(DOCKER.parent)
    assert (DOCKER.parent / services["gateway"]["build"]["dockerfile"]).is_file()
    for name, service in services.items():
        for source, _target in mounts(service):
            if source.startswith("/"):  # a bind mount (named volumes are plain names)
                assert Path(source).is_file(), f"{path.name}: {name} mounts missing {source}"


def test_simulator_stack_uses_host_networking_and_the_pbx_profiles(tmp_path: Path) -> None:
    done = compose("-f", str(DOCKER / "compose.yaml"), "--profile", "asterisk",
                   "--profile", "freeswitch", "config", env={}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    assert {s["network_mode"] for s in services.values()} == {"host"}
    # `up` alone starts the gateway; each PBX only with its profile.
    assert "profiles" not in services["gateway"]
    assert services["asterisk"]["profiles"] == ["asterisk"]
    assert services["freeswitch"]["profiles"] == ["freeswitch"]
    targets = {target for s in services.values() for _source, target in mounts(s)}
    assert {"/etc/gateway/gateway.yaml", "/etc/asterisk/pjsip.conf",
            "/etc/asterisk/extensions.conf",
            "/etc/freeswitch/sip_profiles/external/ai-gateway.xml"} <= targets


def test_openai_stack_needs_its_secrets_and_publishes_the_webhook_port(tmp_path: Path) -> None:
    path = str(DOCKER / "compose.openai.yaml")
    missing = compose("-f", path, "config", env={}, cwd=tmp_path)
    assert missing.returncode != 0
    assert "OPENAI_API_KEY" in missing.stderr
    done = compose("-f", path, "config", env=OPENAI_ENV, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    gateway = yaml.safe_load(done.stdout)["services"]["gateway"]
    assert gateway["environment"]["OPENAI_WEBHOOK_SECRET"] == OPENAI_ENV["OPENAI_WEBHOOK_SECRET"]
    published = {(p["published"], p["protocol"]) for p in gateway["ports"]}
    settings = load_settings(DOCKER / "gateway.openai.yaml", OPENAI_ENV)
    assert (settings.control.port, "tcp") in published
    assert settings.openai_calls.enabled
    # Exactly the RTP range the configuration uses is published, and the SIP port.
    sip = settings.sip
    rtp = set(range(sip.rtp_port_start, sip.rtp_port_start + sip.rtp_port_range))
    assert {port for port, proto in published if proto == "udp"} == rtp | {5070}
    assert sip.public_address is not None


def test_image_configuration_loads() -> None:
    settings = load_settings(DOCKER / "gateway.yaml", {})
    assert settings.realtime.embedded
    assert settings.dialplan.endswith("dialplan.yaml")
    assert {(t.type, t.port) for t in settings.sip.transports} == {("udp", 5070), ("tcp", 5070)}


@pytest.mark.parametrize("name", ["ai-gateway.xml", "ai-gateway-dialplan.xml"])
def test_freeswitch_samples_are_well_formed(name: str) -> None:
    root = ET.parse(DOCKER / "freeswitch" / name).getroot()
    assert root.tag == "include"
