"""Slow, obviously-correct NumPy loop references for every jaxpool op.

Written independently of jaxpool (no shared helpers), straight from the contract and
PyTorch's C++ kernels. Arrays are channels_first ``(N, C, *spatial)`` here; tests move
axes for the other layout. Everything is computed in float64.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def out_len(n, k, s, d, lo, hi, ceil_mode):
  """PyTorch's pooling_output_shape_pad_lr, written out."""
  eff = d * (k - 1) + 1
  num = n + lo + hi - eff + (s - 1 if ceil_mode else 0)
  out = math.floor(num / s) + 1
  if ceil_mode and (out - 1) * s >= n + lo:
    out -= 1
  return out


def _pads(padding, window, strides, dilation, sizes):
  d = len(window)
  if isinstance(padding, str):
    if padding == "VALID":
      return [(0, 0)] * d
    pads = []
    for n, k, s, r in zip(sizes, window, strides, dilation):
      out = math.ceil(n / s)
      total = max((out - 1) * s + r * (k - 1) + 1 - n, 0)
      pads.append((total // 2, total - total // 2))
    return pads
  if isinstance(padding, int):
    return [(padding, padding)] * d
  return [(p, p) if isinstance(p, int) else tuple(p) for p in padding]


def _tuple(v, d):
  return (v,) * d if isinstance(v, int) else tuple(v)


def _geometry(x, window, strides, padding, dilation, ceil_mode):
  d = len(window)
  sizes = x.shape[2:]
  strides = window if strides is None else _tuple(strides, d)
  dilation = _tuple(dilation, d)
  pads = _pads(padding, window, strides, dilation, sizes)
  outs = [out_len(n, k, s, r, lo, hi, ceil_mode)
          for n, k, s, r, (lo, hi) in zip(sizes, window, strides, dilation, pads)]
  return sizes, strides, dilation, pads, outs


def _taps(o, window, strides, dilation, pads):
  """All window positions (row-major), padding included."""
  ranges = [[o_d * s - lo + j * r for j in range(k)]
            for o_d, k, s, r, (lo, _) in zip(o, window, strides, dilation, pads)]
  return list(itertools.product(*ranges))


def _inside(pos, sizes):
  return all(0 <= p < n for p, n in zip(pos, sizes))


def _flat(pos, sizes):
  idx = 0
  for p, n in zip(pos, sizes):
    idx = idx * n + p
  return idx


def _argbest(vals, better):
  """Index of the first best value; NaN wins (first NaN)."""
  best = 0
  for i, v in enumerate(vals):
    if np.isnan(vals[best]):
      break
    if np.isnan(v) or better(v, vals[best]):
      best = i
  return best


def _windows(x, window, strides, padding, dilation, ceil_mode):
  """Yield (output index, all taps, real taps) for every window of every (n, c) slice."""
  sizes, strides, dilation, pads, outs = _geometry(x, window, strides, padding, dilation,
                                                   ceil_mode)
  for n, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
    for o in itertools.product(*[range(m) for m in outs]):
      taps = _taps(o, window, strides, dilation, pads)
      yield (n, c) + o, taps, [p for p in taps if _inside(p, sizes)]


def _out_shape(x, window, strides, padding, dilation, ceil_mode):
  return x.shape[:2] + tuple(_geometry(x, window, strides, padding, dilation, ceil_mode)[4])


def max_pool_with_indices(x, window, strides=None, padding=0, dilation=1, ceil_mode=False,
                          kind="max"):
  x = np.asarray(x)
  args = (window, strides, padding, dilation, ceil_mode)
  better = (lambda a, b: a > b) if kind == "max" else (lambda a, b: a < b)
  vals = np.zeros(_out_shape(x, *args), x.dtype)
  idx = np.zeros(vals.shape, np.int64)
  for where, _, real in _windows(x, *args):
    v = [x[where[:2] + p] for p in real]
    b = _argbest(v, better)
    vals[where], idx[where] = v[b], _flat(real[b], x.shape[2:])
  return vals, idx


def max_pool(x, *args, **kw):
  return max_pool_with_indices(x, *args, **kw)[0]


def min_pool(x, *args, **kw):
  return max_pool_with_indices(x, *args, kind="min", **kw)[0]


def avg_pool(x, window, strides=None, padding=0, dilation=1, ceil_mode=False,
             count_include_pad=True, divisor_override=None):
  x = np.asarray(x, np.float64)
  args = (window, strides, padding, dilation, ceil_mode)
  sizes, pads = x.shape[2:], _geometry(x, *args)[3]
  out = np.zeros(_out_shape(x, *args))
  for where, taps, real in _windows(x, *args):
    total = sum(x[where[:2] + p] for p in real)
    if divisor_override:
      div = divisor_override
    elif count_include_pad:  # taps inside the padded extent
      div = sum(all(-lo <= q < m + hi for q, m, (lo, hi) in zip(p, sizes, pads)) for p in taps)
    else:
      div = len(real)
    out[where] = total / div
  return out


def lp_pool(x, p, window, strides=None, padding=0, dilation=1, ceil_mode=False):
  x = np.asarray(x, np.float64)
  args = (window, strides, padding, dilation, ceil_mode)
  out = np.zeros(_out_shape(x, *args))
  for where, _, real in _windows(x, *args):
    with np.errstate(invalid="ignore"):
      out[where] = sum(x[where[:2] + q] ** p for q in real) ** (1 / p)
  return out


def _bins(n, o):
  return [(math.floor(i * n / o), math.ceil((i + 1) * n / o)) for i in range(o)]


def _adaptive(x, output_size):
  sizes = x.shape[2:]
  output_size = [n if o is None else o for n, o in zip(sizes, output_size)]
  bins = [_bins(n, o) for n, o in zip(sizes, output_size)]
  for n, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
    for o in itertools.product(*[range(m) for m in output_size]):
      ranges = [range(*bins[d][o_d]) for d, o_d in enumerate(o)]
      yield (n, c) + o, list(itertools.product(*ranges)), tuple(output_size)


def adaptive_avg_pool(x, output_size):
  x = np.asarray(x, np.float64)
  out = None
  for where, pos, size in _adaptive(x, output_size):
    if out is None:
      out = np.zeros(x.shape[:2] + size)
    out[where] = np.mean([x[where[:2] + p] for p in pos])
  return out


def adaptive_max_pool_with_indices(x, output_size):
  x = np.asarray(x)
  vals = idx = None
  for where, pos, size in _adaptive(x, output_size):
    if vals is None:
      vals = np.zeros(x.shape[:2] + size, x.dtype)
      idx = np.zeros(vals.shape, np.int64)
    v = [x[where[:2] + p] for p in pos]
    b = _argbest(v, lambda a, c: a > c)
    vals[where], idx[where] = v[b], _flat(pos[b], x.shape[2:])
  return vals, idx


def max_unpool(values, indices, output_spatial):
  values = np.asarray(values)
  out = np.zeros(values.shape[:2] + tuple(output_spatial), values.dtype)
  flat = out.reshape(values.shape[:2] + (-1,))
  m = flat.shape[-1]
  for n, c in itertools.product(range(values.shape[0]), range(values.shape[1])):
    for v, i in zip(values[n, c].ravel(), np.asarray(indices)[n, c].ravel()):
      if 0 <= i < m:
        flat[n, c, i] = v
  return flat.reshape(out.shape)


def max_pool_grad(x, g, *args, kind="max", **kw):
  """d/dx of sum(max_pool(x) * g): each window's g goes to its chosen element."""
  _, idx = max_pool_with_indices(x, *args, kind=kind, **kw)
  dx = np.zeros(x.shape[:2] + (math.prod(x.shape[2:]),))
  for n, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
    np.add.at(dx[n, c], idx[n, c].ravel(), np.asarray(g, np.float64)[n, c].ravel())
  return dx.reshape(x.shape)


def _region(x, n, lengths):
  return x[(n, slice(None)) + tuple(slice(0, int(v)) for v in lengths[n])][None]


def lengths_pool(x, output_size, lengths, op):
  """Per example, the adaptive ``op`` ("avg" or "max") on its valid region alone (the
  leading ``lengths[n]`` positions per spatial dim); max also gives indices flat in the
  padded volume. ``output_size`` entries ``None`` keep the padded length."""
  x = np.asarray(x)
  lengths = np.asarray(lengths).reshape(x.shape[0], -1)
  size = [x.shape[2 + k] if o is None else o for k, o in enumerate(output_size)]
  values, indices = [], []
  for n in range(x.shape[0]):
    region = _region(x, n, lengths)
    if op == "avg":
      values.append(adaptive_avg_pool(region, size)[0])
      continue
    v, i = adaptive_max_pool_with_indices(region, size)
    values.append(v[0])
    indices.append(np.ravel_multi_index(np.unravel_index(i[0], region.shape[2:]),
                                        x.shape[2:]))
  return np.stack(values) if op == "avg" else (np.stack(values), np.stack(indices))


def lengths_avg_grad(x, output_size, lengths, g):
  """d/dx of sum(lengths_pool(x, "avg") * g): each bin's g / count on its elements."""
  lengths = np.asarray(lengths).reshape(x.shape[0], -1)
  dx = np.zeros(x.shape)
  g = np.asarray(g, np.float64)
  for n in range(x.shape[0]):
    sizes = [int(v) for v in lengths[n]]
    outs = [x.shape[2 + k] if o is None else o for k, o in enumerate(output_size)]
    bins = [_bins(s, o) for s, o in zip(sizes, outs)]
    for o in itertools.product(*[range(m) for m in outs]):
      box = tuple(slice(*bins[k][ok]) for k, ok in enumerate(o))
      count = math.prod(b.stop - b.start for b in box)
      dx[(n, slice(None)) + box] += (g[(n, slice(None)) + o] / count).reshape(
          (-1,) + (1,) * len(box))
  return dx


def segment_pool(x, segment_ids, num_segments, op):
  """Per row of ``segment_ids`` (the leading axes of ``x``), each segment's ``op`` over
  its members in position order; ids outside ``[0, num_segments)`` dropped, empty
  segments 0. Also returns, for max/min, the position of the first extreme per
  (segment, feature), or -1 where the segment is empty."""
  x, ids = np.asarray(x), np.asarray(segment_ids)
  lead, length, features = ids.shape[:-1], ids.shape[-1], x.shape[ids.ndim:]
  out = np.zeros(lead + (num_segments,) + features, np.float64 if op == "avg" else x.dtype)
  first = np.full(out.shape, -1)
  for row in np.ndindex(*lead):
    for s in range(num_segments):
      members = [p for p in range(length) if ids[row + (p,)] == s]
      if not members:
        continue
      vals = np.stack([x[row + (p,)] for p in members]).astype(
          np.float64 if op in ("avg", "sum") and x.dtype.kind == "f" else x.dtype)
      if op in ("avg", "sum"):
        out[row + (s,)] = vals.mean(0) if op == "avg" else vals.sum(0)
        continue
      for f in np.ndindex(*features):
        column = [v[f] for v in vals]
        b = _argbest(column, (lambda a, c: a > c) if op == "max" else (lambda a, c: a < c))
        out[row + (s,) + f], first[row + (s,) + f] = column[b], members[b]
  return out, first


def gem_pool(x, p, eps=1e-6):
  """Generalized mean over every spatial dim of ``(N, C, *spatial)`` -> ``(N, C)``."""
  x = np.maximum(np.asarray(x, np.float64), eps)
  return np.mean(x.reshape(x.shape[:2] + (-1,)) ** p, axis=-1) ** (1.0 / p)


def blur_pool(x, kernel, strides):
  """Correlation with the outer product of normalised binomial kernels, zero padding
  ``(k-1)//2`` before and ``k//2`` after, sampled every stride from 0: one loop over
  output positions and kernel taps."""
  x = np.asarray(x, np.float64)
  d = len(kernel)
  taps = [np.array([math.comb(k - 1, j) for j in range(k)]) / 2.0 ** (k - 1) for k in kernel]
  sizes = x.shape[2:]
  outs = [-(-n // s) for n, s in zip(sizes, strides)]
  y = np.zeros(x.shape[:2] + tuple(outs))
  for o in itertools.product(*[range(m) for m in outs]):
    total = np.zeros(x.shape[:2])
    for j in itertools.product(*[range(k) for k in kernel]):
      pos = [o[a] * strides[a] + j[a] - (kernel[a] - 1) // 2 for a in range(d)]
      if all(0 <= q < n for q, n in zip(pos, sizes)):
        w = math.prod(taps[a][j[a]] for a in range(d))
        total += w * x[(slice(None), slice(None)) + tuple(pos)]
    y[(slice(None), slice(None)) + o] = total
  return y


def fractional_max_pool_with_indices(x, window, output_size, samples):
  """PyTorch's fractional max pooling, one plane at a time: window starts from each
  plane's samples with PyTorch's float32 interval arithmetic (in 2-D ``samples[..., 0]``
  drives the width), then the first maximum (first NaN) of each window."""
  x = np.asarray(x)
  d = len(window)
  which = (1, 0) if d == 2 else tuple(range(d))
  vals = np.zeros(x.shape[:2] + tuple(output_size), x.dtype)
  idx = np.zeros(vals.shape, np.int64)
  for n, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
    starts = []
    for a in range(d):
      size, k, o = x.shape[2 + a], window[a], output_size[a]
      u = np.float32(samples[n, c, which[a]])
      seq = [size - k] * o
      if o > 1:
        alpha = np.float32(size - k) / np.float32(o - 1)
        for i in range(o - 1):
          seq[i] = int(np.float32(np.float32(i) + u) * alpha) - int(u * alpha)
      starts.append(seq)
    for o in itertools.product(*[range(m) for m in output_size]):
      ranges = [range(starts[a][o[a]], starts[a][o[a]] + window[a]) for a in range(d)]
      pos = list(itertools.product(*ranges))
      v = [x[(n, c) + p] for p in pos]
      b = _argbest(v, lambda p, q: p > q)
      vals[(n, c) + o], idx[(n, c) + o] = v[b], _flat(pos[b], x.shape[2:])
  return vals, idx
