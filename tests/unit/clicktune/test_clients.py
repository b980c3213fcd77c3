"""The client factories hand every connection setting to the library client (no I/O here)."""

from __future__ import annotations

import base64
from pathlib import Path

from pydantic import SecretStr

from clicktune.clients import kafka_options, opensearch_client
from clicktune.config import KafkaSettings, OpenSearchSettings


def test_opensearch_client_sends_basic_auth_and_verifies_against_the_ca(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    settings = OpenSearchSettings(
        url="https://opensearch:9200", username="admin", password=SecretStr("pw"), ca_certs=ca
    )
    connection = opensearch_client(settings).transport.get_connection()
    assert connection.host == "https://opensearch:9200"
    expected = "Basic " + base64.b64encode(b"admin:pw").decode()
    assert connection.headers["authorization"] == expected
    assert connection.pool.ca_certs == str(ca)
    assert connection.pool.cert_reqs == "CERT_REQUIRED"


def test_opensearch_client_without_username_sends_no_credentials() -> None:
    connection = opensearch_client(OpenSearchSettings()).transport.get_connection()
    assert "authorization" not in connection.headers


def test_kafka_options_carry_sasl_and_the_ca(tmp_path: Path) -> None:
    settings = KafkaSettings(
        bootstrap_servers="kafka:9092,kafka-2:9092",
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_username="clicktune",
        sasl_password=SecretStr("pw"),
        ssl_cafile=tmp_path / "ca.pem",
    )
    assert kafka_options(settings) == {
        "bootstrap_servers": ["kafka:9092", "kafka-2:9092"],
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "clicktune",
        "sasl_plain_password": "pw",
        "ssl_cafile": str(tmp_path / "ca.pem"),
    }


def test_kafka_options_without_sasl_carry_no_credentials() -> None:
    options = kafka_options(KafkaSettings(bootstrap_servers="127.0.0.1:9092"))
    assert options == {"bootstrap_servers": ["127.0.0.1:9092"], "security_protocol": "PLAINTEXT"}
