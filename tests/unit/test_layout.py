"""The test tree's own rule: pytest imports test modules by basename (rootdir-relative, no packages),
so two files of one name anywhere under tests/ stop the whole suite at collection, which running
each file alone never shows."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent


def test_no_two_test_modules_share_a_basename() -> None:
    names = Counter(path.name for path in TESTS.rglob("*.py"))
    assert [name for name, count in names.items() if count > 1] == []
