"""The worker's own consumer of ``cronbeat.runs``: one thread, one broker connection.

The delivery engine (:mod:`tasks.engine`) receives run messages here, not through the
Celery consumer: a kombu :class:`~kombu.Consumer` on a connection of its own, driven by
one thread with kombu's documented calls (``drain_events``, ``Message.ack``, ``basic_qos``
through :class:`kombu.common.QoS`). Every call on the connection and its channel is made
by that thread; other threads ask for an ack through :meth:`RunConsumer.ack`.

What a broker fault does here:

* The connection fails (Redis restarted, a network cut, or a kombu error of any kind):
  the thread closes what is left of it, forgets every message it handed out on it (an
  ack on a new connection would name a delivery tag that no longer exists; a message
  that is gone is gone: the run's lease and the dispatcher's sweep bring it back) and
  connects again, waiting at most :data:`RECONNECT_MAX_S` between tries, for ever. The
  worker process stays up and consumes again within seconds of the broker's return.
* An ack that fails means the connection is broken: the thread connects again, as for
  any other connection failure (the message is gone either way). Acking on over a
  broken connection would leave kombu counting the messages unacknowledged; with the
  prefetch window full it reads no more from the socket, and would never notice.
* A warm shutdown stops consuming, sends the acks asked for until then, and closes the
  connection; kombu hands the messages never started back to the queue. Nothing here
  waits for the broker longer than its socket timeouts.

A message with a future ``eta`` (a short retry's countdown) is held here until it is due,
outside the prefetch window (the prefetch count grows by one while it is held), as
Celery's own consumer holds an ETA task.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from celery import Celery
from kombu import Consumer, Queue
from kombu.common import QoS
from kombu.exceptions import MessageStateError

log = logging.getLogger(__name__)

#: How long the thread waits for a message before it looks at its acks, ETAs and role.
POLL_S = 0.02
#: The longest wait between two connection attempts.
RECONNECT_MAX_S = 5.0


@dataclasses.dataclass(frozen=True)
class Delivery:
    """A message handed to the engine, and the connection it came on."""

    message: Any
    #: Which connection of this consumer delivered it: an ack is sent on that one only.
    connection_number: int


class RunConsumer:
    """Consume ``queue_name`` while ``may_consume()``; hand each message to ``handle``.

    Args:
        app: the worker's Celery app (its broker URL and transport options).
        queue_name: the queue to consume.
        handle: called on this consumer's thread with each due message.
        prefetch: the most messages handed out and not acknowledged at once.
        may_consume: whether to consume now (the deployment gate); read every pass.
        name: what its log lines and its thread are called.
        poll_s: how long the thread waits for a message before it sends the acks asked
            for and looks at its ETAs and role (the latency those have).
    """

    def __init__(self, app: Celery, queue_name: str, handle: Callable[[Delivery], None],
                 prefetch: int, may_consume: Callable[[], bool], *,
                 name: str = "run consumer", poll_s: float = POLL_S) -> None:
        self._app = app
        # The app's own declaration of the queue (its exchange and binding), as every
        # publisher and the Celery consumer know it.
        self._queue: Queue = app.amqp.queues[queue_name]
        self._handle = handle
        self._prefetch = prefetch
        self._may_consume = may_consume
        self._acks: queue.SimpleQueue[Delivery] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._draining = threading.Event()
        self._name = name
        self._poll_every_s = poll_s
        self._thread = threading.Thread(target=self._run, name=name.replace(" ", "-"),
                                        daemon=True)
        #: Which connection is current (1, 2, ...); 0 before the first.
        self._number = 0
        self._etas: list[tuple[float, int, Any]] = []
        self._order = itertools.count()
        self._qos: QoS | None = None
        #: Whether the consumer is consuming now (read by the worker's heartbeat).
        self.consuming = False
        #: Whether the broker answered on the current connection.
        self.connected = False

    def start(self) -> None:
        self._thread.start()

    def ack(self, delivery: Delivery) -> None:
        """Acknowledge ``delivery`` (from any thread); dropped if its connection is gone."""
        self._acks.put(delivery)

    def drain(self) -> None:
        """Stop taking messages (a warm shutdown); acks are still sent."""
        self._draining.set()

    def close(self, timeout_s: float) -> None:
        """Send the acks asked for so far, close the connection, end the thread."""
        self._draining.set()
        self._stopping.set()
        self._thread.join(timeout_s)

    # The thread.

    def _run(self) -> None:
        wait_s = 0.5
        while not self._stopping.is_set():
            try:
                self._connected()
                wait_s = 0.5
            except Exception as exc:
                # Every kind, not only kombu's connection errors: a transport that fails
                # in a way nobody foresaw must not end the thread (and with it, silently,
                # this worker's consuming).
                if not self._stopping.is_set():
                    log.warning(
                        "%s: the broker connection failed (%s); connecting again in %.1f s"
                        " (the messages it held come back through their leases and the"
                        " sweeps)", self._name, type(exc).__name__, wait_s, exc_info=True,
                        extra={"action": "run.broker_lost"})
            finally:
                self._forget_connection()
            if self._stopping.wait(wait_s):
                break
            wait_s = min(wait_s * 2, RECONNECT_MAX_S)

    def _connected(self) -> None:
        """One connection's life: consume until stopping or until it fails."""
        connection = self._app.connection_for_read()
        try:
            connection.ensure_connection(max_retries=1)
            self._number += 1
            channel = connection.channel()
            consumer = Consumer(channel, queues=[self._queue], callbacks=[self._on_message],
                                accept=["json"], auto_declare=True)
            self._qos = QoS(consumer.qos, self._prefetch)
            self._qos.update()
            self.connected = True
            if self._number > 1:
                log.warning("%s: connected to the broker again", self._name,
                            extra={"action": "run.broker_back"})
            while not self._stopping.is_set():
                self._follow_role(consumer)
                self._send_acks()
                self._release_due()
                self._qos.update()
                with contextlib.suppress(TimeoutError):  # socket.timeout: nothing came
                    connection.drain_events(timeout=self._poll_s())
            self._send_acks()
        finally:
            self.connected = False
            self.consuming = False
            with contextlib.suppress(Exception):
                # Messages received and not acknowledged go back to the queue (kombu).
                connection.release()

    def _follow_role(self, consumer: Consumer) -> None:
        want = not self._draining.is_set() and self._may_consume()
        if want and not self.consuming:
            consumer.consume()
            self.consuming = True
        elif not want and self.consuming:
            consumer.cancel()
            self.consuming = False

    def _poll_s(self) -> float:
        if not self._etas:
            return self._poll_every_s
        return max(0.0, min(self._poll_every_s, self._etas[0][0] - time.monotonic()))

    def _on_message(self, body: Any, message: Any) -> None:
        due_in_s = _due_in_s(message)
        if due_in_s > 0 and self._qos is not None:
            # Held here, outside the prefetch window, until due.
            heapq.heappush(self._etas, (time.monotonic() + due_in_s, next(self._order),
                                        message))
            self._qos.increment_eventually()
            return
        self._handle(Delivery(message, self._number))

    def _release_due(self) -> None:
        now = time.monotonic()
        while self._etas and self._etas[0][0] <= now:
            _, _, message = heapq.heappop(self._etas)
            if self._qos is not None:
                self._qos.decrement_eventually()
            self._handle(Delivery(message, self._number))

    def _send_acks(self) -> None:
        while True:
            try:
                delivery = self._acks.get_nowait()
            except queue.Empty:
                return
            if delivery.connection_number != self._number or not self.connected:
                continue  # its connection is gone, and the message with it
            try:
                delivery.message.ack()
            except MessageStateError:
                # Acknowledged already (asked twice): nothing to send.
                continue
            except Exception:
                # The connection is broken: every message it handed out is gone (their
                # runs' leases and the sweeps decide what runs again). Reconnect now.
                # Acking on, each ack failing, would leave kombu counting the messages
                # as unacknowledged: with the prefetch window full, the consumer stops
                # reading the socket and would never see that the broker went away.
                raise

    def _forget_connection(self) -> None:
        self._etas.clear()
        self._qos = None
        # Acks asked for on the lost connection: dropped at the next _send_acks, whose
        # connection number no longer matches.


def _due_in_s(message: Any) -> float:
    """Seconds until the message's ``eta`` header (0 if none, past, or unreadable)."""
    eta = (message.headers or {}).get("eta")
    if not isinstance(eta, str):
        return 0.0
    try:
        due = dt.datetime.fromisoformat(eta)
    except ValueError:
        return 0.0
    if due.tzinfo is None:
        due = due.replace(tzinfo=dt.UTC)
    return (due - dt.datetime.now(dt.UTC)).total_seconds()

