"""The multi-core topology's comparisons: the proxy at many cores against one core and Envoy.

Issue 21's goals are per core: they are measured with the target alone on one pinned CPU.
A multi-core run cannot be, on a machine with as many CPUs as the proxy has cores: the load
generator and the backend share those CPUs with it. Its figures are therefore a scaling
check, reported in a section of their own and judged against no goal. The scaling figure is
the proxy's rps at many cores ÷ its rps at one core, paired round by round, beside Envoy's.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.measured import Targets
from bench.rounds import Spread, paired_ratios

__all__ = ["ScalingCheck", "ScalingSet", "rps_ratio"]


@dataclass(frozen=True)
class ScalingSet:
    """One setup of a multi-core topology, by target name: the proxy at many cores, the
    same proxy at one core, Envoy with as many workers as the proxy has cores, and Envoy
    with one worker.

    Envoy's own many ÷ one is the yardstick: what the machine lets a native proxy gain from
    the extra cores while the load generator and the backend share them.
    """

    title: str
    many: str
    one: str
    envoy: str
    envoy_one: str

    @property
    def targets(self) -> tuple[str, str, str, str]:
        return (self.many, self.one, self.envoy, self.envoy_one)


@dataclass(frozen=True)
class ScalingCheck:
    """What makes a topology a multi-core one: its core count, where its processes ran
    (said in its section's header) and the setups it compares."""

    cores: int
    setup: str
    sets: tuple[ScalingSet, ...]

    def __post_init__(self) -> None:
        if self.cores < 2:
            raise ValueError(f"a scaling check needs at least two cores, not {self.cores}")
        names = [name for s in self.sets for name in s.targets]
        if len(set(names)) != len(names):
            raise ValueError(f"a target belongs to one set only: {names}")


def rps_ratio(targets: Targets, mine: str, reference: str, connections: int) -> Spread | None:
    """``mine``'s rps ÷ ``reference``'s at ``connections``, paired by round."""
    a, b = targets.get(mine), targets.get(reference)
    if a is None or b is None:
        return None
    return Spread.of(
        paired_ratios(
            [run.rps for run in a.runs.get(connections, [])],
            [run.rps for run in b.runs.get(connections, [])],
        )
    )
