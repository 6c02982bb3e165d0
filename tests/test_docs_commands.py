"""Every ``pynenc-postgres`` command that README.md and docs/ show is one the command line takes.

Command lines in code blocks must parse with the real parser (``build_parser``), as a
user would paste them; commands quoted in prose (``pynenc-postgres purge``, templates
such as ``db upgrade --url '...' [--schema S]``) must name real commands and options;
and a claim such as "Each `db` command takes `--schema NAME`" must hold for every
subcommand of the group.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from pynenc_postgres.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PROGRAM = "pynenc-postgres"

_FENCE = re.compile(r"^```(\w*)\s*$")
_INLINE = re.compile(r"`(pynenc-postgres(?: [^`]*)?)`")
_CLAIM = re.compile(r"[Ee](?:ach|very) `(\w+)` command takes `(--[\w-]+)")


def code_block_commands(path: Path) -> list[tuple[str, list[str]]]:
    """(line as written, arguments after the program) of each command in a shell block."""
    found = []
    language = None
    pending = ""
    for line in path.read_text().splitlines():
        fence = _FENCE.match(line)
        if fence:
            language = None if language is not None else fence.group(1)
            continue
        if language not in ("bash", "sh", "shell", "console"):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        line, pending = pending + line, ""
        tokens = shell_words(line)
        if PROGRAM in tokens:
            found.append((line.strip(), tokens[tokens.index(PROGRAM) + 1 :]))
    return found


def shell_words(line: str) -> list[str]:
    """The words of the line's first command: up to a redirection, pipe or ``&&``."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = []
    for word in lexer:
        if set(word) <= set("();<>|&"):
            break
        words.append(word)
    return words


def prose_commands(path: Path) -> list[tuple[str, list[str]]]:
    """Commands quoted in prose and tables; ``[...]`` marks an optional part, kept here."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    found = []
    for quoted in _INLINE.findall(text):
        expanded = re.sub(r"\[([^\]]*)\]", r"\1", quoted)
        found.append((quoted, shlex.split(expanded)[1:]))
    return found


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def parse_error(args: list[str]) -> str | None:
    """argparse's complaint about ``args``, or None when the real parser takes them."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            build_parser().parse_args(args)
    except SystemExit:
        return stderr.getvalue().strip().splitlines()[-1]
    return None


CODE_COMMANDS = [(path.name, *command) for path in DOCS for command in code_block_commands(path)]
PROSE_COMMANDS = [(path.name, *command) for path in DOCS for command in prose_commands(path)]


def test_the_docs_show_commands_of_every_group() -> None:
    shown = {args[0] for _, _, args in CODE_COMMANDS + PROSE_COMMANDS if args}
    assert shown == set(subcommands(build_parser()))


@pytest.mark.parametrize(
    ("doc", "line", "args"), CODE_COMMANDS, ids=[f"{c[0]}:{c[1]}" for c in CODE_COMMANDS]
)
def test_each_command_line_in_the_docs_parses(doc: str, line: str, args: list[str]) -> None:
    assert parse_error(args) is None, f"{doc}: `{line}`: {parse_error(args)}"


@pytest.mark.parametrize(
    ("doc", "quoted", "args"), PROSE_COMMANDS, ids=[f"{c[0]}:{c[1]}" for c in PROSE_COMMANDS]
)
def test_each_command_quoted_in_prose_names_real_commands_and_options(
    doc: str, quoted: str, args: list[str]
) -> None:
    parser = build_parser()
    words = list(args)
    while words and (choices := subcommands(parser)) and not words[0].startswith("-"):
        assert words[0] in choices, f"{doc}: `{quoted}`: no command {words[0]!r}"
        parser = choices[words.pop(0)]
    for word in words:
        if word.startswith("--"):
            option = word.split("=")[0]
            assert option in parser._option_string_actions, f"{doc}: `{quoted}`: no {option}"


CLAIMS = [(path.name, *claim) for path in DOCS for claim in _CLAIM.findall(path.read_text())]


def test_the_docs_make_claims_about_options() -> None:
    assert CLAIMS, "no 'Each `group` command takes `--option`' claim found any more"


@pytest.mark.parametrize(("doc", "group", "option"), CLAIMS)
def test_each_claim_about_a_groups_options_holds(doc: str, group: str, option: str) -> None:
    commands = subcommands(subcommands(build_parser())[group])
    assert commands
    lacking = sorted(
        name for name, sub in commands.items() if option not in sub._option_string_actions
    )
    assert lacking == [], f"{doc}: each `{group}` command takes {option}, but not {lacking}"
