"""Every command's --help renders (argparse formats help strings with %, so a literal % in a field docstring
must come through escaped)."""

from __future__ import annotations

import argparse

from alignlab.cli import build_parser


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, (*path, name))


def test_every_command_help_renders():
    seen = 0
    for path, parser in _walk(build_parser()):
        text = parser.format_help()
        assert "usage:" in text, path
        seen += 1
    assert seen > 20


def test_a_percent_in_a_field_docstring_is_shown_literally():
    text = dict(_walk(build_parser()))[("refusal", "run")].format_help()
    assert "~10 % faster" in " ".join(text.split())
