"""Where a step's time goes on an accelerator: bare PyTorch loop vs skdip's engine.

Run by hand (not in CI), on a GPU machine::

    python benchmarks/step_overhead.py --device cuda

For each generator and image size it times, per step (median of the
repeats, after a warm-up): a bare loop with no host sync (``bare_nosync``),
the same loop reading its loss each step (``bare``), :func:`skdip._engine.fit_model`
without a stopping rule (``engine``), with ES-EMV (``engine_emv``), with ES-EMV
and an exponential average of the outputs (``engine_emv_avg``, ``averaging=0.99``)
and with ES-EMV under :class:`skdip.NoiseLevelDeadline` (``engine_deadline``: its
residual is read back each step; the deadline is set too low to be met, so every
step pays for it), and ``DIPDenoiser.fit`` with its defaults and no early
stopping (``estimator``).
A ``torch.profiler`` run of the engine gives the GPU kernel time per step and
the number of kernel launches, against the wall time: when the GPU is busy
for a small part of a step, the step is bound by the host (Python and
launches), not by the arithmetic. Finally it checks run-to-run
reproducibility on the device (the same seeded fit twice in one process).
Results: ``benchmarks/results/step_overhead_<device>.md`` and ``.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _common import bare_adam_loop, read_records, thread_counts, threads_text
from sklearn.exceptions import ConvergenceWarning

from skdip import DIPDenoiser, ExponentialMovingVariance, NoiseLevelDeadline
from skdip._engine import DIPModel, fit_model, resolve_device
from skdip.generators import get_generator
from skdip.losses import get_loss

RESULTS = Path(__file__).parent / "results"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _build(generator: str, size: int, device: torch.device) -> DIPModel:
    net = get_generator(generator).build((size, size), 3, seed=0)
    return DIPModel(net, None, 1 / 30).to(device)


def _per_step(run, n_steps: int, device: torch.device, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        run(n_steps)
        _sync(device)
        times.append((time.perf_counter() - t0) / n_steps)
    return float(np.median(times))


def measure(generator: str, size: int, device: torch.device, n_steps: int, repeats: int):
    target = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    mse = get_loss("mse")

    def bare(read_loss: bool):
        def run(steps):
            bare_adam_loop(_build(generator, size, device), target, steps, read_loss=read_loss)

        return run

    def engine(stopping, averaging=None):
        def run(steps):
            fit_model(
                _build(generator, size, device),
                target,
                loss=mse,
                max_iter=steps,
                stopping=stopping() if stopping else None,
                averaging=averaging,
                averaging_monitor="raw",
                seed=1,
            )

        return run

    image = target[0].permute(1, 2, 0).cpu().numpy()

    def estimator(steps):
        DIPDenoiser(
            generator=generator,
            max_iter=steps,
            early_stopping=None,
            random_state=0,
            device=str(device),
        ).fit(image)

    def emv():
        return ExponentialMovingVariance(patience=10**6, warmup=0)

    def deadline():
        # A deadline far below any reachable residual: never met, read every step.
        return NoiseLevelDeadline(emv(), tau=1e-9, patience=10**6)

    variants = {
        "bare_nosync": bare(False),
        "bare": bare(True),
        "engine": engine(None),
        "engine_emv": engine(emv),
        "engine_emv_avg": engine(emv, averaging=0.99),
        "engine_deadline": engine(deadline),
        "estimator": estimator,
    }
    row = {"generator": generator, "size": size, "device": str(device)}
    for name, run in variants.items():
        run(5)  # warm-up: kernels, cuDNN choices, allocator
        row[name] = _per_step(run, n_steps, device, repeats)
    row.update(_profile(engine(emv), device))
    row.update({f"deadline_{k}": v for k, v in _profile(engine(deadline), device).items()})
    print(json.dumps(row), flush=True)
    return row


def _profile(run, device: torch.device, steps: int = 20) -> dict:
    """GPU kernel time and launches per engine step, from torch.profiler."""
    if device.type != "cuda":
        return {}
    from torch.profiler import ProfilerActivity, profile

    run(3)
    _sync(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        run(steps)
        _sync(device)
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    gpu_us = sum(e.self_device_time_total for e in events)
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel"))
    syncs = sum(
        e.count
        for e in events
        if e.key in ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpyAsync")
    )
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:8]
    return {
        "profiled_wall_per_step": wall / steps,
        "gpu_busy_per_step": gpu_us * 1e-6 / steps,
        "launches_per_step": launches / steps,
        "syncs_and_copies_per_step": syncs / steps,
        "top_cpu_ops": [(e.key, round(e.self_cpu_time_total / steps)) for e in top],
    }


def reproducibility(device: torch.device) -> dict:
    """Max difference between two identical seeded fits in one process."""
    rng = np.random.default_rng(0)
    image = np.clip(rng.random((64, 64)) * 0.2 + 0.4 + rng.normal(0, 0.1, (64, 64)), 0, 1)

    def fit():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (ConvergenceWarning, UserWarning))
            return DIPDenoiser(
                generator="skip-small",
                max_iter=200,
                early_stopping="emv",
                random_state=0,
                device=str(device),
            ).fit(image)

    a, b = fit(), fit()
    out = {
        "same_process_max_abs_diff": float(np.abs(a.reconstruction_ - b.reconstruction_).max()),
        "same_stop": bool(a.best_iter_ == b.best_iter_),
    }
    previous = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    try:
        c, d = fit(), fit()
    finally:
        torch.backends.cudnn.deterministic = previous
    out["cudnn_deterministic_max_abs_diff"] = float(
        np.abs(c.reconstruction_ - d.reconstruction_).max()
    )
    return out


def _command(args) -> str:
    return (
        f"python benchmarks/step_overhead.py --device {args.device} --sizes "
        f"{' '.join(map(str, args.sizes))} --generators {' '.join(args.generators)} --steps "
        f"{args.steps} --repeats {args.repeats}"
    )


def write_summary(device_type: str) -> str:
    """Rebuild ``step_overhead_<device>.md`` from every record of its ``.jsonl``."""
    records, commands = read_records(RESULTS / f"step_overhead_{device_type}.jsonl")
    rows = [r for r in records if "reproducibility" not in r]
    repro = [r for r in records if "reproducibility" in r]
    nan = float("nan")
    threads = list(dict.fromkeys(threads_text(r) for r in records))
    # Rows appended by runs with other thread settings say which is theirs.
    per_row = len({threads_text(r) for r in rows}) > 1
    lines = [
        f"# Time per step on {records[-1]['device_name']}",
        "",
        commands + f"; torch {', '.join(sorted({r['torch'] for r in records if 'torch' in r}))}"
        f"; {'; '.join(threads)}. "
        "Milliseconds per step (median of the repeats), RGB images. `gpu busy` is the kernel "
        "time per step from torch.profiler, `launches` the kernel launches per step (both "
        "from a profiled engine + EMV run).",
        "",
        "| generator | size | bare, no sync | bare | engine | engine + EMV | EMV + averaging "
        "| EMV + deadline | DIPDenoiser.fit | gpu busy | launches |"
        + (" threads |" if per_row else ""),
        "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if per_row else ""),
    ]
    for r in rows:
        lines.append(
            f"| {r['generator']} | {r['size']} | {1e3 * r['bare_nosync']:.1f} | "
            f"{1e3 * r['bare']:.1f} | {1e3 * r['engine']:.1f} | {1e3 * r['engine_emv']:.1f} | "
            f"{1e3 * r.get('engine_emv_avg', nan):.1f} | "
            f"{1e3 * r.get('engine_deadline', nan):.1f} | "
            f"{1e3 * r['estimator']:.1f} | {1e3 * r.get('gpu_busy_per_step', nan):.1f} | "
            f"{r.get('launches_per_step', nan):.0f} |"
            + (f" {threads_text(r)} |" if per_row else "")
        )
    lines.append("")
    busy = [r["gpu_busy_per_step"] / r["engine_emv"] for r in rows if "gpu_busy_per_step" in r]
    if busy:
        lines += [
            f"The GPU was busy for {100 * min(busy):.0f}-{100 * max(busy):.0f}% of an engine "
            "+ EMV step: where that share is small, a step is bound by the host (Python and "
            "kernel launches), not by the arithmetic, and batching (`batch_size`, "
            "`fit_candidates`) or fewer launches per step are what make it faster.",
            "",
        ]
    syncs = [r for r in rows if "deadline_syncs_and_copies_per_step" in r]
    if syncs:
        lines += [
            "Host syncs and device-host copies per step (profiled): "
            + "; ".join(
                f"{r['generator']} {r['size']}: {r['syncs_and_copies_per_step']:.1f} with EMV, "
                f"{r['deadline_syncs_and_copies_per_step']:.1f} with the deadline"
                for r in syncs
            )
            + ".",
            "",
        ]
    if repro:
        lines.append(
            "Reproducibility (the same seeded fit twice, one process): "
            f"{repro[-1]['reproducibility']}"
        )
    else:
        lines.append("Reproducibility: not measured (the run ended before that part).")
    text = "\n".join(lines) + "\n"
    (RESULTS / f"step_overhead_{device_type}.md").write_text(text)
    return text


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--generators", nargs="+", default=["skip-small", "skip"])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--summary",
        metavar="DEVICE",
        default=None,
        help="only rebuild results/step_overhead_DEVICE.md (e.g. cuda)",
    )
    args = parser.parse_args(argv)
    if args.summary:
        print(write_summary(args.summary))
        return
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"step_overhead_{device.type}.jsonl"
    extra = {
        "device_name": name,
        "torch": torch.__version__,
        **thread_counts(),
        "command": _command(args),
    }
    # Records are appended as they are measured: a run cut short keeps them.
    for g in args.generators:
        for size in args.sizes:
            row = measure(g, size, device, args.steps, args.repeats)
            with path.open("a") as fh:
                fh.write(json.dumps({**row, **extra}) + "\n")
    repro = reproducibility(device)
    print(json.dumps(repro), flush=True)
    with path.open("a") as fh:
        fh.write(json.dumps({"reproducibility": repro, **extra}) + "\n")
    print(write_summary(device.type))


if __name__ == "__main__":
    main()
