"""Commits never pass an event still in work, whatever order events are acknowledged in."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP as Partition

from dlstream.adapters.faust.transport import committable_offset, transport_class

pytestmark = pytest.mark.unit

TP = Partition("requests", 0)


@dataclass(frozen=True)
class Message:
    tp: Partition
    offset: int


def consumer_state(acked: list[int], pending: list[int], committed: int | None) -> Any:
    """The bookkeeping a Faust consumer keeps for one partition."""
    return SimpleNamespace(
        _acked=defaultdict(list, {TP: list(acked)}),
        _acked_index=defaultdict(set, {TP: set(acked)}),
        _gap=defaultdict(list),
        _committed_offset=defaultdict(lambda: None, {TP: committed}),
        _unacked_messages={Message(TP, o) for o in pending},
    )


def test_faust_alone_commits_past_an_event_still_in_work() -> None:
    # Offsets 0-9 taken; the batch 5-9 finished before the batch 0-4, which is still with Triton.
    before_first_commit = consumer_state(acked=[5, 6, 7, 8, 9], pending=[0, 1, 2, 3, 4], committed=None)
    assert FaustConsumer._new_offset(before_first_commit, TP) == 10
    # After a commit at 20, offset 20 still in work and 21-25 done.
    one_missing = consumer_state(acked=[21, 22, 23, 24, 25], pending=[20], committed=20)
    assert FaustConsumer._new_offset(one_missing, TP) == 26


@pytest.mark.parametrize(
    ("acked", "pending", "committed", "offset", "left"),
    [
        ([5, 6, 7, 8, 9], [0, 1, 2, 3, 4], None, None, [5, 6, 7, 8, 9]),
        ([21, 22, 23, 24, 25], [20], 20, None, [21, 22, 23, 24, 25]),
        ([0, 1, 2, 5, 6], [3, 4], None, 3, [5, 6]),
        ([0, 1, 2, 3], [], None, 4, []),
        ([7, 3, 4, 6, 5], [9], 3, 9, []),  # acknowledged out of order; offset 8 is a gap in the partition
    ],
)
def test_a_commit_stops_at_the_first_event_in_work(
    acked: list[int], pending: list[int], committed: int | None, offset: int | None, left: list[int]
) -> None:
    consumer_class: Any = transport_class(100).Consumer
    state = consumer_state(acked, pending, committed)
    assert consumer_class._new_offset(state, TP) == offset
    assert state._acked[TP] == left
    assert state._acked_index[TP] == set(left)


def test_committable_offset() -> None:
    assert committable_offset([], [3]) is None
    assert committable_offset([4, 5], [3]) is None
    assert committable_offset([1, 2, 4], [3]) == 3
    assert committable_offset([2, 1, 0], []) == 3


def test_events_a_drain_stopped_waiting_for_still_stop_the_commit() -> None:
    # A rebalance's drain passed its deadline with 0-4 still with Triton; 5-9 were done. The wait ends (the
    # set Faust waits on is empty), but the commit that follows must not pass 0-4: another member would skip
    # them.
    consumer_class: Any = transport_class(100).Consumer
    state = consumer_state(acked=[5, 6, 7, 8, 9], pending=[0, 1, 2, 3, 4], committed=None)
    assert consumer_class.abandon_unacked(state) == 5
    assert state._unacked_messages == set()
    assert consumer_class._new_offset(state, TP) is None
    # Once they are done (acknowledged), the partition commits past them.
    state.abandoned.clear()
    state._acked[TP] += [0, 1, 2, 3, 4]
    state._acked_index[TP] |= {0, 1, 2, 3, 4}
    assert consumer_class._new_offset(state, TP) == 10
