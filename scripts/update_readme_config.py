"""Rewrite the configuration table of README.md from the settings (``make docs``)."""

from __future__ import annotations

from pathlib import Path

from dlstream.config.docs import TABLE_BEGIN, TABLE_END, markdown_table


def main() -> None:
    """Replace the text between the table markers of README.md with the generated table."""
    readme = Path(__file__).resolve().parents[1] / "README.md"
    text = readme.read_text()
    start, end = text.index(TABLE_BEGIN), text.index(TABLE_END) + len(TABLE_END)
    readme.write_text(text[:start] + markdown_table() + text[end:])


if __name__ == "__main__":
    main()
