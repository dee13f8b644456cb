"""The stages' sticky assignor (agents/group.py): balanced, sticky, deterministic, and telling
every member who owns what."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from agents.group import StickyAssignor, balance


def test_a_lone_member_gets_everything() -> None:
    assert balance(list(range(4)), {"a": []}) == {"a": [0, 1, 2, 3]}


def test_shares_differ_by_at_most_one_and_cover_every_partition_once() -> None:
    rng = random.Random(1)
    for _ in range(300):
        partitions = list(range(rng.randint(1, 12)))
        members = {f"m{i}": rng.sample(partitions, rng.randint(0, len(partitions))) for i in range(rng.randint(1, 5))}
        shares = balance(partitions, members)
        owned = sorted(p for parts in shares.values() for p in parts)
        assert owned == partitions
        sizes = [len(parts) for parts in shares.values()]
        assert max(sizes) - min(sizes) <= 1


def test_members_keep_what_they_had_when_a_member_joins() -> None:
    before = balance(list(range(4)), {"a": [], "b": []})
    assert before == {"a": [0, 2], "b": [1, 3]}
    after = balance(list(range(4)), {"a": before["a"], "b": before["b"], "c": []})
    assert after == {"a": [0, 2], "b": [1], "c": [3]}  # only the newcomer's share moves


def test_a_member_leaving_moves_only_its_partitions() -> None:
    after = balance(list(range(6)), {"a": [0, 1], "c": [4, 5]})  # b (2, 3) has left
    assert set(after["a"]) >= {0, 1} and set(after["c"]) >= {4, 5}


def test_every_leader_computes_the_same_answer() -> None:
    members = {"x": [3], "y": [3, 1], "z": []}
    assert balance([0, 1, 2, 3, 4], members) == balance([0, 1, 2, 3, 4], dict(reversed(list(members.items()))))


@pytest.mark.parametrize("owned", [[], [1, 3]])
def test_the_assignment_carries_the_owners_by_url(owned: list[int]) -> None:
    a = StickyAssignor("http://a:1", lambda: owned)
    b = StickyAssignor("http://b:2", lambda: [])
    members = {"member-a": a.metadata({"t"}), "member-b": b.metadata({"t"})}
    cluster = SimpleNamespace(partitions_for_topic=lambda topic: {0, 1, 2, 3})
    assignments = a.assign(cluster, members)  # type: ignore[arg-type]
    for assignor, member in ((a, "member-a"), (b, "member-b")):
        assignor.on_assignment(assignments[member])
        assert assignor.owners == {"http://a:1": assignments["member-a"].assignment[0][1],
                                   "http://b:2": assignments["member-b"].assignment[0][1]}
    if owned:
        assert assignments["member-a"].assignment[0][1] == [1, 3]


def test_a_url_two_members_advertise_is_named_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Two workers left at WEB_HOST=127.0.0.1 on two hosts: both URLs the same. Every member hears of it
    (an error in its log, `duplicates`), and the URL owns both members' partitions, so none is unowned."""
    a = StickyAssignor("http://127.0.0.1:6066", lambda: [])
    b = StickyAssignor("http://127.0.0.1:6066", lambda: [])
    c = StickyAssignor("http://c:6066", lambda: [])
    members = {"member-a": a.metadata({"t"}), "member-b": b.metadata({"t"}), "member-c": c.metadata({"t"})}
    cluster = SimpleNamespace(partitions_for_topic=lambda topic: set(range(6)))
    assignments = a.assign(cluster, members)  # type: ignore[arg-type]
    for assignor, member in ((a, "member-a"), (b, "member-b"), (c, "member-c")):
        with caplog.at_level("ERROR", logger="agents.group"):
            caplog.clear()
            assignor.on_assignment(assignments[member])
        assert assignor.duplicates == ["http://127.0.0.1:6066"]
        assert assignor.owners == {
            "http://127.0.0.1:6066": sorted(assignments["member-a"].assignment[0][1]
                                            + assignments["member-b"].assignment[0][1]),
            "http://c:6066": assignments["member-c"].assignment[0][1]}
        assert [r.getMessage() for r in caplog.records] == [
            "more than one worker advertises the web URL http://127.0.0.1:6066 (WEB_HOST:WEB_PORT): give each "
            "worker a WEB_HOST that names it to the others (its host name or address), or requests routed between "
            "them reach the wrong one"]
    unique = StickyAssignor("http://a:1", lambda: [])
    unique.on_assignment(unique.assign(cluster, {"m": unique.metadata({"t"})})["m"])  # type: ignore[arg-type]
    assert unique.duplicates == []
