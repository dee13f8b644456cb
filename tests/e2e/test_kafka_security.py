"""TLS, SCRAM over TLS and mutual TLS against a real Apache Kafka, with certificates made for the run
(trustme): the worker, `faust -A app produce` and `faust -A app batch` connect over each, and every bad
credential (a wrong password, a broker certificate from an unknown CA, no client certificate where the
broker requires one, a file that is not PEM, an encrypted key without its passphrase) ends the command
with one line naming the setting and status 2: no traceback, no restart loop, no secret in the output.

The broker is a second Kafka of its own (devstack/services.py with extra listeners: TLS, SCRAM and MTLS
beside PLAINTEXT); S3 and Redis are the session stack's."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import wait_for
from pipeline_harness import ROOT, Worker, names_for, web_port, worker_env

from devstack import services
from devstack.ports import free_port_block
from devstack.stack import Endpoints
from ops.process import ManagedProcess

trustme = pytest.importorskip("trustme", reason="trustme is not installed (requirements-test.txt)")
serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")

SCRAM_USER = "pipeline"
SCRAM_PASSWORD = "scram-secret-7c1f"
KEY_PASSWORD = "key-secret-90ab"
EVENTS = 300
DEADLINE_S = 120.0
COMMAND_TIMEOUT_S = 120


@dataclass(frozen=True, slots=True)
class SecureKafka:
    ports: dict[str, int]  # listener -> port: TLS (SSL), SCRAM (SASL_SSL), MTLS (SSL, client certificate)
    files: dict[str, Path]  # ca, other_ca, client_cert, client_key (encrypted), client_key_plain, garbage


def _pkcs8(pem: bytes, password: str | None = None) -> bytes:
    key = serialization.load_pem_private_key(pem, password=None)
    encryption = (serialization.BestAvailableEncryption(password.encode()) if password
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    if not (services.KAFKA_LIBS / f"kafka_2.13-{services.kafka_version()}.jar").exists():
        pytest.skip("Apache Kafka's jars are not in var/kafka/libs (make kafka)")
    directory = tmp_path_factory.mktemp("secure-kafka")
    ca, other_ca = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("pipeline-client")
    files = {name: directory / f"{name}.pem" for name in
             ("ca", "other_ca", "server", "client_cert", "client_key", "client_key_plain", "garbage")}
    files["ca"].write_bytes(ca.cert_pem.bytes())
    files["other_ca"].write_bytes(other_ca.cert_pem.bytes())
    # Kafka's PEM key store: the private key in PKCS#8, then the certificate chain.
    files["server"].write_bytes(_pkcs8(server.private_key_pem.bytes())
                                + b"".join(blob.bytes() for blob in server.cert_chain_pems))
    files["client_cert"].write_bytes(b"".join(blob.bytes() for blob in client.cert_chain_pems))
    files["client_key"].write_bytes(_pkcs8(client.private_key_pem.bytes(), KEY_PASSWORD))
    files["client_key_plain"].write_bytes(_pkcs8(client.private_key_pem.bytes()))
    files["garbage"].write_text("not a certificate\n")
    plain, controller, tls, scram, mtls = (free_port_block(5) + i for i in range(5))
    extra = services.KafkaListeners(
        listeners={"TLS": (tls, "SSL"), "SCRAM": (scram, "SASL_SSL"), "MTLS": (mtls, "SSL")},
        properties={
            "ssl.keystore.type": "PEM", "ssl.keystore.location": str(files["server"]),
            "ssl.truststore.type": "PEM", "ssl.truststore.location": str(files["ca"]),
            "listener.name.mtls.ssl.client.auth": "required",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.scram.scram-sha-512.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        },
        format_args=("--add-scram", f"SCRAM-SHA-512=[name={SCRAM_USER},password={SCRAM_PASSWORD}]"))
    spec = services.kafka(directory / "kafka", plain, controller, fresh=True, extra=extra)
    assert spec.prepare is not None
    spec.prepare()
    process = ManagedProcess(spec.name, spec.argv, log_path=directory / "kafka.log", env=dict(os.environ),
                             cwd=directory)
    process.start()
    try:
        process.wait_ready(spec.ready, timeout_s=spec.ready_timeout_s)
        yield SecureKafka({"TLS": tls, "SCRAM": scram, "MTLS": mtls}, files)
    finally:
        process.stop(grace_s=spec.stop_grace_s)


def _security(kafka: SecureKafka, listener: str, **overrides: str) -> dict[str, str]:
    """The client settings of one listener, as a deployment would give them."""
    files = kafka.files
    settings = {"BROKER_URL": f"kafka://127.0.0.1:{kafka.ports[listener]}", "KAFKA_SSL_CAFILE": str(files["ca"])}
    if listener == "SCRAM":
        settings |= {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                     "KAFKA_SASL_USERNAME": SCRAM_USER, "KAFKA_SASL_PASSWORD": SCRAM_PASSWORD}
    else:
        settings |= {"KAFKA_SECURITY_PROTOCOL": "SSL"}
    if listener == "MTLS":
        settings |= {"KAFKA_SSL_CERTFILE": str(files["client_cert"]), "KAFKA_SSL_KEYFILE": str(files["client_key"]),
                     "KAFKA_SSL_KEY_PASSWORD": KEY_PASSWORD}
    return settings | overrides


def _faust(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "faust", "-A", "app", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)


@pytest.mark.parametrize("listener", ["TLS", "SCRAM", "MTLS"])
def test_the_worker_produce_and_batch_connect(secure_kafka: SecureKafka, stack: Endpoints, unique_name: str,
                                              tmp_path: Path, listener: str) -> None:
    names = names_for(unique_name)
    stack.s3_client().create_bucket(Bucket=names.bucket)
    env = worker_env(stack, names, tmp_path / "state", web_port()) | _security(secure_kafka, listener)
    worker = Worker(env, tmp_path / "worker.log")
    worker.start()
    try:
        produced = _faust(env, "produce", "--rate", "0", "--count", str(EVENTS), "--malformed", "0",
                          "--late", "0")
        assert produced.returncode == 0, produced.stdout + produced.stderr
        wait_for(lambda: worker.status()["consumed_total"] == EVENTS, timeout_s=DEADLINE_S,
                 what=f"the worker to read the {EVENTS} events over {listener}", detail=worker.status)
        batch = _faust(env, "batch")
        assert batch.returncode == 0, batch.stdout + batch.stderr
    finally:
        assert worker.stop() == 0, worker.log_path.read_text()[-3000:]
    log = worker.log_path.read_text()
    assert "Traceback" not in log and SCRAM_PASSWORD not in log and KEY_PASSWORD not in log


# (listener, settings changed, the line's start): refused by the broker at the first connection...
REFUSED = {
    "wrong-password": ("SCRAM", {"KAFKA_SASL_PASSWORD": "wrong-password-55"}, "error: KAFKA_SASL_PASSWORD: the broker"),
    "unknown-ca": ("TLS", {"KAFKA_SSL_CAFILE": "other_ca"}, "error: KAFKA_SSL_CAFILE: the broker at"),
    "no-client-cert": ("MTLS", {"KAFKA_SSL_CERTFILE": "", "KAFKA_SSL_KEYFILE": "", "KAFKA_SSL_KEY_PASSWORD": ""},
                       "error: KAFKA_SSL_CERTFILE: the broker at"),
}
# ...or by the settings before anything connects (the same code for every command: the worker's is run).
INVALID = {
    "not-pem": ("TLS", {"KAFKA_SSL_CAFILE": "garbage"}, "error: invalid setting KAFKA_SSL_CAFILE"),
    "encrypted-key": ("MTLS", {"KAFKA_SSL_KEY_PASSWORD": ""}, "error: invalid setting KAFKA_SSL_KEY_PASSWORD"),
    "wrong-passphrase": ("MTLS", {"KAFKA_SSL_KEY_PASSWORD": "not-the-passphrase"},
                         "error: invalid setting KAFKA_SSL_KEY_PASSWORD"),
}
CASES = [pytest.param(command, *case, id=f"{command}-{name}") for name, case in REFUSED.items()
         for command in ("worker", "produce", "batch")]
CASES += [pytest.param("worker", *case, id=f"worker-{name}") for name, case in INVALID.items()]


@pytest.mark.parametrize(("command", "listener", "overrides", "line"), CASES)
def test_a_bad_credential_is_one_line_and_status_2(secure_kafka: SecureKafka, stack: Endpoints, unique_name: str,
                                                   tmp_path: Path, listener: str, overrides: dict[str, str],
                                                   line: str, command: str) -> None:
    names = names_for(unique_name)
    files = {name: str(path) for name, path in secure_kafka.files.items()}
    given = {name: files.get(value, value) for name, value in overrides.items()}
    env = worker_env(stack, names, tmp_path / "state", web_port()) | _security(secure_kafka, listener, **given)
    args = {"worker": ("worker", "-l", "info"), "produce": ("produce", "--count", "1"), "batch": ("batch",)}[command]
    result = _faust(env, *args)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    errors = [text for text in result.stderr.splitlines() if text.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(line), output[-3000:]
    assert "Traceback" not in output
    for secret in (SCRAM_PASSWORD, KEY_PASSWORD, "wrong-password-55", "not-the-passphrase"):
        assert secret not in output
