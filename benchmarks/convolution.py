"""Direct (``conv2d``) against FFT convolution: where the FFT path starts to pay.

Run by hand (not in CI)::

    python benchmarks/convolution.py

It times forward plus backward of the two paths of
:func:`skdip.operators._convolution.convolve` (``_convolve_direct`` and ``_convolve_fft``),
with gradients for both the image and the kernel, as in ``BlindDeblurrer`` (for the image
only with ``--fixed-kernel``, as for a known blur):

- a grid of square images (``--images``, one plane: batch 1, one channel) and square
  kernels (``--kernels``), for each boundary;
- unless ``--no-extra``, extra cases that the grid misses and the crossover rule depends
  on: thin and non-square kernels, non-square images, the image size where ``conv2d``'s
  backward slows down, ``"circular"`` images whose side is a slow FFT length (a large
  prime factor), several planes (batch times channels), and ``"valid"`` kernels nearly as
  large as the image.

Times are CPU time (``time.process_time``) per call, the best of ``--repeats`` rounds,
each round averaging enough calls to last about ``--min-time`` seconds. With
``--device cuda`` the tensors live on the GPU and times are wall-clock, the device
synchronised before and after each round (kernel launches are asynchronous), and the
automatic rule is read for that device. Each case also
records the largest difference between the two paths (output, image gradient, kernel
gradient, relative to the largest value of each) and the path that
:func:`skdip.operators._convolution._use_fft` picks; the constants of that rule were fitted
to these timings. Result: ``benchmarks/results/<tag>.md`` (the raw rows too, with
``--jsonl PATH``; ``--from-jsonl PATH`` rewrites the table from them, e.g. after changing
the rule).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from skdip.operators._convolution import _convolve_direct, _convolve_fft, _use_fft

RESULTS = Path(__file__).parent / "results"


def extra_cases() -> list[tuple[str, tuple[int, int], tuple[int, int], int]]:
    """``(boundary, (H, W), (kh, kw), planes)`` beyond the square one-plane grid."""
    cases = []
    # thin and non-square kernels, where conv2d is fast (one plane, a side of at most 3)
    thin = [(1, 1), (2, 2), (1, 9), (9, 1), (3, 4), (3, 5), (3, 6), (3, 9), (2, 16), (1, 17)]
    thin += [(3, 17), (1, 33), (3, 33), (4, 5), (8, 4)]
    for side in (32, 64, 128):
        cases += [("valid", (side, side), k, 1) for k in thin if max(k) <= side]
    cases += [("valid", (256, 256), k, 1) for k in [(1, 1), (2, 2), (1, 9), (3, 5), (1, 33)]]
    # where conv2d's backward slows down (pixels entering conv2d, one plane, 3x3)
    cases += [("valid", (s, s), (3, 3), 1) for s in (136, 140, 142, 143, 144, 150)]
    cases += [("valid", (100, 204), (3, 3), 1), ("valid", (100, 205), (3, 3), 1)]
    cases += [("circular", (s, s), (3, 3), 1) for s in (140, 141, 142, 144)]
    # non-square images
    for shape in [(64, 128), (128, 256), (256, 128), (96, 256)]:
        cases += [("valid", shape, (k, k), 1) for k in (3, 9, 33)]
    # "circular" sides that are slow FFT lengths (37, 67, 127, 131, 257 prime, 129 = 3 * 43)
    for side in (37, 67, 127, 129, 131, 257):
        cases += [("circular", (side, side), (k, k), 1) for k in (2, 3, 5, 9, 17)]
    # several planes (batch x channels), e.g. a colour image
    for side in (16, 32, 64, 128):
        for k in (1, 2, 3, 5):
            cases += [(b, (side, side), (k, k), 3) for b in ("valid", "circular")]
    cases += [("circular", (37, 37), (3, 3), 3), ("valid", (64, 64), (3, 3), 8)]
    # BlindDeblurrer's automatic kernels for 64, 128, 256 pixel observations, grey and colour
    for side, k in [(64, 17), (128, 33), (256, 65)]:
        cases += [("valid", (side + k - 1, side + k - 1), (k, k), p) for p in (1, 3)]
    # "valid" kernels nearly as large as the image (few outputs)
    for side, k in [(33, 32), (40, 33), (65, 64), (70, 65), (130, 65)]:
        cases.append(("valid", (side, side), (k, k), 1))
    return cases


def large_cases() -> list[tuple[str, tuple[int, int], tuple[int, int], int]]:
    """Larger images, for a GPU: where the grid's launch-bound small sizes end."""
    cases = []
    thin = [(1, 9), (3, 4), (3, 5), (4, 5), (2, 16), (1, 33), (3, 33)]
    for side in (512, 1024):
        cases += [("valid", (side, side), k, 1) for k in thin]
    for side in (320, 384, 448):
        for k in (5, 9, 17, 33):
            cases += [(b, (side, side), (k, k), 1) for b in ("valid", "circular")]
    for side, ks in [(128, (17, 33)), (256, (5, 17)), (512, (3, 5, 17))]:
        for k in ks:
            cases += [(b, (side, side), (k, k), 3) for b in ("valid", "circular")]
    return cases


def _fwd_bwd(path, x: torch.Tensor, k: torch.Tensor, boundary: str, g: torch.Tensor):
    out = path(x, k, boundary)
    if not k.requires_grad:  # a fixed kernel (--fixed-kernel): the image's gradient only
        (gx,) = torch.autograd.grad(out, (x,), g)
        return out, gx, torch.zeros_like(k)
    gx, gk = torch.autograd.grad(out, (x, k), g)
    return out, gx, gk


def _clock(device: torch.device):
    """A timer for work on ``device``: CPU time on the CPU; elsewhere wall-clock time
    after waiting for the queued kernels (CPU time would only count their launches)."""
    if device.type == "cpu":
        return time.process_time

    backend = getattr(torch, device.type)  # torch.cuda, torch.mps, ...

    def wall() -> float:
        backend.synchronize()
        return time.perf_counter()

    return wall


def _time(path, x, k, boundary, g, repeats: int, min_time: float) -> float:
    """Best per-call time (seconds) over ``repeats`` rounds."""
    clock = _clock(x.device)
    _fwd_bwd(path, x, k, boundary, g)  # warm-up (cuFFT plans, cuDNN's algorithm choice)
    t0 = clock()
    _fwd_bwd(path, x, k, boundary, g)  # a first estimate of the cost
    first = max(clock() - t0, 1e-6)
    calls = max(1, int(min_time / first))
    best = float("inf")
    for _ in range(repeats):
        t0 = clock()
        for _ in range(calls):
            _fwd_bwd(path, x, k, boundary, g)
        best = min(best, (clock() - t0) / calls)
    return best


def _rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-30))


def measure_case(boundary, image, kernel, planes, args, grid: bool) -> dict:
    dtype = getattr(torch, args.dtype)
    (h, w), (kh, kw) = image, kernel
    gen = torch.Generator().manual_seed(h * 100_000 + w * 100 + kh * 10 + kw)
    device = torch.device(args.device)
    x = torch.rand(planes, 1, h, w, generator=gen, dtype=dtype).to(device).requires_grad_(True)
    k = torch.rand(kh, kw, generator=gen, dtype=dtype)
    k = (k / k.sum()).to(device).requires_grad_(not args.fixed_kernel)
    out_shape = (h - kh + 1, w - kw + 1) if boundary == "valid" else (h, w)
    g = torch.rand(planes, 1, *out_shape, generator=gen, dtype=dtype).to(device)
    direct = _fwd_bwd(_convolve_direct, x, k, boundary, g)
    fft = _fwd_bwd(_convolve_fft, x, k, boundary, g)
    # float64 reference: which path's rounding the difference between them comes from
    x64 = x.detach().double().requires_grad_(True)
    k64 = k.detach().double().requires_grad_(not args.fixed_kernel)
    exact = _fwd_bwd(_convolve_direct, x64, k64, boundary, g.double())
    row = {
        "grid": grid,
        "boundary": boundary,
        "image": [h, w],
        "kernel": [kh, kw],
        "planes": planes,
        "dtype": args.dtype,
        "device": device.type,
        "kernel_grad": not args.fixed_kernel,
        "direct_ms": 1e3 * _time(_convolve_direct, x, k, boundary, g, args.repeats, args.min_time),
        "fft_ms": 1e3 * _time(_convolve_fft, x, k, boundary, g, args.repeats, args.min_time),
        "diff_out": _rel_diff(direct[0], fft[0]),
        "diff_grad_x": _rel_diff(direct[1], fft[1]),
        "diff_grad_k": _rel_diff(direct[2], fft[2]),
        "error_direct": max(_rel_diff(e, a.double()) for e, a in zip(exact, direct, strict=True)),
        "error_fft": max(_rel_diff(e, a.double()) for e, a in zip(exact, fft, strict=True)),
    }
    print(
        f"{boundary:8s} image {h}x{w} kernel {kh}x{kw} planes {planes}: direct "
        f"{row['direct_ms']:9.3f} ms, fft {row['fft_ms']:8.3f} ms",
        flush=True,
    )
    return row


def measure(args: argparse.Namespace) -> list[dict]:
    rows = []
    for boundary in args.boundaries if args.grid else []:
        for side in args.images:
            for ks in args.kernels:
                if boundary == "valid" and ks > side:
                    continue
                rows.append(measure_case(boundary, (side, side), (ks, ks), 1, args, True))
    extra = (extra_cases() if args.extra else []) + (large_cases() if args.large else [])
    for case in extra:
        rows.append(measure_case(*case, args, False))
    return rows


def _auto(row: dict) -> bool:
    """The decision of ``_use_fft`` as it is now."""
    dtype = getattr(torch, row["dtype"])
    device_type = row.get("device", "cpu")  # rows saved before --device existed: CPU
    return _use_fft(
        tuple(row["image"]),
        tuple(row["kernel"]),
        row["boundary"],
        dtype,
        row["planes"],
        device_type,
        row.get("kernel_grad", True),
    )


def _shape(pair: list[int]) -> str:
    return f"{pair[0]}x{pair[1]}"


_CPU_RULE = (
    "`_use_fft` in `skdip/operators/_convolution.py`. On this CPU `conv2d` (forward + "
    "backward) has a fast regime: a single image plane (batch x channels = 1), a "
    "kernel with a side of at most 3, and at most 20480 pixels entering `conv2d` (the "
    "image, circularly padded for `circular`). Outside it the backward pass is several "
    "times slower per pixel, and the FFT path is taken for every kernel but 1x1 (a "
    "scaling, always direct). Inside it the FFT path is taken when the direct path's "
    "multiply-adds `out_h * out_w * kh * kw` exceed `115000 + 0.72 * n * log2(n)`, "
    "`n` being the FFT grid's size. Half precision always goes direct. A `circular` "
    "image whose side has a prime factor above 7 (a slow FFT length) is padded "
    "circularly and transformed as `valid`, on a fast length. The constants were "
    "chosen on exploratory timings and an earlier run of this script, before this run; "
    "where the two paths are within about 25% of each other the order is within the "
    "timing noise of this shared machine."
)
_OFF_CPU_RULE = (
    "`_use_fft` in `skdip/operators/_convolution.py`. Off the CPU both paths cost a "
    "launch-bound floor on small images, the direct one the lower, and `conv2d`'s cost "
    "then grows with its multiply-adds; with a learned kernel its kernel gradient also "
    "slows down on large images for every kernel beyond 3 x 4. The FFT path is taken for "
    "a kernel beyond 3 x 4 (and not 1 x 1) when the direct path's multiply-adds "
    "`out_h * out_w * kh * kw * planes` reach `_GPU_FFT_MIN_MACS` (8e7) or, for a learned "
    "kernel, when the pixels entering `conv2d` over all planes reach `_GPU_FFT_MIN_PIXELS` "
    "(200000). Half precision always goes direct. The thresholds were chosen on these "
    "timings (for a learned kernel, any pair from about 200000 to 250000 pixels and 8e7 "
    "to 1e8 multiply-adds does as well; for a fixed one, 3e7 to 8e7 multiply-adds); where "
    "the paths are within about 30% of each other, the order may change with the GPU, "
    "the torch version or the timing noise."
)


def write_table(rows: list[dict], path: Path, args: argparse.Namespace) -> None:
    for row in rows:
        row["auto_fft"] = _auto(row)
    lines = [
        "# Direct against FFT convolution (forward + backward)",
        "",
        f"Command: `{args.command}`  ",
        f"Machine: {args.machine}, {args.threads} torch thread(s), torch {args.torch}, "
        f"{args.dtype}.",
        "",
        f"{'CPU' if args.device == 'cpu' else 'Wall-clock (device synchronised)'} time of "
        "forward plus backward of `skdip.operators._convolution.convolve`'s "
        "direct path (`conv2d`) and of its FFT path, with gradients for "
        + (
            "the image only (a fixed kernel)"
            if args.fixed_kernel
            else "both the image and the kernel"
        )
        + f" (best of {args.repeats} rounds), and the path the automatic rule "
        "(`_use_fft`, the path `convolve` takes) picks on this device.",
        "",
        "Another CPU, GPU or torch version may choose other `conv2d` algorithms, and so "
        "another crossover.",
        "",
    ]
    grid = [r for r in rows if r["grid"]]
    kernels = sorted({r["kernel"][0] for r in grid})
    for boundary in dict.fromkeys(r["boundary"] for r in grid):
        sub = [r for r in grid if r["boundary"] == boundary]
        lines += [
            f"## boundary={boundary!r}: direct time / FFT time (square, one plane)",
            "",
            "Above 1 the FFT path is faster; **bold**: the automatic rule takes the FFT path. "
            "The image side is the input's (for `valid` the output is `image - kernel + 1`).",
            "",
            "| image \\ kernel | " + " | ".join(str(k) for k in kernels) + " |",
            "|---" * (len(kernels) + 1) + "|",
        ]
        for side in sorted({r["image"][0] for r in sub}):
            cells = []
            for ks in kernels:
                match = [r for r in sub if r["image"][0] == side and r["kernel"][0] == ks]
                if not match:
                    cells.append("")
                    continue
                r = match[0]
                ratio = f"{r['direct_ms'] / r['fft_ms']:.2f}"
                cells.append(f"**{ratio}**" if r["auto_fft"] else ratio)
            lines.append(f"| {side} | " + " | ".join(cells) + " |")
        lines.append("")
    extra = [r for r in rows if not r["grid"]]
    if extra:
        lines += [
            "## Extra cases",
            "",
            "Thin and non-square kernels, non-square images, the size where `conv2d`'s "
            "backward slows down, `circular` sides that are slow FFT lengths (37, 67, 127, "
            "131, 257 are prime, 129 = 3 x 43), several planes (batch x channels), "
            "BlindDeblurrer's automatic kernels (17, 33, 65 on 64, 128, 256 pixel "
            "observations: images of 80, 160, 320 pixels), `valid` kernels nearly as large "
            "as the image.",
            "",
            "| boundary | image | kernel | planes | direct ms | FFT ms | direct / FFT | auto |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in extra:
            lines.append(
                f"| {r['boundary']} | {_shape(r['image'])} | {_shape(r['kernel'])} | "
                f"{r['planes']} | {r['direct_ms']:.3f} | {r['fft_ms']:.3f} | "
                f"{r['direct_ms'] / r['fft_ms']:.2f} | {'fft' if r['auto_fft'] else 'direct'} |"
            )
        lines.append("")
    wrong = [r for r in rows if r["auto_fft"] != (r["fft_ms"] < r["direct_ms"])]
    lost = [(r, max(r["direct_ms"], r["fft_ms"]) / min(r["direct_ms"], r["fft_ms"])) for r in wrong]
    chosen = sum(r["fft_ms"] if r["auto_fft"] else r["direct_ms"] for r in rows)
    best = sum(min(r["fft_ms"], r["direct_ms"]) for r in rows)
    lines += [
        "## The automatic rule",
        "",
        _CPU_RULE if args.device == "cpu" else _OFF_CPU_RULE,
        "",
        f"It picks the faster path in {len(rows) - len(wrong)} of {len(rows)} cases; the "
        f"paths it picks take {chosen:.1f} ms in all, against {best:.1f} ms for the faster "
        f"path of every case, {sum(r['direct_ms'] for r in rows):.1f} ms for the direct "
        f"path always and {sum(r['fft_ms'] for r in rows):.1f} ms for the FFT path always.",
    ]
    if lost:
        lines += ["", "Where it picks the slower path:", ""]
        lines += ["| boundary | image | kernel | planes | direct ms | FFT ms | picked |"]
        lines += ["|---|---|---|---|---|---|---|"]
        for r, factor in sorted(lost, key=lambda t: -t[1]):
            lines.append(
                f"| {r['boundary']} | {_shape(r['image'])} | {_shape(r['kernel'])} | "
                f"{r['planes']} | {r['direct_ms']:.3f} | {r['fft_ms']:.3f} | "
                f"{'fft' if r['auto_fft'] else 'direct'} ({factor:.2f}x slower) |"
            )
    worst = max(
        (r for r in rows),
        key=lambda r: max(r["diff_out"], r["diff_grad_x"], r["diff_grad_k"]),
    )
    lines += [
        "",
        "## Agreement of the two paths",
        "",
        "Largest absolute difference between the paths divided by the largest absolute "
        f"value ({args.dtype}), over all cases: output "
        f"{max(r['diff_out'] for r in rows):.1e}, image gradient "
        f"{max(r['diff_grad_x'] for r in rows):.1e}, kernel gradient "
        f"{max(r['diff_grad_k'] for r in rows):.1e} (worst case: {worst['boundary']}, image "
        f"{_shape(worst['image'])}, kernel {_shape(worst['kernel'])}, planes "
        f"{worst['planes']}). Against a float64 computation, the largest relative error of "
        "the output and the two gradients is at most "
        f"{max(r['error_direct'] for r in rows):.1e} for the direct path and "
        f"{max(r['error_fft'] for r in rows):.1e} for the FFT path.",
        "",
        "## Raw times (ms), square one-plane grid",
        "",
        "| boundary | image | kernel | direct ms | FFT ms | auto | diff out | diff grad x "
        "| diff grad k |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in grid:
        lines.append(
            f"| {r['boundary']} | {r['image'][0]} | {r['kernel'][0]} | {r['direct_ms']:.3f} | "
            f"{r['fft_ms']:.3f} | {'fft' if r['auto_fft'] else 'direct'} | "
            f"{r['diff_out']:.1e} | {r['diff_grad_x']:.1e} | {r['diff_grad_k']:.1e} |"
        )
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boundaries", nargs="+", default=["valid", "circular"])
    parser.add_argument("--images", nargs="+", type=int, default=[32, 48, 64, 96, 128, 192, 256])
    parser.add_argument(
        "--kernels",
        nargs="+",
        type=int,
        default=[3, 5, 7, 9, 11, 13, 15, 17, 21, 25, 33, 49, 65],
    )
    parser.add_argument("--no-grid", dest="grid", action="store_false")
    parser.add_argument("--no-extra", dest="extra", action="store_false")
    parser.add_argument("--large", action="store_true", help="add larger images (for a GPU)")
    parser.add_argument(
        "--fixed-kernel",
        action="store_true",
        help="no gradient for the kernel (a known blur, as in DIPDeconvolver)",
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="where to run, e.g. cpu or cuda")
    parser.add_argument(
        "--machine",
        default=f"{platform.machine()}, CPU only (a shared 2-core machine, loaded by other "
        "work: timings are indicative)",
        help="how the table describes the machine",
    )
    parser.add_argument("--tag", default="convolution")
    parser.add_argument("--jsonl", type=Path, help="also save the raw rows to this file")
    parser.add_argument(
        "--from-jsonl",
        type=Path,
        help="rewrite the table from rows saved by --jsonl (e.g. after changing the rule)",
    )
    args = parser.parse_args()
    args.command = "python benchmarks/convolution.py " + shlex.join(sys.argv[1:])
    args.torch = torch.__version__
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(exist_ok=True)
    if args.from_jsonl:
        lines = args.from_jsonl.read_text().splitlines()
        rows = [json.loads(line) for line in lines]
        for key in ("threads", "repeats", "dtype", "torch"):
            setattr(args, key, rows[0][key])
        # Rows of several runs (e.g. the grid, then --large) name every command.
        args.command = "`, then `".join(dict.fromkeys(r["command"] for r in rows))
        args.device = rows[0].get("device", "cpu")
        args.fixed_kernel = not rows[0].get("kernel_grad", True)
        args.machine = rows[0].get("machine", args.machine)
    else:
        rows = measure(args)
        for r in rows:
            r.update(command=args.command, threads=args.threads, repeats=args.repeats)
            r["machine"] = args.machine
            r["torch"] = args.torch
        if args.jsonl is not None:
            args.jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_table(rows, RESULTS / f"{args.tag}.md", args)


if __name__ == "__main__":
    main()
