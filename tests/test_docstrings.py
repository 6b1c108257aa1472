"""Every numpydoc ``Parameters`` section says what the signature says.

For each class, function and method of skdip whose docstring has a ``Parameters``
section: the parameters it lists are the signature's, in the signature's order, and
each ``default=...`` it states is the signature's default. A docstring may document
only its own parameters and send the reader elsewhere for the rest ("The other
parameters are those of :func:`fit_model`"): then it lists a part of the signature,
in order, and the rest must be parameters of the function it names.
"""

import ast
import importlib
import inspect
import math
import pkgutil
import re

import pytest

import skdip

MODULES = [
    importlib.import_module(info.name)
    for info in pkgutil.walk_packages(skdip.__path__, prefix="skdip.")
]
MODULES.insert(0, skdip)
OTHERS = re.compile(r"The other parameters are those of\s+:func:`~?([\w.]+)`")


def _sections(doc: str) -> dict[str, list[str]]:
    """The numpydoc sections of ``doc``: title -> its lines, dedented."""
    lines = inspect.cleandoc(doc).splitlines()
    sections: dict[str, list[str]] = {}
    current = None
    for i, line in enumerate(lines):
        underline = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if line.strip() and not line[0].isspace() and re.fullmatch(r"-{3,}", underline):
            current = sections.setdefault(line.strip(), [])
        elif current is not None and not re.fullmatch(r"-{3,}", line.strip()):
            current.append(line)
    return sections


def documented_parameters(doc: str) -> list[tuple[str, str]]:
    """``(name, type line)`` of each entry of the ``Parameters`` section, in order
    (``a, b : int`` documents two)."""
    entries = []
    for line in _sections(doc).get("Parameters", []):
        if not line or line[0].isspace():
            continue
        match = re.fullmatch(r"(\*{0,2}\w+(?:, \*{0,2}\w+)*)(?: : (.*))?", line.rstrip())
        if match is None:
            continue  # prose closing the section, as fit_batch's "The other parameters ..."
        entries += [(name, (match.group(2) or "").strip()) for name in match.group(1).split(", ")]
    return entries


def _value(text: str):
    """The value a documented default spells (``0.01``, ``1/30``, ``-1``, ``"auto"``,
    ``None``); raises ValueError for anything else (a name, a call)."""
    operators = {ast.Div: lambda a, b: a / b, ast.Mult: lambda a, b: a * b, ast.Pow: pow}

    def evaluate(node):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -evaluate(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in operators:
            return operators[type(node.op)](evaluate(node.left), evaluate(node.right))
        if isinstance(node, ast.Tuple):
            return tuple(evaluate(e) for e in node.elts)
        raise ValueError(text)

    return evaluate(ast.parse(text, mode="eval").body)


def _same(documented, actual) -> bool:
    if isinstance(documented, float) or isinstance(actual, float):
        return (
            isinstance(documented, int | float)
            and isinstance(actual, int | float)
            and not isinstance(documented, bool)
            and not isinstance(actual, bool)
            and math.isclose(documented, actual, rel_tol=1e-12)
        )
    return type(documented) is type(actual) and documented == actual


def _signature_names(obj) -> list[str] | None:
    try:
        parameters = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return None
    prefix = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}
    return [prefix.get(p.kind, "") + p.name for p in parameters if p.name not in ("self", "cls")]


def check_parameters(obj, doc: str, where: str) -> list[str]:
    """What ``doc``'s ``Parameters`` section gets wrong about ``obj``'s signature."""
    documented = documented_parameters(doc)
    names = _signature_names(obj)
    if not documented or names is None:
        return []
    listed = [name for name, _ in documented]
    problems = []
    others = OTHERS.search(doc)
    if others is None:
        if listed != names:
            problems.append(f"{where}: documents {listed}, the signature has {names}")
    else:
        rest = [n for n in names if n not in listed]
        target = obj.__globals__.get(others.group(1).split(".")[-1])
        target_names = _signature_names(target) if target is not None else None
        if [n for n in names if n in listed] != listed:
            problems.append(f"{where}: documents {listed}, not a part of {names} in order")
        elif target_names is None or set(rest) - set(target_names):
            problems.append(f"{where}: {rest} are not parameters of {others.group(1)}")
    defaults = {
        p.name: p.default for p in inspect.signature(obj).parameters.values() if p.name in listed
    }
    for name, kind in documented:
        match = re.search(r"default\s*=\s*(.+)$", kind)
        if match is None or name not in defaults:
            continue
        text = match.group(1).strip()
        actual = defaults[name]
        if actual is inspect.Parameter.empty:
            problems.append(f"{where}: {name} documents default={text}, but is required")
            continue
        try:
            value = _value(text)
        except (ValueError, SyntaxError):
            problems.append(f"{where}: {name}'s documented default={text} is no plain value")
            continue
        if not _same(value, actual):
            problems.append(f"{where}: {name} documents default={text}, is {actual!r}")
    return problems


def _documented_callables():
    """``(where, object, docstring)`` of every class (its ``__init__`` signature),
    function and method defined in skdip whose docstring has a Parameters section."""
    seen = set()
    for module in MODULES:
        for name, obj in vars(module).items():
            if getattr(obj, "__module__", None) != module.__name__ or id(obj) in seen:
                continue
            seen.add(id(obj))
            where = f"{module.__name__}.{name}"
            if inspect.isclass(obj):
                yield where, obj, obj.__doc__
                for attr, member in vars(obj).items():
                    if isinstance(member, staticmethod | classmethod):
                        member = member.__func__
                    if inspect.isfunction(member) and attr != "__init__":
                        yield f"{where}.{attr}", member, member.__doc__
            elif inspect.isfunction(obj):
                yield where, obj, obj.__doc__


CALLABLES = [c for c in _documented_callables() if c[2] and "Parameters" in _sections(c[2])]


def test_the_check_sees_the_api():
    names = {where for where, _, _ in CALLABLES}
    assert len(CALLABLES) > 100
    assert {"skdip.estimators._denoise.DIPDenoiser", "skdip._engine.fit_model"} <= names


@pytest.mark.parametrize("where, obj, doc", CALLABLES, ids=[c[0] for c in CALLABLES])
def test_parameters_section_matches_the_signature(where, obj, doc):
    assert check_parameters(obj, doc, where) == []


def _function(signature: str, *entries: str, after: str = ""):
    """A function ``f(signature)`` whose Parameters section lists ``entries``."""
    lines = ["X.", "", "Parameters", "----------", *entries, "", after]
    doc = "\n".join(f"    {line}" if line else "" for line in lines)
    namespace: dict = {}
    exec(f"def f({signature}):\n    {doc.strip()!r}\n", namespace)
    return namespace["f"]


@pytest.mark.parametrize(
    "signature, entries, expected",
    [
        # A parameter left out, one too many, two in the wrong order.
        ("a, b", ["a : int"], "documents ['a']"),
        ("a", ["a : int", "b : int"], "documents ['a', 'b']"),
        ("a, b", ["b : int", "a : int"], "documents ['b', 'a']"),
        ("a, **kwargs", ["a : int"], "documents ['a']"),
        # A stale default, a default for a required parameter, a bool for an int, ...
        ("a=0.1", ["a : float, default=0.01"], "default=0.01, is 0.1"),
        ("a", ["a : float, default=1"], "but is required"),
        ("a=1", ["a : int, default=True"], "default=True, is 1"),
        ('a="auto"', ['a : str, default="cpu"'], 'default="cpu"'),
        ("a=1/30", ["a : float, default=1/20"], "default=1/20"),
        ("a=None", ["a : int, default=n_jobs"], "no plain value"),
    ],
)
def test_the_check_finds_a_wrong_docstring(signature, entries, expected):
    f = _function(signature, *entries)
    problems = check_parameters(f, f.__doc__, "f")
    assert any(expected in p for p in problems), problems


def test_the_check_passes_a_right_docstring():
    f = _function(
        'a, b=1/30, *args, c="auto", d=-1, e=(1, 2), **kwargs',
        "a : int",
        "b : float, default=1/30",
        "*args",
        "    More.",
        'c : str, default="auto"',
        "d : int, default=-1",
        "e : tuple, default=(1, 2)",
        "**kwargs",
        "    Rest.",
    )
    assert documented_parameters(f.__doc__)[2] == ("*args", "")
    assert check_parameters(f, f.__doc__, "f") == []


def g(a, b, c):
    """The function the docstrings below send the reader to."""


def test_a_docstring_may_send_the_reader_elsewhere():
    after = "The other parameters are those of :func:`g`."
    right = _function("a, b, c, d", "a : int", "d : int", after=after)
    right.__globals__["g"] = g
    assert check_parameters(right, right.__doc__, "f") == []
    # e is no parameter of g; a and c listed out of order.
    wrong = _function("a, b, c, e", "a : int", "c : int", after=after)
    wrong.__globals__["g"] = g
    assert any("['b', 'e'] are not" in p for p in check_parameters(wrong, wrong.__doc__, "f"))
    disordered = _function("a, b, c, d", "d : int", "a : int", after=after)
    disordered.__globals__["g"] = g
    assert any("in order" in p for p in check_parameters(disordered, disordered.__doc__, "f"))


def _parameter_text(cls, name: str) -> str:
    """The description of parameter ``name`` in ``cls``'s docstring, on one line."""
    lines = _sections(cls.__doc__)["Parameters"]
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{name} :"))
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i] and not lines[i][0].isspace()),
        len(lines),
    )
    return " ".join(line.strip() for line in lines[start:end])


@pytest.mark.parametrize(
    "cls, extra",
    [
        (skdip.DIPDenoiser, {}),
        (skdip.DIPReconstructor, {}),
        (skdip.DIPInpainter, {"keep_observed": False}),
        (skdip.DIPSuperResolver, {"scale": 2}),
        (skdip.DIPDeconvolver, {"kernel": [[0.5, 0.5]]}),
        (skdip.BlindDeblurrer, {"kernel_size": 3}),
    ],
    ids=lambda p: p.__name__ if isinstance(p, type) else "",
)
@pytest.mark.filterwarnings("ignore:DIPInpainter. nothing is missing")
def test_early_stopping_none_returns_the_last_average_as_documented(cls, extra):
    # With output averaging and no stopping rule the fit returns the last average of
    # the iterates, not the last iterate: the docstrings said the latter for every
    # estimator but DIPDenoiser.
    import numpy as np

    net = skdip.SkipNetwork(width=4, depth=1, input_channels=2, skip_channels=1)
    x = np.random.default_rng(0).random((16, 16))
    iterates = []

    def keep(iteration, loss, estimate):
        iterates.append(estimate.detach().cpu().numpy().squeeze())

    common = dict(generator=net, max_iter=6, early_stopping=None, random_state=0, rescale=False)
    raw = cls(output_averaging=None, callback=keep, **common, **extra).fit(x)
    averaged = cls(output_averaging=0.5, **common, **extra).fit(x)
    average = iterates[0]
    for iterate in iterates[1:]:
        average = 0.5 * average + 0.5 * iterate
    np.testing.assert_allclose(raw.reconstruction_, iterates[-1], atol=1e-6)
    np.testing.assert_allclose(averaged.reconstruction_, average, atol=1e-6)
    assert "last average" in _parameter_text(cls, "early_stopping")
