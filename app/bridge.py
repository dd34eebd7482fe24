"""``mlpulse alertmanager-bridge``: alert events from Kafka to Alertmanager's v2 API.

The bridge consumes ``mlpulse.alerts`` in its own consumer group and POSTs each
batch to ``/api/v2/alerts``, committing the Kafka offsets only after
Alertmanager accepted the batch: while Alertmanager is down the bridge retries
with backoff (1 s doubling to 30 s) and never skips an alert; a restarted bridge
resumes from its committed offset. Alertmanager expires an alert that is not
re-sent within its ``resolve_timeout``, so the bridge re-sends every firing
alert every ``resend_seconds`` (60) — it rebuilds that set at start by reading
the topic from the beginning.

Mapping (Alertmanager's own fields): ``labels`` = the alert's labels plus
``alertname`` (the rule), ``severity`` and ``kind``; ``annotations`` = summary,
description, runbook_url, value, threshold, alert_id; ``startsAt``; ``endsAt``
for resolved alerts; ``generatorURL``.

>>> alert = {"alert_id": "f-1", "fingerprint": "f", "status": "resolved",
...          "severity": "warning", "rule": "slow", "kind": "threshold",
...          "labels": {"model": "m"}, "annotations": {"summary": "p99 high"},
...          "value": 812.0, "threshold": 500.0, "starts_at": "2026-01-01T00:00:00Z",
...          "ends_at": "2026-01-01T00:05:00Z"}
>>> am = to_alertmanager(alert, "http://mlpulse:6066/")
>>> am["labels"]
{'model': 'm', 'alertname': 'slow', 'severity': 'warning', 'kind': 'threshold'}
>>> am["endsAt"], am["annotations"]["value"]
('2026-01-01T00:05:00Z', '812')
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp
import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from .config import Settings
from .security import kafka_options
from .topics import Topics

__all__ = ["AlertmanagerBridge", "to_alertmanager"]

log = logging.getLogger("mlpulse.bridge")


def to_alertmanager(alert: dict[str, Any], generator_url: str) -> dict[str, Any]:
    """One mlpulse alert event as an Alertmanager v2 ``postableAlert``."""
    annotations = {k: v for k, v in (alert.get("annotations") or {}).items() if v}
    for name in ("value", "threshold"):
        if alert.get(name) is not None:
            annotations[name] = f"{alert[name]:.6g}"
    annotations["alert_id"] = alert["alert_id"]
    out = {
        "labels": {**alert["labels"], "alertname": alert["rule"],
                   "severity": alert["severity"], "kind": alert["kind"]},
        "annotations": annotations,
        "startsAt": alert["starts_at"],
        "generatorURL": generator_url,
    }
    if alert["status"] == "resolved" and alert.get("ends_at"):
        out["endsAt"] = alert["ends_at"]
    return out


class AlertmanagerBridge:
    """Kafka → Alertmanager, at least once (see the module docs)."""

    def __init__(self, settings: Settings, alertmanager_url: str, *,
                 resend_seconds: float = 60.0, generator_url: str | None = None) -> None:
        self.settings = settings
        self.url = alertmanager_url.rstrip("/") + "/api/v2/alerts"
        self.resend_seconds = resend_seconds
        self.generator_url = generator_url or f"http://{settings.web_host}:{settings.web_port}/"
        self.topic = Topics(settings).alerts
        self.group_id = f"{settings.group_id}-alertmanager-bridge"
        self.firing: dict[str, dict[str, Any]] = {}
        self.posted = 0

    async def run(self, stop: asyncio.Event) -> None:
        bootstrap = self.settings.bootstrap_or_error
        await self._rebuild_firing(bootstrap)
        consumer = AIOKafkaConsumer(
            self.topic, bootstrap_servers=bootstrap, group_id=self.group_id,
            enable_auto_commit=False, auto_offset_reset="earliest",
            **kafka_options(self.settings), **self.settings.group_options())
        await consumer.start()
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            try:
                if self.firing:
                    await self._post(http, list(self.firing.values()), stop)
                next_resend = loop.time() + self.resend_seconds
                while not stop.is_set():
                    batch = await consumer.getmany(timeout_ms=500, max_records=500)
                    alerts = [self._track(msgspec.json.decode(m.value))
                              for messages in batch.values() for m in messages]
                    if alerts and await self._post(http, alerts, stop):
                        await consumer.commit()
                    if loop.time() >= next_resend and self.firing:
                        await self._post(http, list(self.firing.values()), stop)
                        next_resend = loop.time() + self.resend_seconds
            finally:
                await consumer.stop()

    def _track(self, alert: dict[str, Any]) -> dict[str, Any]:
        am = to_alertmanager(alert, self.generator_url)
        if alert["status"] == "firing":
            self.firing[alert["fingerprint"]] = am
        else:
            self.firing.pop(alert["fingerprint"], None)
        return am

    async def _rebuild_firing(self, bootstrap: str) -> None:
        """Read the topic up to its end (no group) to know which alerts fire now."""
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                    enable_auto_commit=False, **kafka_options(self.settings))
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(self.topic) or set()
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            if not tps:
                return
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
                batch = await consumer.getmany(timeout_ms=500)
                for messages in batch.values():
                    for m in messages:
                        self._track(msgspec.json.decode(m.value))
        finally:
            await consumer.stop()
        log.info("mlpulse bridge: %d alerts firing at start", len(self.firing))

    async def _post(self, http: aiohttp.ClientSession, alerts: list[dict[str, Any]],
                    stop: asyncio.Event) -> bool:
        """POST until Alertmanager accepts (True) or the bridge is stopped (False)."""
        backoff = 1.0
        while not stop.is_set():
            try:
                async with http.post(self.url, json=alerts) as response:
                    if response.status < 300:
                        self.posted += len(alerts)
                        log.info("mlpulse bridge: posted %d alerts", len(alerts))
                        return True
                    body = (await response.text())[:200]
                    if 400 <= response.status < 500:
                        # Alertmanager will never take these: say so, do not block the stream
                        log.error("mlpulse bridge: Alertmanager rejected %d alerts (%d): %s",
                                  len(alerts), response.status, body)
                        return True
                    log.warning("mlpulse bridge: Alertmanager answered %d: %s",
                                response.status, body)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.warning("mlpulse bridge: Alertmanager unreachable (%s); retry in %.0f s",
                            exc, backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=backoff)
            backoff = min(30.0, backoff * 2)
        return False
