"""Low-contrast and dark pictures through DIPDenoiser's defaults.

A camera crop (``--size`` px, grey, stretched to [0, 1]) is placed on
``[low, low + span]`` (``dark``: low = 0; ``mid``: centred on 0.5) with white
Gaussian noise of 5% of the span, and denoised with every default of
``DIPDenoiser`` (the ``skip`` network, ES-EMV, 5000 iterations at most) under
``rescale="auto"`` and ``rescale=True`` (the data stretched to [0, 1]). The
PSNR is read on the span (``10 log10(span**2 / mse)``), so that every row is on
the scale of the picture on [0, 1]; the noisy input is at 26 dB on it.

Every fit is appended to ``results/<name>.jsonl`` as it ends (``--code``
names the commit whose library made it), and ``results/<name>.md`` is rebuilt
from all of them. Slow on a CPU: 4 to 16 minutes a fit at 32 px on one thread.

    python benchmarks/low_contrast.py --spans 0.12 0.3 --places dark mid --rescale auto true
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

from skdip import DIPDenoiser


def crop(size: int) -> np.ndarray:
    picture = transform.resize(data.camera()[100:356, 150:406], (size, size), anti_aliasing=True)
    return (picture - picture.min()) / np.ptp(picture)


def run(span: float, place: str, rescale, size: int) -> dict:
    low = 0.0 if place == "dark" else 0.5 - span / 2
    clean = low + span * crop(size)
    noisy = clean + np.random.default_rng(0).normal(0, 0.05 * span, clean.shape)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        den = DIPDenoiser(rescale=rescale, random_state=0, device="cpu").fit(noisy)
    mse = float(np.mean((den.reconstruction_ - clean) ** 2))
    return {
        "span": span,
        "place": place,
        "rescale": str(rescale),
        "size": size,
        "psnr_on_span": 10 * np.log10(span**2 / mse),
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
        "# Low-contrast and dark pictures through DIPDenoiser's defaults",
        "",
        "A camera crop on [low, low + span] (dark: low = 0; mid: centred on 0.5), white "
        "Gaussian noise of 5% of the span (the noisy input is at 26 dB on the span), every "
        "default of DIPDenoiser, random_state=0, CPU. PSNR in dB on the span. `code`: the "
        "commit whose library made the row; before the rule changed, `auto` stretched data "
        "spanning under 0.1 only (since: under 0.5, as `True` does). Stretched, every span is "
        "the same problem (the noise scales with the span), so the stretched rows agree "
        "exactly. One seed, one picture.",
        "",
        "| size | place | span | rescale | stretched | PSNR on the span | best / last step "
        "| stopped by | s | code |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['place']} | {r['span']} | {r['rescale']} | "
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
    parser.add_argument("--spans", type=float, nargs="+", default=[0.12, 0.3])
    parser.add_argument("--places", nargs="+", default=["dark", "mid"])
    parser.add_argument("--rescale", nargs="+", default=["auto", "true"])
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
                    rescale = "auto" if mode == "auto" else mode.lower() == "true"
                    row = run(span, place, rescale, args.size)
                    row.update(code=args.code, command=command, **thread_counts())
                    print(json.dumps(row), flush=True)
                    with (RESULTS / f"{args.name}.jsonl").open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
    print(write_table(args.name))


if __name__ == "__main__":
    main()
