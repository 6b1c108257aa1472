"""The public names: each one documented in doc/index.md's API table."""

import importlib
from pathlib import Path

import pytest

MODULES = [
    "skdip",
    "skdip.generators",
    "skdip.operators",
    "skdip.losses",
    "skdip.stopping",
    "skdip.metrics",
    "skdip.datasets",
    "skdip.exceptions",
    "skdip.model_selection",
]
INDEX = Path(__file__).resolve().parents[1] / "doc" / "index.md"


@pytest.mark.parametrize("module", MODULES)
def test_every_public_name_is_in_the_api_table(module):
    text = INDEX.read_text(encoding="utf-8")
    names = importlib.import_module(module).__all__
    assert [n for n in names if f"`{n}`" not in text] == []


# README's overview lists each public module (skdip.exceptions was missing from it).
def test_every_public_module_is_in_the_readmes_overview():
    text = (INDEX.parents[1] / "README.md").read_text(encoding="utf-8")
    overview = text[text.index("## What is inside") :].split("\n\n")[1]
    assert [m for m in MODULES[1:] if f"`{m}`" not in overview] == []


# The package's annotations reached no type checker: the wheel shipped no PEP 561 marker.
def test_the_wheel_ships_the_py_typed_marker(tmp_path):
    import shutil
    import subprocess
    import sys
    import zipfile

    pytest.importorskip("setuptools", minversion="77")
    root = Path(__file__).resolve().parents[1]
    source = tmp_path / "source"  # a copy, so that the build leaves the checkout alone
    shutil.copytree(root / "skdip", source / "skdip", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(root / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation"]
        + ["-q", "-w", str(tmp_path / "wheel")],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = (tmp_path / "wheel").glob("skdip-*.whl")
    assert "skdip/py.typed" in zipfile.ZipFile(wheel).namelist()


# A typed caller passing a column of cv_results_ (a NumPy array) to PreferDefault.select
# was told by a type checker that the call was wrong: scores was annotated
# Sequence[float], which an ndarray is not, though the method reads it with np.asarray.
def test_prefer_default_select_is_annotated_to_take_an_array():
    import typing

    import numpy as np
    from numpy.typing import ArrayLike

    from skdip.model_selection import PreferDefault

    hints = typing.get_type_hints(PreferDefault.select)
    assert hints["scores"] == ArrayLike
    rule = PreferDefault(default={"lr": 0.01}, margin=1.0)
    assert rule.select([{"lr": 0.01}, {"lr": 0.1}], np.array([-2.0, -0.5])) == 1


# The functions whose result's type follows a flag: a type checker read every call as
# returning the union (kernel_error(a, b) < 0.1 was refused, as was the plain call's
# result of align_phase_retrieval used as an array). Overloads tell the cases apart.
@pytest.mark.parametrize(
    ("name", "flag", "plain", "with_flag"),
    [
        ("kernel_error", "return_shift", "float", "tuple[float, tuple[int, int]]"),
        (
            "align_phase_retrieval",
            "return_params",
            "np.ndarray",
            "tuple[np.ndarray, dict]",
        ),
    ],
)
def test_results_typed_by_their_flag(name, flag, plain, with_flag):
    import inspect
    import typing

    if not hasattr(typing, "get_overloads"):
        pytest.skip("typing.get_overloads needs Python 3.11")
    import skdip.metrics

    function = getattr(skdip.metrics, name)
    returns = {}
    for overload in typing.get_overloads(function):
        signature = inspect.signature(overload)
        returns[signature.parameters[flag].annotation] = signature.return_annotation
    assert returns["Literal[False]"] == plain
    assert returns["Literal[True]"] == with_flag
    # The overloads are annotations only: the function itself is unchanged.
    assert inspect.signature(function).parameters[flag].default is False


# scikit-learn's InvalidParameterError, which skdip raises for a bad parameter, lived
# only in the private sklearn.utils._param_validation: catching it took a private import.
def test_invalid_parameter_error_is_public_in_skdip_exceptions():
    import numpy as np
    from sklearn.utils._param_validation import InvalidParameterError as Private

    from skdip import DIPDenoiser
    from skdip.exceptions import InvalidParameterError
    from skdip.model_selection import PreferDefault

    assert InvalidParameterError is Private
    # scikit-learn's constraints, and skdip's own checks, raise the same class.
    with pytest.raises(InvalidParameterError, match="max_iter"):
        DIPDenoiser(max_iter=-1).fit(np.zeros((8, 8)))
    with pytest.raises(InvalidParameterError, match="margin"):
        PreferDefault(default={"lr": 0.01}, margin=-1.0).select([{"lr": 0.01}], [0.0])


# requirements/oldest.txt pins what pyproject.toml declares as the floors, for the by-hand
# run of the suite there (.ci/min-versions): a floor raised in one place and not the other
# was then checked at versions skdip no longer claims, or no longer checked at its claim.
def test_the_oldest_pins_are_the_declared_floors():
    import re

    root = Path(__file__).resolve().parents[1]
    # A regular expression, not tomllib: that is Python 3.11+, and skdip supports 3.10.
    pyproject = (root / "pyproject.toml").read_text(encoding="utf-8")
    block = re.search(r"^dependencies = \[(.*?)^\]", pyproject, re.S | re.M).group(1)
    floors = dict(re.findall(r'"([\w-]+)>=([\d.]+)"', block))
    lines = (root / "requirements" / "oldest.txt").read_text(encoding="utf-8").splitlines()
    pins = dict(
        re.fullmatch(r"([\w-]+)==([\d.]+)", line).groups()
        for line in lines
        if line and not line.startswith("#")
    )

    def release(version):  # "2.1" and "2.1.0" name one release
        parts = [int(p) for p in version.split(".")]
        return parts + [0] * (3 - len(parts))

    assert len(floors) == 6 and floors.keys() <= pins.keys()
    assert {name: release(pins[name]) for name in floors} == {
        name: release(floor) for name, floor in floors.items()
    }
