"""The README's settings table is the one generated from settings.SETTINGS_DOC."""

from pathlib import Path

from settings import markdown_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_settings_table_is_current() -> None:
    assert markdown_table() in README.read_text()
