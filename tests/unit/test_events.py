"""Lifecycle events: their JSON shape, the fan-out bus, what the aggregator core emits,
and how a collaborator dispatches them and reacts to a push."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fx.aggregator.core import Aggregator
from fx.aggregator.store import ModelStore
from fx.algorithms.registry import resolve_aggregation
from fx.collaborator.core import Collaborator
from fx.collaborator.events import EventHandlers, EventListener, RoundSignal, round_handlers
from fx.collaborator.runner import build_initial_weights, build_runner
from fx.notify.bus import Broadcast
from fx.notify.events import Event, EventType, FanOut, update_round_start
from fx.plan.loader import load_collaborator_names, load_data_path, load_plan
from fx.transport.api import TaskAssignment, TaskReport
from fx.transport.local import LocalTransport
from fx.workspace.create import NetworkChoice, create_workspace
from fx.workspace.paths import WorkspacePaths
from fx.workspace.templates import get_template

# -- the event itself ---------------------------------------------------------------


def test_event_json_shape_round_trips() -> None:
    event = update_round_start("t-1", round=3, model_uuid="m-3")
    assert event.to_json() == {
        "notification_type": "UPDATE_ROUND_START",
        "training_uuid": "t-1",
        "body": {"round": 3, "global_model_uuid": "m-3"},
    }
    assert event.to_bytes() == (
        b'{"notification_type":"UPDATE_ROUND_START","training_uuid":"t-1",'
        b'"body":{"round":3,"global_model_uuid":"m-3"}}'
    )
    assert Event.from_bytes(event.to_bytes()) == event
    assert event.type is EventType.UPDATE_ROUND_START


def test_unknown_types_parse_and_bad_shapes_are_refused_by_name() -> None:
    future = Event.from_json({"notification_type": "CLIENT_REMOVED", "training_uuid": "t"})
    assert future.type is None and future.body == {}
    with pytest.raises(ValueError, match="no notification_type"):
        Event.from_json({"training_uuid": "t"})
    with pytest.raises(ValueError, match="body is not a JSON object"):
        Event.from_json({"notification_type": "X", "training_uuid": "t", "body": [1]})
    with pytest.raises(ValueError, match="is JSON"):
        Event.from_bytes(b"{nope")


def test_fan_out_isolates_a_failing_sink(caplog: pytest.LogCaptureFixture) -> None:
    got: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("sink down")

    FanOut([broken, got.append])(update_round_start("t", round=0, model_uuid="m"))
    assert len(got) == 1
    assert "sink down" in caplog.text


# -- the bus -------------------------------------------------------------------------


def test_broadcast_delivers_in_order_and_replays_history() -> None:
    bus: Broadcast[int] = Broadcast(queue_size=10, history=3)
    early = bus.subscribe()
    for item in range(5):
        bus.publish(item)
    late = bus.subscribe(replay=True)
    bus.publish(5)
    bus.close()
    assert list(early) == [0, 1, 2, 3, 4, 5]
    assert list(late) == [2, 3, 4, 5]  # the last 3 of history, then live
    assert list(bus.subscribe(replay=True)) == [3, 4, 5]  # after close: replay, then end


def test_a_slow_subscriber_is_cut_off_and_never_blocks_the_publisher() -> None:
    bus: Broadcast[int] = Broadcast(queue_size=4, history=0)
    slow = bus.subscribe()  # never reads
    started = time.monotonic()
    for item in range(10_000):
        bus.publish(item)
    assert time.monotonic() - started < 1.0
    assert slow.overflowed and list(slow) == []  # cut off at once, its queue dropped
    later = bus.subscribe()  # the bus itself carries on
    bus.publish(-1)
    bus.close()
    assert list(later) == [-1] and not later.overflowed


def test_closing_a_subscription_wakes_its_blocked_reader() -> None:
    bus: Broadcast[int] = Broadcast()
    subscription = bus.subscribe()
    done = threading.Event()

    def read() -> None:
        list(subscription)
        done.set()

    threading.Thread(target=read, daemon=True).start()
    time.sleep(0.05)
    subscription.close()
    assert done.wait(2)
    bus.publish(1)  # no subscriber left: nothing to do, nothing raised


# -- what the aggregator core emits ---------------------------------------------------


def _workspace(tmp_path: Path, rounds: int) -> WorkspacePaths:
    return create_workspace(
        get_template("numpy_logreg_digits"),
        tmp_path / "ws",
        collaborators=["site-1", "site-2"],
        network=NetworkChoice("localhost", 50051),
        rounds=rounds,
    )


def _aggregator(paths: WorkspacePaths, events: Any) -> Aggregator:
    plan = load_plan(paths)
    return Aggregator(
        plan=plan,
        collaborators=load_collaborator_names(paths),
        initial_model=build_initial_weights(paths.root, plan.model.runner, plan.model.settings),
        aggregation=resolve_aggregation("fedavg"),
        store=ModelStore(paths.save),
        events=events,
    )


def _play_round(aggregator: Aggregator) -> None:
    """Every collaborator reports every task of the current round."""
    state = aggregator.status()
    model = aggregator.global_model().tensors
    for name in aggregator.collaborators:
        for task in state.tasks:
            weights = {k: v.copy() for k, v in model.items()} if task == "train" else None
            report = TaskReport(state.round, task, 10, {"accuracy": 0.5}, weights)
            assert aggregator.submit(name, report).accepted


def _assert_federation_sequence(events: list[Event], *, rounds: int, training_uuid: str) -> None:
    kinds = [event.notification_type for event in events]
    assert kinds == [
        "TRAINING_START",
        *["UPDATE_ROUND_START"] * rounds,
        "MODEL_TEST_ROUND",
        "TRAINING_FINISHED",
    ]
    assert {event.training_uuid for event in events} == {training_uuid}
    assert [event.body.get("round") for event in events[1:-1]] == list(range(rounds + 1))
    models = [event.body["global_model_uuid"] for event in events]
    for model in models:
        assert uuid.UUID(model).version == 4
    # TRAINING_START names the initial model, which round 0 trains; each later
    # round has a model of its own; the federation ends with the test round's model.
    assert models[0] == models[1]
    assert len(set(models[1:-1])) == rounds + 1
    assert models[-1] == models[-2]


def test_core_emits_the_whole_lifecycle_in_order_with_a_uuid_per_model(tmp_path: Path) -> None:
    received: list[Event] = []
    aggregator = _aggregator(_workspace(tmp_path, rounds=3), received.append)
    try:
        assert [e.notification_type for e in received] == ["TRAINING_START", "UPDATE_ROUND_START"]
        served = [aggregator.global_model().uuid]
        for _ in range(4):  # 3 training rounds, then the validate-only test round
            _play_round(aggregator)
            served.append(aggregator.global_model().uuid)
        assert aggregator.done
    finally:
        aggregator.close()
    uuid.UUID(aggregator.training_uuid)
    _assert_federation_sequence(received, rounds=3, training_uuid=aggregator.training_uuid)
    # The uuid an event announces is the one collaborators are served for that round.
    assert [e.body["global_model_uuid"] for e in received[1:-1]] == served[:4]


def test_a_failing_sink_never_breaks_a_round(tmp_path: Path) -> None:
    def broken(event: Event) -> None:
        raise RuntimeError("sink down")

    aggregator = _aggregator(_workspace(tmp_path, rounds=1), broken)
    try:
        _play_round(aggregator)
        assert aggregator.round == 1
        _play_round(aggregator)
        assert aggregator.done
    finally:
        aggregator.close()


def test_events_are_delivered_outside_the_round_lock(tmp_path: Path) -> None:
    """A sink may call back into the aggregator, even from another thread."""
    answers: list[int] = []
    built: list[Aggregator] = []

    def asks_another_thread(event: Event) -> None:
        if event.notification_type not in ("UPDATE_ROUND_START", "MODEL_TEST_ROUND") or not built:
            return
        worker = threading.Thread(target=lambda: answers.append(built[0].status().round))
        worker.start()
        worker.join(2)
        assert not worker.is_alive(), "the sink was called with the round lock held"

    aggregator = _aggregator(_workspace(tmp_path, rounds=2), asks_another_thread)
    built.append(aggregator)
    try:
        _play_round(aggregator)
        _play_round(aggregator)
    finally:
        aggregator.close()
    assert answers == [1, 2]


# -- the collaborator's side -----------------------------------------------------------


def test_handlers_dispatch_by_type_and_unknown_types_are_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO")
    seen: list[str] = []
    defaulted: list[str] = []
    handlers = EventHandlers(default=lambda e: defaulted.append(e.notification_type))
    handlers.on(EventType.UPDATE_ROUND_START, lambda e: seen.append(f"round {e.body['round']}"))

    def broken(event: Event) -> None:
        raise RuntimeError("handler bug")

    handlers.on("TRAINING_FINISHED", broken)
    handlers.dispatch(update_round_start("t", round=2, model_uuid="m"))
    handlers.dispatch(Event("CLIENT_REMOVED", "t", {}))
    handlers.dispatch(Event("TRAINING_FINISHED", "t", {}))
    assert seen == ["round 2"]
    assert defaulted == ["CLIENT_REMOVED"]
    assert "handler bug" in caplog.text

    logged = EventHandlers()  # the default default: log and carry on
    logged.dispatch(Event("SWAG_ROUND_START", "t", {}))
    assert "SWAG_ROUND_START" in caplog.text


def test_round_signal_waits_only_while_live() -> None:
    signal = RoundSignal()
    started = time.monotonic()
    assert not signal.wait_for_work(after_round=-1, timeout=5)  # not live: at once
    assert time.monotonic() - started < 1
    signal.set_live(True)
    assert not signal.wait_for_work(after_round=-1, timeout=0.05)  # live, nothing announced
    threading.Timer(0.05, signal.announce, (0,)).start()
    assert signal.wait_for_work(after_round=-1, timeout=5)
    seen = signal.generation
    assert not signal.wait_for_work(after_round=0, after_generation=seen, timeout=0.05)
    # A round announced again (an aggregator resumed mid-round) is news too.
    signal.announce(0)
    assert signal.wait_for_work(after_round=0, after_generation=seen, timeout=5)
    signal.finish()
    assert signal.wait_for_work(after_round=7, after_generation=signal.generation, timeout=5)


class _RecordingAPI:
    """LocalTransport, recording when each GetTasks was asked and what it answered."""

    def __init__(self, inner: LocalTransport, log: list[tuple[str, float, Any]]) -> None:
        self._inner = inner
        self._log = log

    def get_tasks(self, *, wait_s: float) -> TaskAssignment:
        asked = time.monotonic()
        assignment = self._inner.get_tasks(wait_s=wait_s)
        self._log.append(("ask", asked, (assignment.round, bool(assignment.tasks), wait_s)))
        return assignment

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_pushed_round_start_wakes_the_task_loop_without_polling(tmp_path: Path) -> None:
    paths = _workspace(tmp_path, rounds=3)
    plan = load_plan(paths)
    bus: Broadcast[Event] = Broadcast()
    timeline: list[tuple[str, float, Any]] = []

    def publish(event: Event) -> None:
        timeline.append(("event", time.monotonic(), (event.notification_type, event.body)))
        bus.publish(event)

    aggregator = _aggregator(paths, publish)
    listeners: list[EventListener] = []
    errors: list[BaseException] = []
    logs: dict[str, list[tuple[str, float, Any]]] = {}

    def work(name: str) -> None:
        try:
            signal = RoundSignal()
            listener = EventListener(
                lambda: bus.subscribe(replay=True), round_handlers(signal), on_live=signal.set_live
            ).start()
            listeners.append(listener)
            assert _wait_for(lambda: signal.live)
            runner = build_runner(
                paths.root,
                plan.model.runner,
                data_dir=load_data_path(paths, name),
                settings=plan.model.settings,
                collaborator=name,
            )
            logs[name] = []
            api = _RecordingAPI(LocalTransport(aggregator, name), logs[name])
            # A minute-long long-poll: were the loop polling, the test would time out.
            Collaborator(
                name=name, api=api, runner=runner, plan=plan, poll_wait_s=60, round_signal=signal
            ).run()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in aggregator.collaborators]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors, errors
        assert aggregator.done
    finally:
        for listener in listeners:
            listener.close()
        aggregator.close()
        bus.close()

    announced = {
        body["round"]: at
        for kind, at, (kind_name, body) in (e for e in timeline if e[0] == "event")
        if kind_name in ("UPDATE_ROUND_START", "MODEL_TEST_ROUND")
    }
    assert sorted(announced) == [0, 1, 2, 3]
    for name, asks in logs.items():
        working = [(at, r) for _, at, (r, has_tasks, _) in asks if has_tasks]
        assert [r for _, r in working] == [0, 1, 2, 3], name
        for at, round_number in working[1:]:
            # The loop asked for round r's tasks only after the push announced it.
            assert at >= announced[round_number], (name, round_number)
        # And it never sat in a long-poll with nothing to do.
        assert all(has_tasks or r == 3 for _, _, (r, has_tasks, _) in asks), asks


def test_listener_resubscribes_after_a_broken_stream_and_closes_promptly() -> None:
    opened: list[int] = []
    got: list[Event] = []

    class Flaky:
        def __init__(self, n: int) -> None:
            self.n = n
            self.closed = threading.Event()

        def __iter__(self) -> Iterator[Event]:
            yield update_round_start("t", round=self.n, model_uuid="m")
            if self.n == 0:
                raise ConnectionError("dropped")
            self.closed.wait()  # a live stream that stays open until closed

        def close(self) -> None:
            self.closed.set()

    def open_stream() -> Flaky:
        opened.append(len(opened))
        return Flaky(opened[-1])

    handlers = EventHandlers()
    handlers.on(EventType.UPDATE_ROUND_START, got.append)
    listener = EventListener(open_stream, handlers, max_backoff_s=0.05).start()
    assert _wait_for(lambda: len(got) == 2)
    started = time.monotonic()
    listener.close()
    assert time.monotonic() - started < 1
    assert opened == [0, 1]
    assert [e.body["round"] for e in got] == [0, 1]
    assert listener._thread.daemon and not listener._thread.is_alive()


def _wait_for(condition: Any, timeout: float = 5.0) -> bool:
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        if condition():
            return True
        time.sleep(0.01)
    return bool(condition())
