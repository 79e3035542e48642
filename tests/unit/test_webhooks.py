"""Webhooks: what a receiver gets, the HMAC it can check, bounded retries, and
webhooks that are dead or slow costing the aggregator nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fx.errors import PlanError
from fx.notify.events import Event, training_start, update_round_start
from fx.notify.webhooks import DeliveryPolicy, Webhook, WebhookNotifier, sign, verify
from fx.plan.loader import load_plan
from fx.plan.notifications import plan_webhooks, webhook_secret
from fx.workspace.create import NetworkChoice, create_workspace
from fx.workspace.paths import WorkspacePaths
from fx.workspace.templates import get_template
from tests.conftest import free_port
from tests.webhook_receiver import WebhookReceiver

FAST = DeliveryPolicy(timeout_s=2.0, attempts=3, backoff_s=0.01, max_backoff_s=0.02)
EVENT = update_round_start(str(uuid.uuid4()), round=2, model_uuid=str(uuid.uuid4()))


def test_signature_is_hmac_sha256_of_the_exact_body() -> None:
    body = EVENT.to_bytes()
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert sign(body, "s3cret") == f"sha256={expected}"
    assert verify(body, "s3cret", f"sha256={expected}")
    assert not verify(body, "other", f"sha256={expected}")
    assert not verify(body + b" ", "s3cret", f"sha256={expected}")
    assert not verify(body, "s3cret", None)


def test_receiver_gets_signed_json_with_the_event_headers() -> None:
    with WebhookReceiver(secret="s3cret") as receiver:
        notifier = WebhookNotifier([Webhook(receiver.url, "s3cret")], FAST)
        notifier(training_start("t-1", model_uuid="m-0"))
        notifier(EVENT)
        notifier.close(drain_s=5)
        first, second = receiver.wait_for(2)
    assert first.path == "/hooks/fx"
    assert first.headers["Content-Type"] == "application/json"
    assert first.headers["X-Fx-Event"] == "TRAINING_START"
    assert first.signature_ok and second.signature_ok
    assert first.json() == {
        "notification_type": "TRAINING_START",
        "training_uuid": "t-1",
        "body": {"global_model_uuid": "m-0"},
    }
    assert Event.from_bytes(second.body) == EVENT
    uuid.UUID(first.headers["X-Fx-Delivery"])
    assert notifier.stats[receiver.url].delivered == 2


def test_a_wrong_hmac_is_detected_by_the_receiver_and_not_retried() -> None:
    with WebhookReceiver(secret="the-real-one") as receiver:
        notifier = WebhookNotifier([Webhook(receiver.url, "a-guess")], FAST)
        notifier(EVENT)
        notifier.close(drain_s=5)
        (delivery,) = receiver.wait_for(1)
    assert delivery.signature_ok is False and delivery.status == 401
    assert len(receiver.deliveries) == 1  # a 4xx is an answer: retrying would not change it
    assert notifier.stats[receiver.url].failed == 1


def test_unsigned_delivery_has_no_signature_header() -> None:
    with WebhookReceiver() as receiver:
        notifier = WebhookNotifier([Webhook(receiver.url)], FAST)
        notifier(EVENT)
        notifier.close(drain_s=5)
        (delivery,) = receiver.wait_for(1)
    assert "X-Fx-Signature" not in delivery.headers


def test_a_failed_delivery_is_retried_with_the_same_delivery_id() -> None:
    with WebhookReceiver(statuses=[500, 503]) as receiver:
        notifier = WebhookNotifier([Webhook(receiver.url)], FAST)
        notifier(EVENT)
        notifier.close(drain_s=5)
        attempts = receiver.wait_for(3)
    assert [a.status for a in attempts] == [500, 503, 200]
    assert len({a.headers["X-Fx-Delivery"] for a in attempts}) == 1
    assert {a.body for a in attempts} == {EVENT.to_bytes()}
    assert notifier.stats[receiver.url].delivered == 1


def test_retries_are_bounded(caplog: pytest.LogCaptureFixture) -> None:
    with WebhookReceiver(statuses=[503] * 10) as receiver:
        notifier = WebhookNotifier([Webhook(receiver.url)], FAST)
        notifier(EVENT)
        notifier.close(drain_s=5)
    assert len(receiver.deliveries) == FAST.attempts
    assert notifier.stats[receiver.url].failed == 1
    assert "gave up on UPDATE_ROUND_START after 3 attempt(s): HTTP 503" in caplog.text


def test_redirects_are_not_followed() -> None:
    with WebhookReceiver(statuses=[302]) as receiver:
        notifier = WebhookNotifier([Webhook(receiver.url)], FAST)
        notifier(EVENT)
        notifier.close(drain_s=5)
    assert len(receiver.deliveries) == 1
    assert notifier.stats[receiver.url].failed == 1


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A URL whose server accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"


def test_dead_and_slow_webhooks_never_hold_up_the_caller(black_hole: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens: connection refused
    policy = DeliveryPolicy(timeout_s=0.5, attempts=3, backoff_s=0.2, queue_size=8)
    with WebhookReceiver() as alive:
        notifier = WebhookNotifier([Webhook(dead), Webhook(black_hole), Webhook(alive.url)], policy)
        started = time.monotonic()
        for round in range(20):
            notifier(update_round_start("t", round=round, model_uuid="m"))
        queued_in = time.monotonic() - started
        # The live webhook gets its events although the other two are failing.
        delivered = alive.wait_for(8, timeout=10)
        closing = time.monotonic()
        notifier.close(drain_s=0.5)
        closed_in = time.monotonic() - closing
    assert queued_in < 0.1, "queuing an event must not wait for any webhook"
    assert closed_in < 1.5, "close() waits drain_s, not for dead webhooks"
    # The first events, in order: the 8 the queue holds, plus any the live webhook's
    # worker had already taken off the queue while the caller was still queuing.
    rounds = [d.json()["body"]["round"] for d in delivered]
    assert 8 <= len(rounds) <= 12 and rounds == list(range(len(rounds))), rounds
    stats = notifier.stats
    assert stats[dead].delivered == stats[black_hole].delivered == 0
    # Past the 8-event queue, events were dropped at once (with a warning); what was
    # still queued when close() gave up is counted as dropped too.
    assert stats[dead].dropped >= 12 and stats[black_hole].dropped >= 12


def test_webhook_urls_are_http_and_their_paths_stay_out_of_logs() -> None:
    with pytest.raises(ValueError, match="http"):
        Webhook("file:///etc/passwd")
    hook = Webhook("https://hooks.example.org/services/T000/SECRET-TOKEN?x=1")
    assert "SECRET" not in hook.display and hook.display.startswith("https://hooks.example.org")
    assert "s3cret" not in repr(Webhook("http://127.0.0.1:1/", "s3cret"))


# -- the plan's notifications section ----------------------------------------------


def _workspace(tmp_path: Path, notifications: dict[str, Any] | None) -> WorkspacePaths:
    paths = create_workspace(
        get_template("numpy_logreg_digits"),
        tmp_path / "ws",
        collaborators=["site-1"],
        network=NetworkChoice("localhost", 50051),
        rounds=1,
    )
    if notifications is not None:
        document = yaml.safe_load(paths.plan.read_text())
        document["notifications"] = notifications
        paths.plan.write_text(yaml.safe_dump(document, sort_keys=False))
    return paths


def test_plan_lists_webhooks_without_changing_the_federation_id(tmp_path: Path) -> None:
    plain = load_plan(_workspace(tmp_path / "a", None))
    hooks = {
        "webhooks": [
            {"url": "http://127.0.0.1:8080/fx", "secret": "s3cret"},
            {"url": "https://hooks.example.org/fx", "secret_env": "FX_HOOK_SECRET"},
            {"url": "http://127.0.0.1:9090/open"},
        ]
    }
    plan = load_plan(_workspace(tmp_path / "b", hooks))
    assert [hook.url for hook in plan.notifications.webhooks] == [
        "http://127.0.0.1:8080/fx",
        "https://hooks.example.org/fx",
        "http://127.0.0.1:9090/open",
    ]
    # Aggregator-local: the same federation, and the secrets are not in what
    # the aggregator describes to collaborators.
    assert plan.federation_id == plain.federation_id
    assert "notifications" not in plan.shared_document
    assert "s3cret" not in json.dumps(plan.shared_document)

    first, second, third = plan.notifications.webhooks
    assert webhook_secret(first, Path("plan.yaml"), {}) == "s3cret"
    assert webhook_secret(second, Path("plan.yaml"), {"FX_HOOK_SECRET": "env!"}) == "env!"
    assert webhook_secret(third, Path("plan.yaml"), {}) is None
    with pytest.raises(PlanError, match=r"\$FX_HOOK_SECRET, which is not set"):
        webhook_secret(second, Path("plan.yaml"), {})
    hooks_ready = plan_webhooks(plan, Path("plan.yaml"), {"FX_HOOK_SECRET": "env!"})
    assert [(hook.url, hook.secret) for hook in hooks_ready] == [
        ("http://127.0.0.1:8080/fx", "s3cret"),
        ("https://hooks.example.org/fx", "env!"),
        ("http://127.0.0.1:9090/open", None),
    ]


def test_a_url_without_a_host_is_a_plan_error(tmp_path: Path) -> None:
    plan = load_plan(_workspace(tmp_path, {"webhooks": [{"url": "http://:8080/x"}]}))
    with pytest.raises(PlanError, match=r"notifications.webhooks\[0\].url"):
        plan_webhooks(plan, Path("plan.yaml"), {})


@pytest.mark.parametrize(
    ("notifications", "message"),
    [
        ({"webhooks": [{"url": "ftp://x/"}]}, "does not match"),
        ({"webhooks": [{"url": "http://x/", "sekret": "a"}]}, "unknown key 'sekret'"),
        ({"hooks": []}, "unknown key 'hooks'"),
        ({"webhooks": [{"url": "http://x/", "secret": "a", "secret_env": "B"}]}, "both secret"),
    ],
)
def test_bad_notifications_are_refused_with_the_key_path(
    tmp_path: Path, notifications: dict[str, Any], message: str
) -> None:
    with pytest.raises(PlanError, match=message) as caught:
        load_plan(_workspace(tmp_path, notifications))
    assert "notifications" in str(caught.value)


def test_logging_is_quiet_for_a_healthy_webhook(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fx.notify.webhooks")
    with WebhookReceiver() as receiver:
        notifier = WebhookNotifier([Webhook(receiver.url)], FAST)
        notifier(EVENT)
        notifier.close(drain_s=5)
    assert caplog.records == []
