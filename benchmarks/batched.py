"""Batched fitting: ``DIPDenoiser(batch_size=K)`` against one image after another.

Run by hand (not in CI)::

    python benchmarks/batched.py                       # the device "auto" picks
    python benchmarks/batched.py --device cpu --threads 1
    python benchmarks/batched.py --summary cuda        # rebuild the .md from the .jsonl

For each image size and batch size K, K noisy bundled images are denoised
with a fixed number of steps (``early_stopping=None``, so both runs do the
same work) by ``batch_size=1`` and by ``batch_size=K``; wall times, the
speed-up and the largest difference between the two reconstructions are
appended to ``benchmarks/results/batched_<device>.jsonl`` row by row (on a CPU the
device tag holds the thread count, e.g. ``cpu_t2``), and the ``.md`` beside it
is rebuilt from all its rows.
The batched run vectorises the K networks with ``torch.func.vmap``; it is
meant for GPUs, where small images leave most of the device idle.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import time
from pathlib import Path

import numpy as np
import torch
from _common import read_records

from skdip import DIPDenoiser
from skdip._engine import resolve_device
from skdip.datasets import add_noise, load_image
from skdip.metrics import psnr

RESULTS = Path(__file__).parent / "results"
NAMES = ("camera", "coins", "moon", "text", "brick", "grass", "gravel", "cell")


def _batch(size: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    cleans, noisy = [], []
    for i in range(k):
        clean = load_image(NAMES[i % len(NAMES)], size=size, as_gray=True)
        cleans.append(clean)
        noisy.append(add_noise(clean, "gaussian", 25 / 255, random_state=i))
    return np.stack(noisy)[..., None], np.stack(cleans)[..., None]


def _mean_psnr(clean: np.ndarray, out: np.ndarray) -> float:
    return float(np.mean([psnr(c, o) for c, o in zip(clean, out, strict=True)]))


def _timed(estimator: DIPDenoiser, X: np.ndarray, device: torch.device) -> tuple[float, np.ndarray]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = estimator.fit_transform(X)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def _command(args) -> str:
    """The run's command line, every option that changes the rows included (it lacked
    --generator, so a record of another generator did not say how to make it again)."""
    return (
        f"python benchmarks/batched.py --device {args.device}"
        + (f" --threads {args.threads}" if args.threads else "")
        + f" --generator {shlex.quote(args.generator)}"
        + f" --sizes {' '.join(map(str, args.sizes))} --batch-sizes "
        f"{' '.join(map(str, args.batch_sizes))} --steps {args.steps} --repeats {args.repeats}"
    )


def write_summary(tag: str) -> str:
    """Rebuild ``batched_<tag>.md`` from every row of ``batched_<tag>.jsonl``."""
    rows, commands = read_records(RESULTS / f"batched_{tag}.jsonl")
    device_type = rows[-1]["device_type"]
    # The file gathers every run of its tag: the header names all their devices,
    # threads and generators (not the last row's), and rows get a column for what varies.
    names, generators, versions, threads = (
        list(dict.fromkeys(r[k] for r in rows)) for k in ("device", "generator", "torch", "threads")
    )
    varying = [k for k, v in (("device", names), ("generator", generators)) if len(v) > 1]
    lines = [
        f"# Batched fitting on {', '.join(names)} ({device_type})",
        "",
        commands + f". torch {', '.join(versions)}, {', '.join(map(str, threads))} CPU "
        f"thread(s). Generator{'s' * (len(generators) > 1)} "
        f"{', '.join(f'`{g}`' for g in generators)}, a fixed number of "
        "steps per image (no early stopping), grey images with Gaussian noise 25/255. Best of "
        "the repeats, wall time of `fit_transform` for the whole batch.",
        "",
        "| " + "".join(f"{k} | " for k in varying) + "size | images | steps | one after "
        "another (s) | batched (s) | speed-up | PSNR one / batched (dB) | max / mean abs diff |",
        "|---" * (8 + len(varying)) + "|",
    ]
    for r in sorted(rows, key=lambda r: (*(r[k] for k in varying), r["size"], r["images"])):
        lines.append(
            "| "
            + "".join(f"{r[k]} | " for k in varying)
            + f"{r['size']}x{r['size']} | {r['images']} | {r['steps']} | "
            f"{r['sequential_s']:.2f} | {r['batched_s']:.2f} | {r['speedup']:.2f} | "
            f"{r['psnr_sequential']:.2f} / {r['psnr_batched']:.2f} | "
            f"{r['max_abs_diff']:.1e} / {r['mean_abs_diff']:.1e} |"
        )
    lines += [
        "",
        "The difference between the two reconstructions is float32 rounding (the batched "
        "convolutions sum in another order), amplified by Adam over the steps; in float64 the "
        "two runs agree to 1e-10 (tests/test_batched.py).",
    ]
    text = "\n".join(lines) + "\n"
    (RESULTS / f"batched_{tag}.md").write_text(text)
    return text


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--generator", default="skip-small")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--summary",
        metavar="TAG",
        default=None,
        help="only rebuild results/batched_TAG.md from its .jsonl (e.g. cuda)",
    )
    args = parser.parse_args(argv)
    if args.summary:
        print(write_summary(args.summary))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.machine()} CPU, {os.cpu_count()} cores"
    tag = device.type if device.type == "cuda" else f"cpu_t{torch.get_num_threads()}"
    RESULTS.mkdir(exist_ok=True)
    for size in args.sizes:
        for k in args.batch_sizes:
            X, clean = _batch(size, k)

            def make(batch_size: int, X=X) -> DIPDenoiser:
                return DIPDenoiser(
                    generator=args.generator,
                    max_iter=args.steps,
                    early_stopping=None,
                    random_state=0,
                    device=args.device,
                    batch_size=batch_size,
                )

            # Warm-up (CUDA context, kernels, vmap tracing) outside the timings.
            make(1).set_params(max_iter=3).fit(X[:2])
            make(2).set_params(max_iter=3).fit(X[:2])
            seq, bat = [], []
            for _ in range(args.repeats):
                t, out_seq = _timed(make(1), X, device)
                seq.append(t)
                t, out_bat = _timed(make(k), X, device)
                bat.append(t)
            row = {
                "device": name,
                "device_type": device.type,
                "threads": torch.get_num_threads(),
                "generator": args.generator,
                "size": size,
                "images": k,
                "steps": args.steps,
                "repeats": args.repeats,
                "sequential_s": min(seq),
                "batched_s": min(bat),
                "speedup": min(seq) / min(bat),
                "max_abs_diff": float(np.abs(out_seq - out_bat).max()),
                "mean_abs_diff": float(np.abs(out_seq - out_bat).mean()),
                "psnr_sequential": _mean_psnr(clean, out_seq),
                "psnr_batched": _mean_psnr(clean, out_bat),
                "torch": torch.__version__,
                "command": _command(args),
            }
            # Written row by row: a run stopped part-way keeps what it measured.
            with (RESULTS / f"batched_{tag}.jsonl").open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    print(write_summary(tag))


if __name__ == "__main__":
    main()
