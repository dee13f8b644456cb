"""make bench-peers' table: rounds, median, and this project's median over each contender's; its arguments."""

from __future__ import annotations

import pytest

from bench.peers.__main__ import main as peers_main
from bench.peers.table import PROJECT, Contender, format_table, median


def test_median_skips_failed_rounds() -> None:
    assert median([10.0, None, 30.0]) == 20.0
    assert median([None, None]) is None


def test_table_rows_and_ratios() -> None:
    table = format_table([
        Contender(PROJECT, [60_000, 50_000, 70_000], "not checked here", "n/a"),
        Contender("Bytewax 0.21.1", [40_000, 20_000, 30_000], "exact (21 windows) in every round", "0 / 0"),
        Contender("Quix Streams 3.28.1", [None, 12_000, 8_000], "exact (21 windows)", "0 / 0"),
    ])
    assert table.splitlines() == [
        "| contender | round 1 | round 2 | round 3 | median | this project ÷ contender | window totals"
        " | dropped (tumbling / hopping) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        "| this project | 60,000 | 50,000 | 70,000 | **60,000** | 1.00× | not checked here | n/a |",
        "| Bytewax 0.21.1 | 40,000 | 20,000 | 30,000 | **30,000** | 2.00× | exact (21 windows) in every round"
        " | 0 / 0 |",
        "| Quix Streams 3.28.1 | failed | 12,000 | 8,000 | **10,000** | 6.00× | exact (21 windows) | 0 / 0 |",
    ]


def test_no_ratio_without_both_medians() -> None:
    table = format_table([Contender(PROJECT, [None], "-", "-"), Contender("Bytewax 0.21.1", [5.0], "-", "-")])
    assert table.splitlines()[2:] == ["| this project | failed | **failed** | n/a | - | - |",
                                      "| Bytewax 0.21.1 | 5 | **5** | n/a | - | - |"]


@pytest.mark.parametrize("peers", ["foo", "quix,foo", ","])
def test_the_harness_refuses_an_unknown_peer_in_one_line(peers: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        peers_main(["--peers", peers])
    assert exited.value.code == 2
    assert "choose among bytewax, quix, spark" in capsys.readouterr().err
