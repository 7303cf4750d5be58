"""The README's configuration reference matches the config structs."""

from __future__ import annotations

from pathlib import Path

from edge.config_reference import END, START, render

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_reference_is_current() -> None:
    """README.md carries exactly the reference generated from the structs (regenerate with
    `python -m edge.config_reference`)."""
    text = README.read_text(encoding="utf-8")
    block = text[text.index(START): text.index(END) + len(END)] + "\n"
    assert block == render()
