"""The container image, built for real with podman, answers a phone call.

The image is built once per module from this checkout (``docker/build.sh`` on a locally made
``debian:bookworm-slim``, see :mod:`tests.docker.podman`); the first test to need it pays for
the build (about 10 minutes cold on 2 cores, seconds when podman's layer cache holds). Each
container runs with host networking on 127.0.0.1 ports chosen free here, with the image's own
dialplan (one assistant that greets the caller) behind the Kamailio front, and is stopped and
removed at the end whatever happened.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import scaled
from tests.docker.podman import (
    BASE_LABEL,
    BuiltImage,
    Container,
    build_image,
    cache_dir,
    run_image,
)
from tests.support.audio import rms_dbfs, silence_pcm16, speech_like, write_g711
from tests.support.capture import Capture
from tests.support.ports import free_tcp_port, free_udp_port, free_udp_port_block
from tests.support.rtp import decode_stream, rtp_streams
from tests.support.sipp import run_sipp

# A cold build (the base tarball, then pjsua2 from source inside the image) takes ~10 min on
# 2 cores; whichever test runs first pays for it.
pytestmark = [pytest.mark.docker, pytest.mark.timeout(scaled(3000))]

#: The image's non-root user (docker/Dockerfile).
GATEWAY_UID = 10001


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    if os.geteuid() != 0:
        pytest.skip("the docker tier runs rootful podman: run it as root (CI does)")
    log = tmp_path_factory.mktemp("image") / "build.log"
    return build_image(cache_dir(), log)


@pytest.fixture
def cache() -> Path:
    return cache_dir()


def http_status(url: str, timeout_s: float = 3.0) -> int | None:
    """The HTTP status of ``GET url``, ``None`` when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def wait_ready(container: Container, control: str, timeout_s: float) -> None:
    """Until ``/readyz`` says 200; fails at once if the container exits."""
    deadline = time.monotonic() + scaled(timeout_s)
    while http_status(f"{control}/readyz") != 200:
        state = container.state()
        if not state.get("Running"):
            pytest.fail(f"container exited ({state.get('ExitCode')}):\n{container.logs()[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"/readyz not 200 within {timeout_s} s:\n{container.logs()[-4000:]}")
        time.sleep(0.5)


class Ports:
    """Free 127.0.0.1 ports for one containerised gateway (host networking)."""

    def __init__(self) -> None:
        self.sip = free_udp_port()
        self.control = free_tcp_port()
        self.simulator = free_tcp_port()
        self.workers = free_udp_port_block(2)
        self.rtp = free_udp_port_block(40)

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.control}"


def container_config(ports: Ports) -> dict[str, object]:
    """docker/gateway.yaml moved onto loopback: two workers behind the Kamailio front."""
    return {
        "realtime": {"url": "embedded"},
        "simulator": {"host": "127.0.0.1", "port": ports.simulator, "tts": "espeak"},
        "sip": {
            "transports": [{"type": "udp", "host": "127.0.0.1", "port": ports.sip}],
            "trunk_allow": ["127.0.0.0/8"],
            "workers": 2, "front": "kamailio", "worker_port_start": ports.workers,
            "rtp_port_start": ports.rtp, "rtp_port_range": 40,
        },
        "control": {"host": "127.0.0.1", "port": ports.control, "drain_timeout_s": 5},
        "records": {"database": "/var/lib/gateway/calls.db"},
        "dialplan": "dialplan.yaml",  # beside the config: the image's /etc/gateway/dialplan.yaml
    }


@pytest.fixture
def running(image: BuiltImage, cache: Path, tmp_path: Path) -> Iterator[tuple[Container, Ports]]:
    ports = Ports()
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(container_config(ports)))
    config.chmod(0o644)
    with Container(cache, tmp_path, volumes=[(config, "/etc/gateway/gateway.yaml")]) as box:
        # Generous: in CI this tier runs beside the suite at low priority.
        wait_ready(box, ports.control_url, timeout_s=180)
        yield box, ports


def test_image_is_small_without_build_tools_and_not_root(image: BuiltImage,
                                                        cache: Path) -> None:
    config = image.config
    assert config["User"] == "gateway"
    assert config["Entrypoint"] == ["/usr/bin/tini", "--", "/opt/gateway/bin/gateway"]
    assert config["Cmd"] == ["run"]
    env_list = config["Env"]
    assert isinstance(env_list, list)
    env = dict(str(e).partition("=")[::2] for e in env_list)
    assert env["GATEWAY_CONFIG"] == "/etc/gateway/gateway.yaml"
    # Built on the local base (podman import + the CA layer), no registry involved.
    labels = config["Labels"]
    assert isinstance(labels, dict) and BASE_LABEL in labels
    health = image.healthcheck
    assert health is not None, "no HEALTHCHECK: built without --format docker?"
    assert health["Test"] == ["CMD", "/opt/gateway/bin/python", "/opt/gateway/healthcheck.py"]
    # Debian bookworm-slim is ~75 MB; Python, Kamailio, espeak-ng, numpy and pjsua2 on top.
    assert image.size_bytes < 400 * 1024 * 1024, f"image is {image.size_bytes / 1e6:.0f} MB"
    probe = ("for t in gcc cc g++ make swig; do command -v $t; done; "
             "ls /usr/include/python3.11 2>/dev/null; "
             "/usr/bin/python3 -c 'import sys; print(sys.version)'; "
             "/opt/gateway/bin/python -c 'import sys, pjsua2, gateway.sip.native as n; "
             "print(sys.executable, pjsua2.UaConfig().maxCalls, n.library_path().exists())'; "
             "id -u; command -v kamailio; command -v espeak-ng")
    done = run_image(cache, "-c", probe, entrypoint="/bin/sh")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split()
    # No compiler, no make, no SWIG, no Python headers: only what runs.
    assert not {"gcc", "cc", "g++", "make", "swig"} & {Path(w).name for w in lines}
    assert "/usr/include/python3.11" not in done.stdout
    # Python 3.11 from Debian; pjsua2 is the source build (512 call slots) with its C port.
    assert done.stdout.startswith("3.11."), done.stdout
    assert "/opt/gateway/bin/python 512 True" in done.stdout, done.stdout
    assert str(GATEWAY_UID) in lines
    assert "/usr/sbin/kamailio" in lines and "/usr/bin/espeak-ng" in lines, done.stdout


def test_default_configuration_is_valid(image: BuiltImage, cache: Path) -> None:
    done = run_image(cache, "config", "check")
    assert done.returncode == 0, done.stdout + done.stderr


def test_healthz_answers_and_the_health_check_passes(
        running: tuple[Container, Ports]) -> None:
    box, ports = running
    assert http_status(f"{ports.control_url}/healthz") == 200
    # The image's HEALTHCHECK (docker/healthcheck.py, reading the mounted config) run by podman.
    check = box.podman("healthcheck", "run", box.name, timeout_s=60)
    assert check.returncode == 0, check.stdout + check.stderr
    health = box.state()["Health"]
    assert isinstance(health, dict) and health["Status"] == "healthy", health
    # It found the control port in the mounted configuration, not the image's default.
    assert health["Log"][-1]["Output"].strip() == f"healthy: {ports.control_url}/healthz"
    top = box.podman("exec", box.name, "id", "-u", timeout_s=30)
    assert top.stdout.strip() == str(GATEWAY_UID)


def test_a_sipp_call_to_the_container_gets_the_agent_greeting(
        running: tuple[Container, Ports], tmp_path: Path) -> None:
    box, ports = running
    # The Kamailio front inside the image took the configured port, with two workers behind.
    logs = box.logs()
    assert "front: kamailio pid" in logs, logs[-3000:]
    audio = write_g711(tmp_path / "silence.ulaw", silence_pcm16(9000))
    media_port = free_udp_port_block(4)
    with Capture(tmp_path / "rtp.pcap", f"udp and dst port {media_port}") as cap:
        result = run_sipp("uac_pcmu", f"127.0.0.1:{ports.sip}", log_dir=tmp_path,
                          media_port=media_port, hold_ms=9000, service="100",
                          keys={"audio_file": str(audio)}, timeout_s=scaled(60))
    assert result.ok, result.describe() + "\n" + box.logs()[-3000:]
    assert result.final_statuses() == [200]
    streams = [s for s in rtp_streams(cap.packets()) if s.payload_type == 0]
    assert len(streams) == 1, [(s.sport, len(s.packets)) for s in streams]
    back = decode_stream(streams[0])
    levels = [rms_dbfs(back[i:i + 320]) for i in range(0, len(back) - 319, 320)]
    # The greeting (espeak-ng in the image): at least half a second of loud, speech-like audio
    # (judged from its first to its last voiced frame: the call goes on in silence after it).
    assert sum(1 for db in levels if db > -30) >= 25, max(levels)
    voiced = [i for i, db in enumerate(levels) if db > -45]
    assert speech_like(back[voiced[0] * 320:(voiced[-1] + 1) * 320])
    # The control process (running as uid 10001) stored the call in /var/lib/gateway/calls.db.
    count = ("import sqlite3, time\n"
             "for _ in range(100):\n"
             "    n = sqlite3.connect('/var/lib/gateway/calls.db').execute(\n"
             "        'SELECT count(*) FROM calls').fetchone()[0]\n"
             "    if n: break\n"
             "    time.sleep(0.1)\n"
             "print(n)\n")
    stored = box.podman("exec", box.name, "/opt/gateway/bin/python", "-c", count, timeout_s=30)
    assert stored.stdout.strip() == "1", stored.stdout + stored.stderr
    # SIGTERM through tini: the gateway drains (nothing live) and exits cleanly.
    started = time.monotonic()
    assert box.stop(timeout_s=30) == 0, box.logs()[-3000:]
    assert time.monotonic() - started < scaled(25)
    assert box.state().get("Running") is False
