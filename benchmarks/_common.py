"""Command-line and output plumbing shared by the per-method benchmark scripts.

The scripts run as ``python benchmarks/<name>.py``, so this folder is on
``sys.path`` and they import this module as ``_common``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"


def case_parser(
    description: str, images: dict, *, tag: str, max_iter: int, generator: bool = True
) -> argparse.ArgumentParser:
    """A parser with the options every per-method benchmark takes (``--generator`` only
    where the script uses it: accepted and ignored, it misled)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--images", nargs="+", default=["camera", "astronaut"], choices=images)
    parser.add_argument("--size", type=int, default=64)
    if generator:
        parser.add_argument("--generator", default="skip-small")
    parser.add_argument("--max-iter", type=int, default=max_iter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tag", default=tag)
    return parser


def start(args: argparse.Namespace, script: str) -> None:
    """Record the command line (for the results header) and set the torch threads."""
    args.command = f"python benchmarks/{script} " + shlex.join(sys.argv[1:])
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(exist_ok=True)


def projector_recipe(lr: float, tv_weight: float, width: int = 128) -> dict:
    """Estimator settings of the Deep Random Projector as its authors give them for a
    task: the learning rate and TV weight vary, the rest is common to their recipes."""
    from skdip import TotalVariation
    from skdip.generators import DeepRandomProjector

    return {
        "generator": DeepRandomProjector(width=width),
        "lr": lr,
        "loss": "rmse",
        "regularizer": TotalVariation(weight=tv_weight),
        "reg_noise_std": 0.0,
    }


def where_fits_ran(args: argparse.Namespace) -> str:
    """The machine part of a results header: the GPU's name, or a CPU-only warning."""
    device = getattr(args, "device", "cpu")
    if device.startswith("cuda"):
        return f"fits on {torch.cuda.get_device_name(torch.device(device))} (one process)"
    return "CPU only (a shared 2-core machine: timings are indicative)"


def save(
    rows: list[dict],
    args: argparse.Namespace,
    write_table: Callable[[list[dict], Path, argparse.Namespace], None],
) -> None:
    """Write the rows as ``results/<tag>.jsonl`` and their table as ``<tag>.md``."""
    with open(RESULTS / f"{args.tag}.jsonl", "w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    write_table(rows, RESULTS / f"{args.tag}.md", args)


def read_records(path: Path) -> tuple[list[dict], str]:
    """The JSON records of a results file and a ``Commands: `...`; `...``` line for them
    (``Commands: not recorded`` for records that keep none).

    Records that carry a ``command`` are listed once each, in order, so a table
    built from several runs says which commands made it.
    """
    records = [json.loads(line) for line in path.open()]
    commands = list(dict.fromkeys(r["command"] for r in records if "command" in r))
    if not commands:
        return records, "Commands: not recorded"
    return records, "Commands: " + "; ".join(f"`{c}`" for c in commands)


def bare_adam_loop(
    model: torch.nn.Module, target: torch.Tensor, steps: int, *, read_loss: bool = True
) -> None:
    """``steps`` of a plain PyTorch loop (Adam, lr 0.01, MSE) over a ``DIPModel``.

    The floor that the engine's per-step cost is compared with. Reading the loss
    back each step (``read_loss``) is what any loop that logs or stops does; on a
    GPU it also waits for the step to finish. Its Adam runs the engine's kernels
    (fused on a GPU, foreach on a CPU): results before this (in ``denoise*.md`` and
    ``step_overhead_cuda.md``, not ``step_overhead_cuda_h100.md``) timed PyTorch's
    default, per-tensor on a CPU and foreach on a GPU, so their overheads understate
    the engine's own cost.
    """
    from skdip._engine import _adam_kernels

    on_gpu = all(p.is_cuda for p in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=0.01, **_adam_kernels(on_gpu))
    rng = torch.Generator(device=target.device).manual_seed(1)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        _, pred = model(rng)
        loss = torch.nn.functional.mse_loss(pred, target)
        loss.backward()
        opt.step()
        if read_loss:
            float(loss.detach())


def choice_stats(
    choice: np.ndarray, default: np.ndarray, oracle: np.ndarray
) -> dict[str, float | int]:
    """How a selection rule's choices compare, case by case, with the default and oracle.

    All three are true PSNRs (dB), one per case. Gains are over the default setting;
    gaps are to the best setting of the grid (< 0: the choice beat every single setting,
    as an average of estimates can).
    """
    gain, gap = choice - default, oracle - choice
    return {
        "median_gain": float(np.median(gain)),
        "mean_gain": float(np.mean(gain)),
        "worst_gain": float(np.min(gain)),
        "below": int(np.sum(gain < 0)),
        "below_half_db": int(np.sum(gain < -0.5)),
        "median_gap": float(np.median(gap)),
        "mean_gap": float(np.mean(gap)),
    }


def merge_saved(
    args: argparse.Namespace,
    write_table: Callable[[list[dict], Path, argparse.Namespace], None],
) -> None:
    """Join the results files named by ``args.merge`` into ``args.tag``.

    Their commands go to ``args.commands``, for the table's header.
    """
    rows, commands = [], []
    for tag in args.merge:
        records, line = read_records(RESULTS / f"{tag}.jsonl")
        rows += records
        commands.append(line.removeprefix("Commands: "))
    args.commands = "Commands: " + "; ".join(commands)
    save(rows, args, write_table)


def run_settings(records: list[dict]) -> str:
    """The settings part of a results header, from the records' ``settings``: that text
    when every run had the same, else each run's command with its settings.

    A table joined from several runs (``--merge``) was headed with the options of the
    command that wrote it, true of none of its rows perhaps; each record now keeps its
    run's ``command`` and ``settings``, and records made before that are said to be so.
    """
    runs = list(dict.fromkeys((r.get("command"), r.get("settings")) for r in records))
    if len({s for _, s in runs}) == 1 and runs[0][1] is not None:
        return runs[0][1]

    def one(command: str | None, settings: str | None) -> str:
        if command is None:
            return f"earlier run(s): {settings or 'command and settings not recorded'}"
        return f"`{command}`: {settings or 'not recorded (see the command)'}"

    return "Settings per run: " + "; ".join(one(c, s) for c, s in runs)


def thread_counts() -> dict:
    """torch's thread counts and OMP_NUM_THREADS, for a timing record: CPU timings, and
    the host side of a GPU step, depend on them."""
    return {
        "torch_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def threads_text(record: dict) -> str:
    """A record's thread counts in words (older records did not keep them)."""
    if "torch_threads" not in record:
        return "threads not recorded"
    omp = record["omp_num_threads"]
    return (
        f"{record['torch_threads']} torch thread(s), {record['interop_threads']} interop, "
        f"OMP_NUM_THREADS {'unset' if omp is None else omp}"
    )


def settings_differences(records: list[dict], wanted: dict) -> list[str]:
    """``"key: theirs there, wanted now"`` for each setting of ``wanted`` that the
    ``records`` do not all share with it ("not recorded" where a record lacks it): a
    run that adds to or compares with records made otherwise must refuse."""
    differ = []
    for key, value in wanted.items():
        found = sorted({repr(r[key]) if key in r else "not recorded" for r in records})
        if found != [repr(value)]:
            differ.append(f"{key}: {', '.join(found)} there, {value!r} now")
    return differ
