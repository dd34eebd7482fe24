"""Topic names and their explicit creation (never rely on broker auto-creation).

>>> from mlpulse.config import Settings
>>> Topics(Settings(topic_prefix="acme.")).predictions_by_model
'acme.predictions.by-model'
"""

from __future__ import annotations

import asyncio
import time

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from .config import Settings
from .errors import BrokerError
from .security import kafka_options

__all__ = ["Topics", "checkpoint_changelog", "detector_changelog", "ensure_topics"]

_TOPIC_ALREADY_EXISTS = 36


class Topics:
    """Every topic mlpulse reads or writes."""

    def __init__(self, settings: Settings) -> None:
        t = settings.topic
        self.predictions = t("predictions")
        self.logs = t("logs")
        self.feedback = t("feedback")
        self.windows = t("windows")
        self.alerts = t("alerts")
        self.deadletter = t("deadletter")
        # internal: valid events repartitioned by model / service
        self.predictions_by_model = t("predictions.by-model")
        self.feedback_by_model = t("feedback.by-model")
        self.logs_by_service = t("logs.by-service")

    def all(self) -> list[str]:
        return list(vars(self).values())


def detector_changelog(settings: Settings) -> str:
    """The changelog topic of the workers' detector-state table (named by Faust's rule)."""
    return f"{settings.group_id}-detectors-changelog"


def checkpoint_changelog(settings: Settings) -> str:
    """The compacted topic of the workers' checkpoints (see :mod:`mlpulse.checkpoint`)."""
    return f"{settings.group_id}-checkpoints-changelog"


async def ensure_topics_async(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create mlpulse's topics with ``settings.partitions``; return those created."""
    deadline = time.monotonic() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=settings.bootstrap_or_error, request_timeout_ms=10_000,
            **kafka_options(settings),
        )
        try:
            await admin.start()
            break
        except KafkaError as exc:
            await admin.close()
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}"
                ) from exc
            await asyncio.sleep(0.5)
    try:
        topics = Topics(settings)
        # Dead letters carry whole input messages (base64 may add a third): allow them.
        big = {"max.message.bytes": str(2 * settings.max_message_bytes + 65536)}
        # one latest snapshot per key is all the changelog needs: compact it
        compact = {"cleanup.policy": "compact", "max.message.bytes": str(16 * 1024 * 1024)}
        changelogs = [detector_changelog(settings), checkpoint_changelog(settings)]
        configs = {topics.deadletter: big, **dict.fromkeys(changelogs, compact)}
        response = await admin.create_topics([
            NewTopic(name, settings.partitions, 1, topic_configs=configs.get(name, {}))
            for name in [*topics.all(), *changelogs]
        ])
        created = []
        for name, code, message in response.topic_errors:
            if code == 0:
                created.append(name)
            elif code != _TOPIC_ALREADY_EXISTS:
                raise BrokerError(f"cannot create topic {name}: {message} (code {code})")
        return created
    finally:
        await admin.close()


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Blocking :func:`ensure_topics_async`."""
    return asyncio.run(ensure_topics_async(settings, timeout_s))
