"""The plan's `notifications` section: webhooks the aggregator POSTs lifecycle events to."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fx.errors import PlanError
from fx.notify.webhooks import Webhook
from fx.plan.model import NotificationSettings, Plan, WebhookSettings


def notification_settings(document: Mapping[str, Any], path: Path) -> NotificationSettings:
    """The (schema-validated) plan ``document``'s notifications; PlanError if a
    webhook names both a secret and a secret_env."""
    section = document.get("notifications") or {}
    hooks = tuple(WebhookSettings(**hook) for hook in section.get("webhooks") or ())
    for index, hook in enumerate(hooks):
        if hook.secret is not None and hook.secret_env is not None:
            raise PlanError(
                f"{path}: notifications.webhooks[{index}]: both secret and secret_env are set",
                hint="keep one; secret_env keeps the secret out of plan.yaml",
            )
    return NotificationSettings(webhooks=hooks)


def webhook_secret(
    hook: WebhookSettings, path: Path, environ: Mapping[str, str] | None = None
) -> str | None:
    """The HMAC secret of ``hook`` (read from the environment for ``secret_env``), or None."""
    if hook.secret_env is None:
        return hook.secret
    value = (os.environ if environ is None else environ).get(hook.secret_env)
    if not value:
        raise PlanError(
            f"{path}: notifications.webhooks: the secret of a webhook is in "
            f"${hook.secret_env}, which is not set in the aggregator's environment",
            hint=f"export {hook.secret_env}=... before `fx aggregator start`",
        )
    return value


def plan_webhooks(
    plan: Plan, path: Path, environ: Mapping[str, str] | None = None
) -> list[Webhook]:
    """The plan's webhooks, secrets resolved, ready for a WebhookNotifier (PlanError if not)."""
    webhooks = []
    for index, hook in enumerate(plan.notifications.webhooks):
        try:
            webhooks.append(Webhook(hook.url, webhook_secret(hook, path, environ)))
        except ValueError as exc:
            raise PlanError(
                f"{path}: notifications.webhooks[{index}].url: {exc}",
                hint="use http(s)://host[:port]/path",
            ) from None
    return webhooks
