"""The fault plan: a pure function of the seed, every kind drilled, steps where a fault can be recovered from."""

from collections import Counter

import pytest

from yolotr.drill.plan import ENDS_ATTEMPT, KINDS, RANKED, early_count, first_fault_step, make_plan, steps_needed
from yolotr.errors import UsageError


def _summary(plan):
    return [(f.kind, f.step, f.boundary) for f in plan.faults]


def test_the_same_seed_gives_the_same_plan_and_another_seed_another():
    a = make_plan(10, 7, max_steps=40, checkpoint_every=4)
    b = make_plan(10, 7, max_steps=40, checkpoint_every=4)
    c = make_plan(10, 8, max_steps=40, checkpoint_every=4)
    a.draw_ranks(2), b.draw_ranks(2)
    assert _summary(a) == _summary(b) and [f.rank for f in a.faults] == [f.rank for f in b.faults]
    assert _summary(a) != _summary(c)


@pytest.mark.parametrize("seed", range(20))
def test_kinds_are_balanced_and_steps_leave_room_to_recover(seed):
    count = 2 * len(KINDS) + 3
    plan = make_plan(count, seed, max_steps=steps_needed(count, 4), checkpoint_every=4)
    counts = Counter(f.kind for f in plan.faults)
    assert set(counts) == set(KINDS) and max(counts.values()) - min(counts.values()) <= 1
    placed = [f for f in plan.faults if f.kind != "corrupt_checkpoint"]
    steps = [f.step for f in placed]
    assert len(set(steps)) == len(steps)  # one fault per step: the table can tell them apart
    assert all(1 <= s < plan.max_steps for s in steps)  # never the last step
    nans = sorted(f.step for f in plan.nans)
    assert all(b - a >= 2 for a, b in zip(nans, nans[1:]))  # never consecutive skips: no rollback
    # Some faults come before the checkpoints exist, a step apart; the rest once two checkpoints exist.
    early = sorted(s for s in steps if s < first_fault_step(4))
    assert len(early) == early_count(len(placed), 4) >= 1
    assert all(b - a >= 2 for a, b in zip(early, early[1:]))
    # Each corrupted checkpoint has an attempt boundary of its own, late enough to leave a valid checkpoint behind.
    boundaries = [f.boundary for f in plan.faults if f.kind == "corrupt_checkpoint"]
    assert len(set(boundaries)) == len(boundaries)
    by_index = {f.index: f for f in plan.faults}
    assert all(by_index[b].kind in ENDS_ATTEMPT and by_index[b].step >= first_fault_step(4) for b in boundaries)


def test_a_campaign_of_two_faults_puts_one_before_the_first_checkpoint():
    for seed in range(10):
        plan = make_plan(2, seed, max_steps=30, checkpoint_every=4, kinds=("kill_rank", "sigterm"))
        assert sorted(f.step < 4 * 2 + 1 for f in plan.faults) == [False, True]


def test_a_corruption_drawn_without_an_attempt_to_end_becomes_one():
    for seed in range(30):
        plan = make_plan(1, seed, max_steps=20, checkpoint_every=2, kinds=("corrupt_checkpoint", "sigterm"))
        assert [f.kind for f in plan.faults] == ["sigterm"]


def test_ranks_are_drawn_within_the_world_size_for_the_faults_that_need_one():
    plan = make_plan(10, 3, max_steps=40, checkpoint_every=4)
    plan.draw_ranks(3)
    for fault in plan.faults:
        assert (fault.rank is not None) == (fault.kind in RANKED)
        assert fault.rank is None or 0 <= fault.rank < 3


def test_a_run_too_short_for_the_faults_is_refused_with_the_length_it_needs():
    with pytest.raises(UsageError, match=f"at least {steps_needed(10, 4)} steps"):
        make_plan(10, 0, max_steps=15, checkpoint_every=4)
    with pytest.raises(UsageError, match="unknown fault kind"):
        make_plan(2, 0, max_steps=40, checkpoint_every=4, kinds=("nan", "meteor"))
