"""The webhook target: a signed HTTP request (Standard Webhooks), through the SSRF guard."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from app.delivery.send import DeliveryResult, build_headers, encode_body
from app.enums import TargetKind
from app.errors import InvalidTrigger
from app.targets.base import Delivery, Target

#: What the API shows in place of a credential.
REDACTED = "<redacted>"


def new_signing_secret() -> str:
    """Return a fresh Standard Webhooks secret: ``whsec_`` + base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode("ascii")


def redact_url(url: str) -> str:
    """Return ``url`` with the password of its userinfo, if any, replaced."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{REDACTED}@{hostport}"))


class Webhook(Target):
    kind: ClassVar[TargetKind] = TargetKind.WEBHOOK
    columns: ClassVar[dict[str, Any]] = {
        "webhook_url": None, "webhook_method": "POST", "webhook_headers": {},
        "signing_secret": None,
    }

    def check(self, row: dict[str, Any]) -> None:
        if not row["webhook_url"]:
            raise InvalidTrigger("target", "a webhook target needs a url")

    def prepare_save(self, row: dict[str, Any], old: Any, *, generate_secret: bool
                     ) -> str | None:
        # A webhook keeps its signing secret across saves that do not set one (a sync
        # re-applying its file, a PATCH of something else); a new one gets one.
        if row["signing_secret"] is not None:
            return None
        if old is not None and old.target_kind is self.kind and old.signing_secret:
            row["signing_secret"] = old.signing_secret
            return None
        if generate_secret:
            row["signing_secret"] = new_signing_secret()
            return row["signing_secret"]
        return None

    def deliver(self, delivery: Delivery) -> DeliveryResult:
        row = delivery.row
        assert row.webhook_url is not None, "ck_triggers_target_complete"
        text = encode_body(delivery.body)
        headers = build_headers(row.webhook_headers, invocation_id=delivery.invocation_id,
                                body=text, signing_secret=row.signing_secret,
                                now=delivery.started_at)
        return delivery.send_webhook(
            method=row.webhook_method or "POST", url=row.webhook_url, headers=headers,
            body=text, timeout_s=float(row.timeout_s),
            allow_private=delivery.settings.allow_private_targets, now=delivery.started_at)

    def view(self, trigger: Any) -> dict[str, Any]:
        return {
            "kind": "webhook", "url": redact_url(trigger.webhook_url),
            "method": trigger.webhook_method,
            "headers": dict.fromkeys(trigger.webhook_headers or {}, REDACTED),
            "has_signing_secret": trigger.signing_secret is not None,
        }

    def columns_of(self, given: Mapping[str, Any]) -> dict[str, Any]:
        columns = {"target_kind": self.kind.value, "webhook_url": given["url"],
                   "webhook_method": given["method"], "webhook_headers": given["headers"]}
        if "signing_secret" in given:
            columns["signing_secret"] = given["signing_secret"]
        return columns

    def describe(self, trigger: Any) -> str:
        return f"{trigger.webhook_method or 'POST'} {redact_url(trigger.webhook_url)}"
