"""How well the noise level of undersampled k-space is estimated from the k-space alone.

Run by hand (not in CI; numpy only, no fits, about 10 minutes on one core)::

    OMP_NUM_THREADS=1 python benchmarks/kspace_noise.py   # writes results/kspace_noise.*

Each bundled picture (grey, colour ones converted to grey, ``--sizes`` square, on
[0, 1]) is measured as in ``benchmarks/mri.py``: a Cartesian mask of
``cartesian_mask(acceleration, center_fraction=0.08, random_state=seed)``, one coil or
``make_coil_maps`` coils, complex Gaussian noise of ``sigma`` per real and imaginary
part at the sampled entries (``simulate_kspace``, its own noise draw in every
case). ``--complex-images`` pictures are also measured as complex images (the picture
times a phase ramping from -pi to pi across the columns) through
``KSpaceSampling(image="complex")``. Three estimates of ``sigma`` from the measurement
alone, as ratios to the true ``sigma``:

- ``library``: ``skdip.metrics._kspace_noise.kspace_noise_sigma``, the part of the
  measurement no image explains, per degree of freedom (what the scorers use now);
  where it has fewer than ``MIN_DOF`` degrees of freedom the scorers warn instead,
  and the case counts as "no estimate";
- ``image-domain``: the estimate the scorers made before from k-space, as from an
  image with the unsampled entries missing (``_noise_var`` on the measurement with
  NaN there);
- ``high-frequency``: the median absolute deviation of the real and imaginary parts
  of the sampled entries in the outer quarter of k-space along both axes, where
  natural pictures carry least energy (an idea that was tried, for the record).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from skdip.datasets import cartesian_mask, load_image, make_coil_maps, simulate_kspace
from skdip.metrics._kspace_noise import MIN_DOF, kspace_noise_sigma
from skdip.metrics._noise_level import _MAD_TO_SIGMA
from skdip.metrics._scorers import _noise_var
from skdip.operators import KSpaceSampling, kspace_to_channels

RESULTS = Path(__file__).parent / "results"
# Picture name and whether load_image converts it from colour.
IMAGES = {
    "camera": False,
    "shepp_logan_phantom": False,
    "brick": False,
    "moon": False,
    "text": False,
    "astronaut": True,
    "coffee": True,
    "chelsea": True,
}
ESTIMATES = ("library", "image-domain", "high-frequency")
# The bar an estimate must clear to be used by the scorers (set before measuring).
LOW, HIGH = 0.8, 1.25


def image_domain_sigma(data: np.ndarray, mask: np.ndarray) -> float:
    """The scorers' former estimate: k-space read as an image, unsampled entries missing."""
    hidden = ~np.broadcast_to(mask[..., None], data.shape)
    return float(np.sqrt(_noise_var(np.where(hidden, np.nan, data), None, 1.0)))


def high_frequency_sigma(data: np.ndarray, mask: np.ndarray) -> float:
    """MAD of the sampled entries in the outer quarter of k-space along both axes."""
    h, w = mask.shape
    fy = np.abs(np.arange(h) - h // 2) / (h / 2)
    fx = np.abs(np.arange(w) - w // 2) / (w / 2)
    outer = (fy[:, None] >= 0.5) & (fx[None] >= 0.5) & mask
    values = data[outer]  # every real and imaginary channel there
    if values.size == 0:
        return float("nan")
    return float(np.median(np.abs(values)) / _MAD_TO_SIGMA)


def run(args) -> list[dict]:
    rows = []
    kinds = [("real", name) for name in args.images]
    kinds += [("complex", name) for name in args.complex_images]
    for size in args.sizes:
        for acceleration in args.accelerations:
            for seed in args.seeds:
                mask = cartesian_mask(
                    (size, size), acceleration, args.center_fraction, random_state=seed
                )
                for coils in args.coils:
                    maps = None if coils == 1 else make_coil_maps(coils, (size, size))
                    t = time.perf_counter()
                    for kind, name in kinds:
                        picture = load_image(name, size=size, as_gray=True)
                        if kind == "complex":
                            ramp = np.linspace(-np.pi, np.pi, size)
                            picture = picture * np.exp(1j * ramp)[None]
                        operator = KSpaceSampling(mask, maps, image=kind)
                        for sigma in args.sigmas:
                            # Its own noise draw for every case, keyed on the case's values
                            # (not on its place in the grid: a subset draws the same noise).
                            noise_rng = np.random.default_rng(
                                [seed, size, int(round(acceleration * 1000)), coils]
                                + [int(round(sigma * 1e9)), list(IMAGES).index(name)]
                                + [kind == "complex"]
                            )
                            kspace = simulate_kspace(
                                picture, mask, maps, noise_std=sigma, random_state=noise_rng
                            )
                            data = kspace_to_channels(kspace)
                            found = kspace_noise_sigma(data, operator)
                            library, dof = (np.nan, 0) if found is None else found
                            rows.append(
                                {
                                    "size": size,
                                    "image": name,
                                    "kind": kind,
                                    "acceleration": acceleration,
                                    "coils": coils,
                                    "seed": seed,
                                    "sigma": sigma,
                                    "dof": int(dof),
                                    "library": library / sigma if dof >= MIN_DOF else None,
                                    "image-domain": image_domain_sigma(data, mask) / sigma,
                                    "high-frequency": high_frequency_sigma(data, mask) / sigma,
                                }
                            )
                    print(
                        f"{size} R={acceleration} seed {seed} {coils} coil(s): "
                        f"{time.perf_counter() - t:.1f} s",
                        flush=True,
                    )
    return rows


def _summary(ratios: np.ndarray) -> str:
    """Median, 5th and 95th percentile, worst (farthest from 1 by factor), share in bar."""
    ratios = ratios[np.isfinite(ratios)]
    if ratios.size == 0:
        return "- | - | - | - | -"
    worst = ratios[np.argmax(np.abs(np.log(ratios)))]
    inside = np.mean((ratios >= LOW) & (ratios <= HIGH))
    p5, p50, p95 = np.quantile(ratios, [0.05, 0.5, 0.95])
    return f"{p50:.3f} | {p5:.3f} | {p95:.3f} | {worst:.3f} | {100 * inside:.1f}%"


def write_md(rows: list[dict], args) -> str:
    n_cases = len(rows)
    estimated = [r for r in rows if r["library"] is not None]
    md = [
        "# The noise level of undersampled k-space, estimated from the k-space",
        "",
        f"Command: `{args.command}` (numpy only, no fits). {n_cases} cases: pictures "
        f"{', '.join(args.images)} (real)"
        + (f" and {', '.join(args.complex_images)} (complex)" if args.complex_images else "")
        + f"; sizes {', '.join(map(str, args.sizes))}; accelerations "
        f"{', '.join(map(str, args.accelerations))} (centre fraction {args.center_fraction}); "
        f"coils {', '.join(map(str, args.coils))}; mask seeds "
        f"{', '.join(map(str, args.seeds))}; noise per real and imaginary part "
        f"{', '.join(f'{s:g}' for s in args.sigmas)}. Ratio of each estimate to the true "
        f"sigma: median, 5th and 95th percentile, the worst (farthest from 1 by factor), "
        f"and the share within [{LOW}, {HIGH}]. `library` counts only the cases it "
        f"estimates ({len(estimated)} of {n_cases}; fewer than {MIN_DOF} degrees of "
        "freedom: no estimate, the scorers warn).",
        "",
        "| sigma | estimate | median | 5% | 95% | worst | within bar |",
        "|---|---|---|---|---|---|---|",
    ]
    for sigma in args.sigmas:
        at = [r for r in rows if r["sigma"] == sigma]
        for name in ESTIMATES:
            values = np.array([np.nan if r[name] is None else r[name] for r in at], dtype=float)
            md.append(f"| {sigma:g} | {name} | {_summary(values)} |")
    md += [
        "",
        "By model (all noise levels; `dof`: the degrees of freedom of the library's "
        "estimate, min to max; `estimated`: cases with at least "
        f"{MIN_DOF}):",
        "",
        "| image | coils | R | sizes | dof | estimated | library: median | 5% | 95% | worst "
        "| within bar | image-domain: median | worst |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in ("real", "complex"):
        for coils in args.coils:
            for acceleration in args.accelerations:
                at = [
                    r
                    for r in rows
                    if (r["kind"], r["coils"], r["acceleration"]) == (kind, coils, acceleration)
                ]
                if not at:
                    continue
                dof = [r["dof"] for r in at]
                lib = np.array([np.nan if r["library"] is None else r["library"] for r in at])
                old = np.array([r["image-domain"] for r in at])
                worst_old = old[np.argmax(np.abs(np.log(old)))]
                md.append(
                    f"| {kind} | {coils} | {acceleration} | "
                    f"{', '.join(map(str, args.sizes))} | {min(dof)} to {max(dof)} | "
                    f"{np.isfinite(lib).sum()}/{len(at)} | {_summary(lib)} | "
                    f"{np.median(old):.2f} | {worst_old:.1f} |"
                )
    text = "\n".join(md) + "\n"
    (RESULTS / f"{args.tag}.md").write_text(text)
    return text


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", nargs="+", default=list(IMAGES), choices=list(IMAGES))
    parser.add_argument(
        "--complex-images",
        nargs="*",
        default=["camera", "shepp_logan_phantom"],
        choices=list(IMAGES),
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 128, 256])
    parser.add_argument("--sigmas", nargs="+", type=float, default=[0.001, 0.003, 0.01, 0.03, 0.1])
    parser.add_argument("--accelerations", nargs="+", type=int, default=[2, 4, 8])
    parser.add_argument("--center-fraction", type=float, default=0.08)
    parser.add_argument("--coils", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--tag", default="kspace_noise")
    args = parser.parse_args(argv)
    args.command = " ".join(
        ["python benchmarks/kspace_noise.py", *(argv if argv is not None else sys.argv[1:])]
    )
    RESULTS.mkdir(exist_ok=True)
    rows = run(args)
    with (RESULTS / f"{args.tag}.jsonl").open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    print(write_md(rows, args))


if __name__ == "__main__":
    main()
