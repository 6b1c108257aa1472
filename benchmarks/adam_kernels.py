"""Adam's fused kernels against its multi-tensor ("foreach") ones, per step on a GPU.

Run by hand (not in CI), on a GPU machine::

    python benchmarks/adam_kernels.py --device cuda

The engine takes ``torch.optim.Adam(fused=True)`` when every parameter is on a
GPU (and ``foreach=True`` elsewhere). This times ``DIPDenoiser.fit`` (RGB
image, a fixed number of steps, no early stopping) both ways, the two runs
alternating so that drifts of the machine fall on both, and reports the median
time per step and how far the two reconstructions are apart (float rounding
only: the two compute the same update). Results:
``benchmarks/results/adam_kernels_<device>.md`` and ``.jsonl``. With ``--device cpu``
both runs take the foreach kernels (the engine takes no fused ones off a GPU): a
smoke run of the script, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import save, thread_counts, threads_text
from skimage import data

from skdip import DIPDenoiser
from skdip._engine import resolve_device

RESULTS = Path(__file__).parent / "results"
_ADAM = torch.optim.Adam


class _ForeachAdam(_ADAM):
    """Adam as the engine takes it on a CPU, whatever the device."""

    def __init__(self, params, lr=1e-3, fused=None, foreach=None, **kw):
        super().__init__(params, lr=lr, foreach=True, **kw)


def _fit(image, generator: str, steps: int, device: torch.device, kernels: str):
    torch.optim.Adam = _ForeachAdam if kernels == "foreach" else _ADAM
    try:
        est = DIPDenoiser(
            generator=generator,
            max_iter=steps,
            early_stopping=None,
            random_state=0,
            device=str(device),
        )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        est.fit(image)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return 1000 * (time.perf_counter() - t0) / steps, est.reconstruction_
    finally:
        torch.optim.Adam = _ADAM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--generators", nargs="+", default=["skip-small", "skip"])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    command = "python benchmarks/adam_kernels.py " + shlex.join(sys.argv[1:])
    try:
        device = resolve_device(args.device)
    except ValueError as error:  # e.g. the default, cuda, on a machine without a GPU
        parser.error(str(error))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    rng = np.random.default_rng(0)
    rows = []
    for generator in args.generators:
        for size in args.sizes:
            clean = data.astronaut()[:size, :size] / 255.0
            noisy = np.clip(clean + rng.normal(0, 25 / 255, clean.shape), 0, 1)
            _fit(noisy, generator, 10, device, "fused")  # warm-up: context, kernels
            _fit(noisy, generator, 10, device, "foreach")
            times: dict[str, list[float]] = {"fused": [], "foreach": []}
            for _ in range(args.repeats):
                for kernels in times:
                    ms, out = _fit(noisy, generator, args.steps, device, kernels)
                    times[kernels].append(ms)
                    if kernels == "fused":
                        fused_out = out
                    else:
                        foreach_out = out
            row = {
                "device": name,
                "generator": generator,
                "size": size,
                "steps": args.steps,
                "repeats": args.repeats,
                "ms_fused": float(np.median(times["fused"])),
                "ms_foreach": float(np.median(times["foreach"])),
                "ms_fused_all": times["fused"],
                "ms_foreach_all": times["foreach"],
                "max_abs_diff": float(np.abs(fused_out - foreach_out).max()),
                "mean_abs_diff": float(np.abs(fused_out - foreach_out).mean()),
                "torch": torch.__version__,
                **thread_counts(),
                "command": command,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.tag, args.command, args.device_name = f"adam_kernels_{device.type}", command, name
    RESULTS.mkdir(exist_ok=True)
    save(rows, args, _write_table)


def _write_table(rows: list[dict], path: Path, args: argparse.Namespace) -> None:
    lines = [
        f"# Adam's fused kernels against foreach ones on {args.device_name}",
        "",
        f"Command: `{args.command}`; torch {torch.__version__}; {threads_text(rows[0])}."
        " `DIPDenoiser.fit` on an RGB"
        f" crop of astronaut, {args.steps} steps, no early stopping; milliseconds per step,"
        f" median of {args.repeats} runs of each, the two alternating.",
        "",
        "| generator | size | fused (ms) | foreach (ms) | foreach / fused | max / mean abs diff |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['generator']} | {r['size']} | {r['ms_fused']:.2f} | {r['ms_foreach']:.2f} |"
            f" {r['ms_foreach'] / r['ms_fused']:.2f} |"
            f" {r['max_abs_diff']:.1e} / {r['mean_abs_diff']:.1e} |"
        )
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
