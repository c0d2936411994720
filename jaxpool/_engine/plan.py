"""The planner: the one place that decides how a pooling op lowers.

Input: the op, its static :class:`~jaxpool._geometry.AxisTaps`, the dtype and the
backend. Output: a small frozen :class:`Plan`. The rest of the engine carries out the plan
it is handed and decides nothing; forward and backward read the same plan.

Per backend (:func:`plans`): CPU gets the plans tuned on XLA:CPU; TPU (and any other
backend) gets the canonical XLA lowering: one ``lax.reduce_window`` over the window
dims, JAX's own derivative wherever it routes to the first maximum, 16-bit inputs kept
16-bit. CUDA GPUs get the canonical plan except where a measurement there found a faster
one (:func:`_gpu_plan` lists them). A different plan for
a backend needs a measurement on that backend first. The measurement behind every
threshold and choice is in ``benchmarks/README.md`` ("Where the time goes" and "Plans
per backend").

Decisions here read static taps only: no arrays.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxpool._geometry import AxisTaps, adaptive_bounds

# Thresholds, each named once.
SMALL = 9          # window elements always served by tiled slices (3x3 and below)
STACKED_MAX = 8    # window offsets whose matches XLA:CPU fuses into one stacked reduce
JOINT_MAX = 32     # window elements matched all offsets at once; larger: one axis at a time
TILED_MAX = 128    # slices per tiled program (tiles x window elements): bounds compile time
SEPARABLE_MAX = 5  # per-axis window of unpadded stride-1 windows served by separable slices
UNROLL_MAX = 256   # per-axis window unrolled into slices inside a chain; larger: a gather
FLOORS_MAX = 4    # adaptive bin width read as floors (a broadcast and a slice per offset)
FLOORS_READS_MAX = 16  # bin elements (over the floors axes) of one output read as floors
BLOCK_ARGMAX_MAX = 4  # blocked window elements whose indices come from one variadic reduce
MATCH_MAX = 196   # window elements whose indices a select chain matches at once (not all)
MATCH_INNER_MIN = 3  # elements after the pooled axes for that chain over larger windows
CHAINED_MATCH_MAX = 64  # last window axis of blocks whose matches a select chain finds
BLOCKS_MAX = 100   # 2-D max/min window elements reduced as blocks (sums, 3+ axes: any)
BLOCKS_INNER_MIN = 384  # elements after the pooled axes for max/min blocks at any size
BLOCK_BACK_INNER_MAX = 64  # elements after the pooled axes for float32 dense block derivatives
CHECK_MAX = 32     # window positions compared per index by unpool's in-window check
SELECT_INNER_MIN = 16  # elements after the pooled axes for unpooling overlapping windows
ROWS_MIN = 16      # rows and columns of windows whose indices are found two-level by rows
ROWS_INNER_MIN = 3  # elements after the pooled axes for that
ROWS_BACK_MIN = 32  # rows and columns of windows whose max/min derivative is found so
# by compare-and-select (windows of at most SMALL elements, 1-D or strided)
PLANES_MAX = 16    # padded untiled window elements routed back by phase planes; more: scatter
TRANSPOSE_WINDOW_MAX = 13  # per-axis window of a reduce_window sum whose transpose stays fast
TRANSPOSE_INNER_MIN = 16   # elements after the pooled axes for that transpose
REAL_BINS_INNER_MIN = 16   # elements after padded max/min blocks read by their real bins
CHAIN_READS = 2    # chain scatter-add only where windows read each element this often or less
CHAIN_WINDOW_MAX = 8  # per-axis regular window routed back by the chain; wider: scatter-add
INT32_MAX = 2**31  # flat scatter positions must fit int32
FOLD_INNER_MIN = 8  # elements after a summed axis for folding it (one float32 vector)
SUM_SLICES_MAX = 100  # block elements summed as one slice each (fold); larger: folds per axis
SUM_FOLD_INNER_MAX = 32  # elements after larger blocks for folding their sum
SUM_FOLD_AXIS_MIN = 8   # per-axis block width of larger blocks for folding their sum
PERIOD_SLICES_MAX = 64  # slices (bins x offsets) of one period of adaptive bins; more: a gather
TAKES_MAX = 32     # adaptive bin width summed as one take per offset; wider: a gather
SELECT_TAKES_MAX = 4  # repeating adaptive bin width whose max/min values take each offset
F32_OFFSETS_INNER_MIN = 32  # elements after blocks for float32 first-match offsets
F32_OFFSETS_LARGE_MIN = 101  # block elements from which float32 offsets win again (12x12)
MINOR_LAST_INNER_MAX = 128  # elements after the pooled axes for a minor-last chain index

# The forms each field may name.
VALUES = ("tiles", "separable", "axes", "window", "blocks")
RESIDUALS = ("match_blocks", "match_blocks_f32", "match_chain", "match_stacked", "match_slices",
             "match_real", "first_max", "first_max_tiled", "block_rows", "input")
BACKWARDS = ("jax", "block", "planes", "axis_planes", "scatter", "chain", "chain_scatter")
INDICES = ("block", "block_match", "block_chain", "block_rows", "match", "first_max",
           "first_max_tiled", "chain")
UNPOOLS = ("scatter", "check_select", "select")
BINS = ("gather", "periods", "takes", "readers", "floors")
ADDRESSES = ("flat", "iota", "batched")
FOLDS = ("once", "fused")
ORDERS = ("minor_last",)
OPS = ("max", "min", "sum", "indices", "unpool")


@dataclasses.dataclass(frozen=True)
class Plan:
  """How one op lowers; fields that do not apply to the op are ``None``.

  Attributes:
    values: the regular window axes' values: ``"tiles"`` (strided slices of the input
      per border/interior tile), ``"separable"`` (slices, one axis at a time),
      ``"axes"`` (one ``reduce_window`` per axis), ``"window"`` (one
      ``reduce_window`` over every window dim) or ``"blocks"`` (non-overlapping
      windows: a reshape and one reduce over the window axes). Irregular (adaptive) axes always
      gather their bins afterwards.
    upcast: max/min of float16/bfloat16 computed in float32, values, offsets and
      cotangent routing alike (exact for the values; overlapping windows' cotangents
      are summed in float32 and rounded once).
    residual: what the max/min derivative keeps: window offsets of each first max
      (``"match_*"`` compare against the max, ``"first_max*"`` run a compare chain,
      ``_tiled`` per tile; ``"match_blocks_f32"`` reduces the blocks' offset ids as
      float32, exact below 2**24; ``"match_chain"`` matches the blocks' last window axis
      by a select chain and folds the earlier ones; ``"block_rows"``, windows tiling
      one or two axes, where differentiated: the values and offsets together two-level
      by rows, :func:`jaxpool._engine.select.block_rows_first`, with ``"block"``; where
      not, the planned values alone) or ``"input"`` (the chain recomputes them).
    backward: the derivative: ``"jax"`` (JAX's own rule for what ``values`` emits: no
      custom rule), ``"block"`` (a reshape's transpose), ``"planes"`` (stride-phase
      planes of pads and selects), ``"axis_planes"`` (a sum's phase planes one axis
      at a time: its windows and divisor are products over the axes), ``"scatter"``
      (one scatter-add at the flat indices), ``"chain"`` / ``"chain_scatter"`` (one
      axis at a time, or the chain's flat indices and a scatter-add).
    indices: max indices: ``"block"`` (one variadic reduce with the values),
      ``"block_match"`` (non-overlapping windows: the values, then the least relative
      index among the positions that match them, folded over the window axes),
      ``"block_chain"`` (the same, but the last window axis matched by a select chain
      over its positions, so that the compare is not written in full),
      ``"block_rows"`` (windows tiling one or two axes, where neither output is
      differentiated: the max of each window row, then the first row holding the max
      read again for the column, :func:`jaxpool._engine.select.block_rows_first`;
      differentiated, the same form with ``residual="block_rows"``, else the values
      and indices of :func:`differentiated`),
      ``"match"`` (the values, then the first real offset holding them, a select
      chain), ``"first_max"`` / ``"first_max_tiled"`` (compare chain) or ``"chain"``.
    unpool: ``"scatter"``, ``"check_select"`` (a check that every index lies in its
      window, then a compare-and-select instead of the scatter) or ``"select"`` (the
      compare-and-select alone, for indices promised to lie in their windows; over
      overlapping windows one compare per window covering a position).
    bins: how max/min values, offsets and the chain derivative (or a sum) read the
      bins of adaptive (irregular) axes: ``"gather"`` (one static gather; ``None`` is
      the same), ``"periods"`` (bins that repeat every few elements, as adaptive bins
      do every ``size / gcd(size, out)``: a reshape into equal groups and one slice per
      bin offset of a group, so that no gather and no scatter is emitted; see
      :func:`period`), ``"takes"`` (one static take per bin offset, combined; a
      sum's transpose takes the cotangent at each input's bins,
      :func:`jaxpool._engine.values.bin_sum`; a max/min chain reads the bins as
      ``"periods"`` where they repeat, else as ``"gather"``: :func:`routing`) or
      ``"readers"`` (as the gather, but for the derivative below) or ``"floors"``
      (adaptive bins by PyTorch's rule, :func:`floors`: one strided view of a broadcast
      per bin offset, :func:`jaxpool._engine.views.floor_take`, and the derivative takes
      the cotangent at each input's readers the same way). With ``"takes"``,
      the values also read padded non-overlapping regular windows as the bins of their
      real elements (:func:`reads_real_bins`, :func:`real_bins`). Under every form but
      the gather, a max/min chain's derivative routes the cotangent of an axis it
      gathers by static takes at each input's readers instead of the gather's
      transpose (a scatter-add).
    address: how scatters and gathers address the array: ``"flat"`` (one index into
      the flattened array), ``"iota"`` (iota coordinates for the other axes) or
      ``"batched"`` (the other axes as batching dimensions, for SPMD).
    fence: values XLA:CPU would otherwise recompute in each of their readers, or
      compute inside a serial scatter loop, computed into memory once
      (:func:`jaxpool._linear.computed_once`): a mapped sum's cotangent
      (:func:`jaxpool._linear.fence_cotangent`), instead of the expensive map that
      makes it being fused into every tap of the transpose; a chain's per-axis max and
      offsets, instead of each axis's max being recomputed by every compare of the next
      axis (not for a chain that routes the cotangent onto more outputs than inputs:
      there the fenced results outweigh the recompute); the flat indices a scatter
      reads (the ``scatter`` backward, unpool's ``scatter``), instead of the compare
      chain that makes them being recomputed inside the serial scatter loop; the
      offsets the phase planes or the block derivative read, where the windows read
      no padding and the residual is ``"match_slices"`` or ``"match_chain"`` (a select
      chain; stacked, XLA:CPU splits 9 or more offsets into one fusion per offset, each
      recomputing the max; unfenced, it fuses the chain into every element the block
      derivative writes); for axes read as
      floors (``bins="floors"``), each axis's max that the next axis reads and the
      cotangent between axes, not the offsets (fused deeper, XLA:CPU wrote a floor
      take's broadcast, the input times the output along the axis, to memory). A lone
      CPU device only: the fence reads one element of its key, which under SPMD
      partitioning would be a collective.
    unfold: a sum's cotangent multiplied by a one XLA cannot fold
      (:func:`jaxpool._linear.unfold_cotangent`), so that a constant cotangent (the
      gradient of ``sum(avg_pool(x))``) is not folded through the transpose's pads and
      window sums at compile time. For sums whose transpose is more than a broadcast,
      on a lone CPU device (as ``fence``, which does the same for a mapped sum).
    fold: float max/min reductions as folds, elementwise maxima of slices
      (:func:`jaxpool._engine.values.reduce_axes`), instead of one reduce or a
      non-overlapping ``reduce_window``: XLA:CPU hands those to YNNPACK, whose max/min
      drop NaN (the max of a window holding a NaN comes out finite). Every CPU plan of
      a float max/min computed in 32 or 64 bits (16-bit reduces do not go there):
      ``"once"`` (the folded result computed into memory once, as ``fence`` does, on a
      lone CPU device) or ``"fused"`` (several CPU devices); ``None``: the reduce.
      A CPU sum over blocks (``values="blocks"``) names ``"fused"``: the blocks summed
      by slices and adds, which XLA:CPU splits over its threads where it runs a reduce
      on one (:func:`jaxpool._engine.values.reduce_axes`; up to ``SUM_SLICES_MAX`` block
      elements one slice per element, larger blocks folded axis by axis).
    order: the order in which a chain's flat index (the ``chain_scatter`` backward,
      ``"chain"`` indices) reduces the axes: ``None``, the last pooled axis first (each
      axis keeps its first match, which composes into the row-major first max), or
      ``"minor_last"``, the last pooled axis last, each axis keeping the least carried
      flat index among the matches (the same first max). Where the last pooled axis is
      the array's minor one (channels_first), reducing it last strides over the
      already-pooled array instead of the input.
    segments: a chain's flat index reads each axis whose windows read padding per
      border and interior segment (:func:`axis_form` ``"tiles"``,
      :func:`jaxpool._engine.views.by_segments`) instead of slicing a padded copy of the
      input, which XLA:CPU writes in full where two fusions read it (the axis's max and
      its first match).
  """

  values: str | None = None
  upcast: bool = False
  residual: str | None = None
  backward: str | None = None
  indices: str | None = None
  unpool: str | None = None
  bins: str | None = None
  address: str | None = None
  fence: bool = False
  unfold: bool = False
  fold: str | None = None
  order: str | None = None
  segments: bool = False

  def __post_init__(self):
    for name, forms in (("values", VALUES), ("residual", RESIDUALS), ("backward", BACKWARDS),
                        ("indices", INDICES), ("unpool", UNPOOLS), ("bins", BINS),
                        ("address", ADDRESSES), ("fold", FOLDS),
                        ("order", ORDERS)):
      value = getattr(self, name)
      if value is not None and value not in forms:
        raise ValueError(f"Plan: {name} must be None or one of {forms}, got {value!r}.")


@dataclasses.dataclass(frozen=True)
class Target:
  """A backend as the planner sees it: ``platform`` is ``"cpu"``, ``"gpu"`` (CUDA) or
  ``"accelerator"`` (TPU and anything else: the canonical plan); ``lone`` says the
  process has a single device of it (no SPMD partitioner can see the program)."""

  platform: str
  lone: bool


# ----------------------------------------------------------------------------- geometry


def unpadded(t: AxisTaps) -> bool:
  """Every window lies inside the input (no padding read, no ceil_mode overhang)."""
  return t.pad_lo == 0 and (t.out - 1) * t.stride + t.span <= t.size


def blocked(taps: Sequence[AxisTaps]) -> bool:
  """Non-overlapping, undilated windows: the window grid is a reshape of the input."""
  return all(t.dilation == 1 and t.stride >= t.window for t in taps)


def joint(taps: Sequence[AxisTaps]) -> bool:
  """Small regular windows, matched all offsets at once."""
  return all(t.regular for t in taps) and math.prod(t.window for t in taps) <= JOINT_MAX


def reads_no_padding(t: AxisTaps) -> bool:
  p = t.positions()
  return bool((p >= 0).all() and (p < t.size).all())


def segments(t: AxisTaps) -> list[tuple[int, int, AxisTaps]]:
  """Split one axis's outputs into a padded head, an interior and a padded tail.

  Each segment is ``(lo, hi, taps)``: the input range ``[lo, hi)`` its windows read and
  the taps of the segment as a pooling of that range. The interior's windows lie wholly
  inside the input, so its taps have no padding at all. The last segment's range runs
  to the input's end even where its windows stop short of it (a crop there is a copy
  on XLA:CPU, benchmarks/README.md, "Strided sums").
  """
  s, p, span = t.stride, t.pad_lo, t.span
  a = min(-(-p // s), t.out)                                   # first unpadded output
  b = min(t.out, (t.size - span + p) // s + 1) if t.size - span + p >= 0 else a
  b = max(a, b)
  parts = []
  for o0, o1 in ((0, a), (a, b), (b, t.out)):
    if o1 > o0:
      lo = min(max(0, o0 * s - p), t.size)
      hi = t.size if o1 == t.out else max(lo, min(t.size, (o1 - 1) * s - p + span))
      parts.append((lo, hi, AxisTaps(hi - lo, o1 - o0, t.window, s, t.dilation,
                                     max(0, p - o0 * s))))
  return parts


def reads_real_bins(t: AxisTaps) -> bool:
  """Padded non-overlapping undilated windows up to ``TAKES_MAX`` wide: their values
  read the bins of their real elements (:func:`real_bins`) where the plan's ``bins`` is
  ``"takes"``."""
  return (t.regular and t.dilation == 1 and t.stride >= t.window and not unpadded(t)
          and t.window <= TAKES_MAX)


def real_bins(t: AxisTaps) -> AxisTaps:
  """Irregular taps over the input elements each undilated window of ``t`` reads, its
  padding dropped: their sum or max is the window's (padding adds nothing to a sum and
  never wins a max)."""
  real = t.real()
  starts = t.positions()[np.arange(t.out), real.argmax(axis=1)]
  widths = real.sum(axis=1)
  return AxisTaps(t.size, t.out, int(widths.max()), starts=tuple(map(int, starts)),
                  widths=tuple(map(int, widths)))


def tile_count(taps: Sequence[AxisTaps]) -> int:
  return math.prod(len(segments(t)) for t in taps)


def tiles_fit(taps: Sequence[AxisTaps]) -> bool:
  """The tiled program stays within its compile-time budget."""
  return math.prod(t.window for t in taps) * tile_count(taps) <= TILED_MAX


# ----------------------------------------------------------------------------- CPU forms


def values_form(taps: Sequence[AxisTaps], kind: str, inner: int = 0) -> str:
  """XLA:CPU's values form for regular, non-identity taps; ``inner`` is the element
  count after the last pooled axis (the channels of channels_last input, 1 for
  channels_first; 0: not known).

  Small windows (and strided ones up to ``JOINT_MAX``) as tiled slices of the input (a
  padded read branches per element there); unpadded stride-1 windows up to
  ``SEPARABLE_MAX`` as separable slices; larger non-overlapping windows (adaptive bins
  that divide evenly, whole-axis windows) as a reshape and one reduce (XLA:CPU's
  ``reduce_window`` is slow there). For max/min over one or two axes, beyond
  ``BLOCKS_MAX`` elements the faster form depends on ``inner``: blocks where it is at
  least ``BLOCKS_INNER_MIN``, or where the windows are whole trailing axes (one
  contiguous run per window); the rest one ``reduce_window`` per axis.
  """
  size = math.prod(t.window for t in taps)
  small = size <= SMALL or (size <= JOINT_MAX and any(t.stride > 1 for t in taps))
  if small and tiles_fit(taps):
    return "tiles"
  if all(t.window <= SEPARABLE_MAX and t.stride == 1 and unpadded(t) for t in taps):
    return "separable"
  if blocked(taps) and (kind == "sum" or size <= BLOCKS_MAX or len(taps) >= 3
                        or inner >= BLOCKS_INNER_MIN or (inner == 1 and all(map(whole, taps)))):
    return "blocks"
  return "axes"


def tiling(t: AxisTaps) -> bool:
  """Windows that tile the axis exactly: its blocks are a reshape, with no copy."""
  return t.stride == t.window and t.out * t.window == t.size and t.pad_lo == 0


def whole(t: AxisTaps) -> bool:
  """One unpadded window over the whole axis."""
  return t.window == t.size and unpadded(t)


def axis_form(t: AxisTaps, bins: str | None = None, segmented: bool = False) -> str:
  """How one axis of a chain views its windows: a reshape (non-overlapping), one slice
  per offset (up to ``UNROLL_MAX``: on XLA:CPU the slices beat the gather 2-14x at every
  width measured, benchmarks/README.md, "The max derivative off the sweep's shapes"),
  with ``segmented`` the slices per border and interior segment where the windows read
  padding (``"tiles"``, within ``TILED_MAX`` slices: on XLA:CPU a padded copy of the
  input cost up to 3x the slices, benchmarks/README.md, "Padded chain axes by
  segments"),
  one slice per bin offset of a period of adaptive bins (``bins="periods"`` and
  :func:`period` finds one), one strided view of a broadcast per bin offset
  (``bins="floors"`` and :func:`floors`), one static take per bin offset
  (``bins="takes"``: adaptive bins up to ``TAKES_MAX`` wide), or a static gather."""
  if t.regular and t.dilation == 1 and t.stride >= t.window:
    return "reshape"
  if t.regular and t.window <= UNROLL_MAX:
    parts = len(segments(t)) if segmented else 1
    return "tiles" if 1 < parts and parts * t.window <= TILED_MAX else "slices"
  if bins == "floors" and floors(t):
    return "floors"
  if bins == "takes" and _takes(t):
    return "takes"
  if bins == "periods" and period(t) is not None:
    return "periods"
  return "gather"


def routing(bins: str | None) -> str | None:
  """The view a max/min chain (offsets, indices, the cotangent's route) reads adaptive
  bins in, for the plan's ``bins``: the takes serve values only, the chain reads their
  periods where they repeat (else the gather)."""
  return "periods" if bins == "takes" else bins


def floors(t: AxisTaps) -> bool:
  """Adaptive bins by PyTorch's rule, bin ``o`` of ``size`` into ``out`` reading
  ``[o * size // out, ceil((o + 1) * size / out))``: each offset's positions, and each
  input's readers, are floors of an affine map of the output (input) position, which a
  broadcast and a strided slice read (:func:`~jaxpool._engine.views.floor_take`)."""
  if t.regular or t.window > FLOORS_MAX:
    return False
  starts, ends = adaptive_bounds(t.size, t.out)
  return bool((np.asarray(t.starts) == starts).all()
              and (np.asarray(t.widths) == ends - starts).all())


def _takes(t: AxisTaps) -> bool:
  """Adaptive bins narrow enough to take per offset (program size grows with the bin
  width)."""
  return not t.regular and t.window <= TAKES_MAX


def period(t: AxisTaps) -> tuple[int, int] | None:
  """``(elements, bins)`` per period of irregular taps whose bins repeat: bin ``i + bins``
  is bin ``i`` moved by ``elements``, and no bin crosses a period's end. Adaptive bins
  of ``size`` into ``out`` repeat every ``size / gcd(size, out)`` elements. ``None``
  when they do not, or when one period takes more than ``PERIOD_SLICES_MAX`` slices."""
  if t.regular:
    return None
  groups = math.gcd(t.size, t.out)
  elements, bins = t.size // groups, t.out // groups
  starts, widths = np.asarray(t.starts), np.asarray(t.widths)
  i = np.arange(t.out)
  repeats = ((starts == (i // bins) * elements + starts[i % bins]).all()
             and (widths == widths[i % bins]).all()
             and (starts[:bins] + widths[:bins] <= elements).all())
  if not repeats or int(widths[:bins].sum()) > PERIOD_SLICES_MAX:
    return None
  return elements, bins


def offsets_form(taps: Sequence[AxisTaps]) -> str:
  """The derivative's first-max offsets on XLA:CPU, for :func:`joint` taps.

  Padded windows per tile (computed once instead of fused into every backward term);
  unpadded ones by a reduce over the stacked offsets (materialized once; a select chain
  is recomputed by every term); padded untiled ones by a select chain without padding
  masks (the masks stop XLA:CPU fusing the backward).
  """
  if blocked(taps):
    return "match_blocks"
  if tile_count(taps) > 1 and tiles_fit(taps):
    return "first_max_tiled"
  if all(unpadded(t) for t in taps):
    return "match_stacked"
  return "match_slices"


def _scatters_back(taps: Sequence[AxisTaps]) -> bool:
  """Overlapping or gapped unpadded windows where XLA:CPU's scatter-add (one update per
  output, a serial loop) beats the phase planes: strided windows over 2+ axes
  (AlexNet's and Inception's 3x3/2) and 1-D ones over ``SMALL`` elements. Stride-1
  windows (an update per input element: 2x2/1 took 5-9x the planes) and small strided
  1-D windows take the planes, as padded windows do (benchmarks/README.md, "The max
  derivative off the sweep's shapes")."""
  if blocked(taps) or not all(unpadded(t) for t in taps):
    return False
  pooled = [t for t in taps if not t.identity]
  if all(t.stride == 1 for t in pooled):
    return False
  return len(pooled) > 1 or pooled[0].window > SMALL


def _padded_scatters(taps: Sequence[AxisTaps]) -> bool:
  """Padded overlapping windows past the tiles' budget and over ``PLANES_MAX`` elements:
  one phase-plane term per element costs more than one scatter-add there (measured in
  ``benchmarks/README.md``, "Sweep fixes")."""
  return (not blocked(taps) and not tiles_fit(taps)
          and math.prod(t.window for t in taps) > PLANES_MAX)


def _chain_scatters(taps: Sequence[AxisTaps]) -> bool:
  """Where the chain's indices plus one scatter-add beat routing the cotangent axis by
  axis: windows that read each element at most ``CHAIN_READS`` times on average (padded
  ones over 2+ axes); adaptive bins with no more outputs than inputs (the scatter's
  updates); unpadded regular windows wider than ``CHAIN_WINDOW_MAX`` on an axis (the
  chain's work on an axis grows with its window, the scatter's does not); padded windows
  at stride 1 (``"same"`` pooling, SPP), where the chain routes every element through
  the whole window. Denser small windows, upsampling bins, denser padded strided
  windows and padded 1-D windows keep the chain (benchmarks/README.md, "The max
  derivative off the sweep's shapes", "Padded chain axes by segments")."""
  reads = math.prod(t.out * t.window for t in taps)
  few = reads <= CHAIN_READS * math.prod(t.size for t in taps)
  if not all(map(reads_no_padding, taps)):
    same = all(t.regular and t.stride == 1 and t.dilation == 1 for t in taps)
    return same or (few and sum(not t.identity for t in taps) >= 2)
  if few:
    return True
  if not all(t.regular for t in taps):
    return not _upsamples(taps)
  return max(t.window for t in taps) > CHAIN_WINDOW_MAX


def _upsamples(taps: Sequence[AxisTaps]) -> bool:
  """Adaptive bins onto more outputs than inputs."""
  return (not all(t.regular for t in taps)
          and math.prod(t.out for t in taps) > math.prod(t.size for t in taps))


def _chain_rereads(taps: Sequence[AxisTaps]) -> bool:
  """A chain axis whose windows share elements (not a reshape): fused, XLA:CPU would
  recompute the previous axis's max in each of that axis's compares."""
  return any(axis_form(t) != "reshape" for t in taps if not t.identity)


def _is_16bit_float(dtype) -> bool:
  dtype = np.dtype(dtype)
  return jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize < 4


def _is_64bit_float(dtype) -> bool:
  dtype = np.dtype(dtype)
  return jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize == 8


def _address(target: Target, size: int) -> str:
  if target.platform == "cpu" and target.lone and size < INT32_MAX:
    return "flat"  # XLA:CPU's serial scatter loop is fastest with one index per update
  return "iota" if target.lone else "batched"


# ----------------------------------------------------------------------------- plans


def plan(op: str, taps: Sequence[AxisTaps], dtype, target: Target, *, size: int = 0,
         in_window: bool = False, mapped: bool = False, inner: int = 0) -> Plan:
  """The plan of ``op`` (``"max"``, ``"min"``, ``"sum"``, ``"indices"`` or ``"unpool"``)
  on ``target``. ``size`` is the element count of the array a scatter writes (the
  input for the max backward, the output for unpool); ``in_window`` is unpool's
  promise that every index lies in its own window; ``mapped`` says a sum's result goes
  through an expensive elementwise map (``lp_pool``'s root) before anything reads it;
  ``inner`` is the element count after the last pooled axis (0: not known)."""
  if op not in OPS:
    raise ValueError(f"plan: op must be one of {OPS}, got {op!r}.")
  taps = tuple(taps)
  if op == "unpool":
    return _unpool_plan(taps, dtype, target, size, in_window, inner)
  if target.platform == "cpu":
    return _cpu_plan(op, taps, dtype, target, size, mapped, inner)
  if target.platform == "gpu":
    return _gpu_plan(op, taps, dtype, inner, mapped)
  return _canonical_plan(op, taps, dtype)


def _regular(taps):
  return [t for t in taps if t.regular and not t.identity]


def _cpu_plan(op, taps, dtype, target, size, mapped, inner=0) -> Plan:
  p = _cpu_forms(op, taps, dtype, target, size, mapped, inner)
  # a chain's flat index reduces the last pooled axis last where that axis is the minor
  # one (channels_first), and where the windows read no padding and at most
  # MINOR_LAST_INNER_MAX elements follow the pooled axes (benchmarks/README.md, "Chain
  # order", "Chain order and padded blocks"); over bins read as floors, only where the
  # last pooled axis is the minor one (0.42-0.55x without elsewhere, channels_first
  # 3.7x; "Adaptive bins read as floors")
  pooled = sum(not t.identity for t in taps)
  chained = p.backward == "chain_scatter" or p.indices == "chain"
  if chained and any(axis_form(t, routing(p.bins), True) == "tiles" for t in taps):
    p = dataclasses.replace(p, segments=True)
  if chained and pooled >= 2 and (inner == 1 or (
      0 < inner <= MINOR_LAST_INNER_MAX and p.bins != "floors"
      and all(map(reads_no_padding, taps)))):
    return dataclasses.replace(p, order="minor_last")
  # blocks over 2+ axes with many elements after them: their first-match offsets by a
  # float32 min, which XLA:CPU reduces faster than int32 there, except for windows of
  # 10-100 elements (4x4, 8x8), over one axis or a short minor run (benchmarks/README.md,
  # "Unpool's in-window check, and blocks' offsets as float32"); padded blocks at every
  # window size (benchmarks/README.md, "Chain order and padded blocks")
  size = math.prod(t.window for t in taps)
  padded = not all(map(unpadded, taps))
  if (p.residual == "match_blocks" and pooled >= 2 and inner >= F32_OFFSETS_INNER_MIN
      and (padded or not SMALL < size < F32_OFFSETS_LARGE_MIN)):
    return dataclasses.replace(p, residual="match_blocks_f32")
  return p


def _cpu_forms(op, taps, dtype, target, size, mapped, inner=0) -> Plan:
  regular = _regular(taps)
  # an identity tap (a window of 1) among the pooled axes: the windows' shape is not known
  values = values_form(regular, "sum" if op == "sum" else "max",
                       inner if len(regular) == len(taps) else 0) if regular else None
  sixteen = op != "sum" and _is_16bit_float(dtype)
  # unpadded blocks over two axes that do not tile the input (a gap, or a crop of its
  # end) are a copy before the reshape: slices one axis at a time read the input itself
  # (forward 0.28-0.80x, forward+backward 0.43-0.91x). Not 16-bit max/min (native
  # blocks: 1.26x forward+backward), lp_pool's mapped sum (1.1-1.27x) or gapped sums
  # (1.3-2.6x forward+backward); 1-D and 3-D blocks kept theirs (1.02-1.5x;
  # benchmarks/README.md, "Blocks that do not tile the input")
  if (values == "blocks" and len(regular) == len(taps) == 2 and not all(map(tiling, taps))
      and all(map(unpadded, taps)) and not sixteen and not mapped
      and (op != "sum" or all(t.stride == t.window for t in taps))):
    values = "separable"
  # 16-bit arithmetic is emulated op by op, but reductions and selects of dense blocks
  # (not their tiled slices) run faster in 16 bits than through float32 copies
  native = sixteen and op != "indices" and _dense_blocks(taps) and values in ("blocks", "axes")
  upcast = sixteen and not native
  address = _address(target, size)
  if op == "sum":
    # fence: XLA:CPU recomputes the map that makes the cotangent in every tap of the
    # transpose. unfold: XLA folds a constant cotangent through the transpose at compile
    # time (the fence's conditional prevents that too)
    # adaptive bins as static takes per offset, their transpose takes of the cotangent
    # (benchmarks/README.md, "Adaptive bin sums as takes")
    # padded blocks of more than SMALL elements over 2+ axes: the bins of their real
    # elements (a padded copy cost 4-11x; smaller windows keep their tiles, which won
    # forward+backward; benchmarks/README.md, "Strided sums")
    real = (len(regular) >= 2 and math.prod(t.window for t in regular) > SMALL
            and any(map(reads_real_bins, taps)))
    bins = "takes" if real or any(map(_takes, taps)) else None
    known = inner if len(regular) == len(taps) else 0
    backward = _sum_backward(taps, values, known)
    return Plan(values=values, backward=backward, bins=bins,
                fence=mapped and target.lone,
                unfold=target.lone and not mapped and not _dense_blocks(taps),
                fold="fused" if _sliced_sum(regular, values, backward, bins, dtype, mapped,
                                            known) else None)
  residual, backward = _cpu_select_derivative(taps, address, sixteen, inner)
  periodic = any(period(t) is not None for t in taps)
  # narrow repeating bins: values by takes, the chain by periods (benchmarks/README.md,
  # "Adaptive bin sums as takes")
  irregular = [t for t in taps if not t.regular]
  narrow = irregular and all(period(t) is not None and t.window <= SELECT_TAKES_MAX
                             for t in irregular)
  # adaptive bins up to FLOORS_MAX wide and FLOORS_READS_MAX elements per output: read as
  # floors (no gather), the cotangent routed by the chain at each input's readers (no
  # scatter-add): forward+backward 0.12-0.89x, forward 0.27-0.63x where the bins were
  # gathered, 0.75-1.19x where they repeat (benchmarks/README.md, "Adaptive bins read as
  # floors"). A lone device only: the fences keep XLA:CPU from writing a floor take's
  # broadcast to memory; wider bins wrote it or lost (64 -> 5: 1.9x)
  floored = (target.lone and irregular and all(map(floors, irregular))
             and math.prod(t.window for t in irregular) <= FLOORS_READS_MAX)
  if floored:
    residual, backward = "input", "chain"
  select = Plan(values=values, upcast=upcast, residual=residual, backward=backward,
                bins=("floors" if floored else "takes" if narrow else "periods" if periodic
                      else "readers" if irregular else None),
                address=address if backward in ("scatter", "chain_scatter") else None,
                fold=(("once" if target.lone else "fused")
                      if jnp.issubdtype(dtype, jnp.inexact) and (upcast or not sixteen)
                      else None),
                fence=target.lone and (floored or residual == "input" and _chain_rereads(taps)
                                       and not (backward == "chain" and _upsamples(taps))
                                       or backward == "scatter"
                                       or residual == "match_slices"
                                       and all(map(unpadded, taps))
                                       or residual == "match_chain"))
  # windows tiling one or two axes in 32+ rows of 32+ columns, differentiated: the values
  # and their first extremes found together two-level by rows, then the blocks'
  # routing (forward+backward 0.46-0.8x over whole axes 56x56 and 112x112, 32x32
  # blocks, 1-D windows of 1024-4096, 3-256 channels; 16-28 rows 0.72-1.28x, 16-bit max
  # 0.9-1.5x against its native blocks; benchmarks/README.md, "Derivatives by rows")
  by_rows = (jnp.issubdtype(dtype, jnp.inexact)
             and _by_rows(taps, target, inner, least=ROWS_BACK_MIN))
  if op != "indices":
    if by_rows and not sixteen:
      return dataclasses.replace(select, residual="block_rows", backward="block",
                                 fence=False)
    # padded blocks over JOINT_MAX elements over 2+ axes with REAL_BINS_INNER_MIN or more
    # elements after them: values by the bins of their real elements (forward
    # 0.17-0.41x, forward+backward 0.59-0.84x; smaller windows and 3 channels lost
    # forward+backward, benchmarks/README.md, "Strided sums"; for indices, "Tried in
    # session 19, not taken")
    if (len(regular) >= 2 and math.prod(t.window for t in regular) > JOINT_MAX
        and inner >= REAL_BINS_INNER_MIN and any(map(reads_real_bins, taps))):
      return dataclasses.replace(select, bins="takes")
    return select
  if _dense_blocks(taps):
    # a select chain over the offsets (or the last window axis's positions) reads the
    # input once; the compare-and-fold wrote the compare in full (4x4/4 .. 16x16/16,
    # whole axis 56x56: 0.56-0.67x; 16-bit input lost 1.01-1.35x; benchmarks/README.md,
    # "Indices of blocks")
    elements = math.prod(t.window for t in taps)
    if elements <= BLOCK_ARGMAX_MAX:
      return Plan(upcast=upcast, indices="block")
    # where not differentiated, windows of 16+ rows of 16+ columns two-level by rows:
    # forward 0.16-0.79x over whole axes, 32x32 and 16x16 blocks and 1-D windows of
    # 256-4096 with 3-256 channels after them, every dtype (28x28, and 16x16 with 256
    # channels, 0.93-0.99x); fewer rows (14x14 with 512 channels 1.08-1.48x, 7x7 with
    # 2048 1.39-1.64x) and channels_first (1.22-1.93x) lost (benchmarks/README.md,
    # "Indices by rows")
    indices = ("block_rows" if _by_rows(taps, target, inner)
               else _block_indices(taps, sixteen))
    if by_rows:  # 16-bit input too, through the float32 upcast (0.61-0.96x)
      return dataclasses.replace(select, indices=indices, residual="block_rows",
                                 backward="block", fence=False)
    return dataclasses.replace(select, indices=indices)
  if not joint(taps):
    # windows up to MATCH_MAX elements, unpadded or undilated non-overlapping ones, with
    # MATCH_INNER_MIN elements after them: matching the planned values beats the chain
    # (0.44-0.79x; padded overlapping or dilated windows and channels_first lost
    # 1.03-1.37x; benchmarks/README.md, "Indices of larger windows")
    matched = (all(t.regular for t in taps)
               and math.prod(t.window for t in taps) <= MATCH_MAX
               and inner >= MATCH_INNER_MIN
               and (all(map(unpadded, taps)) or all(
                   t.dilation == 1 and (t.stride >= t.window or t.out == 1) for t in taps)))
    indices = "match" if matched else "chain"
  elif not blocked(taps) and tile_count(taps) > 1 and tiles_fit(taps):
    indices = "first_max_tiled"
  else:
    # untiled: matching the planned values beats the compare chain; tiled windows keep
    # the chain per tile (benchmarks/README.md, "Sweep fixes")
    indices = "match"
  return dataclasses.replace(select, indices=indices)


def _block_indices(taps, sixteen: bool) -> str:
  """Indices of unpadded non-overlapping windows over more than ``BLOCK_ARGMAX_MAX``
  elements, from their planned values."""
  if sixteen or taps[-1].window > CHAINED_MATCH_MAX:
    return "block_match"
  return "match" if math.prod(t.window for t in taps) <= MATCH_MAX else "block_chain"


def rows_split(window: int) -> int:
  """The rows a 1-D window of ``window`` elements is read as by ``indices="block_rows"``:
  the divisor of ``window`` nearest its square root from below (1 for a prime).

  >>> rows_split(1024), rows_split(3136), rows_split(100), rows_split(97)
  (32, 56, 10, 1)
  """
  return next(a for a in range(math.isqrt(window), 0, -1) if window % a == 0)


def _by_rows(taps, target: Target, inner: int, least: int = ROWS_MIN) -> bool:
  """Windows that tile one or two axes in at least ``least`` rows of ``least`` columns
  (a 1-D window split into rows by :func:`rows_split`) with ``ROWS_INNER_MIN`` or more
  elements after them, on a lone CPU device (the form's fences): two-level by rows
  (indices ``"block_rows"`` from ``ROWS_MIN`` rows, residual ``"block_rows"`` from
  ``ROWS_BACK_MIN``)."""
  if not (target.lone and len(taps) in (1, 2) and all(map(tiling, taps))
          and inner >= ROWS_INNER_MIN):
    return False
  if len(taps) == 1:
    return rows_split(taps[0].window) >= least
  return min(t.window for t in taps) >= least


def differentiated(p: Plan, taps: Sequence[AxisTaps], dtype=np.float32) -> Plan:
  """The plan that serves ``p`` where its op is differentiated, for forms computed only
  where it is not (``indices="block_rows"`` without ``residual="block_rows"``); ``p``
  itself otherwise."""
  if p.indices != "block_rows" or p.residual == "block_rows":
    return p
  return dataclasses.replace(p, indices=_block_indices(tuple(taps), _is_16bit_float(dtype)))


def _sliced_sum(regular, values, backward, bins, dtype, mapped: bool, inner: int) -> bool:
  """Blocks whose XLA:CPU sum (a reduce, which it runs on one thread) loses to slices
  and adds (loops it runs on all of them): up to ``SUM_SLICES_MAX`` block elements, or
  larger blocks at least ``SUM_FOLD_AXIS_MIN`` wide on each axis with 2 to
  ``SUM_FOLD_INNER_MAX`` elements after them (folded axis by axis; with more after them
  folds lost forward+backward, over the minor axis or 6x6x6 blocks forward). Not a
  widened 16-bit input (XLA:CPU then writes the float32 copy in full) or ``lp_pool``'s
  mapped sum (benchmarks/README.md, "Block sums by slices"). Only where the derivative
  is the blocks' broadcast (``backward="jax"``): padded blocks route theirs by phase
  planes, whose rule reads the values as one reduce."""
  if (values != "blocks" or backward != "jax" or bins is not None or mapped
      or _is_16bit_float(dtype)):
    return False
  return (math.prod(t.window for t in regular) <= SUM_SLICES_MAX
          or (1 < inner <= SUM_FOLD_INNER_MAX
              and min(t.window for t in regular) >= SUM_FOLD_AXIS_MIN))


def _sum_backward(taps, values: str | None = None, inner: int = 0) -> str:
  """A sum's derivative: the phase planes for regular windows (a sum of pads of the
  cotangent), except strided unpadded ones (``"jax"``: the transpose of the values form,
  which XLA fuses into one pass there).

  With the CPU ``values`` form given (and ``inner``, the elements after the pooled
  axes; 0: not known), the transpose of strided unpadded windows only where it measured
  faster: windows of at most ``SMALL`` elements; blocks (a broadcast); one
  ``reduce_window`` per axis over windows up to ``TRANSPOSE_WINDOW_MAX`` per axis with
  at least ``TRANSPOSE_INNER_MIN`` elements after them. Elsewhere the phase planes, one
  axis at a time (``"axis_planes"``) for overlapping or gapped windows over 2+ axes of
  more than ``PLANES_MAX`` elements (blocks have one tap per phase). The transpose of
  larger tiled slices (one pad per slice) took 3-14x the planes, that of a 1-D
  ``reduce_window`` up to 30x, that of wider ``reduce_window`` axes up to 16x (avg
  20x20/10), 1.4-2.8x over channels_first or 3-channel input; joint planes of large
  windows split into many small pieces (avg 16x16/6: 5.6x the planes one axis at a
  time; benchmarks/README.md, "Strided sums")."""
  if not all(t.regular for t in taps):
    return "jax"
  pooled = [t for t in taps if not t.identity]
  strided = all(t.stride > 1 and unpadded(t) for t in pooled)
  if values is None:
    return "jax" if strided else "planes"
  size = math.prod(t.window for t in pooled)
  if strided and (size <= SMALL or values == "blocks"):
    return "jax"
  if (strided and values == "axes" and len(pooled) >= 2 and inner >= TRANSPOSE_INNER_MIN
      and max(t.window for t in pooled) <= TRANSPOSE_WINDOW_MAX):
    return "jax"
  many = len(pooled) >= 2 and size > PLANES_MAX and not blocked(pooled)
  return "axis_planes" if many else "planes"


def _dense_blocks(taps) -> bool:
  """Regular non-overlapping windows that read no padding: the windows are a reshape."""
  return all(t.regular for t in taps) and blocked(taps) and all(map(unpadded, taps))


def _cpu_select_derivative(taps, address, sixteen=False, inner=0) -> tuple[str, str]:
  """The max/min derivative on CPU. Non-overlapping windows select each cotangent into
  its window's first max on the reshape view (``block``): joint ones always; larger
  unpadded ones for 16-bit input, or with at most ``BLOCK_BACK_INNER_MAX`` elements
  after the pooled axes (with more, the chain's indices and a scatter-add measured
  faster); larger padded ones (``ceil_mode`` overhang included) on a lone device (the
  chain took up to 1.9x there: benchmarks/README.md, "Chain order and padded blocks").
  Unpadded ones may find their offsets by a select chain (:func:`_chained_offsets`)."""
  chained = _chained_offsets(taps, address, sixteen, inner)
  if chained:
    return chained, "block"
  if joint(taps):
    if blocked(taps):
      return "match_blocks", "block"
    if _scatters_back(taps) and address == "flat":
      return "first_max", "scatter"
    if _padded_scatters(taps) and address == "flat":
      return "match_real", "scatter"
    residual = offsets_form(taps)
    size = math.prod(t.window for t in taps)
    if residual == "match_stacked" and size > SMALL and all(t.stride == 1 for t in taps):
      residual = "first_max"  # 5x5/1: the stacked offsets' reduce took 6x the chain
    elif residual == "match_stacked" and size > STACKED_MAX and address != "batched":
      # 3x3/1: a select chain computed once (fenced on a lone device) took 0.18-0.44x
      # the split stack (benchmarks/README.md, "Offsets computed once")
      residual = "match_slices"
    return residual, "planes"
  if _dense_blocks(taps) and (sixteen or 0 < inner <= BLOCK_BACK_INNER_MAX):
    return "match_blocks", "block"
  if (address == "flat" and all(t.regular for t in taps) and blocked(taps)
      and not all(map(unpadded, taps))):
    return "match_blocks", "block"  # measured on a lone CPU device only
  if _chain_scatters(taps) and address == "flat":
    return "input", "chain_scatter"
  return "input", "chain"


def _chained_offsets(taps, address, sixteen, inner) -> str | None:
  """The residual of unpadded non-overlapping windows over 2+ axes found by a select
  chain, computed once, on a lone device (``address="flat"``), float32/64, with more
  than one element after the pooled axes: over every offset (``"match_slices"``, up to
  ``MATCH_MAX`` elements) or over the last window axis (``"match_chain"``, up to
  ``CHAINED_MATCH_MAX`` positions); ``None`` elsewhere. XLA:CPU's reduce over the
  window axes took up to 5x the chain (benchmarks/README.md, "The offsets of blocks by
  a select chain"; channels_first and 16-bit input were mixed there)."""
  if not (_dense_blocks(taps) and address == "flat" and not sixteen and inner > 1
          and sum(not t.identity for t in taps) >= 2):
    return None
  if math.prod(t.window for t in taps) <= MATCH_MAX:
    return "match_slices"
  return "match_chain" if taps[-1].window <= CHAINED_MATCH_MAX else None


def _canonical_plan(op, taps, dtype) -> Plan:
  """GPU and TPU: the canonical XLA lowering, until a measurement there says otherwise."""
  values = "window" if _regular(taps) else None
  if op == "sum":
    return Plan(values=values, backward="jax")
  regular = all(t.regular for t in taps)
  if regular and all(t.dilation == 1 for t in taps):
    residual, backward = None, "jax"  # JAX's reduce_window rule: to the first max
  elif joint(taps):
    residual, backward = "first_max", "planes"  # JAX's rule raises on dilated windows
  else:
    residual, backward = "input", "chain"  # jnp.max over a gather splits ties
  if op != "indices":
    return Plan(values=values, residual=residual, backward=backward)
  return Plan(values=values, residual=residual, backward=backward,
              indices="first_max" if joint(taps) else "chain")


def _gpu_plan(op, taps, dtype, inner=0, mapped=False) -> Plan:
  """CUDA: the canonical plan, except where a measurement there said otherwise
  (benchmarks/README.md, "Plans per backend"):

  - non-overlapping windows over ``SMALL`` elements (whole axes, adaptive bins that
    divide evenly) reduce as blocks: a reshape and one reduce, whose derivative is a
    broadcast (the sum) or the blocks' first match (max/min); ``reduce_window``'s
    transpose reads every cotangent once per window element there. Their indices
    match the blocks' values (``"block_match"``) instead of a compare chain;
  - sums over overlapping regular windows take the CPU plan's values and derivative
    forms (tiled or separable slices, one axis at a time, the phase planes): the
    transpose of a ``reduce_window`` sum is a padded, dilated ``reduce_window`` of the
    cotangent, slow there for large or strided windows (adaptive avg 56 -> 5, 12x12
    windows at stride 11). The derivative form is the CPU rule's, given the values form
    and the elements after the pooled axes: on an H200, channels_first 56 -> 5 routed
    back by the planes one axis at a time beat the ``reduce_window`` transpose, and
    padded 5x5 windows beat the joint planes so ("CUDA sums' derivative: the CPU rule").
    Not ``mapped`` ones (``lp_pool``: slower so), nor windows of at most ``SMALL``
    elements over one axis (avg 3/2 p1: no gain on an H100, 1.04-1.45x on an H200);
  - the max/min derivative of windows of at most ``SMALL`` elements routes the
    cotangent through the reshape's transpose or the phase planes, which beat
    ``select_and_scatter`` there (larger windows do not);
  - 64-bit floats take those derivative forms at every window size: JAX's forward-mode
    rule on CUDA (``select_and_gather_add``) packs value and tangent into one 64-bit
    word, which for float64 keeps 20 of their 52 mantissa bits (it warns; ``jvp``,
    ``jacfwd`` and the hessian would be wrong from the seventh digit)."""
  p = _canonical_plan(op, taps, dtype)
  size = math.prod(t.window for t in taps)
  regular = all(t.regular for t in taps)
  if size > SMALL and blocked(taps) and regular:
    if op == "sum":
      return dataclasses.replace(p, values="blocks")
    blocks = dataclasses.replace(p, values="blocks", residual="match_blocks",
                                 backward="block")
    if op in ("max", "min"):
      return blocks
    if op == "indices" and all(map(unpadded, taps)):
      return dataclasses.replace(blocks, indices="block_match")
  pooled = _regular(taps)
  small_1d = len(pooled) == 1 and size <= SMALL
  if op == "sum" and regular and pooled and not blocked(taps) and not mapped and not small_1d:
    known = inner if len(pooled) == len(taps) else 0
    values = values_form(pooled, "sum", known)
    return dataclasses.replace(p, values=values, backward=_sum_backward(taps, values, known))
  if p.backward != "jax" or op == "sum":
    return p
  if size > SMALL and not _is_64bit_float(dtype):
    return p
  residual, backward = _cpu_select_derivative(taps, "batched")
  return dataclasses.replace(p, residual=residual, backward=backward)


def axis_sum_form(size: int, inner: int, target: Target) -> str:
  """How a sum over one whole axis of ``size`` elements, each ``inner`` elements apart
  (the channel mean of channels_first input), lowers on ``target``: ``"folds"`` (its
  eighths added elementwise, then halves: :func:`jaxpool._engine.values.folds`) on
  XLA:CPU where the axis is at least as long as ``inner`` and ``inner`` is at least
  ``FOLD_INNER_MIN`` (its reduce over a long non-minor axis is slow there, over the
  minor axis it is not); otherwise, and on every other backend, ``"reduce"``."""
  if target.platform == "cpu" and size >= inner >= FOLD_INNER_MIN:
    return "folds"
  return "reduce"


def _unpool_plan(taps, dtype, target, size, in_window, inner=0) -> Plan:
  """The in-window check pays where the scatter is a serial loop (XLA:CPU, a lone
  device: with several the check would need a collective). On CUDA it won alone but
  lost fused after the pooling that made the indices: the scatter stays there.
  Promised indices of 32/64-bit values over overlapping windows of at most ``SMALL``
  elements, over one axis or strided on every axis, with at least ``SELECT_INNER_MIN``
  elements after the pooled axes, take the compare-and-select there too
  (benchmarks/README.md, "Unpooling overlapping windows by compare-and-select");
  unpromised, the check lost to the scatter."""
  address = _address(target, size)
  nonoverlapping = blocked(taps)
  if in_window and nonoverlapping:
    form = "select"
  elif (in_window and address == "flat" and inner >= SELECT_INNER_MIN
        and np.dtype(dtype).itemsize >= 4 and math.prod(t.window for t in taps) <= SMALL
        and (len(taps) == 1 or all(t.stride > 1 for t in taps))):
    form = "select"
  elif (address == "flat" and nonoverlapping
        and math.prod(t.window for t in taps) <= CHECK_MAX):
    form = "check_select"
  else:
    form = "scatter"
  # XLA:CPU fuses the making of the indices into its serial scatter loop otherwise
  fence = form == "scatter" and target.platform == "cpu" and target.lone
  return Plan(unpool=form, address=address, fence=fence)


@functools.cache
def _one_device() -> bool:
  return jax.device_count() == 1


@functools.cache
def _one_cpu_device() -> bool:
  try:
    return len(jax.devices("cpu")) == 1
  except RuntimeError:  # no CPU backend in this process (JAX_PLATFORMS excludes it)
    return False


PLATFORMS = {"cpu": "cpu", "cuda": "gpu", "default": "accelerator"}


def plans(op: str, taps: Sequence[AxisTaps], dtype, *, size: int = 0,
          in_window: bool = False, mapped: bool = False, inner: int = 0) -> dict[str, Plan]:
  """The plan per ``lax.platform_dependent`` platform (``"cpu"``, ``"cuda"``, and
  ``"default"`` for the rest), from this process's devices;
  :func:`jaxpool._engine.dispatch.on_backends` picks one when the program is lowered."""
  out = {}
  for key, platform in PLATFORMS.items():
    lone = _one_cpu_device() if platform == "cpu" else _one_device()
    out[key] = plan(op, taps, dtype, Target(platform, lone), size=size, in_window=in_window,
                    mapped=mapped, inner=inner)
  return out


def axis_sum_forms(size: int, inner: int) -> dict[str, str]:
  """:func:`axis_sum_form` per ``lax.platform_dependent`` platform, as :func:`plans`."""
  return {key: axis_sum_form(size, inner, Target(platform, True))
          for key, platform in PLATFORMS.items()}


# ----------------------------------------------------------------------------- forcing plans


def valid(p: Plan, op: str, taps: Sequence[AxisTaps]) -> str | None:
  """Why ``p`` cannot serve ``op`` on ``taps`` (a forced plan must be one the engine can
  carry out with the contract's semantics), or ``None`` when it can."""
  taps = tuple(taps)
  regular = all(t.regular for t in taps)
  if op in ("max", "min", "indices") and p.backward == "jax":
    if p.values != "window" or not regular or any(t.dilation > 1 for t in taps):
      return ("backward='jax' routes to the first max only for values='window' over "
              "regular undilated windows")
    if p.fold and blocked(taps):
      return ("backward='jax' needs reduce_window values; fold reduces "
              "non-overlapping windows by folds (JAX's max rule splits ties)")
  if p.values == "blocks" and not (regular and blocked(taps)):
    return "values='blocks' needs non-overlapping undilated windows"
  if p.residual == "block_rows" and (
      op not in ("max", "min", "indices") or p.backward != "block" or len(taps) > 2
      or not (regular and all(map(tiling, taps)))):
    return ("residual='block_rows' needs max/min windows tiling one or two axes and "
            "backward='block'")
  blocks_residual = p.residual in ("match_blocks", "match_blocks_f32", "match_chain",
                                   "block_rows")
  matched_blocks = (p.residual == "match_slices" and regular and blocked(taps)
                    and math.prod(t.window for t in taps) <= MATCH_MAX)
  if (p.residual not in (None, "input") and not blocks_residual and not matched_blocks
      and not joint(taps)):
    return f"residual={p.residual!r} needs regular windows of at most {JOINT_MAX} elements"
  if blocks_residual and not (regular and blocked(taps)):
    return f"residual={p.residual!r} needs non-overlapping undilated windows"
  if p.residual == "match_stacked" and not all(map(unpadded, taps)):
    return "residual='match_stacked' needs unpadded windows"
  if p.backward == "block" and (p.residual == "input" or not blocked(taps)):
    return "backward='block' needs non-overlapping undilated windows and their offsets"
  if p.unfold and op != "sum":
    return "unfold is a sum's form"
  if p.fold and op not in ("max", "min", "indices") and not (
      op == "sum" and p.values == "blocks" and p.backward == "jax"):
    return "fold is a max/min form, or a sum's over blocks with backward='jax'"
  if p.order and not (p.backward == "chain_scatter" or p.indices == "chain"):
    return "order is the order of a chain's flat index (chain_scatter or chain indices)"
  if p.segments and not (p.backward == "chain_scatter" or p.indices == "chain"):
    return "segments is a view of a chain's flat index (chain_scatter or chain indices)"
  if op == "sum":
    if p.backward not in (None, "jax", "planes", "axis_planes"):
      return f"backward={p.backward!r} is a max/min form"
    if p.backward in ("planes", "axis_planes") and not regular:
      return f"backward={p.backward!r} needs regular windows"
    return None
  if p.backward in ("planes", "scatter") and p.residual in (None, "input"):
    return f"backward={p.backward!r} needs a residual of window offsets"
  if p.backward in ("chain", "chain_scatter") and p.residual != "input":
    return f"backward={p.backward!r} needs residual='input'"
  if p.backward in ("scatter", "chain_scatter") and p.address is None:
    return f"backward={p.backward!r} needs an address form"
  if p.indices == "match" and not (regular and math.prod(t.window for t in taps)
                                    <= MATCH_MAX):
    return f"indices='match' needs regular windows of at most {MATCH_MAX} elements"
  if p.indices in ("block", "first_max", "first_max_tiled") and not joint(taps):
    return f"indices={p.indices!r} needs regular windows of at most {JOINT_MAX} elements"
  if p.indices in ("block_match", "block_chain") and (p.backward is None or not (
      regular and blocked(taps) and all(map(unpadded, taps)))):
    return (f"indices={p.indices!r} needs non-overlapping unpadded windows and a values "
            "plan")
  if p.indices == "block_rows" and (p.backward is None or len(taps) > 2 or not (
      regular and all(map(tiling, taps)))):
    return ("indices='block_rows' needs windows tiling one or two axes and a values "
            "plan")
  if p.indices == "block" and not (blocked(taps) and all(map(unpadded, taps))):
    return "indices='block' needs unpadded non-overlapping windows"
  if p.unpool in ("check_select", "select") and any(t.dilation > 1 for t in taps):
    return f"unpool={p.unpool!r} needs undilated windows"
  if p.unpool is not None and p.address is None:
    return "unpool needs an address form"
  return None


def forced(p: Plan, op: str, taps: Sequence[AxisTaps]) -> Plan:
  """``p``, if it can serve ``op`` on ``taps`` (see :func:`valid`); else a ValueError."""
  why = valid(p, op, taps)
  if why is not None:
    raise ValueError(f"plan {p} cannot serve {op!r} on {tuple(taps)}: {why}.")
  return p


def candidates(op: str, taps: Sequence[AxisTaps], dtype, *, size: int = 0,
               in_window: bool = False) -> list[Plan]:
  """Every form of every field that can serve ``op`` on ``taps``, each in at least one
  plan: the CPU plan with one field changed at a time, and the canonical plan. For
  tests, which run each against the reference."""
  base = plan(op, taps, dtype, Target("cpu", True), size=size, in_window=in_window)
  found = [base]
  for platform in ("gpu", "accelerator"):
    p = plan(op, taps, dtype, Target(platform, True), size=size, in_window=in_window)
    if p not in found:
      found.append(p)
  swaps: list[dict] = []
  if base.values is not None:
    swaps += [{"values": v} for v in VALUES]
    swaps.append({"values": "window", "residual": None, "backward": "jax"})
  if op != "sum" and base.residual is not None:
    swaps += [{"residual": r} for r in RESIDUALS if r != "input"]
    swaps += [{"residual": r, "backward": b, "address": a}
              for r, b in (("first_max", "scatter"), ("input", "chain_scatter"))
              for a in ADDRESSES]
    swaps += [{"residual": "input", "backward": "chain"},
              {"residual": "input", "backward": "chain", "fence": not base.fence},
              {"residual": "match_blocks", "backward": "block"},
              {"residual": "block_rows", "backward": "block"}]
  if op == "sum":
    swaps += [{"backward": b} for b in ("jax", "planes", "axis_planes")]
    swaps += [{"fold": f} for f in (None, "fused")]
    swaps += [{"fence": not base.fence},
              {"unfold": not base.unfold}]
  if any(not t.regular for t in taps):
    swaps += [{"bins": b} for b in (None, *BINS)]
  if op == "indices":
    swaps += [{"indices": i} for i in INDICES]
    swaps += [{"indices": "chain", "order": o} for o in ORDERS]
    swaps.append({"indices": "block", "values": None, "residual": None, "backward": None})
  if op == "unpool":
    swaps += [{"unpool": u, "address": a} for u in UNPOOLS for a in ADDRESSES]
  if op != "sum" and jnp.issubdtype(dtype, jnp.floating):
    swaps.append({"upcast": not base.upcast})
    swaps += [{"fold": f} for f in (None, *FOLDS)]
  if op != "sum":
    swaps += [{"order": o} for o in (None, *ORDERS)]
    swaps += [{"residual": "input", "backward": "chain_scatter", "address": "flat",
               "order": o} for o in ORDERS]
    swaps += [{"segments": not base.segments},
              {"residual": "input", "backward": "chain_scatter", "address": "flat",
               "segments": True}]
  for swap in swaps:
    p = dataclasses.replace(base, **swap)
    if valid(p, op, taps) is None and p not in found:
      found.append(p)
  return found
