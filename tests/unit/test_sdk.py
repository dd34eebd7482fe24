"""SDK pieces that need no broker."""

from __future__ import annotations

import asyncio
import json

from mlpulse.events import PredictionWindow
from mlpulse.sdk.monitor import last_event_id, monitor_prediction
from mlpulse.sdk.producer import Telemetry, chunked_with_counts
from mlpulse.testing import LocalPipeline


def test_envelopes_stay_under_the_message_size():
    batch = [{"event_id": str(i), "pad": "x" * 100} for i in range(1000)]
    chunks = chunked_with_counts(batch, max_bytes=10_000)
    assert all(len(payload) <= 10_000 for payload, _ in chunks)
    assert sum(count for _, count in chunks) == 1000
    events = [e for payload, _ in chunks for e in json.loads(payload)]
    assert events == batch


def test_disabled_telemetry_counts_drops_and_decorator_keeps_results_and_errors():
    telemetry = Telemetry.disabled()

    @monitor_prediction(model="m", telemetry=telemetry)
    def predict(x: float) -> float:
        if x < 0:
            raise ValueError(x)
        return x + 1

    assert predict(1.0) == 2.0
    try:
        predict(-1.0)
    except ValueError:
        pass
    else:
        raise AssertionError("the error must reach the caller")
    assert telemetry.dropped == 2


def test_flush_on_a_disabled_telemetry_returns_at_once():
    telemetry = Telemetry.disabled()
    telemetry.log_prediction(model="m")
    assert telemetry.flush(timeout_s=5) is True
    assert telemetry.dropped == 1


class Recording(Telemetry):
    """A Telemetry that keeps what it would send (no broker)."""

    def __init__(self) -> None:
        disabled = Telemetry.disabled()
        self.__dict__.update(disabled.__dict__)
        self.sent: list[tuple[str, dict]] = []

    def _put(self, kind: str, key: str, event: dict | bytes) -> None:
        assert isinstance(event, dict)
        self.sent.append((kind, event))


async def test_an_async_handler_is_timed_to_completion_and_its_event_id_joins_feedback():
    """A real asyncio server whose handler awaits a decorated ``async def``: each request's
    latency is its whole await, its segment and features come from its arguments, and the
    event id the handler reads back joins the label and outcomes sent for it later."""
    telemetry = Recording()

    @monitor_prediction(model="m", version="v2", telemetry=telemetry,
                        segment=lambda request: {"region": request["region"]},
                        features=lambda request: {"amount": request["amount"]},
                        confidence=lambda result: result["p"],
                        prediction=lambda result: result["decision"])
    async def predict(request: dict) -> dict:
        await asyncio.sleep(0.05)
        if request["amount"] < 0:
            raise ValueError("negative amount")
        return {"decision": "approve", "p": 0.9}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = json.loads(await reader.readline())
        try:
            decision = (await predict(request))["decision"]
        except ValueError:
            decision = "error"
        writer.write(json.dumps({"decision": decision, "event_id": last_event_id()}).encode()
                     + b"\n")
        await writer.drain()
        writer.close()

    async def call(request: dict) -> dict:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        answer = json.loads(await reader.readline())
        writer.close()
        return answer

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        answers = await asyncio.gather(*(call({"region": r, "amount": a}) for r, a in
                                         [("eu", 10.0), ("us", 20.0), ("eu", -1.0)]))
    ids = [a["event_id"] for a in answers]
    assert len(set(ids)) == 3 and [a["decision"] for a in answers] == [
        "approve", "approve", "error"]
    events = {e["event_id"]: e for kind, e in telemetry.sent if kind == "predictions"}
    assert set(events) == set(ids)   # concurrent calls: each answer names its own event
    first, failed = events[ids[0]], events[ids[2]]
    assert first["latency_ms"] >= 50   # timed to completion, not to coroutine creation
    assert (first["segment"], first["features"], first["prediction"], first["confidence"]) == (
        {"region": "eu"}, {"amount": 10.0}, "approve", 0.9)
    assert (failed["status"], failed["error_type"], failed["latency_ms"] >= 50) == (
        "error", "ValueError", True)

    for event_id in ids[:2]:
        telemetry.feedback(model="m", event_id=event_id, label="approve",
                           outcomes={"converted": event_id == ids[0]})
    pipe = LocalPipeline(window_seconds=10, lateness_seconds=0, segment_keys="region")
    pipe.send_predictions([e for kind, e in telemetry.sent if kind == "predictions"])
    pipe.send_feedback([e for kind, e in telemetry.sent if kind == "feedback"])
    pipe.advance(60)
    whole = [w for w in pipe.windows if isinstance(w, PredictionWindow) and not w.segment]
    assert whole[-1].performance.labelled == 2 and whole[-1].performance.accuracy == 1.0
    assert whole[-1].outcomes["converted"].rate == 0.5
    assert {w.segment.get("region") for w in pipe.windows
            if isinstance(w, PredictionWindow) and w.segment} == {"eu", "us"}


async def test_events_sent_and_not_answered_are_in_flight_until_the_broker_answers():
    """``in_flight`` counts what the broker may hold without having said so: it rises as a
    send goes out and falls as each answer comes, acknowledged or failed."""
    loop = asyncio.get_running_loop()
    answers: list[asyncio.Future[None]] = []

    class Producer:   # hands out futures the test answers
        async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[None]:
            answers.append(loop.create_future())
            return answers[-1]

    telemetry = Telemetry.disabled()
    telemetry.topics = {"predictions": "p"}
    telemetry.max_batch_events, telemetry.max_message_bytes = 2, 1_000_000
    items = [("predictions", "m", {"event_id": str(i), "timestamp": 1.0, "model": "m"})
             for i in range(5)]
    sending = asyncio.ensure_future(telemetry._send(Producer(), items))  # type: ignore[arg-type]
    while len(answers) < 3:
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert telemetry.in_flight == 5 and telemetry.sent_events == 0
    answers[0].set_result(None)
    answers[1].set_exception(ConnectionError("lost"))
    await asyncio.sleep(0)
    assert telemetry.in_flight == 1
    assert (telemetry.sent_events, telemetry.dropped, telemetry.unconfirmed) == (2, 2, 2)
    answers[2].set_result(None)
    await sending
    assert (telemetry.in_flight, telemetry.sent_events) == (0, 3)


def test_a_failing_extractor_leaves_its_field_out_and_the_call_goes_on():
    telemetry = Recording()

    @monitor_prediction(model="m", telemetry=telemetry, features=lambda x: {"x": 1 / x})
    def predict(x: float) -> float:
        return x

    assert predict(0.0) == 0.0 and predict(2.0) == 2.0
    assert [e.get("features") for _, e in telemetry.sent] == [None, {"x": 0.5}]
    assert last_event_id() == telemetry.sent[-1][1]["event_id"]


def test_a_canary_injection_sends_a_share_of_the_model_as_a_slower_version():
    from mlpulse.sdk.simulator import CANARY_SHARE, CANARY_VERSION, Injection, Simulator

    simulator = Simulator(n_models=2, seed=3,
                          injections=[Injection("canary", "model-0", 5.0, magnitude=2.0)])
    events = list(simulator.events(start_s=0, duration_s=20, rate_per_s=200))
    canary = [e for e in events if e["model_version"] == CANARY_VERSION]
    assert {e["model"] for e in canary} == {"model-0"}
    assert min(e["timestamp"] for e in canary) >= 5.0
    later = [e for e in events if e["model"] == "model-0" and e["timestamp"] >= 5.0]
    assert abs(len(canary) / len(later) - CANARY_SHARE) < 0.05

    def median(version: str) -> float:
        values = sorted(e["latency_ms"] for e in later if e["model_version"] == version)
        return values[len(values) // 2]

    assert median(CANARY_VERSION) > 1.6 * median("v1")
