"""kafka_io.clients.TransactionalWriter after its transaction failed: the cause is raised at the next send
or commit (ProducerFenced for a zombie), where aiokafka 0.14.0 itself raises IllegalOperation ("not in
transaction") for a send and an AssertionError for a commit."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import IllegalOperation, ProducerFenced
from aiokafka.producer.transaction_manager import TransactionManager

from kafka_io.clients import TransactionalWriter


class _Producer:
    """What the writer uses of AIOKafkaProducer, with aiokafka's own transaction manager; its send and commit
    answer as aiokafka's do outside a transaction."""

    def __init__(self) -> None:
        self._txn_manager = TransactionManager("app-ingest-0", 60_000)
        self._txn_manager.set_pid_and_epoch(1, 0)
        self._txn_manager.begin_transaction()
        self.sent: list[bytes | None] = []

    async def send(self, topic: str, value: bytes | None = None, **_: Any) -> asyncio.Future[None]:
        if not self._txn_manager.is_in_transaction():
            raise IllegalOperation("Can't send messages while not in transaction")
        self.sent.append(value)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def commit_transaction(self) -> None:
        self._txn_manager.committing_transaction()  # an AssertionError from a failed state
        self._txn_manager.complete_transaction()

    async def begin_transaction(self) -> None:
        self._txn_manager.begin_transaction()


def _writer() -> tuple[TransactionalWriter, _Producer]:
    writer = TransactionalWriter({"transactional_id": "app-ingest-0"})
    producer = writer._producer = _Producer()  # type: ignore[assignment]
    return writer, producer


@pytest.mark.parametrize("fail", ["fatal", "abortable"])
def test_a_failed_transaction_raises_its_cause_at_the_next_send_and_commit(fail: str) -> None:
    async def go() -> None:
        writer, producer = _writer()
        await writer.send("state", b"1")
        fenced = ProducerFenced()
        if fail == "fatal":  # a fence met by an in-flight batch, or by AddPartitionsToTxn
            producer._txn_manager.fatal_error(fenced)
        else:
            producer._txn_manager.error_transaction(fenced)
        with pytest.raises(ProducerFenced) as sent:
            await writer.send("state", b"2")
        assert sent.value is fenced
        with pytest.raises(ProducerFenced):
            await writer.commit()
        assert producer.sent == [b"1"]

    asyncio.run(go())


def test_a_writer_in_its_transaction_sends_and_commits() -> None:
    async def go() -> None:
        writer, producer = _writer()
        await writer.send("state", b"1")
        await writer.commit()
        await writer.send("state", b"2")
        assert producer.sent == [b"1", b"2"]

    asyncio.run(go())
