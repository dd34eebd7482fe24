"""Kafka TLS/SASL settings for every client, and HTTP basic auth for the worker's pages.

One place turns the ``MLPULSE_KAFKA_SECURITY_PROTOCOL`` / ``_SASL_*`` / ``_SSL_*`` settings
into what aiokafka clients take (:func:`kafka_options`: the ingest consumer, the
producers, the admin client, the bridge, ``mlpulse tail``) and what Faust takes
(:func:`faust_credentials`), so the worker's consumer group, its internal topics and
its own clients all connect the same way. Secrets are kept out of ``repr`` (and so out
of logs): :class:`~mlpulse.config.Settings` hides them.

>>> from mlpulse.config import Settings
>>> kafka_options(Settings())
{'security_protocol': 'PLAINTEXT'}
>>> options = kafka_options(Settings(kafka_security_protocol="SASL_PLAINTEXT",
...     kafka_sasl_mechanism="SCRAM-SHA-256", kafka_sasl_username="mlpulse",
...     kafka_sasl_password="s3cret"))
>>> options["sasl_mechanism"], options["sasl_plain_username"]
('SCRAM-SHA-256', 'mlpulse')
>>> auth = BasicAuth("ops", "pa:ss")
>>> auth.allows("Basic " + base64.b64encode(b"ops:pa:ss").decode()), auth.allows(None)
(True, False)
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ssl
from typing import Any

from .config import PROTOCOLS, SASL_MECHANISMS, Settings
from .errors import ConfigError

__all__ = ["PROTOCOLS", "SASL_MECHANISMS", "BasicAuth", "auth_middleware", "faust_credentials",
           "kafka_options", "ssl_context"]


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of an SSL or SASL_SSL connection (None for plaintext): the
    system's trusted CAs, or ``kafka_ssl_cafile``; a client certificate if one is set."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    try:
        context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
        if settings.kafka_ssl_certfile:
            context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile,
                                    password=settings.kafka_ssl_key_password)
    except (ssl.SSLError, OSError) as exc:   # (the message never holds the password)
        raise ConfigError(f"Kafka TLS settings: cannot load the CA file or the client "
                          f"certificate and key: {exc}") from None
    return context


def kafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (consumer, producer, admin)."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if protocol.startswith("SASL_"):
        options.update(sasl_mechanism=settings.kafka_sasl_mechanism,
                       sasl_plain_username=settings.kafka_sasl_username,
                       sasl_plain_password=settings.kafka_sasl_password)
    return options


def faust_credentials(settings: Settings) -> Any:
    """Faust's ``broker_credentials`` for the same connection (None for plaintext)."""
    import faust

    protocol = settings.kafka_security_protocol
    context = ssl_context(settings)
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    if protocol.startswith("SASL_"):
        # SASL_SSL when given a TLS context, SASL_PLAINTEXT without one
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username, password=settings.kafka_sasl_password,
            ssl_context=context, mechanism=settings.kafka_sasl_mechanism)
    return None


class BasicAuth:
    """HTTP basic auth for the worker's pages (``/metrics``, ``/status``, ``/api/status``)."""

    def __init__(self, username: str, password: str) -> None:
        self._expected = f"{username}:{password}".encode()

    def allows(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries the right credentials (compared in
        constant time)."""
        if not header or not header.startswith("Basic "):
            return False
        try:
            given = base64.b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(given, self._expected)


def auth_middleware(auth: BasicAuth) -> Any:
    """An aiohttp middleware answering 401 to requests without the right credentials
    (every page of the worker's web server, Faust's own views included)."""
    from aiohttp import web

    @web.middleware
    async def basic_auth(request: web.Request, handler: Any) -> web.StreamResponse:
        if not auth.allows(request.headers.get("Authorization")):
            return web.Response(status=401, text="authentication required\n",
                                headers={"WWW-Authenticate": 'Basic realm="mlpulse"'})
        response: web.StreamResponse = await handler(request)
        return response

    return basic_auth
