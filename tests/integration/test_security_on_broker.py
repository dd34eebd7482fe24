"""Security on the real broker: every Kafka client over TLS, basic auth on the worker's pages,
and secrets kept out of logs and pages.

Tansu 0.6 cannot terminate TLS itself here, so a TLS proxy in front of it does: the broker
advertises the proxy's port, so every connection of every client (Faust's consumer group and
producer, the ingest consumer, the admin client, the SDK) goes through TLS, verified against
a test CA (``trustme``). A client that ignored the TLS settings could not talk to the proxy.
"""

from __future__ import annotations

import asyncio
import base64
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import trustme
from aiokafka import AIOKafkaConsumer

from mlpulse.broker import EmbeddedBroker, free_port
from mlpulse.config import Settings
from mlpulse.sdk.producer import Telemetry
from mlpulse.security import kafka_options
from mlpulse.topics import Topics, ensure_topics
from tests.integration.conftest import WorkerProcess
from tests.integration.proxy import Proxy

WEB_PASSWORD = "w3b-" + uuid.uuid4().hex      # secrets that must never be printed
KEY_PASSWORD = "k3y-" + uuid.uuid4().hex


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[str, Path, Proxy, Path]]:
    ca = trustme.CA()
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("mlpulse-worker")
    client_cert = tmp_path / "client.pem"
    client.cert_chain_pems[0].write_to_path(str(client_cert))
    # the client key, encrypted with KEY_PASSWORD (a setting that must stay secret)
    from cryptography.hazmat.primitives import serialization
    key = serialization.load_pem_private_key(client.private_key_pem.bytes(), password=None)
    (tmp_path / "client.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(KEY_PASSWORD.encode())))
    import ssl
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED   # mutual TLS: clients must show a certificate
    proxy_port = free_port()
    with EmbeddedBroker(advertised_port=proxy_port) as broker, \
            Proxy(proxy_port, broker.port, context) as proxy:
        yield f"127.0.0.1:{proxy_port}", cafile, proxy, tmp_path


def _get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def _windows(settings: Settings, topic: str, want: int, timeout_s: float) -> list[dict]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap,
                                group_id=None, auto_offset_reset="earliest",
                                **kafka_options(settings))
    await consumer.start()
    records: list[dict] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < want and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            records += [msgspec.json.decode(m.value) for ms in batch.values() for m in ms]
    finally:
        await consumer.stop()
    return records


def test_worker_and_sdk_over_mutual_tls_with_basic_auth_and_no_secret_in_logs(tls_broker):
    bootstrap, cafile, proxy, certs = tls_broker
    tag = uuid.uuid4().hex[:6]
    settings = Settings(
        kafka_bootstrap=bootstrap, topic_prefix=f"tls-{tag}.", group_id=f"tls-{tag}",
        window_seconds=2.0, lateness_seconds=1.0, max_future_skew_seconds=1e12,
        idle_check_seconds=0.25, kafka_security_protocol="SSL", kafka_ssl_cafile=str(cafile),
        kafka_ssl_certfile=str(certs / "client.pem"), kafka_ssl_keyfile=str(certs / "client.key"),
        kafka_ssl_key_password=KEY_PASSWORD, web_auth_username="ops",
        web_auth_password=WEB_PASSWORD, log_format="json", log_level="debug")
    assert WEB_PASSWORD not in repr(settings) and KEY_PASSWORD not in repr(settings)
    ensure_topics(settings)                       # the admin client over TLS
    topics = Topics(settings)
    worker = WorkerProcess(settings, "tls")
    try:
        worker.wait_assigned(timeout_s=90)
        t0 = (time.time() // 2) * 2 - 20
        with Telemetry(bootstrap, topic_prefix=settings.topic_prefix,
                       kafka_options=kafka_options(settings)) as telemetry:
            for i in range(30):
                telemetry.log_prediction(model="tls-model", latency_ms=10.0 + i,
                                         prediction=1, timestamp=t0 + i * 0.05)
            telemetry.log_prediction(model="tls-model", latency_ms=1.0, prediction=1,
                                     timestamp=t0 + 10.0)   # closes the first window
        assert telemetry.dropped == 0
        records = asyncio.run(_windows(settings, topics.windows, want=1, timeout_s=60))
        first = [r for r in records if r["model"] == "tls-model"]
        assert first and first[0]["count"] == 30

        base = f"http://127.0.0.1:{worker.web_port}"
        for path in ("/metrics", "/status", "/api/status"):
            assert _get(base + path)[0] == 401
            assert _get(base + path, ("ops", "wrong"))[0] == 401
        status, text = _get(base + "/metrics", ("ops", WEB_PASSWORD))
        assert status == 200 and "mlpulse_events_total" in text
        status, page = _get(base + "/api/status", ("ops", WEB_PASSWORD))
        assert status == 200 and "tls-model" in page
        assert proxy.connections >= 3   # consumer group, ingest consumer, producers
    finally:
        worker.stop()
    log = worker.log()
    assert '"level":"debug"' in log   # the most talkative level, and still no secret
    for secret in (WEB_PASSWORD, KEY_PASSWORD):
        assert secret not in log
