"""The documentation's pictures, drawn at build time (``conf.py`` calls :func:`draw_all`).

Each picture shows what jaxpool computes: the windows and bins are read back from jaxpool
calls, not drawn from a second copy of the formulas.
"""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import jaxpool  # noqa: E402

CELL = "#dbe7f3"
PAD = "#f6e3c8"
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def _spans(op, length: int, **kwargs) -> list[tuple[int, int]]:
  """The first and last input position each output position reads, found by
  differentiating the op on an increasing and on a decreasing input (a max sends its
  derivative to the window's last, then first, position; an average to all of them)."""
  import jax

  spans = []
  for x in (jnp.linspace(1.0, 2.0, length), jnp.linspace(2.0, 1.0, length)):
    jac = np.asarray(jax.jacfwd(lambda x: op(x[:, None], **kwargs)[:, 0])(x))
    spans.append([np.flatnonzero(row) for row in jac])
  return [(int(min(a.min(), b.min())), int(max(a.max(), b.max()))) for a, b in zip(*spans)]


def _axis(ax, length: int, label: str, y: float = 0.0, pad_hi: int = 0) -> None:
  for j in range(length + pad_hi):
    ax.add_patch(plt.Rectangle((j, y), 0.95, 0.8, color=CELL if j < length else PAD))
    ax.text(j + 0.47, y + 0.4, str(j) if j < length else "–", ha="center", va="center",
            fontsize=9)
  ax.text(-0.4, y + 0.4, label, ha="right", va="center", fontsize=10)


def _bar(ax, start: float, stop: float, y: float, color: str, text: str,
         inside: bool = False) -> None:
  ax.add_patch(plt.Rectangle((start, y), stop - start - 0.05, 0.5, color=color, alpha=0.75))
  if inside:
    ax.text((start + stop) / 2, y + 0.25, text, ha="center", va="center", fontsize=8,
            color="white")
  else:
    ax.text(stop + 0.1, y + 0.25, text, va="center", fontsize=8, color=color)


def _finish(fig, ax, width: float, height: float, path: pathlib.Path) -> None:
  ax.set_xlim(-4.5, width)
  ax.set_ylim(-height, 1.2)
  ax.axis("off")
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)


def adaptive_bins(path: pathlib.Path, length: int = 10, out: int = 4) -> None:
  """PyTorch's adaptive bins on one axis: ``[floor(i L / o), ceil((i + 1) L / o))``."""
  fig, ax = plt.subplots(figsize=(7.5, 2.6))
  _axis(ax, length, f"input, L = {length}")
  for i, (lo, hi) in enumerate(_spans(jaxpool.adaptive_avg_pool, length, output_size=(out,))):
    _bar(ax, lo, hi + 1, -0.8 - 0.7 * i, COLORS[i % len(COLORS)],
         f"output {i}: positions {lo}..{hi} (mean of {hi - lo + 1})")
  ax.set_title(f"adaptive_avg_pool(x, ({out},)) on L = {length}: bins of unequal size "
               "that may overlap", fontsize=10)
  _finish(fig, ax, length + 6, 0.8 + 0.7 * out, path)


def ceil_mode(path: pathlib.Path, length: int = 8, window: int = 3, stride: int = 2) -> None:
  """floor vs ceil output length: ceil_mode adds a window hanging past the end."""
  fig, ax = plt.subplots(figsize=(7.5, 3.0))
  _axis(ax, length, f"input, L = {length}", pad_hi=1)
  y = -0.9
  for mode in (False, True):
    rows = _spans(jaxpool.max_pool, length, window_shape=(window,), strides=stride,
                  ceil_mode=mode)
    ax.text(-0.4, y - 0.05, f"ceil_mode={mode}", ha="right", va="center", fontsize=9)
    for i, (lo, hi) in enumerate(rows):
      overhang = lo + window > length
      _bar(ax, lo, lo + window, y - 0.35 * (i % 2), COLORS[i % len(COLORS)],
           f"reads {lo}..{hi}" + (" + pad" if overhang else ""), inside=True)
    y -= 1.2
  ax.set_title(f"max_pool(x, ({window},), strides={stride}): ceil_mode keeps the last, "
               "partial window", fontsize=10)
  _finish(fig, ax, length + 2, 2.7, path)


def unpool(path: pathlib.Path) -> None:
  """max_pool_with_indices on a 4x4 grid, then max_unpool back."""
  x = jnp.asarray([[1, 5, 2, 0], [3, 4, 8, 6], [7, 2, 1, 1], [0, 9, 3, 4]], jnp.float32)
  values, indices = jaxpool.max_pool_with_indices(x[..., None], (2, 2))
  up = jaxpool.max_unpool(values, indices, (2, 2))[..., 0]
  panels = [("input x", np.asarray(x), None), ("values", np.asarray(values[..., 0]), None),
            ("indices (h*W + w)", np.asarray(indices[..., 0]), None),
            ("max_unpool(values, indices)", np.asarray(up), np.asarray(up) != 0)]
  fig, axes = plt.subplots(1, 4, figsize=(10, 2.8))
  for ax, (title, grid, mark) in zip(axes, panels):
    ax.imshow(grid if mark is None else mark, cmap="Blues", vmin=0,
              vmax=grid.max() * 1.6 if mark is None else 1.6)
    for (r, c), v in np.ndenumerate(grid):
      ax.text(c, r, f"{v:g}", ha="center", va="center", fontsize=11)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle("2x2 max pool with indices, then unpool: each maximum goes back to "
               "where it came from", fontsize=10)
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)


def fractional(path: pathlib.Path, length: int = 10, out: int = 6, window: int = 2) -> None:
  """Fractional max pooling's windows on one axis for three samples ``u``."""
  fig, ax = plt.subplots(figsize=(7.5, 3.2))
  _axis(ax, length, f"input, L = {length}")
  y = -0.9
  for k, u in enumerate((0.1, 0.5, 0.9)):
    samples = jnp.full((1, 1, 1), u)
    spans = _spans(lambda x, samples: jaxpool.fractional_max_pool(
        x[None], (window,), (out,), samples=samples)[0], length, samples=samples)
    ax.text(-0.4, y - 0.1, f"u = {u}", ha="right", va="center", fontsize=9)
    for i, (lo, hi) in enumerate(spans):
      _bar(ax, lo, hi + 1, y - 0.3 * (i % 2), COLORS[k], "")
    y -= 1.1
  ax.set_title(f"fractional_max_pool(x, ({window},), ({out},)): the sample u moves "
               "the windows (PyTorch's interval rule)", fontsize=10)
  _finish(fig, ax, length + 1, 3.6, path)


def draw_all(directory: pathlib.Path) -> None:
  directory.mkdir(parents=True, exist_ok=True)
  for draw in (adaptive_bins, ceil_mode, unpool, fractional):
    draw(directory / f"{draw.__name__}.png")


if __name__ == "__main__":
  draw_all(pathlib.Path(__file__).resolve().parent / "_generated")
