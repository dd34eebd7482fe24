"""Kafka TLS/SASL settings reach every client; basic auth; secrets stay out of repr."""

from __future__ import annotations

import base64

import faust
import pytest
import trustme

from mlpulse.config import Settings
from mlpulse.errors import ConfigError
from mlpulse.security import BasicAuth, faust_credentials, kafka_options


def test_sasl_scram_over_tls_for_aiokafka_and_faust(tmp_path):
    ca = trustme.CA()
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    settings = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                        kafka_sasl_username="mlpulse", kafka_sasl_password="pw-123",
                        kafka_ssl_cafile=str(cafile))
    options = kafka_options(settings)
    assert (options["security_protocol"], options["sasl_mechanism"],
            options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "SASL_SSL", "SCRAM-SHA-512", "mlpulse", "pw-123")
    assert options["ssl_context"].verify_mode.name == "CERT_REQUIRED"
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.protocol.value, credentials.mechanism.value) == ("SASL_SSL",
                                                                         "SCRAM-SHA-512")
    assert "pw-123" not in repr(settings) and "pw-123" not in repr(credentials)


def test_plaintext_sasl_and_plain_ssl():
    sasl = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="u",
                    kafka_sasl_password="p")
    assert "ssl_context" not in kafka_options(sasl)
    assert faust_credentials(sasl).protocol.value == "SASL_PLAINTEXT"
    assert isinstance(faust_credentials(Settings(kafka_security_protocol="SSL")),
                      faust.SSLCredentials)
    assert faust_credentials(Settings()) is None
    assert kafka_options(Settings()) == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize(("env", "message"), [
    ({"MLPULSE_KAFKA_SECURITY_PROTOCOL": "TLS"}, "must be one of PLAINTEXT, SSL"),
    ({"MLPULSE_KAFKA_SASL_MECHANISM": "GSSAPI"}, "MLPULSE_KAFKA_SASL_MECHANISM"),
    ({"MLPULSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "MLPULSE_KAFKA_SASL_USERNAME": "u"},
     "needs MLPULSE_KAFKA_SASL_USERNAME and MLPULSE_KAFKA_SASL_PASSWORD"),
    ({"MLPULSE_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "no such file"),
    ({"MLPULSE_WEB_AUTH_USERNAME": "ops"}, "go together"),
])
def test_bad_security_settings_are_clear_errors_without_the_secret(env, message):
    env = {**env, "MLPULSE_KAFKA_SASL_PASSWORD": "do-not-print"} if "GSSAPI" in str(env) else env
    with pytest.raises(ConfigError, match=message) as caught:
        Settings.from_env(env)
    assert "do-not-print" not in str(caught.value)


def test_basic_auth_checks_credentials_in_constant_time_and_rejects_garbage():
    auth = BasicAuth("ops", "s3cret")

    def header(text: str) -> str:
        return "Basic " + base64.b64encode(text.encode()).decode()

    assert auth.allows(header("ops:s3cret"))
    for bad in (header("ops:wrong"), header("ops"), "Basic !!!notbase64", "Bearer x", "", None):
        assert not auth.allows(bad)


def test_a_wrong_key_password_is_a_clear_error_without_the_password(tmp_path):
    from cryptography.hazmat.primitives import serialization

    ca = trustme.CA()
    cert = ca.issue_cert("client")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "c.pem"))
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    (tmp_path / "k.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"right-one")))
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_certfile=str(tmp_path / "c.pem"),
                        kafka_ssl_keyfile=str(tmp_path / "k.pem"),
                        kafka_ssl_key_password="wrong-one")
    with pytest.raises(ConfigError, match="cannot load the CA file or the client") as caught:
        kafka_options(settings)
    assert "wrong-one" not in str(caught.value)
    ok = settings.replace(kafka_ssl_key_password="right-one")
    assert kafka_options(ok)["ssl_context"] is not None
