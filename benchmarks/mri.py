"""MRI benchmark: untrained networks on undersampled Cartesian k-space, against zero filling.

Run by hand (not in CI)::

    OMP_NUM_THREADS=1 python benchmarks/mri.py          # writes benchmarks/results/mri.*
    python benchmarks/mri.py --images phantom --coils 1 --max-iter 300   # a quick look

Each bundled picture (grey, ``--size`` square, on [0, 1]) is measured through
:class:`skdip.operators.KSpaceSampling`: a random Cartesian mask of
``cartesian_mask(acceleration=4, center_fraction=0.08)`` (whole columns, the
centre always sampled), one coil or ``make_coil_maps`` coils, complex Gaussian
noise of ``--noise`` per real and imaginary part at the sampled entries. The
image is recovered with ``DIPReconstructor(operator=KSpaceSampling(...),
output_channels=1)``, stopped by ES-EMV, its defaults otherwise (``rescale="auto"``),
for several generators; the clean image is passed to ``fit`` only to record the
PSNR of every iterate (the peak: an oracle). "DC" is the returned image after
data consistency (``KSpaceSampling.data_consistency``: the measured entries
put back, then the root-sum-of-squares magnitude). The baseline is the
zero-filled image (``KSpaceSampling.zero_filled``).
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from _common import case_parser, save, start

from skdip import DIPReconstructor
from skdip.datasets import cartesian_mask, load_image, make_coil_maps, simulate_kspace
from skdip.generators import ConvDecoder
from skdip.metrics import psnr, ssim
from skdip.operators import KSpaceSampling, kspace_to_channels

IMAGES = {"phantom": "shepp_logan_phantom", "camera": "camera", "brick": "brick", "moon": "moon"}
GENERATORS = {
    "skip-small": "skip-small",
    "deep-decoder": "deep-decoder",
    # Darestani & Heckel's architecture, narrower than its 256-channel demo for a CPU.
    "conv-decoder-64": ConvDecoder(channels=64, n_layers=5),
    # Their demo's setting (256 channels, 7 layers): for a GPU.
    "conv-decoder": "conv-decoder",
}
CPU_GENERATORS = ["skip-small", "deep-decoder", "conv-decoder-64"]


def _quality(clean: np.ndarray, image: np.ndarray) -> tuple[float, float]:
    image = np.clip(image, 0, 1)
    return psnr(clean, image), ssim(clean, image)


def run_case(image_key, coils, generator, args):
    clean = load_image(IMAGES[image_key], size=args.size, as_gray=True)
    shape = clean.shape
    mask = cartesian_mask(shape, acceleration=args.acceleration, random_state=args.seed)
    maps = None if coils == 1 else make_coil_maps(coils, shape)
    kspace = simulate_kspace(clean, mask, maps, noise_std=args.noise, random_state=args.seed)
    operator = KSpaceSampling(mask, maps)
    data = kspace_to_channels(kspace)
    zero_filled = operator.zero_filled(data)
    est = DIPReconstructor(
        operator=operator,
        output_channels=1,
        generator=GENERATORS[generator],
        max_iter=args.max_iter,
        random_state=args.seed,
        device=args.device,
    )
    t = time.perf_counter()
    est.fit(data, y=clean[..., None])
    seconds = time.perf_counter() - t
    returned = est.reconstruction_[..., 0]
    consistent = operator.data_consistency(returned, data)
    hist = est.history_["psnr"]
    zf_psnr, zf_ssim = _quality(clean, zero_filled)
    dip_psnr, dip_ssim = _quality(clean, returned)
    dc_psnr, dc_ssim = _quality(clean, consistent)
    return {
        "image": image_key,
        "size": args.size,
        "coils": coils,
        "acceleration": args.acceleration,
        "sampled_fraction": operator.sampled_fraction,
        "noise": args.noise,
        "generator": generator,
        "zero_filled_psnr": zf_psnr,
        "zero_filled_ssim": zf_ssim,
        "dip_psnr": dip_psnr,
        "dip_ssim": dip_ssim,
        "dc_psnr": dc_psnr,
        "dc_ssim": dc_ssim,
        "best_iter": int(est.best_iter_),
        "stopped_by": est.stopped_by_,
        "peak_psnr": float(hist.max()),
        "peak_iter": int(hist.argmax()),
        "n_iter": int(est.n_iter_),
        "seconds": seconds,
        "s_per_step": est.history_["seconds_per_step"],
    }


def write_table(rows: list[dict], path: Path, args) -> None:
    on_gpu = args.device != "cpu" and torch.cuda.is_available()
    device = torch.cuda.get_device_name() if on_gpu else "CPU"
    header = (
        "# MRI benchmark (undersampled Cartesian k-space)\n\n"
        f"Command: `{args.command}`  \n"
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch thread(s), "
        f"torch {torch.__version__}, {device}. Images {args.size}x{args.size} grey on [0, 1]; "
        f"mask `cartesian_mask(acceleration={args.acceleration}, center_fraction=0.08, "
        f"random_state={args.seed})`; noise {args.noise} per real and imaginary part at the "
        f"sampled entries; `DIPReconstructor(operator=KSpaceSampling(mask, coil_maps), "
        f"output_channels=1)` with ES-EMV, max_iter {args.max_iter}, seed {args.seed}.\n\n"
        "PSNR (dB, data range 1) / SSIM against the clean image, of: the zero-filled image; "
        "the image DIP returned (the iterate ES-EMV chose); the same after data consistency "
        "(DC: measured k-space put back, root-sum-of-squares magnitude); the best iterate of "
        "the run (peak, an oracle) and its step.\n\n"
        "| image | coils | generator | zero-filled | DIP | DIP + DC | returned @ | "
        "peak (@) | s/step |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['image']} | {r['coils']} | {r['generator']} | "
        f"{r['zero_filled_psnr']:.2f} / {r['zero_filled_ssim']:.3f} | "
        f"{r['dip_psnr']:.2f} / {r['dip_ssim']:.3f} | {r['dc_psnr']:.2f} / {r['dc_ssim']:.3f} | "
        f"{r['best_iter']} ({r['stopped_by']}) | {r['peak_psnr']:.2f} ({r['peak_iter']}) | "
        f"{r['s_per_step']:.4f} |"
        for r in rows
    ]
    path.write_text(header + "\n".join(lines) + "\n")


def main() -> None:
    parser = case_parser(
        __doc__.splitlines()[0], IMAGES, tag="mri", max_iter=3000, generator=False
    )  # --generators below
    parser.set_defaults(images=["phantom", "camera"])
    parser.add_argument("--coils", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--generators", nargs="+", default=CPU_GENERATORS, choices=GENERATORS)
    parser.add_argument("--acceleration", type=float, default=4.0)
    parser.add_argument("--noise", type=float, default=0.01)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    start(args, "mri.py")
    rows = []
    for image in args.images:
        for coils in args.coils:
            for generator in args.generators:
                row = run_case(image, coils, generator, args)
                print(json.dumps(row), flush=True)
                rows.append(row)
    save(rows, args, write_table)


if __name__ == "__main__":
    main()
