"""What Tansu still supports (docs/development.md, Brokers), on an embedded stack of its own: the state store's
restore and rebuild, reads past its short ListOffsets, and the group's commits. The whole suite runs on
Apache Kafka; `DEVSTACK_BROKER=tansu make test` runs all of it on Tansu."""

from __future__ import annotations

from pathlib import Path

from test_broker import test_group_commit_and_resume as _group_commit_and_resume
from test_broker import test_the_workers_producer_is_idempotent_where_the_broker_allows_it as _idempotence
from test_store import test_a_local_state_ahead_of_its_changelog_is_rebuilt as _local_state_ahead
from test_store import test_restore_from_the_changelog_and_from_the_local_state as _restore
from test_tail import test_reads_go_past_the_reported_end as _reads_past_the_end

from devstack.stack import Endpoints


def test_the_store_restores_on_tansu(tansu_stack: Endpoints, unique_name: str, tmp_path: Path) -> None:
    _restore(tansu_stack, unique_name, tmp_path)


def test_a_local_state_ahead_of_its_changelog_is_rebuilt_on_tansu(tansu_stack: Endpoints, unique_name: str,
                                                                   tmp_path: Path) -> None:
    _local_state_ahead(tansu_stack, unique_name, tmp_path)


def test_reads_go_past_tansus_reported_end(tansu_stack: Endpoints, unique_name: str) -> None:
    _reads_past_the_end(tansu_stack, unique_name)


def test_group_commit_and_resume_on_tansu(tansu_stack: Endpoints, unique_name: str) -> None:
    _group_commit_and_resume(tansu_stack, unique_name)


def test_the_workers_producer_is_not_idempotent_on_tansu(tansu_stack: Endpoints, unique_name: str) -> None:
    _idempotence(tansu_stack, unique_name)
