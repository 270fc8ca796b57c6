"""Audio level sampling: nothing when nobody watches, the period, the scale, the watched set."""

from __future__ import annotations

import pytest

from gateway.sip.levels import LevelSample, LevelWatch, scale

pytestmark = [pytest.mark.unit, pytest.mark.timeout(5)]

LEGS = [(1, (255, 0)), (2, (51, 102)), (3, None)]


def _read(leg: tuple[int, int] | None) -> tuple[int, int] | None:
    return leg


def test_scale_is_clamped_to_0_1() -> None:
    assert [scale(v) for v in (-5, 0, 51, 255, 300)] == [0.0, 0.0, 0.2, 1.0, 1.0]


def test_nothing_is_read_while_nobody_watches() -> None:
    watch = LevelWatch()
    reads: list[object] = []
    assert watch.sample(10.0, LEGS, lambda leg: reads.append(leg)) == [] and reads == []
    assert not watch.active


def test_all_calls_or_some_are_sampled_once_a_period() -> None:
    watch = LevelWatch(period_s=0.25)
    watch.watch(True, ())
    assert watch.sample(10.0, LEGS, _read) == [LevelSample(1, 1.0, 0.0),
                                               LevelSample(2, 0.2, 0.4)]  # 3: no media
    assert watch.sample(10.1, LEGS, _read) == []  # not yet due
    watch.watch(False, [2])
    assert watch.sample(10.26, LEGS, _read) == [LevelSample(2, 0.2, 0.4)]
    watch.watch(False, ())
    assert watch.sample(20.0, LEGS, _read) == [] and not watch.active
