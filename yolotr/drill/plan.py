"""The campaign's faults, drawn from a seed before anything runs: which kinds, at which steps, on which rank.

Five kinds (issue #16):

    kill_rank           kill -9 of one rank once the run has reached the step; the launcher tears the job down
    kill_during_write   kill -9 of every process of the job while the first save at or after the step is being
                        committed (its files written, its manifest not), as a lost node loses them
    sigterm             SIGTERM to the launcher, a preemption notice: the ranks checkpoint and exit 75
    corrupt_checkpoint  between two attempts, 16 bytes of the newest valid checkpoint flipped: the next start must
                        pass over it to the one before
    nan                 a NaN loss on one rank at the step (`faults.nan_loss_at`); the reference run skips that step
                        (`faults.skip_steps`)

The first three end an attempt of the job; the supervisor starts the next one with `--resume auto`. A corrupted
checkpoint needs an attempt boundary, so each is attached to one of them; a NaN needs no restart at all.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from yolotr.errors import UsageError

KINDS = ("kill_rank", "kill_during_write", "sigterm", "corrupt_checkpoint", "nan")
ENDS_ATTEMPT = ("kill_rank", "kill_during_write", "sigterm")


@dataclass
class Fault:
    index: int
    kind: str
    step: int | None  # when it fires; a corrupted checkpoint has none until it is done (the checkpoint's step)
    rank: int | None = None  # kill_rank, nan: drawn once the world size is known (plan.draw_ranks)
    boundary: int | None = None  # corrupt_checkpoint: after the attempt that this (attempt-ending) fault ends

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Plan:
    seed: int
    max_steps: int
    checkpoint_every: int
    faults: list[Fault]

    @property
    def ending(self) -> list[Fault]:
        """The faults that end an attempt, in the order they fire."""
        return sorted((f for f in self.faults if f.kind in ENDS_ATTEMPT), key=lambda f: f.step)

    @property
    def nans(self) -> list[Fault]:
        return sorted((f for f in self.faults if f.kind == "nan"), key=lambda f: f.step)

    def corrupt_after(self, ending: Fault) -> list[Fault]:
        return [f for f in self.faults if f.kind == "corrupt_checkpoint" and f.boundary == ending.index]

    def draw_ranks(self, world_size: int) -> None:
        """Ranks come from the seed too, on a stream of their own: the steps do not depend on the world size."""
        rng = random.Random(f"{self.seed}/ranks")
        for fault in sorted(self.faults, key=lambda f: f.index):
            if fault.kind in ("kill_rank", "nan"):
                fault.rank = rng.randrange(world_size)


def draw_kinds(count: int, rng: random.Random, kinds: tuple[str, ...] = KINDS) -> list[str]:
    """`count` kinds, balanced: every kind once per round, in a shuffled order, so every kind is drilled once the
    count reaches the number of kinds. A corrupted checkpoint needs an attempt boundary: in a round cut short, it is
    exchanged for an attempt-ending kind when none comes with it."""
    drawn: list[str] = []
    while len(drawn) < count:
        round_ = list(kinds)
        rng.shuffle(round_)
        take = round_[: count - len(drawn)]
        if "corrupt_checkpoint" in take and not any(k in ENDS_ATTEMPT for k in drawn + take):
            ending = [k for k in round_ if k in ENDS_ATTEMPT]
            if not ending:
                raise UsageError("--kinds: corrupt_checkpoint needs an attempt-ending kind among the kinds "
                                 f"({', '.join(ENDS_ATTEMPT)}): a damaged checkpoint only matters to the next start")
            take[take.index("corrupt_checkpoint")] = ending[0]
        drawn += take
    return drawn


def first_fault_step(checkpoint_every: int) -> int:
    """No fault before two checkpoints exist: a corrupted newest checkpoint must leave a valid one behind, and a run
    killed before its first checkpoint would have nothing to resume."""
    return 2 * checkpoint_every + 1


def steps_needed(count: int, checkpoint_every: int) -> int:
    """A run long enough for `count` faults: each step-placed fault gets two steps of room (NaNs are never
    adjacent, so the guard never sees consecutive skips and never rolls back)."""
    return first_fault_step(checkpoint_every) + 2 * count + 1


def make_plan(count: int, seed: int, *, max_steps: int, checkpoint_every: int,
              kinds: tuple[str, ...] = KINDS) -> Plan:
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise UsageError(f"--kinds: unknown fault kind(s) {', '.join(unknown)}; known: {', '.join(KINDS)}")
    rng = random.Random(seed)
    drawn = draw_kinds(count, rng, kinds)
    placed = [i for i, kind in enumerate(drawn) if kind != "corrupt_checkpoint"]
    first = first_fault_step(checkpoint_every)
    if len(placed) and max_steps - 1 - first + 1 < 2 * len(placed):
        raise UsageError(f"train.max_steps={max_steps} is too short for {count} faults with checkpoint.every="
                         f"{checkpoint_every}: at least {steps_needed(count, checkpoint_every)} steps (or fewer faults)")
    candidates = list(range(first, max_steps))
    rng.shuffle(candidates)
    taken: set[int] = set()
    nan_steps: set[int] = set()
    steps: dict[int, int] = {}
    for i in placed:
        nan = drawn[i] == "nan"
        step = next((s for s in candidates if s not in taken
                     and not (nan and (s - 1 in nan_steps or s + 1 in nan_steps))), None)
        if step is None:
            raise UsageError(f"train.max_steps={max_steps} leaves no room for fault {i + 1} ({drawn[i]}): at least "
                             f"{steps_needed(count, checkpoint_every)} steps")
        taken.add(step)
        if nan:
            nan_steps.add(step)
        steps[i] = step
    faults = [Fault(index=i, kind=kind, step=steps.get(i)) for i, kind in enumerate(drawn)]
    plan = Plan(seed=seed, max_steps=max_steps, checkpoint_every=checkpoint_every, faults=faults)
    # Each corrupted checkpoint goes to an attempt boundary of its own, drawn from the seed.
    boundaries = [f.index for f in plan.ending]
    rng.shuffle(boundaries)
    for fault in (f for f in faults if f.kind == "corrupt_checkpoint"):
        fault.boundary = boundaries.pop() if boundaries else plan.ending[-1].index
    return plan
