"""The campaign's faults, drawn from a seed before anything runs: which kinds, at which steps, on which rank.

The kinds:

    kill_rank           kill -9 of one rank once the run has reached the step; the launcher tears the job down
    kill_during_write   kill -9 of every process of the job while the first save at or after the step is being
                        committed (its files written, its manifest not), as a lost node loses them
    sigterm             SIGTERM to the launcher, a preemption notice: the ranks checkpoint and exit 75
    sigint              Ctrl-C: SIGINT to the launcher's process group, as a terminal sends it; the job stops as
                        for a preemption, with a checkpoint
    sigint_twice        Ctrl-C twice, the second while the first stop is under way: the job stops at once, and the
                        next start resumes from the newest checkpoint that verifies (never a torn one)
    stop_rank           SIGSTOP of one rank for a few seconds, then SIGCONT (a rank descheduled, a debugger attached)
    stop_job            Ctrl-Z and `fg`: SIGSTOP of every process of the job for a few seconds, then SIGCONT
    corrupt_checkpoint  between two attempts, 16 bytes of the newest valid checkpoint flipped: the next start must
                        pass over it to the one before
    nan                 a NaN loss on one rank at the step (`faults.nan_loss_at`); the reference run skips that step
                        (`faults.skip_steps`)

The attempt-ending kinds (ENDS_ATTEMPT) end an attempt of the job; the supervisor starts the next one with
`--resume auto`. A corrupted checkpoint needs an attempt boundary, so each is attached to one of them; a NaN and
the pauses need no restart at all.

Faults are placed before the first checkpoint too (EARLY_SHARE of them, in the steps before the second checkpoint):
a job that dies then has nothing to resume and starts again from step 0, and its records and ledger lines of the
lost steps must be superseded all the same. The faults that a corrupted checkpoint is attached to come later, once
two checkpoints exist, so that a valid one is left behind.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from yolotr.errors import UsageError

KINDS = ("kill_rank", "kill_during_write", "sigterm", "sigint", "sigint_twice", "stop_rank", "stop_job",
         "corrupt_checkpoint", "nan")
ENDS_ATTEMPT = ("kill_rank", "kill_during_write", "sigterm", "sigint", "sigint_twice")
PAUSES = ("stop_rank", "stop_job")  # done during an attempt, which goes on
RANKED = ("kill_rank", "nan", "stop_rank")  # the faults aimed at one rank
EARLY_SHARE = 0.2  # of the placed faults, those put before the checkpoints that a corruption needs


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
    def pauses(self) -> list[Fault]:
        return sorted((f for f in self.faults if f.kind in PAUSES), key=lambda f: f.step)

    @property
    def nans(self) -> list[Fault]:
        return sorted((f for f in self.faults if f.kind == "nan"), key=lambda f: f.step)

    def corrupt_after(self, ending: Fault) -> list[Fault]:
        return [f for f in self.faults if f.kind == "corrupt_checkpoint" and f.boundary == ending.index]

    def draw_ranks(self, world_size: int) -> None:
        """Ranks come from the seed too, on a stream of their own: the steps do not depend on the world size."""
        rng = random.Random(f"{self.seed}/ranks")
        for fault in sorted(self.faults, key=lambda f: f.index):
            if fault.kind in RANKED:
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
    """The first step after two checkpoints exist: a fault that a corrupted checkpoint is attached to comes no
    earlier, so that the corruption leaves a valid checkpoint behind. The early faults come before it."""
    return 2 * checkpoint_every + 1


def early_count(placed: int, checkpoint_every: int) -> int:
    """How many of the placed faults go before `first_fault_step`: EARLY_SHARE of them (one at least once there
    are two), no more than the early steps hold a step apart whatever steps were drawn first (a third of them)."""
    wanted = max(round(placed * EARLY_SHARE), 1 if placed >= 2 else 0)
    return min(wanted, -(-(first_fault_step(checkpoint_every) - 1) // 3))


def steps_needed(count: int, checkpoint_every: int) -> int:
    """A run long enough for `count` faults: each step-placed fault after the early ones gets two steps of room
    (NaNs are never adjacent, so the guard never sees consecutive skips and never rolls back)."""
    return first_fault_step(checkpoint_every) + 2 * (count - early_count(count, checkpoint_every)) + 1


def make_plan(count: int, seed: int, *, max_steps: int, checkpoint_every: int,
              kinds: tuple[str, ...] = KINDS) -> Plan:
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise UsageError(f"--kinds: unknown fault kind(s) {', '.join(unknown)}; known: {', '.join(KINDS)}")
    rng = random.Random(seed)
    drawn = draw_kinds(count, rng, kinds)
    placed = [i for i, kind in enumerate(drawn) if kind != "corrupt_checkpoint"]
    corruptions = [i for i, kind in enumerate(drawn) if kind == "corrupt_checkpoint"]
    # Each corruption gets an attempt boundary of its own, drawn from the seed, among the late faults.
    ending = [i for i in placed if drawn[i] in ENDS_ATTEMPT]
    rng.shuffle(ending)
    boundary_of = {c: (ending[k] if k < len(ending) else None) for k, c in enumerate(corruptions)}
    boundaries = {b for b in boundary_of.values() if b is not None}
    free = [i for i in placed if i not in boundaries]
    rng.shuffle(free)
    early = set(free[:early_count(len(placed), checkpoint_every)])
    late = [i for i in placed if i not in early]
    first = first_fault_step(checkpoint_every)
    if late and max_steps - first < 2 * len(late):
        raise UsageError(f"train.max_steps={max_steps} is too short for {count} faults with checkpoint.every="
                         f"{checkpoint_every}: at least {steps_needed(count, checkpoint_every)} steps (or fewer faults)")
    taken: set[int] = set()
    nan_steps: set[int] = set()
    steps: dict[int, int] = {}
    windows = ((sorted(early), list(range(1, min(first, max_steps)))), (late, list(range(first, max_steps))))

    def fits(step: int, nan: bool, spaced: bool) -> bool:
        # Early faults are kept a step apart from each other too: each ends an attempt or is a NaN to skip, and a
        # restart from step 0 must reach the next one.
        near = {step - 1, step + 1}
        return (step not in taken and not (spaced and near & taken)
                and not (nan and near & nan_steps))

    for faults_here, candidates in windows:
        rng.shuffle(candidates)
        for i in faults_here:
            nan = drawn[i] == "nan"
            step = next((s for s in candidates if fits(s, nan, i in early)), None)
            if step is None:
                raise UsageError(f"train.max_steps={max_steps} leaves no room for fault {i + 1} ({drawn[i]}): at "
                                 f"least {steps_needed(count, checkpoint_every)} steps")
            taken.add(step)
            if nan:
                nan_steps.add(step)
            steps[i] = step
    faults = [Fault(index=i, kind=kind, step=steps.get(i)) for i, kind in enumerate(drawn)]
    plan = Plan(seed=seed, max_steps=max_steps, checkpoint_every=checkpoint_every, faults=faults)
    latest = plan.ending[-1].index if plan.ending else None
    for fault in (f for f in faults if f.kind == "corrupt_checkpoint"):
        fault.boundary = boundary_of[fault.index] if boundary_of[fault.index] is not None else latest
    return plan
