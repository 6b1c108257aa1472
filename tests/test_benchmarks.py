"""The benchmark scripts import, and their parsers take the commands their docstrings give.

The scripts in ``benchmarks/`` are run by hand, never in CI, and were written while the
API kept changing: a renamed or moved import, or an option a docstring names that the
parser no longer has, fails here in seconds. Nothing is fitted and nothing is written:
each script stops as soon as its parser has read the command line.
"""

import argparse
import importlib.util
import shlex
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(p.stem for p in BENCHMARKS.glob("*.py") if not p.stem.startswith("_"))
# Its main() has no parser: it would start the check it documents (with Ray installed).
NO_PARSER = {"ray_recipe"}


class _Parsed(Exception):
    """Raised once a script's parser has read its arguments: the script stops there."""


@pytest.fixture
def load(monkeypatch):
    """Import a benchmark script as its command line does (``benchmarks/`` on the path,
    so that ``_common`` and the scripts it imports from resolve); forget those after."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    before = set(sys.modules)

    def _load(name: str):
        spec = importlib.util.spec_from_file_location(
            f"benchmark_{name}", BENCHMARKS / f"{name}.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    yield _load
    for name in set(sys.modules) - before:
        origin = getattr(sys.modules[name], "__file__", None) or ""
        if Path(origin).parent == BENCHMARKS:
            del sys.modules[name]


def documented_commands(doc: str, script: str) -> list[list[str]]:
    """The arguments of every ``python benchmarks/<script>.py ...`` line of ``doc``
    (environment assignments, comments and line continuations allowed)."""
    commands = []
    for line in doc.replace("\\\n", " ").splitlines():
        if f"python benchmarks/{script}.py" not in line:
            continue  # prose: shlex would choke on its apostrophes
        tokens = shlex.split(line, comments=True)
        while tokens and "=" in tokens[0]:  # OMP_NUM_THREADS=1 ...
            tokens.pop(0)
        if tokens[:2] == ["python", f"benchmarks/{script}.py"]:
            commands.append(tokens[2:])
    return commands


def test_every_script_is_covered():
    assert len(SCRIPTS) >= 20 and "selection" in SCRIPTS


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_imports(name, load):
    module = load(name)
    assert callable(module.main)
    assert module.__doc__, f"{name}.py has no docstring"


@pytest.mark.parametrize("name", sorted(set(SCRIPTS) - NO_PARSER))
def test_documented_commands_parse(name, load, monkeypatch):
    module = load(name)
    commands = documented_commands(module.__doc__, name)
    assert commands, f"{name}.py's docstring gives no command to run it"
    parse_args = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise _Parsed(parse_args(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    for arguments in commands:
        monkeypatch.setattr(sys, "argv", [f"benchmarks/{name}.py", *arguments])
        # A parser error (an unknown option) exits with status 2 instead.
        with pytest.raises(_Parsed):
            module.main()
