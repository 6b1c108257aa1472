"""The Python blocks of README.md and doc/*.md stay in step with the API.

This checks, in milliseconds, what goes stale first: each block compiles, every
``skdip`` name it imports or reaches as ``skdip.x.y`` exists, and the keywords it passes
to an skdip callable are parameters of that callable. A guide's later block may use what
an earlier block of the same page imported. test_docs_run.py runs the blocks, with fits
cut short (a block the suite cannot run is marked ``<!-- skip-run: reason -->``).
"""

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "doc").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks(page: Path) -> list[tuple[str, str]]:
    text = page.read_text(encoding="utf-8")
    return [
        (f"{page.name}:{text[: m.start()].count(chr(10)) + 1}", m.group(1))
        for m in BLOCK.finditer(text)
    ]


def _dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for an attribute chain on a plain name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


def _resolve(path: str):
    """The object ``path`` (``skdip.metrics.get_scorer``) names; raises if none."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(path)


def check_block(source: str, name: str, bound: dict[str, str]) -> list[str]:
    """Problems of one block; ``bound`` (local name -> skdip path) is extended with
    the block's skdip imports, for the blocks after it."""
    tree = ast.parse(source, filename=name)
    compile(tree, name, "exec")  # what parsing lets through: `return` outside a function
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "skdip":
            for alias in node.names:
                path = f"{node.module}.{alias.name}"
                try:
                    _resolve(path)
                except (ImportError, AttributeError):
                    problems.append(f"{name}: `from {node.module} import {alias.name}` fails")
                bound[alias.asname or alias.name] = path
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "skdip":
                    if alias.asname:  # import skdip.metrics as m: m is the submodule
                        bound[alias.asname] = alias.name
                    else:  # import skdip.metrics binds skdip
                        bound["skdip"] = "skdip"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and not isinstance(node.ctx, ast.Store):
            dotted = _dotted(node)
            head = dotted.split(".")[0] if dotted else None
            if head in bound and bound[head].split(".")[0] == "skdip":
                path = bound[head] + dotted[len(head) :]
                try:
                    _resolve(path)
                except (ImportError, AttributeError):
                    problems.append(f"{name}: `{dotted}` does not exist")
        if isinstance(node, ast.Call):
            dotted = _dotted(node.func)
            head = dotted.split(".")[0] if dotted else None
            if head not in bound:
                continue
            try:
                target = _resolve(bound[head] + dotted[len(head) :])
                parameters = inspect.signature(target).parameters
            except (ImportError, AttributeError, TypeError, ValueError):
                continue  # reported above, or no signature to read
            if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
                continue
            for keyword in node.keywords:
                if keyword.arg is not None and keyword.arg not in parameters:
                    problems.append(f"{name}: {dotted}() takes no parameter `{keyword.arg}`")
    return problems


def test_the_guides_have_python_blocks():
    assert sum(len(_blocks(page)) for page in PAGES) >= 20


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_blocks_match_the_api(page):
    bound = {"skdip": "skdip"}  # `skdip.x` names the package even where no block imports it
    problems = []
    for name, source in _blocks(page):
        problems += check_block(source, name, bound)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from skdip import DIPDenoize\n", "import DIPDenoize"),
        ("from skdip.metrics import get_scorer2\n", "import get_scorer2"),
        ("import skdip\nskdip.metrics.no_such_scorer\n", "skdip.metrics.no_such_scorer"),
        ("import skdip.metrics as m\nm.get_scorer2('emv')\n", "m.get_scorer2"),
        ("from skdip import DIPDenoiser\nDIPDenoiser(sigma=0.1)\n", "parameter `sigma`"),
        ("from skdip import metrics\nmetrics.psnr(a, b, range=1)\n", "parameter `range`"),
        ("from skdip import DIPDenoiser\nDIPDenoiser(\n", "SyntaxError"),
        ("return DIPDenoiser()\n", "SyntaxError"),
    ],
)
def test_the_check_finds_a_stale_block(source, expected):
    try:
        problems = check_block(source, "snippet", {})
    except SyntaxError:
        problems = ["SyntaxError"]
    assert any(expected in p for p in problems), problems


def test_a_later_block_uses_an_earlier_import():
    bound: dict[str, str] = {}
    assert check_block("from skdip import DIPDenoiser\n", "first", bound) == []
    assert check_block("DIPDenoiser(max_iter=10)\n", "second", bound) == []
    assert check_block("DIPDenoiser(maxiter=10)\n", "third", bound) != []
