"""A Python client of Cronbeat's API: ``from cronbeat.client import Cronbeat``.

    cronbeat = Cronbeat("http://127.0.0.1:8000", api_key, project="shop")
    trigger = cronbeat.create_trigger({"name": "nightly", "cron_expression": "30 2 * * *",
                                       "target": {"kind": "task", "task_name": "shop.report"}})
    cronbeat.update_trigger(trigger["id"], {"timezone": "Europe/Berlin"},
                            if_version=trigger["version"])

Synchronous, on ``requests``; every method is one documented endpoint (docs/API.md), and
takes and returns its JSON as dicts. An answer other than 2xx raises
:class:`CronbeatError` with its HTTP status, code, message and field errors. Only 503
and 429 are tried again (up to ``retries`` times, waiting as ``Retry-After`` says, at
most 30 s, else 0.5, 1, 2 s...): nothing else is retried, so a write is never sent
twice.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import requests

#: The statuses tried again: the server says "later", and did nothing.
RETRIED = (429, 503)
MAX_WAIT_S = 30.0

JSON = dict[str, Any]


class CronbeatError(Exception):
    """An answer other than 2xx: ``status``, ``code``, ``message`` and the field
    ``errors`` (``{"cron_expression": ["..."]}``, nested for a sync)."""

    def __init__(self, status: int, code: str, message: str, errors: Mapping[str, Any]) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = dict(errors)


class Cronbeat:
    """One tenant's API key, on one project's triggers, invocations and alerts."""

    def __init__(self, base_url: str, api_key: str, project: str, *, timeout_s: float = 30.0,
                 retries: int = 3, session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.project = project
        self.timeout_s = timeout_s
        self.retries = retries
        self._session = session or requests.Session()
        self._session.headers["Authorization"] = f"Bearer {api_key}"

    # Triggers.

    def create_trigger(self, definition: Mapping[str, Any]) -> JSON:
        """Create a trigger; a webhook's signing secret is in this answer only."""
        return self._call("POST", "/triggers", json=definition)

    def get_trigger(self, trigger_id: str) -> JSON:
        return self._call("GET", f"/triggers/{_id(trigger_id)}")

    def list_triggers(self, **filters: Any) -> Iterator[JSON]:
        """Every trigger (``enabled``, ``ref``, ``name_prefix``, ``limit`` per page),
        following the pages."""
        return self._pages("/triggers", filters)

    def update_trigger(self, trigger_id: str, changes: Mapping[str, Any], *,
                       if_version: int | None = None, force: bool = False) -> JSON:
        """PATCH; with ``if_version``, refused (412) unless the trigger is at it; a
        code-managed trigger's definition changes only with ``force`` (else 409)."""
        return self._call("PATCH", f"/triggers/{_id(trigger_id)}", json=changes,
                          headers=_if_match(if_version), params=_force(force))

    def delete_trigger(self, trigger_id: str, *, if_version: int | None = None,
                       force: bool = False) -> None:
        """DELETE; a code-managed trigger only with ``force`` (else 409)."""
        self._call("DELETE", f"/triggers/{_id(trigger_id)}", headers=_if_match(if_version),
                   params=_force(force))

    def pause(self, trigger_id: str, *, if_version: int | None = None) -> JSON:
        return self._call("POST", f"/triggers/{_id(trigger_id)}/pause",
                          headers=_if_match(if_version))

    def resume(self, trigger_id: str, *, if_version: int | None = None) -> JSON:
        return self._call("POST", f"/triggers/{_id(trigger_id)}/resume",
                          headers=_if_match(if_version))

    def run_now(self, trigger_id: str) -> JSON:
        """Record a manual run and queue it; returns the invocation."""
        return self._call("POST", f"/triggers/{_id(trigger_id)}/run")

    def preview(self, trigger_id: str, count: int = 5) -> JSON:
        return self._call("GET", f"/triggers/{_id(trigger_id)}/preview",
                          params={"count": count})

    def sync(self, definitions: Sequence[Mapping[str, Any]], *, dry_run: bool = False,
             force: bool = False) -> JSON:
        """Make the project's triggers exactly ``definitions`` (by name); ``dry_run``
        reports the changes and writes nothing; ``force`` changes and deletes
        code-managed triggers too (else 409)."""
        return self._call("PUT", "/triggers", json={"triggers": list(definitions)},
                          params={"dry_run": "true" if dry_run else "false",
                                  **_force(force)})

    # Invocations.

    def invocations(self, trigger_id: str | None = None, **filters: Any) -> Iterator[JSON]:
        """The history, newest first (of one trigger, or of the project), every page."""
        path = f"/triggers/{_id(trigger_id)}/invocations" if trigger_id else "/invocations"
        return self._pages(path, filters)

    def get_invocation(self, invocation_id: str) -> JSON:
        return self._call("GET", f"/invocations/{_id(invocation_id)}")

    def cancel_invocation(self, invocation_id: str) -> JSON:
        return self._call("POST", f"/invocations/{_id(invocation_id)}/cancel")

    # Alerts.

    def alert_channels(self) -> list[JSON]:
        return list(self._call("GET", "/alerts/channels")["items"])

    def create_alert_channel(self, channel: Mapping[str, Any]) -> JSON:
        """Create a channel; its signing secret is in this answer only."""
        return self._call("POST", "/alerts/channels", json=channel)

    def delete_alert_channel(self, channel_id: str) -> None:
        self._call("DELETE", f"/alerts/channels/{_id(channel_id)}")

    def alert_rule(self, trigger_id: str | None = None) -> JSON:
        """The rule in force (the trigger's, else the project's) and where it comes from."""
        return self._call("GET", _rule_path(trigger_id))

    def set_alert_rule(self, rule: Mapping[str, Any], trigger_id: str | None = None) -> JSON:
        return self._call("PUT", _rule_path(trigger_id), json=rule)

    def clear_alert_rule(self, trigger_id: str | None = None) -> None:
        self._call("DELETE", _rule_path(trigger_id))

    # The wire.

    def _pages(self, path: str, params: Mapping[str, Any]) -> Iterator[JSON]:
        page = self._call("GET", path, params=dict(params))
        while True:
            yield from page["items"]
            if not page.get("next"):
                return
            page = self._call("GET", page["next"], absolute=True)

    def _call(self, method: str, path: str, *, absolute: bool = False,
              **kwargs: Any) -> Any:
        url = (self.base_url + path if absolute
               else f"{self.base_url}/api/v1/projects/{quote(self.project, safe='')}{path}")
        for attempt in range(self.retries + 1):
            response = self._session.request(method, url, timeout=self.timeout_s, **kwargs)
            if response.status_code not in RETRIED or attempt == self.retries:
                break
            time.sleep(_wait_s(response, attempt))
        if response.status_code >= 400:
            raise _error(response)
        return response.json() if response.content else None


def _id(value: str) -> str:
    return quote(str(value), safe="")


def _if_match(version: int | None) -> dict[str, str]:
    return {} if version is None else {"If-Match": f'"{version}"'}


def _force(force: bool) -> dict[str, str]:
    return {"force": "true"} if force else {}


def _rule_path(trigger_id: str | None) -> str:
    return f"/triggers/{_id(trigger_id)}/alerts/rule" if trigger_id else "/alerts/rule"


def _wait_s(response: requests.Response, attempt: int) -> float:
    after = response.headers.get("Retry-After", "")
    if after.isdigit():
        return min(float(after), MAX_WAIT_S)
    return min(0.5 * 2 ** attempt, MAX_WAIT_S)


def _error(response: requests.Response) -> CronbeatError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    return CronbeatError(response.status_code, str(body.get("code", "http_error")),
                         str(body.get("message", response.reason)),
                         body.get("errors") or {})
