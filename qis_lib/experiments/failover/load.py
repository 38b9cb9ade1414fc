"""What load a failover run puts on the store: its settings, its packets, its schedule."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ...core.packet import OutcomePacket

# node: the node the client's last call went to (for an ok operation, the one that answered)
OP_COLUMNS = ["op", "thread", "kind", "due", "start", "latency", "outcome", "error", "node", "packet_id", "hits"]


@dataclass(frozen=True)
class LoadSpec:
    """What load to run and when to kill. Times are seconds from the start of the load."""

    duration: float = 30.0
    rate: float = 30.0  # operations per second, all threads together
    threads: int = 4
    deposit_share: float = 0.5  # the rest are queries
    outages: tuple[tuple[float, float], ...] = ((10.0, 14.0),)  # (kill at, restart at)
    min_after: float = 3.0  # keep the load going at least this long after the last recovery
    preload: int = 0  # packets deposited (and ledgered) before the load starts
    top_k: int = 5
    seed: int = 0
    recovery_timeout: float = 180.0

    def __post_init__(self) -> None:
        for name in ("duration", "rate", "min_after", "recovery_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0 or (value == 0 and name in ("duration", "rate", "recovery_timeout")):
                raise ValueError(f"{name} must be a positive number of {'ops/s' if name == 'rate' else 'seconds'}, "
                                 f"got {value!r}")
        for name in ("threads", "preload", "top_k", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name in ("threads", "top_k") else 0):
                raise ValueError(f"{name} must be a {'positive' if name in ('threads', 'top_k') else 'non-negative'} "
                                 f"int, got {value!r}")
        if isinstance(self.deposit_share, bool) or not isinstance(self.deposit_share, (int, float)) \
                or not 0.0 <= self.deposit_share <= 1.0:
            raise ValueError(f"deposit_share must be between 0 and 1, got {self.deposit_share!r}")
        previous = 0.0
        for outage in self.outages:
            if not (isinstance(outage, (tuple, list)) and len(outage) == 2):
                raise ValueError(f"each outage must be (kill_at, restart_at), got {outage!r}")
            kill_at, restart_at = outage
            if not (previous <= kill_at < restart_at < self.duration):
                raise ValueError(f"outages must be ordered, non-overlapping (kill_at, restart_at) pairs with "
                                 f"kill_at < restart_at < duration ({self.duration}); got {list(self.outages)}")
            previous = restart_at
        object.__setattr__(self, "outages", tuple((float(k), float(r)) for k, r in self.outages))


def seed_texts() -> list[tuple[str, str, str]]:
    """(problem, domain, agent) of the project's 40 hand-written packets."""
    from ...infra.seeds import load_seed_packets

    return [(p.problem_description, p.domain_tags[0], p.agent_id) for p in load_seed_packets(now=0.0)]


def make_packet(index: int, now: float, seeds: Sequence[tuple[str, str, str]]) -> OutcomePacket:
    """Deposit number `index` of a run: a seed problem made unique, so every deposit has its own id."""
    problem, domain, agent = seeds[index % len(seeds)]
    outcomes = ("resolved", "partial", "contradicted", "open")
    return OutcomePacket(
        problem_description=f"{problem} (report {index})", outcome_type=outcomes[index % 4],
        confidence=round(0.5 + (index % 50) / 100, 2), delta_summary=f"failover run deposit {index}",
        domain_tags=(domain,), timestamp=now, agent_id=f"{agent}-f{index % 7}")


@dataclass(frozen=True)
class Schedule:
    """The whole open-loop schedule of a run, drawn before the clock starts.

    Operation i is due at i / rate seconds and runs on thread i % threads; it is a deposit
    of packet `deposit_index[i]` if `is_deposit[i]`, else a query for seed problem
    `query_pick[i]`.
    """

    spec: LoadSpec
    seeds: list[tuple[str, str, str]]
    now: float  # the packets' timestamp (wall clock at the start of the run)
    is_deposit: np.ndarray
    deposit_index: np.ndarray
    query_pick: np.ndarray

    @classmethod
    def draw(cls, spec: LoadSpec, seeds: list[tuple[str, str, str]], now: float) -> "Schedule":
        """Enough operations for the longest the run can last (every recovery taking its timeout)."""
        max_ops = int(math.ceil(spec.rate * (spec.duration + spec.recovery_timeout * max(1, len(spec.outages))
                                              + spec.min_after))) + 1
        rng = np.random.default_rng(spec.seed)
        is_deposit = rng.random(max_ops) < spec.deposit_share
        deposit_index = np.cumsum(is_deposit) - 1 + spec.preload  # packet number of each deposit op
        query_pick = rng.integers(0, len(seeds), max_ops)
        return cls(spec, seeds, now, is_deposit, deposit_index, query_pick)

    @property
    def max_ops(self) -> int:
        return len(self.is_deposit)

    def due(self, i: int) -> float:
        return i / self.spec.rate

    def packet(self, i: int) -> OutcomePacket | None:
        """The packet operation i deposits, or None if it is a query."""
        return make_packet(int(self.deposit_index[i]), self.now, self.seeds) if self.is_deposit[i] else None

    def query(self, i: int) -> str:
        return self.seeds[self.query_pick[i]][0]

    def preload_packets(self) -> list[OutcomePacket]:
        return [make_packet(j, self.now, self.seeds) for j in range(self.spec.preload)]

    def texts(self) -> list[str]:
        """Every text the run is expected to embed: the seed problems (queries) and the problems
        of the preload and of the deposits due within `duration`."""
        expected = int(self.is_deposit[:int(self.spec.rate * self.spec.duration) + 1].sum())
        return [s[0] for s in self.seeds] + [make_packet(j, self.now, self.seeds).problem_description
                                             for j in range(self.spec.preload + expected)]
