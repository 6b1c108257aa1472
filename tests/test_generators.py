"""Tests of the generator networks (all tiny: a few thousand parameters, at most 32x32)."""

from __future__ import annotations

import doctest
import math
import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from torch import nn

import skdip.generators
from skdip.generators import (
    GENERATOR_NAMES,
    BaseGenerator,
    ConvDecoder,
    DeepDecoder,
    DeepRandomProjector,
    GeneratorNetwork,
    ImplicitNeuralRepresentation,
    SkipNetwork,
    _decoders,
    _implicit,
    _projector,
    _skip,
    get_generator,
)
from skdip.generators._implicit import coordinate_grid

torch.set_num_threads(1)

# Small configurations of every generator, keyed by a readable test id.
SMALL = {
    "skip": lambda: SkipNetwork(width=8, depth=3, skip_channels=2, input_channels=4),
    "deep-decoder": lambda: DeepDecoder(channels=8, n_blocks=4),
    "conv-decoder": lambda: ConvDecoder(channels=8, n_layers=4, input_size=4),
    "inr-sine": lambda: ImplicitNeuralRepresentation(hidden=16, n_layers=2),
    "inr-fourier": lambda: ImplicitNeuralRepresentation(
        hidden=16, n_layers=2, encoding="fourier", n_frequencies=16, scale=1.0
    ),
    "drp": lambda: DeepRandomProjector(width=8, input_channels=2),
}
SHAPES = [(16, 16), (17, 23), (32, 7), (5, 32), (3, 2), (1, 1)]


def _state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- output


@pytest.mark.parametrize("out_channels", [1, 3])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", list(SMALL))
def test_output_shape_finite_and_in_unit_interval(name, shape, out_channels):
    net = SMALL[name]().build(shape, out_channels, seed=0)
    assert isinstance(net, GeneratorNetwork)
    assert net.out_shape == shape and net.out_channels == out_channels
    out = net(net.input)
    assert out.shape == (1, out_channels, *shape)
    assert torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("name", list(SMALL))
def test_perturbed_input_and_all_parameters_get_gradients(name):
    net = SMALL[name]().build((17, 12), 2, seed=0)
    out = net(net.input + torch.randn_like(net.input) / 30)
    assert out.shape == (1, 2, 17, 12)
    out.square().mean().backward()
    for pname, p in net.named_parameters():
        if p.requires_grad:  # the Deep Random Projector's convolutions are frozen
            assert p.grad is not None and p.grad.abs().sum() > 0, pname
        else:
            assert p.grad is None, pname


@pytest.mark.parametrize("name", [name for name in SMALL if name != "drp"])
def test_input_is_a_batch_one_buffer_not_a_parameter(name):
    net = SMALL[name]().build((12, 20), 1, seed=0)
    buffers = dict(net.named_buffers())
    assert "input" in buffers and buffers["input"].shape[0] == 1
    assert all(p is not net.input for p in net.parameters())
    assert "input" in net.state_dict()


@pytest.mark.parametrize("activation", [None, "tanh"])
def test_output_activation_none_and_tanh(activation):
    # Without a sigmoid a network with an outsize bias must leave [0, 1].
    net = DeepDecoder(channels=4, n_blocks=2, output_activation=activation).build((8, 8), 1)
    with torch.no_grad():
        net.head[0].bias.fill_(-50.0)
    out = net(net.input)
    assert out.max() < 0
    if activation == "tanh":
        assert out.min() >= -1


# --------------------------------------------------------------------------- seeds


@pytest.mark.parametrize("name", list(SMALL))
def test_same_seed_same_network_different_seed_different(name):
    cfg = SMALL[name]()
    a = _state(cfg.build((12, 9), 3, seed=7))
    b = _state(cfg.build((12, 9), 3, seed=7))
    c = _state(cfg.build((12, 9), 3, seed=8))
    assert _same_state(a, b)
    assert not torch.equal(a["input"], c["input"]) or name.startswith("inr")
    weights = [k for k in a if k.endswith("weight")]
    assert any(not torch.equal(a[k], c[k]) for k in weights)


@pytest.mark.parametrize("seed", [None, 1.5, "1", True, np.random.RandomState(0)])
def test_build_refuses_a_seed_that_is_not_an_int(seed):
    # 1.5, "1" and True built the network of seed 1 silently; None and a RandomState
    # failed with int()'s bare "int() argument must be a string, ..." message.
    with pytest.raises(TypeError, match="seed must be an int"):
        SMALL["deep-decoder"]().build((8, 8), 1, seed=seed)


def test_build_refuses_a_seed_out_of_the_generators_range():
    with pytest.raises(ValueError, match=r"seed must be an int in \[-2\*\*63, 2\*\*64\)"):
        SMALL["deep-decoder"]().build((8, 8), 1, seed=2**64)
    # numpy integers, negative seeds and the ends of the range are seeds
    for seed in (np.int64(3), np.uint64(2**64 - 1), -1, -(2**63)):
        SMALL["deep-decoder"]().build((8, 8), 1, seed=seed)


def test_fourier_frequencies_depend_on_the_seed_and_are_not_trained():
    cfg = SMALL["inr-fourier"]()
    a, b = cfg.build((8, 8), 1, seed=0), cfg.build((8, 8), 1, seed=1)
    key = "mlp.0.frequencies"
    assert key in dict(a.named_buffers())
    assert not torch.equal(a.state_dict()[key], b.state_dict()[key])
    assert a.state_dict()[key].shape == (16, 2)
    assert all(p.shape != (16, 2) for p in a.parameters())


def test_build_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    for make in SMALL.values():
        make().build((8, 8), 1, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_fits_leave_the_gpu_generators_alone(monkeypatch):
    # torch.manual_seed reseeds every GPU's generator too, which the CPU-only fork
    # around a build does not restore: a fit would reset a caller's CUDA stream.
    from skdip import BlindDeblurrer, DIPDenoiser, SelfValidation

    calls = []
    for name in ("manual_seed", "manual_seed_all"):
        monkeypatch.setattr(torch.cuda, name, lambda seed, name=name: calls.append(name))
    monkeypatch.setattr(torch.mps, "manual_seed", lambda seed: calls.append("mps"))
    image = np.random.default_rng(0).random((8, 8))
    kw = dict(generator="skip-small", max_iter=3, random_state=0, device="cpu")
    rule = SelfValidation(window=2, patience=5)
    DIPDenoiser(early_stopping=rule, **kw).fit(image)
    BlindDeblurrer(kernel_size=3, early_stopping=None, **kw).fit(image)
    assert calls == []


# --------------------------------------------------------------------------- registry


def test_get_generator_by_name_returns_fresh_instances_of_the_right_class():
    expected = {
        "skip": SkipNetwork,
        "skip-small": SkipNetwork,
        "deep-decoder": DeepDecoder,
        "conv-decoder": ConvDecoder,
        "inr": ImplicitNeuralRepresentation,
        "drp": DeepRandomProjector,
    }
    assert set(GENERATOR_NAMES) == set(expected)
    for name, cls in expected.items():
        gen = get_generator(name)
        assert type(gen) is cls
        assert get_generator(name) is not gen
    assert get_generator("skip-small").width < get_generator("skip").width


def test_get_generator_passes_instances_through():
    cfg = DeepDecoder(channels=3)
    assert get_generator(cfg) is cfg


@pytest.mark.parametrize("bad", ["Skip", "deep_decoder", "", "unet"])
def test_get_generator_rejects_unknown_names(bad):
    with pytest.raises(ValueError, match="unknown generator"):
        get_generator(bad)


@pytest.mark.parametrize("bad", [None, 3, SkipNetwork, nn.Linear(2, 2), ["skip"]])
def test_get_generator_rejects_wrong_types(bad):
    with pytest.raises(TypeError, match="str or a BaseGenerator"):
        get_generator(bad)


def test_public_names_are_exported():
    for name in (
        "SkipNetwork",
        "DeepDecoder",
        "ConvDecoder",
        "ImplicitNeuralRepresentation",
        "DeepRandomProjector",
        "get_generator",
        "GENERATOR_NAMES",
    ):
        assert name in skdip.generators.__all__
        assert hasattr(skdip.generators, name)


def test_accepts_input_noise_flags():
    assert SkipNetwork.accepts_input_noise
    assert DeepDecoder.accepts_input_noise
    assert ConvDecoder.accepts_input_noise
    assert not ImplicitNeuralRepresentation.accepts_input_noise
    assert not get_generator("inr").accepts_input_noise


# --------------------------------------------------------------------------- fitting


def _target(shape: tuple[int, int], channels: int) -> torch.Tensor:
    rows = torch.linspace(0, 1, shape[0])[:, None]
    cols = torch.linspace(0, 1, shape[1])[None, :]
    img = 0.5 + 0.3 * torch.sin(3 * rows + 2 * cols) * torch.cos(4 * cols - rows)
    return img.expand(1, channels, *shape).clone()


@pytest.mark.parametrize("name", list(SMALL))
def test_fits_a_tiny_target(name):
    torch.manual_seed(0)
    target = _target((16, 12), 3)
    net = SMALL[name]().build((16, 12), 3, seed=0)
    # The projector moves only its code and norms: it is fitted at its recipe's rate.
    opt = torch.optim.Adam(net.parameters(), lr=0.1 if name == "drp" else 1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = nn.functional.mse_loss(net(net.input), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0], losses


# --------------------------------------------------------------------------- sklearn, pickle


@pytest.mark.parametrize("name", list(SMALL))
def test_clone_and_params_round_trip(name):
    cfg = SMALL[name]()
    copy = clone(cfg)
    assert copy is not cfg and type(copy) is type(cfg)
    assert copy.get_params() == cfg.get_params()
    first = sorted(cfg.get_params())[0]
    assert clone(cfg).set_params(**{first: 999}).get_params()[first] == 999
    assert cfg.get_params()[first] != 999


@pytest.mark.parametrize(
    "cls",
    [SkipNetwork, DeepDecoder, ConvDecoder, ImplicitNeuralRepresentation, DeepRandomProjector],
)
def test_default_configs_follow_the_sklearn_conventions(cls):
    cfg = cls()
    assert isinstance(cfg, BaseGenerator)
    assert clone(cfg).get_params() == cfg.get_params()
    # __init__ only stores: an invalid value is accepted there and rejected by build.
    first = sorted(cfg.get_params())[0]
    bad = cls(**{first: "not a valid value"})
    assert bad.get_params()[first] == "not a valid value"
    # A TypeError for a numeric parameter, a ValueError for an option's name.
    with pytest.raises((TypeError, ValueError)):
        bad.build((8, 8), 1)


@pytest.mark.parametrize("name", list(SMALL))
def test_pickled_network_round_trips(name):
    net = SMALL[name]().build((11, 14), 3, seed=3)
    copy = pickle.loads(pickle.dumps(net))
    assert type(copy) is type(net)
    assert _same_state(_state(copy), _state(net))
    assert copy.out_shape == net.out_shape
    with torch.no_grad():
        assert torch.equal(copy(copy.input), net(net.input))


# --------------------------------------------------------------------------- parameter counts


def test_default_skip_network_has_about_2_2_million_parameters():
    n = SkipNetwork().build((32, 32), 3).n_parameters()
    assert 2_100_000 <= n <= 2_300_000


def test_default_deep_decoder_parameter_count():
    net = DeepDecoder().build((32, 32), 3)
    # 6 bias-free 64x64 1x1 convolutions, 6 BatchNorms, a 1x1 head with bias.
    assert net.n_parameters() == 6 * 64 * 64 + 6 * 2 * 64 + 64 * 3 + 3 == 25_539
    assert 20_000 <= net.n_parameters() <= 30_000


def test_default_conv_decoder_and_inr_parameter_counts():
    conv = ConvDecoder().build((32, 32), 3).n_parameters()
    assert conv == 7 * (256 * 256 * 9 + 256) + 7 * 2 * 256 + 256 * 3 + 3
    siren = ImplicitNeuralRepresentation().build((8, 8), 3).n_parameters()
    assert siren == (2 * 256 + 256) + 2 * (256 * 256 + 256) + 256 * 3 + 3
    fourier = ImplicitNeuralRepresentation(encoding="fourier").build((8, 8), 3).n_parameters()
    assert fourier == (512 * 256 + 256) + 2 * (256 * 256 + 256) + 256 * 3 + 3


# --------------------------------------------------------------------------- architectures


def test_deep_decoder_structure():
    net = DeepDecoder(channels=6, n_blocks=4, input_scale=0.5).build((20, 9), 2, seed=0)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 5
    assert all(c.kernel_size == (1, 1) for c in convs)  # no spatial convolution
    assert all(c.bias is None for c in convs[:-1]) and convs[-1].bias is not None
    ups = [m for m in net.modules() if isinstance(m, nn.Upsample)]
    assert len(ups) == 3 and all(u.mode == "bilinear" for u in ups)
    # Padded to multiples of 2**3 = 8: 24x16, so the code is 3x2.
    assert net.input.shape == (1, 6, 3, 2)
    assert net.input.min() >= 0 and net.input.max() < 0.5
    assert net.input.max() > 0.25  # really scaled by input_scale, not 0.1
    nearest = DeepDecoder(channels=4, n_blocks=2, upsample="nearest").build((8, 8), 1)
    assert all(m.mode == "nearest" for m in nearest.modules() if isinstance(m, nn.Upsample))


def _first_batchnorm_spread(net: GeneratorNetwork) -> float:
    """Largest per-channel spatial std of what the first BatchNorm of ``net.body`` sees."""
    seen = []
    first = next(m for m in net.body if isinstance(m, nn.BatchNorm2d))
    handle = first.register_forward_hook(lambda m, i, o: seen.append(i[0].std(dim=(2, 3))))
    with torch.no_grad():
        net(net.input)
    handle.remove()
    return float(seen[0].max())


@pytest.mark.parametrize(
    "shape",
    [(16, 64), (64, 16), (16, 16), (32, 32), (4, 64), (3, 5)],
    ids=lambda s: f"{s[0]}x{s[1]}",
)
@pytest.mark.parametrize(
    "make", [DeepDecoder, lambda: ConvDecoder(channels=8, n_layers=4)], ids=["deep", "conv"]
)
def test_decoders_vary_along_both_axes_of_small_images(make, shape):
    # The default Deep Decoder once drew a 1-pixel code for any side <= 32: upsampled,
    # it was constant, the first BatchNorm saw no spread and a 16x64 output had
    # constant columns.
    net = make().build(shape, 1, seed=0)
    if make is DeepDecoder:  # the ConvDecoder's zero padding breaks a 1-pixel code's symmetry
        assert min(net.input.shape[-2:]) >= 2
    assert _first_batchnorm_spread(net) > 1e-3
    with torch.no_grad():
        out = net(net.input)[0, 0]
    assert out.std(dim=0).mean() > 5e-3 and out.std(dim=1).mean() > 5e-3


def test_deep_decoder_canvas_is_unchanged_for_sides_above_the_multiple():
    # Sides above 2**(n_blocks - 1) keep the plain padded grid (same code, same
    # weights, same outputs for a seed); only smaller sides get the 2-pixel code.
    net = DeepDecoder().build((33, 100), 1)
    assert net.padded_shape == (64, 128) and net.input.shape[-2:] == (2, 4)
    net = DeepDecoder().build((32, 100), 1)
    assert net.padded_shape == (64, 128) and net.input.shape[-2:] == (2, 4)
    net = DeepDecoder(channels=4, n_blocks=1).build((1, 5), 1)
    assert net.padded_shape == (2, 5)


@pytest.mark.parametrize("shape", [(32, 32), (16, 64)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_default_deep_decoder_fits_a_small_ramp(shape):
    # Before the code had 2 pixels per side, a 32x32 fit did worse than a flat image.
    rows = torch.linspace(0, 1, shape[0])[:, None]
    cols = torch.linspace(0, 1, shape[1])[None, :]
    target = (0.25 + 0.3 * rows + 0.2 * torch.sin(6 * cols)).expand(1, 1, *shape).clone()
    net = get_generator("deep-decoder").build(shape, 1, seed=0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        nn.functional.mse_loss(net(net.input), target).backward()
        opt.step()
    with torch.no_grad():
        mse = nn.functional.mse_loss(net(net.input), target).item()
    assert mse < 0.1 * target.var().item(), mse


def test_deep_decoder_refuses_a_canvas_far_larger_than_the_image():
    with pytest.raises(ValueError, match=r"DeepDecoder\(n_blocks=10\) works on a 1024x1024"):
        DeepDecoder(n_blocks=10).build((16, 16), 1)
    with pytest.raises(ValueError, match="smaller n_blocks"):
        DeepDecoder(n_blocks=10)._check_output_shape((16, 16))
    DeepDecoder()._check_output_shape((1, 1))  # a 64x64 grid: allowed
    DeepDecoder(n_blocks=0)._check_output_shape((8, 8))  # left for build() to refuse


def test_conv_decoder_structure_and_geometric_sizes():
    net = ConvDecoder(channels=4, n_layers=5, input_size=4).build((32, 16), 1, seed=0)
    assert net.input.shape == (1, 4, 4, 2)  # aspect ratio kept, long side = input_size
    assert net.input.min() >= 0 and net.input.max() < 1 and net.input.max() > 0.5
    assert net.sizes[-1] == (32, 16) and len(net.sizes) == 4
    heights = [4] + [s[0] for s in net.sizes]
    ratios = [b / a for a, b in zip(heights[:-1], heights[1:], strict=True)]
    assert all(r == pytest.approx(2 ** (3 / 4), abs=0.25) for r in ratios)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 5 + [(1, 1)]
    ups = [m for m in net.modules() if isinstance(m, nn.Upsample)]
    assert [u.size for u in ups] == net.sizes and all(u.mode == "nearest" for u in ups)
    # Upsampling targets the image size itself: no cropping happens.
    assert net.body(net.input).shape[-2:] == (32, 16)


def test_conv_decoder_small_image_starts_at_its_own_size():
    net = ConvDecoder(channels=4, n_layers=3, input_size=8).build((5, 3), 1)
    assert net.input.shape[-2:] == (5, 3)


def test_siren_initialisation():
    omega0, hidden = 20.0, 32
    net = ImplicitNeuralRepresentation(hidden=hidden, n_layers=3, omega0=omega0).build((8, 8), 1)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 4
    first = linears[0].weight
    assert first.abs().max() <= 0.5 and first.abs().max() > 0.4
    bound = math.sqrt(6 / hidden) / omega0
    for layer in linears[1:]:
        w = layer.weight.abs().max().item()
        assert w <= bound and w > 0.7 * bound
    assert all(m.omega0 == omega0 for m in net.modules() if hasattr(m, "omega0"))


def test_coordinate_grid():
    grid = coordinate_grid((5, 9))
    assert grid.shape == (1, 2, 5, 9)
    assert grid.abs().max() == 1
    # Same spacing along both axes, centred, longer side spans [-1, 1].
    assert torch.allclose(grid[0, 1, 0], torch.linspace(-1, 1, 9))
    assert torch.allclose(grid[0, 0, :, 0], torch.linspace(-0.5, 0.5, 5))
    assert torch.equal(coordinate_grid((1, 1)), torch.zeros(1, 2, 1, 1))
    net = ImplicitNeuralRepresentation(hidden=4, n_layers=1).build((5, 9), 1)
    assert torch.equal(net.input, grid)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        (DeepDecoder(channels=0), "channels"),
        (DeepDecoder(n_blocks=0), "n_blocks"),
        (DeepDecoder(input_scale=0), "input_scale"),
        (DeepDecoder(input_scale=float("nan")), "input_scale"),
        (DeepDecoder(upsample="bicubic"), "upsample"),
        (DeepDecoder(output_activation="softmax"), "output_activation"),
        (ConvDecoder(channels=-1), "channels"),
        (ConvDecoder(n_layers=1), "n_layers"),
        (ConvDecoder(input_size=0), "input_size"),
        (ConvDecoder(output_activation="gelu"), "output_activation"),
        (ImplicitNeuralRepresentation(hidden=0), "hidden"),
        (ImplicitNeuralRepresentation(n_layers=0), "n_layers"),
        (ImplicitNeuralRepresentation(encoding="relu"), "encoding"),
        (ImplicitNeuralRepresentation(omega0=-1.0), "omega0"),
        (ImplicitNeuralRepresentation(encoding="fourier", n_frequencies=0), "n_frequencies"),
        (ImplicitNeuralRepresentation(output_activation="exp"), "output_activation"),
        (DeepRandomProjector(width=0), "width"),
        (DeepRandomProjector(depth=0), "depth"),
        (DeepRandomProjector(skip_channels=-1), "skip_channels"),
        (DeepRandomProjector(input_scale=0), "input_scale"),
        (DeepRandomProjector(upsample="area"), "upsample"),
        (DeepRandomProjector(output_activation="gelu"), "output_activation"),
    ],
    ids=repr,
)
def test_invalid_parameters_raise_at_build(cfg, match):
    with pytest.raises(ValueError, match=match):
        cfg.build((8, 8), 1)


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        (DeepDecoder(channels=2.5), "DeepDecoder.channels must be a positive int, got 2.5"),
        (DeepDecoder(n_blocks=True), "DeepDecoder.n_blocks must be a positive int, got True"),
        (ImplicitNeuralRepresentation(encoding="fourier", scale="big"), "scale"),
        (DeepRandomProjector(input_channels=1.5), "input_channels"),
    ],
    ids=repr,
)
def test_parameters_of_the_wrong_type_raise_a_type_error_at_build(cfg, match):
    # A wrong type is a TypeError, as for every numeric argument (a ValueError before).
    with pytest.raises(TypeError, match=match):
        cfg.build((8, 8), 1)


@pytest.mark.parametrize("cls", [DeepDecoder, ConvDecoder, ImplicitNeuralRepresentation])
def test_invalid_output_size_raises(cls):
    with pytest.raises(ValueError, match="out_shape"):
        cls().build((0, 8), 1)
    with pytest.raises(ValueError, match="out_channels"):
        cls().build((8, 8), 0)


def test_numpy_integers_are_accepted():
    net = DeepDecoder(channels=np.int64(4), n_blocks=np.int64(2)).build((8, 8), 1)
    assert net(net.input).shape == (1, 1, 8, 8)


# --------------------------------------------------------------------------- docs


@pytest.mark.parametrize("module", [skdip.generators, _decoders, _implicit, _projector, _skip])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("name", list(SMALL))
@pytest.mark.parametrize(
    "shape, channels", [((0, 8), 1), ((-4, 8), 1), ((8,), 1), ((8, 8), 0), ((8, 8), True)]
)
def test_every_generator_refuses_outputs_no_network_can_make(name, shape, channels):
    # A bool is no channel count, and one size is no out_shape (a ValueError before).
    error = TypeError if channels is True or len(shape) != 2 else ValueError
    with pytest.raises(error, match="out_shape|out_channels"):
        SMALL[name]().build(shape, channels)


def test_skip_network_takes_numpy_integers_and_refuses_bad_values():
    # A ParameterGrid over np.array([4, 8]) hands numpy integers to the generator.
    net = SkipNetwork(width=np.int64(8), depth=np.int32(2), input_channels=np.int64(4))
    assert net.build((8, 8), 1)(net.build((8, 8), 1).input).shape == (1, 1, 8, 8)
    for bad, error in (
        (dict(width=True), TypeError),
        (dict(width=0), ValueError),
        (dict(depth=2.0), TypeError),
        (dict(skip_channels=-1), ValueError),
        (dict(input_scale=float("inf")), ValueError),
        (dict(input_scale=0.0), ValueError),
        (dict(upsample="cubic"), ValueError),
    ):
        with pytest.raises(error, match="SkipNetwork"):
            SkipNetwork(**bad).build((8, 8), 1)


# --------------------------------------------------------------------------- Deep Random Projector


def test_random_projector_fits_its_code_and_norms_only():
    net = DeepRandomProjector(width=8, input_channels=2).build((12, 10), 3, seed=0)
    trainable = {name for name, p in net.named_parameters() if p.requires_grad}
    frozen = {name for name, p in net.named_parameters() if not p.requires_grad}
    assert "input" in trainable and isinstance(net.input, nn.Parameter)
    assert "input" not in dict(net.named_buffers()) and "input" in net.state_dict()
    convs = {name for name, m in net.named_modules() if isinstance(m, nn.Conv2d)}
    norms = {name for name, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert convs and "input_norm" in norms
    assert frozen == {f"{c}.{w}" for c in convs for w in ("weight", "bias")}
    assert trainable == {"input"} | {f"{n}.{w}" for n in norms for w in ("weight", "bias")}
    # Gaussian code of the requested scale, at the padded resolution of one scale.
    assert net.input.shape == (1, 2, 12, 10)
    assert abs(float(net.input.std()) - 0.1) < 0.03 and float(net.input.min()) < 0


def test_random_projector_default_sizes():
    net = get_generator("drp").build((64, 64), 3, seed=0)
    assert net.input.shape == (1, 3, 64, 64)
    # The 64x64x3 code plus the BatchNorm scales and shifts (6 + 8 + 256 + 136 + 256).
    assert net.n_parameters() == 64 * 64 * 3 + 662
    frozen = sum(p.numel() for p in net.parameters() if not p.requires_grad)
    assert frozen > 50_000


def test_random_projector_refuses_a_canvas_far_larger_than_the_image():
    with pytest.raises(ValueError, match=r"DeepRandomProjector\(depth=9\)"):
        DeepRandomProjector(depth=9).build((8, 8), 1)


# A bug the suite once missed (random Fourier features [sin, sin] instead of
# [sin, cos]).
def test_fourier_features_are_sines_then_cosines():
    from skdip.generators import ImplicitNeuralRepresentation
    from skdip.generators._implicit import coordinate_grid

    net = ImplicitNeuralRepresentation(hidden=8, encoding="fourier", n_frequencies=4).build(
        (5, 7), 1, seed=0
    )
    features = net.mlp[0]
    v = coordinate_grid((5, 7)).permute(0, 2, 3, 1)
    phase = 2 * np.pi * (v @ features.frequencies.T)
    torch.testing.assert_close(features(v), torch.cat([phase.sin(), phase.cos()], dim=-1))


def test_a_network_built_on_the_meta_device_is_refused_at_the_build():
    # torch's own error, at the move to the fit's device, advised to_empty(): a
    # network of uninitialised memory.
    from skdip import DIPDenoiser

    class OnMeta(BaseGenerator):
        def _build(self, out_shape, out_channels):
            return SkipNetwork(width=4, depth=1)._build(out_shape, out_channels).to("meta")

    with pytest.raises(ValueError, match="OnMeta._build returned a network on the 'meta'"):
        OnMeta().build((8, 8), 1)
    x = np.random.default_rng(0).random((8, 8))
    with pytest.raises(ValueError, match="'meta' device"):
        DIPDenoiser(generator=OnMeta(), max_iter=2, device="cpu").fit(x)


def test_skip_channels_may_be_zero():
    # No skip connections: 0 is a valid count (width and depth must be positive).
    net = SkipNetwork(width=4, depth=2, input_channels=2, skip_channels=0).build((8, 8), 1)
    assert net(net.input).shape == (1, 1, 8, 8)


@pytest.mark.parametrize("name", ["omega0", "scale"])
def test_implicit_scales_must_be_positive(name):
    encoding = "sine" if name == "omega0" else "fourier"
    inr = ImplicitNeuralRepresentation(encoding=encoding, **{name: 0.0})
    with pytest.raises(
        ValueError, match=rf"ImplicitNeuralRepresentation.{name} must be a finite number > 0"
    ):
        inr.build((8, 8), 1)
