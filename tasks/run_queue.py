"""What the delivery engine decides, apart from doing it: which waiting run messages
start, which get a spare thread, which go back to the database, and when to take parked
runs. Pure bookkeeping on a clock the caller passes (tests drive it by hand).

The rules (app.firing.fairness says why):

* Messages start in arrival order on the engine's ``capacity`` threads.
* While every thread is taken, each waiting message is tried once on one of the
  ``spare`` threads, for a tenant with none of this engine's threads: one tenant's
  hanging targets cannot hold another tenant's run back.
* A message that waited ``park_after_s`` without a thread is parked (the database
  keeps the run, and its message is done with), so the broker hands this worker the
  messages behind it.
* With a free thread and no message waiting, the engine takes parked runs; after a
  take that found none, not again for ``pull_idle_s``.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable
from typing import Generic, TypeVar

M = TypeVar("M")

#: How long a message waits for a thread before its run is parked.
PARK_AFTER_S = 1.0
#: After a take of parked runs that found none: how long until the next.
PULL_IDLE_S = 1.0


@dataclasses.dataclass
class _Waiting(Generic[M]):
    message: M
    arrived_at: float
    tried_spare: bool = False


class RunQueue(Generic[M]):
    """The engine's waiting messages and its threads' tenants (one engine thread uses it)."""

    def __init__(self, capacity: int, spare: int, *, park_after_s: float = PARK_AFTER_S,
                 pull_idle_s: float = PULL_IDLE_S) -> None:
        self.capacity = capacity
        self.spare = spare
        self.park_after_s = park_after_s
        self.pull_idle_s = pull_idle_s
        #: Threads taken: runs delivering, and messages handed to a thread.
        self.busy = 0
        self._waiting: collections.deque[_Waiting[M]] = collections.deque()
        self._tenants: collections.Counter[str] = collections.Counter()
        self._pull_at = 0.0

    def __len__(self) -> int:
        return len(self._waiting)

    def arrive(self, messages: Iterable[M], now: float) -> None:
        for message in messages:
            self._waiting.append(_Waiting(message, now))

    def free(self) -> int:
        return max(0, self.capacity - self.busy)

    def to_start(self, most: int) -> list[M]:
        """The oldest waiting messages, up to ``most`` and the free threads; counted busy."""
        count = min(most, self.free(), len(self._waiting))
        self.busy += count
        return [self._waiting.popleft().message for _ in range(count)]

    def to_try_spare(self) -> list[M]:
        """Messages not tried on a spare thread yet, while every thread is taken (at
        most the spare threads left); each is tried once. Counted busy: give back the
        ones not started (:meth:`put_back`)."""
        room = self.capacity + self.spare - self.busy
        if self.free() or room <= 0:
            return []
        picked: list[M] = []
        for waiting in self._waiting:
            if len(picked) == room:
                break
            if not waiting.tried_spare:
                waiting.tried_spare = True
                picked.append(waiting.message)
        if picked:
            taken = {id(message) for message in picked}
            self._waiting = collections.deque(
                item for item in self._waiting if id(item.message) not in taken)
            self.busy += len(picked)
        return picked

    def put_back(self, messages: list[M], now: float) -> None:
        """Messages counted busy that did not start: first in line again, as they were."""
        self.busy -= len(messages)
        for message in reversed(messages):
            self._waiting.appendleft(_Waiting(message, now, tried_spare=True))

    def to_park(self, now: float) -> list[M]:
        """Messages that waited ``park_after_s`` while no thread was free (removed)."""
        if self.free():
            return []
        cutoff = now - self.park_after_s
        overdue = [item.message for item in self._waiting if item.arrived_at <= cutoff]
        if overdue:
            self._waiting = collections.deque(
                item for item in self._waiting if item.arrived_at > cutoff)
        return overdue

    def take_all(self) -> list[M]:
        """Every waiting message (removed): the engine is stopping."""
        messages = [item.message for item in self._waiting]
        self._waiting.clear()
        return messages

    def may_pull(self, now: float) -> bool:
        """Whether to take parked runs now: a free thread, no message waiting, and no
        empty take within ``pull_idle_s``."""
        return bool(self.free()) and not self._waiting and now >= self._pull_at

    def pulled(self, count: int, now: float) -> None:
        """A take of parked runs started ``count`` (counted busy here)."""
        self.busy += count
        self._pull_at = now if count else now + self.pull_idle_s

    def wake_in_s(self, now: float) -> float | None:
        """How long until a message is due to be parked, or a take of parked runs."""
        if self.free():
            return None if self._waiting else max(0.0, self._pull_at - now)
        if self._waiting:
            return max(0.0, self._waiting[0].arrived_at + self.park_after_s - now)
        return None

    def started(self, tenant_id: str) -> None:
        self._tenants[tenant_id] += 1

    def ended(self, tenant_id: str | None, threads: int = 1) -> None:
        """A thread is free again (of ``tenant_id``'s run, when it was one)."""
        self.busy -= threads
        if tenant_id is not None:
            self._tenants[tenant_id] -= 1
            if self._tenants[tenant_id] <= 0:
                del self._tenants[tenant_id]

    def tenants(self) -> list[str]:
        """The tenants with a run on one of this engine's threads."""
        return sorted(self._tenants)


#: The longest wait between two tries while the database does not answer.
RETRY_MAX_S = 5.0


class DatabaseWait:
    """After the database failed to answer: when to try again (0.5 s, doubling, at most
    RETRY_MAX_S), so the waiting runs neither spin nor wait long once it is back."""

    def __init__(self) -> None:
        self.until: float | None = None
        self._failures = 0

    def failed(self, now: float) -> float:
        """The database did not answer; the delay before the next try."""
        delay_s = min(RETRY_MAX_S, 0.5 * 2 ** self._failures)
        self._failures += 1
        self.until = now + delay_s
        return delay_s

    def answered(self) -> None:
        self._failures = 0

    def waiting(self, now: float) -> bool:
        """Whether to wait still; past the delay, the wait is over."""
        if self.until is not None and now >= self.until:
            self.until = None
        return self.until is not None
