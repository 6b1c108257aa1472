"""The suite's own settings (the root conftest.py) do what they say."""

import textwrap
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_auto_is_the_cpu_except_in_tests_marked_cuda(pytester, monkeypatch):
    # On a GPU machine 14 tests and examples failed: they compare seeded fits bit for
    # bit, which only the CPU repeats. Pretend there is a GPU and run a sample suite
    # under the project's conftest.py.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    pytester.makeconftest((ROOT / "conftest.py").read_text())
    pytester.makeini("[pytest]\nmarkers =\n    cuda: sees the GPU\n")
    pytester.makepyfile(
        textwrap.dedent(
            '''
            import pytest
            import torch

            from skdip._engine import resolve_device


            def test_plain():
                assert resolve_device("auto").type == "cpu"


            @pytest.mark.cuda
            def test_marked():
                assert torch.cuda.is_available()


            def example():
                """
                >>> from skdip._engine import resolve_device
                >>> resolve_device("auto").type
                'cpu'
                """
            '''
        )
    )
    result = pytester.runpytest_inprocess("--doctest-modules", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
