"""Producer SDK: log predictions, logs and feedback from a serving process.

Calls never block and never raise on a broker problem: events go into a bounded
in-memory buffer (a full buffer drops the event and counts it in ``dropped``); a
background thread batches them into envelopes (one Kafka message = a JSON array
of up to ``max_batch_events`` events, keyed by model or service) and sends them.
``close()`` (or leaving the ``with`` block) flushes what is buffered.

Usage::

    with Telemetry("127.0.0.1:9092") as telemetry:
        telemetry.log_prediction(model="fraud", latency_ms=12.5, prediction=1,
                                 confidence=0.93, features={"amount": 120.0})

The ``@monitor_prediction`` decorator and ``last_event_id`` are in
:mod:`mlpulse.sdk.monitor` (also importable from here).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ParamSpec, TypeVar

import msgspec
from aiokafka import AIOKafkaProducer
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..errors import MlpulseError
from ..tracing import current_trace_id

__all__ = ["Telemetry", "chunked_with_counts", "default_telemetry"]

log = logging.getLogger("mlpulse.sdk")

P = ParamSpec("P")
R = TypeVar("R")

_encoder = msgspec.json.Encoder()

class Telemetry:
    """Non-blocking, batching producer of mlpulse events."""

    def __init__(
        self,
        bootstrap: str,
        *,
        topic_prefix: str = "mlpulse.",
        max_buffer_events: int = 100_000,
        max_batch_events: int = 1_000,
        linger_s: float = 0.05,
        max_message_bytes: int = 1_000_000,
        kafka_options: Mapping[str, Any] | None = None,
    ) -> None:
        """``kafka_options``: more keyword arguments for the ``AIOKafkaProducer`` (TLS,
        SASL: :func:`mlpulse.security.kafka_options` makes them from settings)."""
        self.bootstrap = bootstrap
        self.kafka_options = dict(kafka_options or {})
        self.topics = {
            kind: f"{topic_prefix}{kind}" for kind in ("predictions", "logs", "feedback")
        }
        self.max_buffer_events = max_buffer_events
        self.max_batch_events = max_batch_events
        self.linger_s = linger_s
        self.max_message_bytes = max_message_bytes
        self.dropped = 0
        """Events dropped because the buffer was full or their send failed."""
        self.unconfirmed = 0
        """Of ``dropped``, the events whose send failed without an answer from the broker
        (a timeout, a lost connection): it may have written them before its answer was
        lost, so a consumer may count up to this many more than ``sent_events``."""
        self.in_flight = 0
        """Events handed to the broker and not answered yet. A request in flight when its
        connection drops is sent again once the broker is back: if the broker had written
        it before the drop, it holds those events twice (the producer is not idempotent:
        not every Kafka-protocol broker supports it)."""
        self.sent_events = 0
        self.sent_messages = 0
        self._buffer: deque[tuple[str, str, dict[str, Any] | bytes]] = deque()
        self._lock = threading.Lock()
        # event ids: a random 64-bit prefix per Telemetry and a counter (unique like
        # uuid4 for practical purposes, ~10x cheaper on the serving path)
        self._id_prefix = os.urandom(8).hex() + "-"
        self._ids = itertools.count()
        self._wake = threading.Event()
        self._closing = False
        self.error: BaseException | None = None
        """Why the sender thread stopped, if it did (events are then dropped and counted)."""
        self._thread = threading.Thread(target=self._run, name="mlpulse-sdk", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ API

    def new_event_id(self) -> str:
        """A fresh event id (unique per process: a random prefix and a counter)."""
        return f"{self._id_prefix}{next(self._ids):x}"

    def log_prediction(
        self, *, model: str, timestamp: float | None = None, event_id: str | None = None,
        **fields: Any,
    ) -> None:
        """Record one prediction (fields as in ``schemas/prediction.schema.json``).

        Without a ``trace_id``, the current OpenTelemetry span's is used (when
        opentelemetry-api is installed).
        """
        event = {
            "event_id": event_id or self.new_event_id(),
            "timestamp": time.time() if timestamp is None else timestamp,
            "model": model,
            **{k: v for k, v in fields.items() if v is not None},
        }
        if "trace_id" not in event:
            trace_id = current_trace_id()
            if trace_id is not None:
                event["trace_id"] = trace_id
        self._put("predictions", model, event)

    def log(
        self, *, service: str, level: str, message: str, timestamp: float | None = None,
        **fields: Any,
    ) -> None:
        """Record one log event of ``service`` (trace id as in :meth:`log_prediction`)."""
        event = {
            "timestamp": time.time() if timestamp is None else timestamp,
            "level": level, "service": service, "message": message,
            **{k: v for k, v in fields.items() if v is not None},
        }
        if "trace_id" not in event:
            trace_id = current_trace_id()
            if trace_id is not None:
                event["trace_id"] = trace_id
        self._put("logs", service, event)

    def feedback(
        self, *, model: str, event_id: str, label: Any = None,
        outcomes: Mapping[str, float | bool] | None = None, timestamp: float | None = None,
    ) -> None:
        """Record the ground-truth ``label`` of ``model``'s prediction ``event_id``, its
        business ``outcomes`` (e.g. ``{"converted": True, "revenue_usd": 12.5}``), or both.

        >>> Telemetry.disabled().feedback(model="m", event_id="e1")
        Traceback (most recent call last):
        ...
        ValueError: feedback needs a label, outcomes or both
        """
        if label is None and not outcomes:
            raise ValueError("feedback needs a label, outcomes or both")
        event: dict[str, Any] = {
            "event_id": event_id,
            "timestamp": time.time() if timestamp is None else timestamp,
            "model": model,
        }
        if label is not None:
            event["label"] = label
        if outcomes:
            event["outcomes"] = dict(outcomes)
        self._put("feedback", model, event)

    def monitor_prediction(
        self, *, model: str, version: str = "unknown", **options: Any,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """:func:`~mlpulse.sdk.monitor.monitor_prediction` bound to this Telemetry (same
        options)."""
        from .monitor import monitor_prediction

        return monitor_prediction(model=model, version=version, telemetry=self, **options)

    def set_default(self) -> Telemetry:
        """Make this the Telemetry that ``@monitor_prediction`` uses when given none."""
        global _default  # noqa: PLW0603
        with _default_lock:
            _default = self
        return self

    @classmethod
    def disabled(cls) -> Telemetry:
        """A Telemetry that sends nothing (counts everything as dropped): for tests and docs."""
        telemetry = cls.__new__(cls)
        telemetry.dropped = telemetry.sent_events = telemetry.sent_messages = 0
        telemetry.unconfirmed = telemetry.in_flight = 0
        telemetry._closing = True
        telemetry._lock = threading.Lock()
        telemetry._id_prefix = os.urandom(8).hex() + "-"
        telemetry._ids = itertools.count()
        telemetry._buffer = deque()
        telemetry._thread = threading.Thread(target=lambda: None)   # never started
        return telemetry

    def collector(self) -> Collector:
        """A Prometheus collector of this Telemetry's counters, for the serving process's
        registry: ``prometheus_client.REGISTRY.register(telemetry.collector())``.

        >>> from prometheus_client import CollectorRegistry
        >>> registry = CollectorRegistry()
        >>> telemetry = Telemetry.disabled()
        >>> registry.register(telemetry.collector())
        >>> telemetry.log_prediction(model="m")
        >>> (registry.get_sample_value("mlpulse_sdk_events_dropped_total"),
        ...  registry.get_sample_value("mlpulse_sdk_in_flight_events"))
        (1, 0)
        """
        return _TelemetryCollector(self)

    def send_raw(self, kind: str, value: bytes, key: str = "") -> None:
        """Send ``value`` as one message as it is (tests, replays, malformed input)."""
        self._put(kind, key, value)

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything buffered so far was handed to the broker."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self._buffer and not self._sending:
                    return True
                if not self._thread.is_alive():   # the sender died: nothing will go out
                    self.dropped += len(self._buffer)
                    self._buffer.clear()
                    return False
            self._wake.set()
            time.sleep(0.01)
        return False

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush and stop the background thread."""
        if self._closing:
            return
        self.flush(timeout_s)
        self._closing = True
        self._wake.set()
        self._thread.join(timeout_s)

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------- internals

    _sending = False

    def _put(self, kind: str, key: str, event: dict[str, Any] | bytes) -> None:
        with self._lock:
            if self._closing or len(self._buffer) >= self.max_buffer_events:
                self.dropped += 1
                return
            self._buffer.append((kind, key, event))
            full = len(self._buffer) >= self.max_batch_events
        if full:
            self._wake.set()

    def _take(self) -> list[tuple[str, str, dict[str, Any] | bytes]]:
        with self._lock:
            items = list(self._buffer)
            self._buffer.clear()
            self._sending = bool(items)
        return items

    def _run(self) -> None:
        try:
            asyncio.run(self._loop())
        except BaseException as exc:
            self.error = exc
            log.exception("mlpulse SDK sender stopped")

    async def _loop(self) -> None:
        producer = await self._connect()
        if producer is None:   # closed before the broker was ever reached
            with self._lock:
                self.dropped += len(self._buffer)
                self._buffer.clear()
            return
        try:
            while True:
                await asyncio.get_running_loop().run_in_executor(
                    None, self._wake.wait, self.linger_s
                )
                self._wake.clear()
                items = self._take()
                if items:
                    await self._send(producer, items)
                    with self._lock:
                        self._sending = False
                elif self._closing:
                    return
        finally:
            await producer.stop()

    async def _connect(self) -> AIOKafkaProducer | None:
        """Start a producer, retrying with backoff until it works or ``close()`` is called."""
        backoff_s = 0.1
        while not self._closing:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, linger_ms=5,
                max_request_size=max(self.max_message_bytes * 2, 1_048_576),
                **self.kafka_options,
            )
            try:
                await producer.start()
                return producer
            except Exception as exc:
                await producer.stop()
                log.warning("mlpulse SDK cannot reach %s (%s); retrying", self.bootstrap, exc)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)
        return None

    async def _send(
        self, producer: AIOKafkaProducer, items: list[tuple[str, str, dict[str, Any] | bytes]]
    ) -> None:
        batches: dict[tuple[str, str], list[dict[str, Any]]] = {}
        futures = []
        for kind, key, event in items:
            if isinstance(event, bytes):
                futures.append((1, await producer.send(self.topics[kind], event, key=key.encode())))
                continue
            batch = batches.setdefault((kind, key), [])
            batch.append(event)
            if len(batch) >= self.max_batch_events:
                futures.extend(await self._send_batch(producer, kind, key, batch))
                batches[(kind, key)] = []
        for (kind, key), batch in batches.items():
            if batch:
                futures.extend(await self._send_batch(producer, kind, key, batch))
        self.in_flight += sum(count for count, _ in futures)
        for count, future in futures:
            try:
                await future
                self.sent_events += count
                self.sent_messages += 1
            except Exception as exc:
                self.dropped += count
                self.unconfirmed += count
                log.warning("mlpulse SDK dropped %d events: %s", count, exc)
            finally:
                self.in_flight -= count

    async def _send_batch(
        self, producer: AIOKafkaProducer, kind: str, key: str, batch: list[dict[str, Any]]
    ) -> list[tuple[int, Any]]:
        """Send ``batch`` as envelopes of at most ``max_message_bytes`` each."""
        sent = []
        for payload, count in chunked_with_counts(batch, self.max_message_bytes):
            sent.append((count, await producer.send(self.topics[kind], payload,
                                                   key=key.encode())))
        return sent


_default: Telemetry | None = None
_default_lock = threading.Lock()


class _TelemetryCollector(Collector):
    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def collect(self) -> Iterable[Metric]:
        t = self.telemetry
        yield CounterMetricFamily("mlpulse_sdk_events_sent", "Events the SDK delivered.",
                                  value=t.sent_events)
        yield CounterMetricFamily("mlpulse_sdk_messages_sent",
                                  "Kafka messages (envelopes) the SDK delivered.",
                                  value=t.sent_messages)
        yield CounterMetricFamily(
            "mlpulse_sdk_events_dropped", "Events the SDK dropped (buffer full, broker "
            "refused, closed).", value=t.dropped)
        yield GaugeMetricFamily("mlpulse_sdk_buffered_events", "Events waiting to be sent.",
                                value=len(t._buffer))
        yield GaugeMetricFamily("mlpulse_sdk_in_flight_events",
                                "Events sent and not answered by the broker yet.",
                                value=t.in_flight)


def default_telemetry() -> Telemetry:
    """The process-wide :class:`Telemetry`, made on first use from the ``MLPULSE_*``
    environment (``MLPULSE_KAFKA_BOOTSTRAP``, ``MLPULSE_TOPIC_PREFIX`` and the Kafka
    TLS/SASL settings) unless :meth:`Telemetry.set_default` chose one."""
    global _default  # noqa: PLW0603 - one sender per process, by design
    with _default_lock:
        if _default is None:
            from ..config import Settings
            from ..security import kafka_options

            settings = Settings.from_env()
            if not settings.kafka_bootstrap:
                raise MlpulseError(
                    "monitor_prediction: no Telemetry given and MLPULSE_KAFKA_BOOTSTRAP not set")
            _default = Telemetry(settings.kafka_bootstrap, topic_prefix=settings.topic_prefix,
                                 kafka_options=kafka_options(settings))
        return _default


def chunked_with_counts(
    batch: list[dict[str, Any]], max_bytes: int
) -> list[tuple[bytes, int]]:
    """JSON envelopes of ``batch`` with their event counts, each at most ``max_bytes``
    unless a single event is bigger (the broker then refuses it and it is counted dropped)."""
    payload = _encoder.encode(batch)
    if len(payload) <= max_bytes or len(batch) <= 1:
        return [(payload, len(batch))]
    half = len(batch) // 2
    return (chunked_with_counts(batch[:half], max_bytes)
            + chunked_with_counts(batch[half:], max_bytes))



def __getattr__(name: str) -> Any:
    """``monitor_prediction`` and ``last_event_id`` live in :mod:`mlpulse.sdk.monitor`
    (which imports this module); found here too, as they were."""
    if name in ("monitor_prediction", "last_event_id"):
        from . import monitor

        return getattr(monitor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
