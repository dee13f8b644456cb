"""aiokafka clients built from settings: the worker's producer, and the writers of its stage partitions."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.abc import AbstractTokenProvider
from aiokafka.conn import create_conn
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TransactionalIdAuthorizationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.producer.transaction_manager import TransactionState
from aiokafka.structs import RecordMetadata

from settings import KafkaSettings
from tables.store import PartitionWriter

Headers = Sequence[tuple[str, bytes]]
# Room for headers and the record batch framing on top of the largest value sent.
REQUEST_OVERHEAD_BYTES = 64 * 1024
MIN_REQUEST_BYTES = 1024 * 1024


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """TLS for the SSL protocols: the brokers verified against KAFKA_SSL_CAFILE (or the system's CAs),
    and a client certificate when KAFKA_SSL_CERTFILE is set (mutual TLS), its key decrypted with
    KAFKA_SSL_KEY_PASSWORD (settings.py checked the files at start-up)."""
    if kafka.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(cafile=kafka.ssl_cafile)
    if kafka.ssl_certfile:
        context.load_cert_chain(kafka.ssl_certfile, kafka.ssl_keyfile, password=kafka.ssl_key_password or None)
    return context


class BrokerAccessError(Exception):
    """The brokers answer, but refuse this client: a setting to fix (named), not a failure to retry."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


ACCESS_CHECK_TIMEOUT_S = 15.0  # one attempt at one broker
ACCESS_RETRY_S = 1.0  # between rounds over the bootstrap brokers while none answers


async def check_access(kafka: KafkaSettings, *, wait_s: float) -> None:
    """Connect to the bootstrap brokers, as every client of the pipeline will, until one answers, and raise
    BrokerAccessError naming the setting when TLS or SASL refuses it, or BROKER_URL when none has answered
    within `wait_s` (STARTUP_TIMEOUT): a process that cannot reach its broker says so in one line."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        failure = await _try_brokers(kafka, timeout_s=max(0.1, min(ACCESS_CHECK_TIMEOUT_S, deadline - loop.time())))
        if failure is None:
            return
        if loop.time() + ACCESS_RETRY_S > deadline:
            servers = ", ".join(kafka.bootstrap_servers)
            raise BrokerAccessError("BROKER_URL", f"no broker answered at {servers} within {wait_s:g} s "
                                                  f"(STARTUP_TIMEOUT; last: {failure})")
        await asyncio.sleep(ACCESS_RETRY_S)


async def _try_brokers(kafka: KafkaSettings, *, timeout_s: float) -> str | None:
    """One round over the bootstrap brokers: None once one answers, else what the last one did."""
    # The connection options every client gets (TLS and SASL: one home), less the servers, tried one by one.
    options = {name: value for name, value in client_options(kafka).items() if name != "bootstrap_servers"}
    failure = "no attempt"
    for server in kafka.bootstrap_servers:
        host, _, port = server.rpartition(":")
        try:
            if "ssl_context" in options:
                await _tls_handshake(host, int(port), options["ssl_context"], timeout_s)
            conn = await asyncio.wait_for(create_conn(host, int(port), request_timeout_ms=int(timeout_s * 1000),
                                                      **options), timeout_s)
        except ssl.SSLCertVerificationError as exc:
            raise BrokerAccessError("KAFKA_SSL_CAFILE", f"the broker at {server} presented a certificate that "
                                    f"does not verify against it: {exc.verify_message}") from None
        except _RefusedAfterHandshakeError:
            raise BrokerAccessError("KAFKA_SSL_CERTFILE", f"the broker at {server} closed the connection after the "
                                    "TLS handshake: does it want a client certificate it trusts?") from None
        except ssl.SSLError as exc:
            if "WRONG_VERSION_NUMBER" in str(exc) or "record layer failure" in str(exc):
                raise BrokerAccessError("KAFKA_SECURITY_PROTOCOL", f"the broker at {server} does not speak TLS "
                                        f"on that port ({kafka.security_protocol})") from None
            raise BrokerAccessError("KAFKA_SSL_CERTFILE", f"the broker at {server} refused the TLS handshake "
                                    f"({exc.reason or exc}): does it want a client certificate it trusts?") from None
        except (SaslAuthenticationFailed, IllegalSaslStateError, UnsupportedSaslMechanismError) as exc:
            who = f" of {kafka.sasl_username!r}" if kafka.sasl_username else ""
            raise BrokerAccessError("KAFKA_SASL_PASSWORD" if kafka.sasl_username else "KAFKA_SASL_MECHANISM",
                                    f"the broker at {server} refused the SASL {kafka.sasl_mechanism} login{who}: "
                                    f"{_redacted(str(exc), kafka.sasl_password)}") from None
        except TimeoutError:
            failure = f"{server} did not answer"
        except OSError as exc:
            failure = f"{server}: {exc.strerror or type(exc).__name__}"
        except KafkaError as exc:  # answering, but not as a broker (aiokafka names the class in its text)
            failure = f"{server}: {str(exc) or type(exc).__name__}"
        else:
            conn.close()
            return None
    return failure


class _RefusedAfterHandshakeError(Exception):
    """The broker closed the connection right after the TLS handshake."""


TLS_ALERT_WAIT_S = 0.5


async def _tls_handshake(host: str, port: int, context: ssl.SSLContext, timeout_s: float) -> None:
    """A TLS handshake alone, so that its failures keep their cause (aiokafka reports a closed connection).
    With TLS 1.3 a broker that refuses the client's certificate (or its absence) says so only after the
    handshake, in an alert the first read meets; a broker content with it waits for a request."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=context), timeout_s)
    try:
        if await asyncio.wait_for(reader.read(1), TLS_ALERT_WAIT_S) == b"":
            raise _RefusedAfterHandshakeError
    except TimeoutError:
        pass
    finally:
        writer.close()


def _redacted(text: str, secret: str) -> str:
    return text.replace(secret, "<hidden>") if secret else text


class FileTokenProvider(AbstractTokenProvider):
    """OAUTHBEARER: the token in a file, read at every authentication, so that whatever refreshes
    it (a sidecar, a cron job, an MSK IAM signer) needs no restart of the worker."""

    def __init__(self, path: str) -> None:
        self.path = path

    async def token(self) -> str:
        return Path(self.path).read_text().strip()


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Connection options shared by every Kafka client of the pipeline (one home for TLS and SASL)."""
    options: dict[str, Any] = {
        "bootstrap_servers": list(kafka.bootstrap_servers),
        "security_protocol": kafka.security_protocol,
    }
    context = ssl_context(kafka)
    if context is not None:
        options["ssl_context"] = context
    if kafka.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = kafka.sasl_mechanism
        if kafka.sasl_mechanism == "OAUTHBEARER":
            assert kafka.sasl_oauth_token_file is not None  # settings require it
            options["sasl_oauth_token_provider"] = FileTokenProvider(kafka.sasl_oauth_token_file)
        else:
            options.update(sasl_plain_username=kafka.sasl_username, sasl_plain_password=kafka.sasl_password)
    return options


class Producer:
    """Every record the worker writes goes through this one aiokafka producer.

    acks=all, because state is only as durable as the changelog records it rests on; and
    records to one partition are delivered in the order they were sent (aiokafka keeps one
    batch in flight per partition), which the stage changelogs and the partials topic rely on.
    Idempotent (KAFKA_IDEMPOTENCE) where the broker has it: a batch the client sends again after
    a lost answer is written once, with its producer id and sequence numbers.
    A failed send is an error for the caller: after a failure later records could land
    with a gap before them, so the stages stop the worker instead of going on (crash-only).
    """

    transactional = False  # as a partition's writer (PartitionWriter): the shared producer, no transactions

    def __init__(self, kafka: KafkaSettings, *, max_value_bytes: int, acks: str = "all") -> None:
        """`max_value_bytes`: the largest value sent (a forwarded original record); `acks` other than
        all only for the produce command (a worker's state rests on acks=all)."""
        self._transactions = kafka.transactions and acks == "all"
        self._options: dict[str, Any] = {
            "acks": "all" if acks == "all" else int(acks),
            # Idempotence needs acks=all; the produce command may ask for less.
            "enable_idempotence": kafka.idempotence and acks == "all",
            "linger_ms": kafka.linger_ms,
            "max_batch_size": kafka.batch_bytes,
            "compression_type": None if kafka.compression == "none" else kafka.compression,
            "max_request_size": max(MIN_REQUEST_BYTES, max_value_bytes + REQUEST_OVERHEAD_BYTES),
            "request_timeout_ms": 30_000,
            **client_options(kafka),
        }
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Start the producer; an idempotent one gets its producer id first, which a broker without idempotence
        (Tansu) refuses: BrokerAccessError naming KAFKA_IDEMPOTENCE, a setting to change, not a failure to retry."""
        producer = self._producer = AIOKafkaProducer(**self._options)  # aiokafka clients need the running loop
        try:
            await producer.start()
        except KafkaError as exc:
            if not self._options["enable_idempotence"] or isinstance(exc, (KafkaConnectionError, TimeoutError)):
                raise
            with contextlib.suppress(Exception):
                await producer.stop()
            raise BrokerAccessError("KAFKA_IDEMPOTENCE", f"the broker refused an idempotent producer ({exc!r}): it "
                                    "may have no idempotence (Tansu); set KAFKA_IDEMPOTENCE=false and "
                                    "KAFKA_TRANSACTIONS=false for it") from None

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def send(self, topic: str, value: bytes | None, *, key: bytes | None = None, partition: int | None = None,
                   headers: Headers | None = None, timestamp_ms: int | None = None) -> asyncio.Future[RecordMetadata]:
        """Queue one record; the returned future resolves once the broker has it (or fails)."""
        assert self._producer is not None, "the producer is not started"
        return await self._producer.send(topic, value=value, key=key, partition=partition,
                                         headers=list(headers) if headers else None, timestamp_ms=timestamp_ms)

    async def flush(self) -> None:
        if self._producer is not None:
            await self._producer.flush()

    async def commit(self) -> None:
        """Nothing to do: a send is durable once its future resolves (the PartitionWriter interface)."""

    async def close(self) -> None:
        """Nothing to do: the worker's producer outlives its partitions (the PartitionWriter interface)."""

    async def writer(self, owner: str) -> PartitionWriter:
        """The writer of one stage partition, `owner` naming it (`APP_ID-<stage>-<partition>`).

        With KAFKA_TRANSACTIONS, a transactional producer of its own, whose transactional id is the owner:
        starting it fences every earlier producer of that id (a previous owner of the partition, paused
        or not) and aborts its open transaction, so it must start before the partition is restored.
        Without, this producer (shared by all partitions: one connection, sends durable once acked)."""
        if not self._transactions:
            return self
        writer = TransactionalWriter({**self._options, "transactional_id": owner,
                                      "transaction_timeout_ms": TRANSACTION_TIMEOUT_MS})
        await writer.start()
        return writer


# The transaction manager's states after a failure (TransactionalWriter._raise_if_failed).
_FAILED_STATES = (TransactionState.ABORTABLE_ERROR, TransactionState.FATAL_ERROR)

# A transaction lasts from a partition's first send after a commit to the next commit: at most a tick or
# a flush, and never across an S3 or Redis write (agents/export.py commits first). One that lasts longer
# is aborted by the broker, and its producer fenced: the worker stops and restarts (crash-only).
TRANSACTION_TIMEOUT_MS = 60_000


class TransactionalWriter:
    """One stage partition's transactional producer: its sends since the last commit are one transaction,
    which readers (read_committed) see whole or not at all. A producer fenced by a newer one of the same
    transactional id (the partition's next owner) raises ProducerFenced at its next send or commit."""

    transactional = True

    def __init__(self, options: dict[str, Any]) -> None:
        self.transactional_id: str = options["transactional_id"]
        self._options = options
        self._producer: AIOKafkaProducer | None = None
        self._sent = False  # anything sent since the last commit

    async def start(self) -> None:
        producer = self._producer = AIOKafkaProducer(**self._options)
        try:
            await producer.start()
            # Waits for the producer id: the broker has then fenced the id's earlier producers, and aborted
            # (or finished committing) their last transaction.
            await producer.begin_transaction()
        except TransactionalIdAuthorizationFailed:
            await producer.stop()
            raise BrokerAccessError("KAFKA_TRANSACTIONS", f"the broker refuses the transactional id "
                                    f"{self.transactional_id!r}: grant Write on transactional ids starting with "
                                    "APP_ID, or set KAFKA_TRANSACTIONS=false") from None
        except KafkaError as exc:
            await producer.stop()
            raise BrokerAccessError("KAFKA_TRANSACTIONS", f"the broker did not start a transactional producer "
                                    f"({exc!r}): it may have no transactions (Tansu); set KAFKA_TRANSACTIONS=false "
                                    "for it") from None

    async def send(self, topic: str, value: bytes | None, *, key: bytes | None = None, partition: int | None = None,
                   headers: Headers | None = None, timestamp_ms: int | None = None
                   ) -> asyncio.Future[RecordMetadata]:
        assert self._producer is not None, "the writer is not started"
        self._raise_if_failed()
        self._sent = True
        return await self._producer.send(topic, value=value, key=key, partition=partition,
                                         headers=list(headers) if headers else None, timestamp_ms=timestamp_ms)

    async def commit(self) -> None:
        """Commit what was sent since the last commit (every send is delivered first) and open the next."""
        producer = self._producer
        assert producer is not None, "the writer is not started"
        if not self._sent:
            return
        self._raise_if_failed()
        await producer.commit_transaction()
        self._sent = False
        await producer.begin_transaction()

    def _raise_if_failed(self) -> None:
        """Raise what failed the transaction, if something did. aiokafka 0.14.0 answers a send after that
        with IllegalOperation ("not in transaction") and a commit with an AssertionError (an invalid state
        transition), whatever the cause: a zombie whose in-flight batch met its successor's fence then
        stopped with a traceback instead of ProducerFenced (tests/integration/test_store.py, in CI). The
        cause is on the producer's transaction manager, which only this class reaches into."""
        assert self._producer is not None
        manager = self._producer._txn_manager  # noqa: SLF001 - see the docstring
        if manager is None or manager.state not in _FAILED_STATES:
            return
        waiter = manager.wait_for_transaction_end()
        if waiter is not None and waiter.done() and not waiter.cancelled() and waiter.exception() is not None:
            raise waiter.exception()  # type: ignore[misc]

    async def close(self) -> None:
        """Stop the producer; what was sent and not committed is aborted (here, or by the next owner's start)."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            if self._sent:
                await producer.abort_transaction()
        except Exception:  # noqa: BLE001 - fenced or failed already: the next owner's start aborts it
            pass
        finally:
            with contextlib.suppress(Exception):
                await producer.stop()
