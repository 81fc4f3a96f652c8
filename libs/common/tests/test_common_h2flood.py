"""The sans-io flood accounting of an HTTP/2 connection (time passed in, no sockets)."""

from __future__ import annotations

import pytest
from gossamer_common.h2flood import FloodGuard, FloodLimits


def test_control_frames_count_only_while_writes_are_backed_up() -> None:
    guard = FloodGuard(FloodLimits(max_pending_control_frames=3))
    # A client that reads its ACKs may ping as often as it likes.
    assert not any(guard.control_frame() for _ in range(10_000))
    assert guard.pending_control_frames == 0
    guard.backed_up()
    assert [guard.control_frame() for _ in range(4)] == [False, False, False, True]
    assert guard.pending_control_frames == 4


def test_frames_owed_in_one_go_count_as_many() -> None:
    guard = FloodGuard(FloodLimits(max_pending_control_frames=5))
    assert not guard.control_frame(100)  # writes flow: nothing counted
    guard.backed_up()
    assert not guard.control_frame(5)
    assert guard.control_frame(1)
    assert guard.pending_control_frames == 6


def test_drained_writes_forgive_the_frames_owed() -> None:
    guard = FloodGuard(FloodLimits(max_pending_control_frames=2))
    guard.backed_up()
    guard.control_frame()
    guard.control_frame()
    guard.drained()
    assert guard.pending_control_frames == 0
    assert not guard.writes_backed_up
    guard.backed_up()
    assert not guard.control_frame()
    assert not guard.control_frame()
    assert guard.control_frame()


def test_a_burst_of_resets_passes_the_limit() -> None:
    guard = FloodGuard(FloodLimits(reset_burst=5, reset_rate=10.0))
    verdicts = [guard.client_reset(100.0) for _ in range(6)]
    assert verdicts == [False] * 5 + [True]


def test_resets_spread_over_time_drain_from_the_bucket() -> None:
    guard = FloodGuard(FloodLimits(reset_burst=5, reset_rate=10.0))
    # 10 a second forgiven, 10 a second arriving: never over, for as long as it goes on.
    assert not any(guard.client_reset(100.0 + i * 0.1) for i in range(10_000))


def test_a_steady_rate_above_the_forgiven_one_passes_the_limit() -> None:
    guard = FloodGuard(FloodLimits(reset_burst=5, reset_rate=10.0))
    # 20 a second against 10 forgiven: the bucket gains 0.5 a reset and spills after ~10.
    verdicts = [guard.client_reset(100.0 + i * 0.05) for i in range(20)]
    assert True in verdicts
    assert verdicts.index(True) >= 5


def test_time_going_backwards_does_not_refill_the_bucket() -> None:
    guard = FloodGuard(FloodLimits(reset_burst=2, reset_rate=1000.0))
    assert not guard.client_reset(50.0)
    assert not guard.client_reset(49.0)  # a clock step back forgives nothing
    assert guard.client_reset(49.0)


def test_limits_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="max_pending_control_frames"):
        FloodLimits(max_pending_control_frames=0)
    with pytest.raises(ValueError, match="reset_burst"):
        FloodLimits(reset_burst=0)
    with pytest.raises(ValueError, match="reset_rate"):
        FloodLimits(reset_rate=-1.0)
