"""The statements that lock rows, and the one order they lock them in.

Every ``FOR UPDATE`` and every advisory lock of Cronbeat is in this package: the
dispatcher's claims (:mod:`.claims`) and sweep (:mod:`.sweep`), the run path's one claim
and one finish (:mod:`.attempts`) and its other checks (:mod:`.leases`), cancels
(:mod:`.cancellation`), parked runs (:mod:`.parking`), the editing paths' trigger and
key locks (:mod:`.triggers`, :mod:`.apikeys`), the alert tables' (:mod:`.alerts`), and
the advisory locks (:mod:`.locks`). The rest of
``app`` calls these functions and locks nothing itself.

The lock order: every transaction that locks several rows takes them in this order.

Two transactions that lock overlapping rows in different orders can deadlock, and
PostgreSQL then aborts one of them (an API call answers 500). So every multi-row lock
here is taken in one global order, and by primary key within a table:

1. the deploy fence (advisory, shared by every claim, exclusive for an activation or a
   reset; :func:`.locks.fence_shared`, :func:`.locks.fence_exclusive`);
2. one project (advisory, :func:`.locks.lock_project`): a sync, a delete by ref;
3. triggers, ``ORDER BY id`` ``FOR UPDATE`` (:mod:`.triggers`): a sync, a delete by ref,
   a single-row edit;
4. one tenant's runs (advisory, :data:`.locks.TENANT_RUNS_NAMESPACE`, taken with the
   fence in one statement by :func:`.attempts.lock_many`, in key order): every
   attempt's claim while the tenant cap is on, so the cap is counted exactly;
5. one trigger's runs (advisory, :func:`.locks.lock_trigger_runs`): the run path's
   overlap check;
6. invocations, ``ORDER BY id`` ``FOR UPDATE`` (:func:`.locks.by_id`): cancels
   (:mod:`.cancellation`); or ``SKIP LOCKED``: mark_published, the dispatcher's claims,
   the sweep, and parking and taking parked runs (:mod:`.parking`), which never wait;
7. triggers' alert states, ``ORDER BY trigger_id`` ``FOR UPDATE``
   (:func:`.alerts.lock_alert_states`): taken in the very transaction that records what
   the alerts are about (a run's finish, a tick's batch, a take-back), after its rows of
   1-6; an edited alert channel (:func:`.alerts.channel`) is alone in its transaction;
8. alerts: ``SKIP LOCKED`` (:func:`.alerts.take_due_alerts`), or one alert by id (its
   delivery), alone in its transaction; the watchdog's advisory lock
   (:func:`.alerts.try_watchdog_lock`) never waits.

The history's parent tables are locked whole only by /metrics' read
(:func:`.locks.hold_history`, ``ACCESS SHARE``, alone in a read-only transaction), in the
order the maintenance drops a day's partitions: attempts, then invocations.

A statement that only needs rows nobody else holds uses ``SKIP LOCKED`` and never
waits, so it can be part of no deadlock at all.
"""
