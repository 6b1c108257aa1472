"""Low-contrast and dark pictures through the estimators' defaults.

A crop of a bundled picture (``--picture``, camera by default; ``--size`` px,
grey, stretched to [0, 1]) is placed on
``[low, low + span]`` (``dark``: low = 0; ``mid``: centred on 0.5) and measured
(``--problem``):

- ``denoise``: white Gaussian noise of 5% of the span, fitted by ``DIPDenoiser``
  (the noisy input is at 26 dB on the span);
- ``deconvolve``: a circular Gaussian blur (9x9, sigma 1.5) and noise of 1% of
  the span, fitted by ``DIPDeconvolver(kernel, boundary="circular")``;
- ``superresolve``: Lanczos-2 downsampling by 2 (``skdip.operators.Downsample``)
  and noise of 1% of the span, fitted by ``DIPSuperResolver(scale=2)``; the
  picture is the ``--size`` px output;
- ``blind``: the blur of ``deconvolve`` (zeros beyond the borders, ``"same"``)
  and noise of 1% of the span, fitted by ``BlindDeblurrer()`` (kernel unknown,
  its size too); the PSNR is aligned over shifts of up to 3 px, 4 px of border
  cropped (``skdip.metrics.aligned_psnr``).

Every other setting is the estimator's default (the ``skip`` network, ES-EMV,
5000 iterations at most), under ``rescale="auto"`` and ``rescale=True`` (the
data stretched to [0, 1]). The PSNR is read on the span
(``10 log10(span**2 / mse)``), so that every row is on the scale of the picture
on [0, 1].

Every fit is appended to ``results/<name>.jsonl`` as it ends (``--code``
names the commit whose library made it), and ``results/<name>.md`` is rebuilt
from all of them. Slow on a CPU: 4 to 16 minutes a fit at 32 px on one thread.
Run by hand (not in CI)::

    python benchmarks/low_contrast.py --spans 0.12 0.3 --places dark mid --rescale auto true
    python benchmarks/low_contrast.py --problem deconvolve --spans 0.12 --places dark
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import warnings

import numpy as np
import torch
from _common import RESULTS, thread_counts
from skimage import data, transform

from skdip import BlindDeblurrer, DIPDeconvolver, DIPDenoiser, DIPSuperResolver
from skdip.datasets import blur, make_gaussian_kernel
from skdip.metrics import aligned_psnr
from skdip.operators import Downsample

PROBLEMS = ("denoise", "deconvolve", "superresolve", "blind")


# Grey 256x256 windows of pictures bundled with scikit-image.
PICTURES = {
    "camera": lambda: data.camera()[100:356, 150:406],
    "astronaut": lambda: data.astronaut()[30:286, 120:376].mean(axis=-1),
    "coffee": lambda: data.coffee()[100:356, 200:456].mean(axis=-1),
}


def crop(size: int, picture: str = "camera") -> np.ndarray:
    window = transform.resize(PICTURES[picture](), (size, size), anti_aliasing=True)
    return (window - window.min()) / np.ptp(window)


def measure(problem: str, clean: np.ndarray, span: float, rescale):
    """The observation of ``clean`` and the estimator that fits it."""
    noise = np.random.default_rng(0)
    common = dict(rescale=rescale, random_state=0, device="cpu")
    if problem == "denoise":
        return clean + noise.normal(0, 0.05 * span, clean.shape), DIPDenoiser(**common)
    if problem in ("deconvolve", "blind"):
        kernel = make_gaussian_kernel(9, 1.5)
        blurred = blur(clean, kernel, mode="wrap" if problem == "deconvolve" else "same")
        observed = blurred + noise.normal(0, 0.01 * span, blurred.shape)
        if problem == "blind":
            return observed, BlindDeblurrer(**common)
        return observed, DIPDeconvolver(kernel=kernel, boundary="circular", **common)
    with torch.no_grad():
        low_res = Downsample(2)(torch.as_tensor(clean)[None, None]).numpy()[0, 0]
    observed = low_res + noise.normal(0, 0.01 * span, low_res.shape)
    return observed, DIPSuperResolver(scale=2, **common)


def run(
    span: float, place: str, rescale, size: int, problem: str = "denoise", picture: str = "camera"
) -> dict:
    low = 0.0 if place == "dark" else 0.5 - span / 2
    clean = low + span * crop(size, picture)
    observed, estimator = measure(problem, clean, span, rescale)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        den = estimator.fit(observed)
    if problem == "blind":
        psnr = aligned_psnr(clean, den.reconstruction_, max_shift=3, crop=4, data_range=span)
    else:
        psnr = 10 * np.log10(span**2 / float(np.mean((den.reconstruction_ - clean) ** 2)))
    return {
        "problem": problem,
        "picture": picture,
        "span": span,
        "place": place,
        "rescale": str(rescale),
        "size": size,
        "psnr_on_span": psnr,
        "n_iter": int(den.n_iter_),
        "best_iter": int(den.best_iter_),
        "stopped_by": den.stopped_by_,
        "stretched": bool(den._fit_results[0]["scaling"].scale != 1),
        "seconds": time.perf_counter() - start,
        "warnings": [str(w.message)[:80] for w in caught],
    }


def write_table(name: str) -> str:
    rows = [json.loads(line) for line in (RESULTS / f"{name}.jsonl").read_text().splitlines()]
    lines = [
        "# Low-contrast and dark pictures through the estimators' defaults",
        "",
        "A picture crop on [low, low + span] (dark: low = 0; mid: centred on 0.5), measured "
        "as the problem says (denoise: white Gaussian noise of 5% of the span, the noisy "
        "input being at 26 dB on the span; deconvolve: a circular 9x9 Gaussian blur of "
        "sigma 1.5 and noise of 1% of the span; superresolve: Lanczos-2 downsampling by 2 "
        "and noise of 1% of the span; blind: the deconvolution's blur with zeros beyond "
        "the borders, fitted by BlindDeblurrer, PSNR aligned over shifts of up to 3 px with "
        "4 px of border cropped; on that measure the blurred input is at 20.0 dB in both "
        "blurs), every other default of the estimator, "
        "random_state=0, CPU. PSNR in dB on the span. `code`: the commit whose library "
        "made the row. `auto` stretched data spanning under 0.1 only before 0d0ef24 "
        "(denoising: since, under 0.5), 106a10b (deconvolve, superresolve: since, data "
        "and least-squares image under 0.5) and 6adf4d3 (blind: since, data under 0.5, "
        "the map `True` makes, so that `auto` now gives the `True` row). Stretched "
        "denoising is the same problem at every span (the noise scales with the span), "
        "so those rows agree exactly. One seed; a camera crop unless the picture says "
        "otherwise.",
        "",
        "| problem | picture | size | place | span | rescale | stretched | PSNR on the span "
        "| best / last step | stopped by | s | code |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.get('problem', 'denoise')} | {r.get('picture', 'camera')} | {r['size']} | "
            f"{r['place']} | {r['span']} | {r['rescale']} | "
            f"{r.get('stretched', '')} | {r['psnr_on_span']:.1f} | {r['best_iter']} / "
            f"{r['n_iter']} | {r['stopped_by']} | {r['seconds']:.0f} | {r.get('code', '')} |"
        )
    commands = list(dict.fromkeys(r["command"] for r in rows if r.get("command")))
    lines += ["", "Commands: " + "; ".join(f"`{c}`" for c in commands) + ".", ""]
    text = "\n".join(lines)
    (RESULTS / f"{name}.md").write_text(text)
    return text


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problem", choices=PROBLEMS, default="denoise")
    parser.add_argument("--spans", type=float, nargs="+", default=[0.12, 0.3])
    parser.add_argument("--places", nargs="+", default=["dark", "mid"])
    parser.add_argument("--picture", choices=list(PICTURES), default="camera")
    parser.add_argument(
        "--rescale", nargs="+", default=["auto", "true"], choices=["auto", "true", "false"]
    )
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--name", default="low_contrast")
    parser.add_argument("--code", default="", help="the commit whose library runs")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args(argv)
    if not args.table_only:
        torch.set_num_threads(1)
        command = shlex.join(["python", "benchmarks/low_contrast.py", *sys.argv[1:]])
        RESULTS.mkdir(exist_ok=True)
        for span in args.spans:
            for place in args.places:
                for mode in args.rescale:
                    rescale = "auto" if mode == "auto" else mode == "true"
                    row = run(span, place, rescale, args.size, args.problem, args.picture)
                    row.update(code=args.code, command=command, **thread_counts())
                    print(json.dumps(row), flush=True)
                    with (RESULTS / f"{args.name}.jsonl").open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
    print(write_table(args.name))


if __name__ == "__main__":
    main()
