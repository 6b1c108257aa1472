"""The public API as a user's type checker sees it (skdip ships ``py.typed``).

mypy --strict checks tests/typecheck/user_api.py, calls of the API as the guides make
them, against this checkout's annotations. Skipped without mypy (the ``test`` extra
installs it); a cold run takes about 20 s on 2 cores, the second one reads its cache.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy")

ROOT = Path(__file__).resolve().parents[1]
USER_CODE = ROOT / "tests" / "typecheck" / "user_api.py"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("mypy_cache")


def _mypy(target: list[str], cache_dir: Path, strict: bool = True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mypy", "--no-color-output", *["--strict"] * strict]
    # --follow-imports=silent: errors inside skdip are not the user's (mypy is silent
    # on an installed package's own errors, but reads this checkout through MYPYPATH).
    # scikit-learn, SciPy and joblib ship no annotations: left untyped, as a user's
    # configuration leaves them. skdip itself missing stays an error (import-not-found).
    command += ["--follow-imports=silent", "--disable-error-code=import-untyped"]
    # One cache per strictness: a run with other options rewrites the modules' entries,
    # and the next strict run then checked all of skdip again (about 20 s).
    command += ["--cache-dir", str(cache_dir / ("strict" if strict else "default")), *target]
    # This checkout, not an installed skdip (an editable install may point elsewhere).
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cache_dir)


def test_the_user_code_passes_strict_type_checking(cache_dir):
    result = _mypy([str(USER_CODE)], cache_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found in 1 source file" in result.stdout


# The check above could pass for the wrong reason (skdip read as Any, the file not
# checked): a wrong claim about a type must fail it.
def test_a_wrong_assert_type_fails_the_check(cache_dir, tmp_path):
    wrong = tmp_path / "wrong.py"
    wrong.write_text(
        "from typing_extensions import assert_type\n"
        "import numpy as np\n"
        "from skdip import DIPDenoiser, DIPInpainter\n"
        "def f(x: np.ndarray) -> None:\n"
        "    assert_type(DIPDenoiser().fit(x), DIPInpainter)\n",
        encoding="utf-8",
    )
    result = _mypy([str(wrong)], cache_dir)
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'Expression is of type "DIPDenoiser", not "DIPInpainter"' in result.stdout


# The argument checks return a value or raise unless allow_none: typed as Optional, every
# caller that used the value (65 places) was an error to mypy, which buried the rest.
def test_the_argument_checks_type_check_clean(cache_dir):
    result = _mypy(["-m", "skdip._validation"], cache_dir, strict=False)
    assert result.returncode == 0, result.stdout + result.stderr


# The estimators go on with a kept fit as fit_model(None, None, resume=state): annotated
# model: nn.Module and target: Tensor, that call was refused (skdip/estimators/_base.py).
def test_fit_model_is_typed_for_a_new_fit_and_for_one_that_goes_on(cache_dir, tmp_path):
    caller = tmp_path / "engine_caller.py"
    caller.write_text(
        "import torch\n"
        "from torch import nn\n"
        "from skdip._engine import FitState, fit_model\n"
        "from skdip.losses import get_loss\n"
        "def go_on(state: FitState) -> None:\n"
        "    fit_model(None, None, resume=state, loss=get_loss('mse'), max_iter=5)\n"
        "def new(model: nn.Module, target: torch.Tensor) -> None:\n"
        "    fit_model(model, target, loss=get_loss('mse'), max_iter=5)\n"
        "def without_a_model(target: torch.Tensor) -> None:\n"
        "    fit_model(None, target, loss=get_loss('mse'), max_iter=5)\n",
        encoding="utf-8",
    )
    result = _mypy([str(caller)], cache_dir)
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    # The new fit without a model only: no overload takes it.
    assert len(errors) == 1, result.stdout + result.stderr
    assert "engine_caller.py:10: error: No overload variant" in errors[0]
