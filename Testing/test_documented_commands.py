"""Every command the README and docs/ show exists as shown (issue 33): each ``diffumamba`` command line names a real
subcommand and only options that subcommand accepts; each ``python bench/*.py`` / ``scripts/*.py`` /
``python -m diffumamba.*`` answers ``--help``, and knows the options shown; each ``bash scripts/*.sh`` exists and
parses. A renamed option or script makes this fail before a reader finds out."""

import argparse
import contextlib
import io
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from diffumamba.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
ENV = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=(?:\"[^\"]*\"|'[^']*'|\S+)\s+)+")
PROGRAM = re.compile(r"^(?:\.venv/bin/)?(diffumamba(?=\s|$)|python3? -m [\w.]+|python3? (?:bench|scripts)/[\w/]+\.py|"
                     r"bash (?:scripts|\.ci)/[\w]+(?:\.sh)?)(.*)$")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*:?$")
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def code_lines(text: str):
    """(file line, command text) for each line of a fenced block (continuations joined) and each inline code span."""
    in_block, pending, start = False, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_block, pending = not in_block, ""
            continue
        if in_block:
            stripped = line.split("  #")[0].strip()
            if not pending:
                start = number
            pending += " " + stripped.rstrip("\\")
            if not stripped.endswith("\\"):
                yield start, pending.strip()
                pending = ""
        else:
            for span in re.findall(r"`([^`]+)`", line):
                yield number, span.strip()


def documented_commands():
    found = {}
    for doc in DOCS:
        for number, text in code_lines(doc.read_text()):
            for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", text.lstrip("$ ")):
                part = ENV.sub("", part.strip())
                match = PROGRAM.match(part)
                if match:
                    found.setdefault((match.group(1), match.group(2).strip()), f"{doc.name}:{number}")
    return found


COMMANDS = documented_commands()


def subparsers(parser: argparse.ArgumentParser) -> dict:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def options_of(parser: argparse.ArgumentParser) -> set:
    return {s for action in parser._actions for s in action.option_strings}


def test_the_docs_show_commands_of_every_kind():
    programs = {program.split()[0] if program.startswith("bash") else program for program, _ in COMMANDS}
    assert "diffumamba" in programs and len(COMMANDS) > 100
    assert any(p.startswith("python bench/") for p, _ in COMMANDS) and any(p.startswith("bash") for p, _ in COMMANDS)


def diffumamba_problems(commands: dict) -> list[str]:
    parser = build_parser()
    top = options_of(parser)
    problems = []
    for (program, rest), where in sorted(commands.items()):
        if program != "diffumamba":
            continue
        words = rest.split()
        while words and words[0] in top:
            words.pop(0)
        if not words or words[0] in ("-h", "--help"):
            continue
        command, known = parser, set(top)
        for word in words:
            choices = subparsers(command)
            if not choices or word.startswith("-") or PLACEHOLDER.match(word) or word == "...":
                break
            if word not in choices:
                problems.append(f"{where}: `diffumamba ... {word}`: no such subcommand (choices: {', '.join(choices)})")
                break
            command = choices[word]
            known |= options_of(command)
        for option in OPTION.findall(rest):
            if option not in known:
                problems.append(f"{where}: `diffumamba {' '.join(words[:2])}` has no option {option}")
    return problems


def test_documented_diffumamba_commands_name_real_subcommands_and_options():
    problems = diffumamba_problems(COMMANDS)
    assert not problems, "\n".join(problems)


def test_the_check_finds_a_wrong_subcommand_and_a_wrong_option():
    problems = diffumamba_problems({("diffumamba", "convert lidc SRC OUT --pastes 2 --bogus-option"): "a.md:1",
                                    ("diffumamba", "trian DATA"): "b.md:2",
                                    ("diffumamba", "--debug predict CT --model M --out O"): "c.md:3"})
    assert problems == ["a.md:1: `diffumamba convert lidc` has no option --bogus-option",
                        "b.md:2: `diffumamba ... trian`: no such subcommand (choices: "
                        + ", ".join(subparsers(build_parser())) + ")"]


def run_help(program: str) -> tuple[int, str]:
    """``PROGRAM --help`` in this interpreter: scripts in-process (no second torch import), modules likewise."""
    words = program.split()
    target = words[-1]
    argv = [target, "--help"]
    out = io.StringIO()
    saved = sys.argv[:], sys.path[:]
    try:
        sys.argv = argv
        if target.endswith(".py"):
            sys.path.insert(0, str((REPO / target).parent))
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), pytest.raises(SystemExit) as ended:
            if target.endswith(".py"):
                runpy.run_path(str(REPO / target), run_name="__main__")
            else:
                runpy.run_module(target, run_name="__main__", alter_sys=True)
    finally:
        sys.argv, sys.path[:] = saved[0], saved[1]
    return ended.value.code or 0, out.getvalue()


PYTHON_PROGRAMS = sorted({p for p, _ in COMMANDS if p.startswith("python") and "pytest" not in p})


@pytest.mark.parametrize("program", PYTHON_PROGRAMS)
def test_documented_python_programs_answer_help_and_know_their_options(program):
    target = program.split()[-1]
    if target.endswith(".py"):
        assert (REPO / target).is_file(), f"{program}: {target} does not exist"
    code, text = run_help(program)
    assert code == 0 and "usage:" in text, f"{program} --help exited {code}:\n{text[-600:]}"
    missing = sorted({(option, where) for (p, rest), where in COMMANDS.items() if p == program
                      for option in OPTION.findall(rest) if option not in text})
    assert not missing, f"{program}: options shown in the docs but not in --help: {missing}"


@pytest.mark.parametrize("script", sorted({p.split()[-1] for p, _ in COMMANDS if p.startswith("bash")}))
def test_documented_shell_scripts_exist_and_parse(script):
    path = REPO / script
    assert path.is_file(), f"{script} is documented but does not exist"
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
