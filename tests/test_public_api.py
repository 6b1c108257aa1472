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
