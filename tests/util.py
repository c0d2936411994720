"""Shared test helpers: layouts, jit/eager wrappers, random data."""

import functools

import jax
import numpy as np

LAYOUTS = ("channels_last", "channels_first")


def rotated(cases, ids):
  """``pytest.param(case, data_format, use_jit)`` for each case: one layout and one of
  eager/jit each, cycling through the four pairs, instead of all four per case. The
  layout is a transpose around the same program and eager runs the same operations, so
  every layout and mode still meets every kind of geometry (suite time)."""
  import pytest

  params = []
  for i, (case, name) in enumerate(zip(cases, ids)):
    layout, use_jit = LAYOUTS[i % 2], bool(i // 2 % 2)
    params.append(pytest.param(case, layout, use_jit,
                               id=f"{name}-{layout}-{'jit' if use_jit else 'eager'}"))
  return params


def to_layout(x_cf, data_format):
  """``(N, C, *S)`` -> the given layout."""
  return x_cf if data_format == "channels_first" else np.moveaxis(x_cf, 1, -1)


def from_layout(y, data_format):
  y = np.asarray(y)
  return y if data_format == "channels_first" else np.moveaxis(y, -1, 1)


def maybe_jit(fn, use_jit, **static):
  """``fn`` with keyword arguments bound, jitted over its array arguments or eager."""
  bound = functools.partial(fn, **static)
  return jax.jit(bound) if use_jit else bound


def randn(rng, shape, dtype=np.float32):
  return rng.standard_normal(shape).astype(dtype)


def ties(rng, shape, dtype=np.float32):
  """Few distinct values: many ties inside windows."""
  return rng.integers(-2, 3, size=shape).astype(dtype)


def recorded(path):
  """The cases of a fixture file whose meta lists the cases (``make_extents_fixtures``,
  ``make_layer_fixtures``): ``pytest.param(case, x, outputs, layout)``, each case in one
  layout, alternating, so both layouts see every op at half the compiles."""
  import json

  import pytest

  data = np.load(path)
  for i, case in enumerate(json.loads(str(data["meta"]))["cases"]):
    prefix = f"{i}/"
    out = {k[len(prefix):]: data[k] for k in data.files if k.startswith(prefix) and k != f"{i}/x"}
    layout = LAYOUTS[i % 2]
    yield pytest.param(case, data[f"{i}/x"], out, layout, id=f"{case['op']}-{i}-{layout}")
