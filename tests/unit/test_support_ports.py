"""The test harness's port pool: outside the kernel's choice, distinct across processes."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ports

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ports.state"
    monkeypatch.setattr(ports, "STATE_FILE", path)
    return path


def test_the_pool_avoids_the_ephemeral_and_the_default_rtp_ranges() -> None:
    assert ports.pool(range(32_768, 61_000)) == range(22_000, 32_768)
    assert ports.pool(range(15_000, 65_536)) == range(10_000, 15_000)
    assert ports.pool(range(40_000, 50_000)) == range(22_000, 40_000)


def test_an_ephemeral_range_that_leaves_nothing_is_a_clear_error() -> None:
    with pytest.raises(ports.PortError, match="leaves no ports"):
        ports.pool(range(1_024, 65_536))


def test_the_ephemeral_range_is_read_from_the_kernel_file(tmp_path: Path) -> None:
    path = tmp_path / "range"
    path.write_text("40000\t50000\n")
    assert ports.ephemeral_range(path) == range(40_000, 50_001)
    assert ports.ephemeral_range(tmp_path / "missing") == range(32_768, 61_000)


def test_reservations_follow_each_other_and_keep_their_alignment(state: Path) -> None:
    first = ports.reserve(3)
    block = ports.reserve(4, align=2)
    single = ports.free_udp_port()
    assert block % 2 == 0
    assert first + 3 <= block
    assert single >= block + 4
    assert int(state.read_text()) == single + 1
    low = ports.pool(ports.ephemeral_range())
    assert all(p in low for p in (first, block + 3, single))


def test_a_port_in_use_is_skipped(state: Path) -> None:
    base = ports.reserve(1) + 1
    state.write_text(str(base))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", base + 1))
        block = ports.reserve(2)
    assert block >= base + 2


def test_the_counter_wraps_to_the_start_of_the_pool(state: Path) -> None:
    low = ports.pool(ports.ephemeral_range())
    state.write_text(str(low.stop - 1))
    assert ports.reserve(4, align=2) in range(low.start, low.start + 200)


def test_a_garbled_state_file_starts_afresh(state: Path) -> None:
    state.write_text("not a number")
    assert ports.reserve(1) in ports.pool(ports.ephemeral_range())


def test_more_ports_than_the_pool_holds_is_refused(state: Path) -> None:
    with pytest.raises(ports.PortError, match="cannot reserve"):
        ports.reserve(70_000)


def test_processes_that_reserve_at_once_never_share_a_port(state: Path) -> None:
    code = ("import sys; from pathlib import Path; from tests.support import ports; "
            "ports.STATE_FILE = Path(sys.argv[1]); "
            "print(' '.join(str(ports.free_udp_port_block(4)) for _ in range(40)))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(state)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True) for _ in range(3)]
    bases: list[int] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        bases += [int(b) for b in out.split()]
    taken = [p for b in bases for p in range(b, b + 4)]
    assert len(bases) == 120
    assert len(set(taken)) == len(taken)
