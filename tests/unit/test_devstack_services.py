"""devstack/services.py without starting anything: Kafka's pinned version and its cluster ids."""

import re

from devstack import services


def test_the_kafka_version_is_the_poms() -> None:
    assert re.fullmatch(r"4\.[0-9]+\.[0-9]+", services.kafka_version())


def test_cluster_ids_are_22_characters_never_starting_with_a_dash() -> None:
    # One id in 64 started with "-", which the storage tool took for an option (seen in CI).
    ids = [services._cluster_id() for _ in range(2000)]
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", i) for i in ids)
    assert len(set(ids)) == len(ids)
