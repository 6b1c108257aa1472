"""The example scripts run end to end (tiny images, a few steps), so they cannot rot.

Each example's ``main(argv)`` takes the options that size it; the figures its
docstring quotes come from its defaults, run by hand.
"""

import ast
import importlib.util
import warnings
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# example -> (tiny options, what its output must contain, files it writes)
CASES = {
    "denoise_camera": (
        ["--size", "16", "--max-iter", "3"],
        ["noisy PSNR", "restored PSNR"],
        ["--out", "out.png"],
    ),
    "blind_deblurring": (
        ["--size", "32", "--kernel-size", "7", "--max-iter", "3"],
        ["kernel size assumed"],
        ["--out", "out.png"],
    ),
    "phase_retrieval": (
        ["--size", "16", "--max-iter", "3", "--beamstop", "1"],
        ["HIO:", "PhaseRetriever:", "beamstop: 9 pixels"],
        ["--out", "out.png"],
    ),
    "grid_search_without_reference": (
        ["--size", "16", "--max-iter", "3"],
        ["chosen without the clean image", "PreferDefault chose"],
        [],
    ),
    "inpainting": (["--size", "32", "--max-iter", "3"], ["50% random pixels", "text overlay"], []),
    "jpeg_artifacts": (["--size", "16", "--max-iter", "3"], ["JPEG quality 10", "restored:"], []),
    "mri_kspace": (["--size", "32", "--max-iter", "3"], ["zero-filled", "data consistency"], []),
}


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_is_covered():
    assert sorted(p.stem for p in EXAMPLES.glob("*.py")) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_example_runs(name, tmp_path, capsys):
    options, expected, out = CASES[name]
    out = [str(tmp_path / part) if part.endswith(".png") else part for part in out]
    with warnings.catch_warnings():
        # A few steps end every fit before its stopping rule: expected here.
        warnings.simplefilter("ignore")
        _load(name).main(options + out)
    printed = capsys.readouterr().out
    for text in expected:
        assert text in printed, printed
    for path in out:
        if path.endswith(".png"):
            assert Path(path).stat().st_size > 0


@pytest.mark.parametrize("name", sorted(CASES))
def test_an_example_with_a_progress_bar_says_it_needs_tqdm(name):
    # verbose=True needs tqdm, an optional extra: without it the example stops with an
    # ImportError at its first fit, so its docstring says so.
    source = (EXAMPLES / f"{name}.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    verbose = any(
        isinstance(node, ast.keyword)
        and node.arg == "verbose"
        and not (isinstance(node.value, ast.Constant) and not node.value.value)
        for node in ast.walk(tree)
    )
    if verbose:
        assert "tqdm" in ast.get_docstring(tree) and "skdip[progress]" in ast.get_docstring(tree)
