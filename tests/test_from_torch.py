"""``jaxpool.linen.from_torch`` / ``jaxpool.nnx.from_torch``: every torch pooling class,
ported, computes what the torch module computes (live, torch 2.13.0), in both layouts."""

import sys

import flax.nnx
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpool import linen, nnx

# (torch constructor, spatial shape of the input)
CASES = [
    ("MaxPool1d(3, stride=2, padding=1)", (17,)),
    ("MaxPool2d(3, stride=2, padding=1, ceil_mode=True)", (9, 10)),
    ("MaxPool2d((2, 3), dilation=2, return_indices=True)", (9, 10)),
    ("MaxPool3d(2, return_indices=True, ceil_mode=True)", (5, 6, 7)),
    ("AvgPool1d(4, stride=3, padding=2, ceil_mode=True, count_include_pad=False)", (17,)),
    ("AvgPool2d(3, stride=1, padding=1, count_include_pad=False)", (9, 10)),
    ("AvgPool2d((3, 2), stride=(2, 1), divisor_override=5)", (9, 10)),
    ("AvgPool3d(3, stride=2, padding=1, ceil_mode=True)", (5, 6, 7)),
    ("LPPool1d(2, 3, stride=2)", (17,)),
    ("LPPool2d(3, (2, 3), stride=(2, 1))", (9, 10)),
    ("LPPool3d(1.5, 2)", (5, 6, 7)),
    ("AdaptiveAvgPool1d(5)", (17,)),
    ("AdaptiveAvgPool2d((None, 4))", (9, 10)),
    ("AdaptiveAvgPool3d((2, 3, 4))", (5, 6, 7)),
    ("AdaptiveMaxPool1d(4, return_indices=True)", (17,)),
    ("AdaptiveMaxPool2d((4, None))", (9, 10)),
    ("AdaptiveMaxPool3d(2, return_indices=True)", (5, 6, 7)),
    ("FractionalMaxPool2d(2, output_ratio=0.5, return_indices=True)", (9, 10)),
    ("FractionalMaxPool3d((2, 2, 3), output_size=(3, 4, 3))", (5, 6, 7)),
]
# unpool cases: (the torch pool that makes the indices, the torch unpool)
UNPOOL_CASES = [
    ("MaxPool1d(3, stride=2, padding=1, return_indices=True)",
     "MaxUnpool1d(3, stride=2, padding=1)", (17,)),
    ("MaxPool2d(2, return_indices=True)", "MaxUnpool2d(2)", (9, 10)),
    ("MaxPool3d((2, 3, 2), stride=(1, 2, 2), return_indices=True)",
     "MaxUnpool3d((2, 3, 2), stride=(1, 2, 2))", (5, 6, 7)),
]
# The translation is shared by both flavours and passes data_format through: each case
# runs linen in Flax's layout and nnx in PyTorch's (suite time).
PORTS = [("linen", "channels_last"), ("nnx", "channels_first")]


@pytest.fixture(scope="module")
def torch():
  return pytest.importorskip("torch")


def _to_layout(a, data_format, d):
  """An NC* torch-layout array in ``data_format`` (and back: the move is its own
  inverse pair)."""
  a = np.asarray(a)
  return a if data_format == "channels_first" else np.moveaxis(a, -d - 1, -1)


def _from_layout(a, data_format, d):
  a = np.asarray(a)
  return a if data_format == "channels_first" else np.moveaxis(a, -1, -d - 1)


def _call(flavour, layer, *args):
  return layer.apply({}, *args) if flavour == "linen" else layer(*args)


def _port(flavour, module, data_format):
  port = linen.from_torch if flavour == "linen" else nnx.from_torch
  return port(module, data_format=data_format)


@pytest.mark.parametrize("flavour,data_format", PORTS)
@pytest.mark.parametrize("spec,spatial", CASES, ids=[c[0] for c in CASES])
def test_ported_module_computes_the_torch_module(torch, spec, spatial, data_format, flavour):
  d = len(spatial)
  module = eval(f"torch.nn.{spec}")  # noqa: S307 - the constructor strings above
  x = np.random.default_rng(0).uniform(0.1, 2.0, (2, 3, *spatial)).astype(np.float32)
  layer = _port(flavour, module, data_format)
  args = [jnp.asarray(_to_layout(x, data_format, d))]
  if spec.startswith("Fractional"):
    samples = np.random.default_rng(1).uniform(size=(2, 3, d)).astype(np.float32)
    module._random_samples = torch.from_numpy(samples)  # torch's forward reads the buffer
    args.append(jnp.asarray(samples))
  want = module(torch.from_numpy(x))
  got = _call(flavour, layer, *args)
  if "return_indices=True" in spec:
    (want, want_idx), (got, got_idx) = want, got
    np.testing.assert_array_equal(_from_layout(got_idx, data_format, d), want_idx.numpy())
  np.testing.assert_allclose(_from_layout(got, data_format, d), want.numpy(), rtol=1e-5,
                             atol=1e-6)


@pytest.mark.parametrize("flavour,data_format", PORTS)
@pytest.mark.parametrize("pool,unpool,spatial", UNPOOL_CASES, ids=[c[1] for c in UNPOOL_CASES])
def test_ported_unpool_computes_the_torch_unpool(torch, pool, unpool, spatial, data_format,
                                                  flavour):
  d = len(spatial)
  x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, *spatial)))
  values, indices = eval(f"torch.nn.{pool}")(x)  # noqa: S307
  module = eval(f"torch.nn.{unpool}")  # noqa: S307
  want = module(values, indices, output_size=spatial)
  layer = _port(flavour, module, data_format)
  got = _call(flavour, layer, jnp.asarray(_to_layout(values.numpy(), data_format, d)),
              jnp.asarray(_to_layout(indices.numpy(), data_format, d)), spatial)
  np.testing.assert_allclose(_from_layout(got, data_format, d), want.numpy(), rtol=1e-6)


def test_arguments_are_read_exactly(torch):
  layer = linen.from_torch(torch.nn.AvgPool2d((3, 2), stride=1, padding=(1, 0),
                                              count_include_pad=False, divisor_override=2))
  assert (layer.window_shape, layer.strides, layer.padding) == ((3, 2), (1, 1), (1, 0))
  assert (layer.count_include_pad, layer.divisor_override) == (False, 2)
  assert type(linen.from_torch(torch.nn.MaxPool1d(2, return_indices=True))).__name__ == (
      "MaxPoolWithIndices")
  lp = nnx.from_torch(torch.nn.LPPool2d(2, 3))
  assert (lp.p, lp.window_shape, lp.strides) == (2.0, (3, 3), None)
  assert nnx.from_torch(torch.nn.AdaptiveMaxPool2d(3, return_indices=True)).return_indices


def test_ported_fractional_takes_flax_randomness(torch):
  module = torch.nn.FractionalMaxPool2d(2, output_size=(4, 5))
  x = jnp.ones((2, 9, 10, 3))
  linen_layer = linen.from_torch(module)
  assert linen_layer.apply({}, x, rngs={"dropout": flax.nnx.Rngs(0)()}).shape == (2, 4, 5, 3)
  assert nnx.from_torch(module, rngs=flax.nnx.Rngs(0))(x).shape == (2, 4, 5, 3)


@pytest.mark.parametrize("bad,match", [
    ("torch.nn.Conv2d(1, 1, 1)", r"torch\.nn\.modules\.conv\.Conv2d is not a torch\.nn pooling"),
    ("torch.nn.Sequential(torch.nn.MaxPool2d(2))", "Sequential is not a torch.nn pooling"),
    ("type('MyPool', (torch.nn.MaxPool2d,), {})(2)",
     r"MyPool is not .* \(a subclass of torch\.nn\.MaxPool2d"),
    ("3", "builtins.int is not a torch.nn pooling module"),
])
@pytest.mark.parametrize("port", [linen.from_torch, nnx.from_torch])
def test_unsupported_modules_are_a_type_error_naming_them(torch, port, bad, match):
  with pytest.raises(TypeError, match=match):
    port(eval(bad))  # noqa: S307


@pytest.mark.parametrize("port", [linen.from_torch, nnx.from_torch])
def test_value_errors(torch, port):
  with pytest.raises(ValueError, match=r"holds fixed _random_samples of shape \(1, 2, 2\)"):
    port(torch.nn.FractionalMaxPool2d(2, output_size=3, _random_samples=torch.rand(1, 2, 2)))
  with pytest.raises(ValueError, match=r"LPPool2d\(ceil_mode=True\) rescales"):
    port(torch.nn.LPPool2d(2, 3, ceil_mode=True))
  with pytest.raises(ValueError, match="data_format must be .* got 'NCHW'"):
    port(torch.nn.MaxPool2d(2), data_format="NCHW")


def test_without_torch_the_error_says_so(monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
  with pytest.raises(TypeError, match="torch is not installed"):
    linen.from_torch(object())
