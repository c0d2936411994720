"""The CPU plan rows of the geometry-sweep fixes, each against its alternative: every case
compiled twice, once as planned and once with one plan field changed (the planner
patched while it compiles), timed interleaved in one process, medians of batches.

    python -m benchmarks.fences [--rounds 9] [--only TEXT ...]

Rows: the ``fence`` field (values computed into memory once where XLA:CPU would fuse
them into every reader or into a serial scatter loop) for lp's cotangent, max chains
over shared elements and unpool's scatter; promised unpool indices of small overlapping
windows by compare-and-select against the scatter; the ``match_real`` scatter backward of large
padded windows against the phase planes; ``upcast`` of 16-bit max (float32 throughout)
against 16-bit arithmetic; the channel mean folded against one reduce; indices matched
against the compare chain, blocked indices against the per-axis chain, and adaptive bins
that repeat viewed by slices (``bins="periods"``) against the gather (planned for max,
tried for sums); non-overlapping max windows' dense block derivative (in 16 bits for
16-bit input) against the chain's indices and a scatter-add; the ``unfold`` field of
sums (their cotangent times a one XLA cannot fold) against the plain cotangent; the
``fold`` field of float max/min (folds, which keep NaN) against the reduce XLA:CPU hands
to YNNPACK (which drops NaN); the ``order`` of a chain's flat index over channels_first
input (the minor pooled axis last) against the last axis first; sums of adaptive bins
as one take per offset (``bins="takes"``) against the gather and the periods, and max
values of narrow repeating bins by takes against the periods; blocks' first-match
offsets reduced as float32 against int32. ``--only`` runs the cases
whose name contains one of the given texts.

On a GPU it runs the CUDA rows instead (``GPU_CASES``, at GPU sizes, each timing a batch
of 10 back-to-back calls): sums over overlapping windows by the CPU plan's forms and the
indices of large blocks matched, against the plans they replaced there.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxpool
from jaxpool._engine import plan as planner

S = (8, 56, 56, 64)
CF = (8, 64, 56, 56)


def _grad(f):
  return jax.grad(lambda v: jnp.sum(f(v).astype(jnp.float32)))


def _grad_of_square(f):
  """The gradient of ``sum(f(x) ** 2)``: its cotangent ``2 f(x)`` is a runtime value (a
  sum pool's gradient under a constant cotangent is a constant, which XLA folds)."""
  return jax.grad(lambda v: jnp.sum(f(v).astype(jnp.float32) ** 2))


def _pool_unpool(window, strides, padding, **kw):
  def f(x):
    v, i = jaxpool.max_pool_with_indices(x, window, strides, padding)
    return jaxpool.max_unpool(v, i, window, strides, padding, output_size=x.shape, **kw)
  return f


# the dense derivative of non-overlapping windows: each window's cotangent selected into
# its first max on the reshape view (no zeros, no scatter)
BLOCK_DERIVATIVE = {"residual": "match_blocks", "backward": "block", "address": None,
                    "fence": False}
# the chain's flat indices and one scatter-add into zeros
CHAIN_SCATTER = {"residual": "input", "backward": "chain_scatter", "address": "flat",
                 "fence": False}

# name: (shape, dtype, function, plan op the change applies to, the change)
CASES = {
    "lp 3x3/2 fwd+bwd (8, 57, 57, 64): fence off": (
        (8, 57, 57, 64), "float32", _grad(lambda x: jaxpool.lp_pool(x, 2.0, (3, 3), 2)),
        "sum", {"fence": False}),
    # sums whose transpose is more than a broadcast: the cotangent times a one XLA
    # cannot fold (so that a constant cotangent is not folded at compile time), against
    # the plain cotangent; run-time cost only (compile times: benchmarks.compile_times)
    "avg 5x5/1 p2 fwd+bwd: unfold off": (
        S, "float32", _grad_of_square(lambda x: jaxpool.avg_pool(x, (5, 5), 1, 2)),
        "sum", {"unfold": False}),
    "avg 3x3/1 p1 fwd+bwd: unfold off": (
        S, "float32", _grad_of_square(lambda x: jaxpool.avg_pool(x, (3, 3), 1, 1)),
        "sum", {"unfold": False}),
    "avg 3x3/2 p1 fwd+bwd: unfold off": (
        S, "float32", _grad_of_square(lambda x: jaxpool.avg_pool(x, (3, 3), 2, 1)),
        "sum", {"unfold": False}),
    "avg 3x3/2 p1 no pad count fwd+bwd: unfold off": (
        S, "float32", _grad_of_square(lambda x: jaxpool.avg_pool(
            x, (3, 3), 2, 1, count_include_pad=False)), "sum", {"unfold": False}),
    "adaptive avg 56->5 fwd+bwd: unfold off": (
        S, "float32", _grad_of_square(lambda x: jaxpool.adaptive_avg_pool(x, (5, 5))),
        "sum", {"unfold": False}),
    "adaptive avg 1-D 1024->50 fwd+bwd: unfold off": (
        (16, 1024, 64), "float32", _grad_of_square(
            lambda x: jaxpool.adaptive_avg_pool(x, (50,))), "sum", {"unfold": False}),
    "bf16 avg 3x3/2 p1 fwd+bwd: unfold off": (
        S, "bfloat16", _grad_of_square(lambda x: jaxpool.avg_pool(x, (3, 3), 2, 1)),
        "sum", {"unfold": False}),
    # float32 max/min reductions folded (NaN kept) against the reduce or non-overlapping
    # reduce_window XLA:CPU hands to YNNPACK (which drops NaN)
    "fold: max 8x8/8 fwd: reduce": (
        S, "float32", lambda x: jaxpool.max_pool(x, (8, 8)), "max", {"fold": None}),
    "fold: max 56x56 fwd: reduce": (
        S, "float32", lambda x: jaxpool.max_pool(x, (56, 56)), "max", {"fold": None}),
    "fold: indices 8x8/8 fwd: reduce": (
        S, "float32", lambda x: jaxpool.max_pool_with_indices(x, (8, 8)), "indices",
        {"fold": None}),
    "fold: indices 56x56 fwd: reduce": (
        S, "float32", lambda x: jaxpool.max_pool_with_indices(x, (56, 56)), "indices",
        {"fold": None}),
    "fold: global max 3-D (4, 16, 28, 28, 32) fwd: reduce": (
        (4, 16, 28, 28, 32), "float32", lambda x: jaxpool.global_max_pool(x, 3), "max",
        {"fold": None}),
    "fold: adaptive max 56->7 fwd+bwd: reduce": (
        S, "float32", _grad_of_square(lambda x: jaxpool.adaptive_max_pool(x, (7, 7))),
        "max", {"fold": None}),
    "fold: adaptive max 1-D 1024->50 fwd+bwd: reduce": (
        (16, 1024, 64), "float32", _grad_of_square(
            lambda x: jaxpool.adaptive_max_pool(x, (50,))), "max", {"fold": None}),
    "fold: global max (32, 14, 14, 512) fwd: reduce": (
        (32, 14, 14, 512), "float32", lambda x: jaxpool.global_max_pool(x, 2), "max",
        {"fold": None}),
    "fold: global max (32, 14, 14, 2048) fwd: reduce": (
        (32, 14, 14, 2048), "float32", lambda x: jaxpool.global_max_pool(x, 2), "max",
        {"fold": None}),
    "fold: global max channels_first (32, 512, 14, 14) fwd: reduce": (
        (32, 512, 14, 14), "float32", lambda x: jaxpool.global_max_pool(
            x, 2, data_format="channels_first"), "max", {"fold": None}),
    "fold: channel max channels_first (32, 512, 14, 14) fwd: reduce": (
        (32, 512, 14, 14), "float32", lambda x: jaxpool.channel_pool(
            x, "max", data_format="channels_first", num_spatial_dims=2), "max",
        {"fold": None}),
    # a chain's flat index over channels_first input: the minor (last) pooled axis
    # reduced last, against last axis first
    "order: adaptive max channels_first 56->5 fwd+bwd: last axis first": (
        CF, "float32", _grad(lambda x: jaxpool.adaptive_max_pool(
            x, (5, 5), data_format="channels_first")), "max", {"order": None}),
    "order: adaptive max channels_first 56->3 fwd+bwd: last axis first": (
        CF, "float32", _grad(lambda x: jaxpool.adaptive_max_pool(
            x, (3, 3), data_format="channels_first")), "max", {"order": None}),
    "order: adaptive indices channels_first 56->5 fwd: last axis first": (
        CF, "float32", lambda x: jaxpool.adaptive_max_pool_with_indices(
            x, (5, 5), data_format="channels_first"), "indices", {"order": None}),
    "order: adaptive max 3-D channels_first ->(4, 7, 5) fwd+bwd: last axis first": (
        (4, 32, 16, 28, 28), "float32", _grad(lambda x: jaxpool.adaptive_max_pool(
            x, (4, 7, 5), data_format="channels_first")), "max", {"order": None}),
    "adaptive max 56->5 fwd+bwd: chain fence off": (
        S, "float32", _grad(lambda x: jaxpool.adaptive_max_pool(x, (5, 5))),
        "max", {"fence": False}),
    "max 5x5/1 p2 fwd+bwd: phase planes": (
        S, "float32", _grad(lambda x: jaxpool.max_pool(x, (5, 5), 1, 2)),
        "max", {"residual": "match_slices", "backward": "planes", "address": None,
                "fence": False}),
    "pool+unpool 3x3/1 p1 fwd: unpool fence off": (
        S, "float32", _pool_unpool((3, 3), 1, 1), "unpool", {"fence": False}),
    # promised indices of small overlapping windows: the compare-and-select against the
    # scatter they had before
    "pool+unpool in window 3x3/2 p1 fwd: scatter": (
        S, "float32", _pool_unpool((3, 3), 2, 1, indices_in_window=True), "unpool",
        {"unpool": "scatter", "fence": True}),
    "pool+unpool in window 3x3/2 p1 fwd+bwd: scatter": (
        S, "float32", _grad_of_square(_pool_unpool((3, 3), 2, 1, indices_in_window=True)),
        "unpool",
        {"unpool": "scatter", "fence": True}),
    "pool+unpool in window 1-D 5/2 p2 fwd+bwd: scatter": (
        (16, 1024, 64), "float32",
        _grad_of_square(_pool_unpool((5,), 2, 2, indices_in_window=True)),
        "unpool", {"unpool": "scatter", "fence": True}),
    "bf16 max 3x3/2 p1 fwd+bwd: 16-bit arithmetic": (
        S, "bfloat16", _grad(lambda x: jaxpool.max_pool(x, (3, 3), 2, 1)),
        "max", {"upcast": False}),
    "bf16 indices 3x3/2 p1 fwd: 16-bit arithmetic": (
        S, "bfloat16", lambda x: jaxpool.max_pool_with_indices(x, (3, 3), 2, 1),
        "indices", {"upcast": False}),
    "indices 5x5/1 p2 fwd: compare chain": (
        S, "float32", lambda x: jaxpool.max_pool_with_indices(x, (5, 5), 1, 2),
        "indices", {"indices": "first_max"}),
    # dense blocks: planned (the block derivative, 16-bit where the input is) against the
    # float32 chain and scatter-add they had before
    "bf16 adaptive max 56->7 fwd+bwd: float32 chain and scatter": (
        S, "bfloat16", _grad_of_square(lambda x: jaxpool.adaptive_max_pool(x, (7, 7))),
        "max", {**CHAIN_SCATTER, "upcast": True}),
    "f16 adaptive max 56->7 fwd+bwd: float32 chain and scatter": (
        S, "float16", _grad_of_square(lambda x: jaxpool.adaptive_max_pool(x, (7, 7))),
        "max", {**CHAIN_SCATTER, "upcast": True}),
    "bf16 adaptive max 56->1 fwd+bwd: float32 chain and scatter": (
        S, "bfloat16", _grad_of_square(lambda x: jaxpool.adaptive_max_pool(x, (1, 1))),
        "max", {**CHAIN_SCATTER, "upcast": True}),
    "bf16 global max (32, 14, 14, 512) fwd+bwd: float32 chain and scatter": (
        (32, 14, 14, 512), "bfloat16", _grad_of_square(lambda x: jaxpool.global_max_pool(x, 2)),
        "max", {**CHAIN_SCATTER, "upcast": True}),
    "bf16 adaptive max 56->7 fwd: float32": (
        S, "bfloat16", lambda x: jaxpool.adaptive_max_pool(x, (7, 7)), "max", {"upcast": True}),
    "bf16 global max (32, 14, 14, 512) fwd: float32": (
        (32, 14, 14, 512), "bfloat16", lambda x: jaxpool.global_max_pool(x, 2), "max",
        {"upcast": True}),
    "f32 adaptive max 56->7 fwd+bwd: chain and scatter": (
        S, "float32", _grad_of_square(lambda x: jaxpool.adaptive_max_pool(x, (7, 7))),
        "max", CHAIN_SCATTER),
    "f32 adaptive max 56->1 fwd+bwd: chain and scatter": (
        S, "float32", _grad_of_square(lambda x: jaxpool.adaptive_max_pool(x, (1, 1))),
        "max", CHAIN_SCATTER),
    "f32 max 16x16/16 (16, 64, 64, 64) fwd+bwd: chain and scatter": (
        (16, 64, 64, 64), "float32", _grad_of_square(lambda x: jaxpool.max_pool(x, (16, 16))),
        "max", CHAIN_SCATTER),
    "f32 global max channels_first (32, 512, 14, 14) fwd+bwd: chain and scatter": (
        (32, 512, 14, 14), "float32", _grad_of_square(
            lambda x: jaxpool.global_max_pool(x, 2, data_format="channels_first")),
        "max", CHAIN_SCATTER),
    # more elements after the pooled axes: the chain and scatter stay (planned)
    "f32 max 28x28/28 (64, 28, 28, 128) fwd+bwd: block derivative": (
        (64, 28, 28, 128), "float32", _grad_of_square(lambda x: jaxpool.max_pool(x, (28, 28))),
        "max", BLOCK_DERIVATIVE),
    "f32 global max (32, 7, 7, 2048) fwd+bwd: block derivative": (
        (32, 7, 7, 2048), "float32", _grad_of_square(lambda x: jaxpool.global_max_pool(x, 2)),
        "max", BLOCK_DERIVATIVE),
    "f32 global max (32, 14, 14, 512) fwd+bwd: block derivative": (
        (32, 14, 14, 512), "float32", _grad_of_square(lambda x: jaxpool.global_max_pool(x, 2)),
        "max", BLOCK_DERIVATIVE),
    # tiled 16-bit blocks keep float32 (planned): faster forward, slower fwd+bwd
    "bf16 max 2x2/2 fwd: 16-bit arithmetic": (
        S, "bfloat16", lambda x: jaxpool.max_pool(x, (2, 2)), "max", {"upcast": False}),
    "bf16 max 2x2/2 fwd+bwd: 16-bit arithmetic": (
        S, "bfloat16", _grad_of_square(lambda x: jaxpool.max_pool(x, (2, 2))),
        "max", {"upcast": False}),
    "f16 max 2x2/2 fwd+bwd: 16-bit arithmetic": (
        S, "float16", _grad_of_square(lambda x: jaxpool.max_pool(x, (2, 2))),
        "max", {"upcast": False}),
    "bf16 max 4x4/4 fwd+bwd: 16-bit arithmetic": (
        S, "bfloat16", _grad_of_square(lambda x: jaxpool.max_pool(x, (4, 4))),
        "max", {"upcast": False}),
    "indices 8x8/8 fwd: per-axis chain": (
        S, "float32", lambda x: jaxpool.max_pool_with_indices(x, (8, 8)),
        "indices", {"indices": "chain", "fence": False}),
    "indices whole 56x56 fwd: per-axis chain": (
        S, "float32", lambda x: jaxpool.max_pool_with_indices(x, (56, 56)),
        "indices", {"indices": "chain", "fence": False}),
    "adaptive max 56->80 fwd (8, 56, 56, 16): gathered bins": (
        (8, 56, 56, 16), "float32", lambda x: jaxpool.adaptive_max_pool(x, (80, 80)),
        "max", {"bins": None}),
    "adaptive max 56->80 fwd+bwd (8, 56, 56, 16): gathered bins": (
        (8, 56, 56, 16), "float32", _grad(lambda x: jaxpool.adaptive_max_pool(x, (80, 80))),
        "max", {"bins": None}),
    "adaptive indices 56->80 fwd (8, 56, 56, 16): gathered bins": (
        (8, 56, 56, 16), "float32",
        lambda x: jaxpool.adaptive_max_pool_with_indices(x, (80, 80)),
        "indices", {"bins": None}),
    "adaptive max 28->12 fwd+bwd: gathered bins": (
        (8, 28, 28, 64), "float32", _grad(lambda x: jaxpool.adaptive_max_pool(x, (12, 12))),
        "max", {"bins": None}),
    # sums of adaptive bins: one take per bin offset (planned) against the gather
    "takes: adaptive avg 56->80 fwd (8, 56, 56, 16): gathered bins": (
        (8, 56, 56, 16), "float32", lambda x: jaxpool.adaptive_avg_pool(x, (80, 80)),
        "sum", {"bins": None}),
    "takes: adaptive avg 56->80 fwd+bwd (8, 56, 56, 16): gathered bins": (
        (8, 56, 56, 16), "float32",
        _grad_of_square(lambda x: jaxpool.adaptive_avg_pool(x, (80, 80))),
        "sum", {"bins": None}),
    "takes: adaptive avg 1-D 1024->50 fwd: gathered bins": (
        (16, 1024, 64), "float32", lambda x: jaxpool.adaptive_avg_pool(x, (50,)),
        "sum", {"bins": None}),
    "takes: adaptive avg 1-D 1024->50 fwd+bwd: gathered bins": (
        (16, 1024, 64), "float32",
        _grad_of_square(lambda x: jaxpool.adaptive_avg_pool(x, (50,))), "sum", {"bins": None}),
    "takes: adaptive avg 56->3 fwd+bwd: gathered bins": (
        S, "float32", _grad_of_square(lambda x: jaxpool.adaptive_avg_pool(x, (3, 3))),
        "sum", {"bins": None}),
    "takes: adaptive avg channels_first 56->80 fwd (8, 16, 56, 56): gathered bins": (
        (8, 16, 56, 56), "float32", lambda x: jaxpool.adaptive_avg_pool(
            x, (80, 80), data_format="channels_first"), "sum", {"bins": None}),
    # max/min values of narrow repeating bins by takes (planned; the chain reads the
    # periods) against the periods; wider or non-repeating bins take them as a try
    "max takes: adaptive max 56->80 fwd (8, 56, 56, 16): periods": (
        (8, 56, 56, 16), "float32", lambda x: jaxpool.adaptive_max_pool(x, (80, 80)),
        "max", {"bins": "periods"}),
    "max takes: adaptive max 56->80 fwd+bwd (8, 56, 56, 16): periods": (
        (8, 56, 56, 16), "float32", _grad(lambda x: jaxpool.adaptive_max_pool(x, (80, 80))),
        "max", {"bins": "periods"}),
    "max takes: adaptive indices 56->80 fwd (8, 56, 56, 16): periods": (
        (8, 56, 56, 16), "float32",
        lambda x: jaxpool.adaptive_max_pool_with_indices(x, (80, 80)),
        "indices", {"bins": "periods"}),
    "max takes: adaptive max 28->12 fwd (8, 28, 28, 64): periods": (
        (8, 28, 28, 64), "float32", lambda x: jaxpool.adaptive_max_pool(x, (12, 12)),
        "max", {"bins": "periods"}),
    "max takes: adaptive max 28->12 fwd+bwd: periods": (
        (8, 28, 28, 64), "float32", _grad(lambda x: jaxpool.adaptive_max_pool(x, (12, 12))),
        "max", {"bins": "periods"}),
    "max takes: adaptive max 1-D 1024->50 fwd: takes": (
        (16, 1024, 64), "float32", lambda x: jaxpool.adaptive_max_pool(x, (50,)),
        "max", {"bins": "takes"}),
    "max takes: adaptive max 1-D 1024->50 fwd+bwd: takes": (
        (16, 1024, 64), "float32", _grad_of_square(
            lambda x: jaxpool.adaptive_max_pool(x, (50,))), "max", {"bins": "takes"}),
    "max takes: adaptive max 56->3 fwd: takes": (
        S, "float32", lambda x: jaxpool.adaptive_max_pool(x, (3, 3)), "max", {"bins": "takes"}),
    "max takes: adaptive max 56->3 fwd+bwd: takes": (
        S, "float32", _grad(lambda x: jaxpool.adaptive_max_pool(x, (3, 3))),
        "max", {"bins": "takes"}),
    "adaptive avg 56->80 fwd (8, 56, 56, 16): bins in periods": (
        (8, 56, 56, 16), "float32", lambda x: jaxpool.adaptive_avg_pool(x, (80, 80)),
        "sum", {"bins": "periods"}),
    "adaptive avg 56->80 fwd+bwd (8, 56, 56, 16): bins in periods": (
        (8, 56, 56, 16), "float32",
        _grad_of_square(lambda x: jaxpool.adaptive_avg_pool(x, (80, 80))),
        "sum", {"bins": "periods"}),
    "adaptive avg 28->12 fwd+bwd: bins in periods": (
        (8, 28, 28, 64), "float32",
        _grad_of_square(lambda x: jaxpool.adaptive_avg_pool(x, (12, 12))),
        "sum", {"bins": "periods"}),
    "f32 offsets: max 2x2/2 fwd+bwd: int32 offsets": (
        S, "float32", _grad(lambda x: jaxpool.max_pool(x, (2, 2))), "max",
        {"residual": "match_blocks"}),
    "f32 offsets: max bf16 2x2/2 fwd+bwd: int32 offsets": (
        S, "bfloat16", _grad(lambda x: jaxpool.max_pool(x, (2, 2))), "max",
        {"residual": "match_blocks"}),
    "f32 offsets: min 3x3/3 fwd+bwd: int32 offsets": (
        (8, 57, 57, 64), "float32", _grad(lambda x: jaxpool.min_pool(x, (3, 3))), "min",
        {"residual": "match_blocks"}),
    "f32 offsets: max 3-D 2x2x2/2 fwd+bwd: int32 offsets": (
        (4, 16, 28, 28, 32), "float32", _grad(lambda x: jaxpool.max_pool(x, (2, 2, 2))),
        "max", {"residual": "match_blocks"}),
    "f32 offsets: max 14x14/14 fwd+bwd: int32 offsets": (
        S, "float32", _grad_of_square(lambda x: jaxpool.max_pool(x, (14, 14))), "max",
        {"residual": "match_blocks"}),
    "f32 offsets: bf16 adaptive max 56->7 fwd+bwd: float32 offsets": (
        S, "bfloat16", _grad_of_square(lambda x: jaxpool.adaptive_max_pool(x, (7, 7))), "max",
        {"residual": "match_blocks_f32"}),
    "f32 offsets: adaptive max 56->1 fwd+bwd: int32 offsets": (
        S, "float32", _grad(lambda x: jaxpool.adaptive_max_pool(x, (1, 1))), "max",
        {"residual": "match_blocks"}),
    "f32 offsets: global max 3-D fwd+bwd: int32 offsets": (
        (4, 16, 28, 28, 32), "float32", _grad(lambda x: jaxpool.global_max_pool(x, 3)), "max",
        {"residual": "match_blocks"}),
    "f32 offsets: max 4x4/4 fwd+bwd: float32 offsets": (
        S, "float32", _grad(lambda x: jaxpool.max_pool(x, (4, 4))), "max",
        {"residual": "match_blocks_f32"}),
    "f32 offsets: max 1-D 2/2 fwd+bwd: float32 offsets": (
        (16, 1024, 64), "float32", _grad(lambda x: jaxpool.max_pool(x, (2,))), "max",
        {"residual": "match_blocks_f32"}),
    "f32 offsets: max channels_first 2x2/2 fwd+bwd: float32 offsets": (
        CF, "float32", _grad(lambda x: jaxpool.max_pool(x, (2, 2),
                                                     data_format="channels_first")),
        "max", {"residual": "match_blocks_f32"}),
    "f32 offsets: max 2x2/2 16 channels fwd+bwd: float32 offsets": (
        (32, 56, 56, 16), "float32", _grad(lambda x: jaxpool.max_pool(x, (2, 2))), "max",
        {"residual": "match_blocks_f32"}),
    "channel mean channels_first (32, 512, 14, 14): one reduce": (
        (32, 512, 14, 14), "float32",
        lambda x: jaxpool.channel_pool(x, "avg", data_format="channels_first",
                                       num_spatial_dims=2),
        "axis_sum", "reduce"),
}


# CUDA plan rows (benchmarks/README.md, "Plans per backend"), at GPU sizes: the sweep's
# shapes with a batch of 64. ``OLD`` is the plan these rows replaced there.
G = (64, 56, 56, 64)
CANONICAL_SUM = {"values": "window", "backward": "jax"}
OLD_INDICES = {"values": "window", "residual": None, "backward": "jax", "indices": "chain"}


def _avg(window, strides, padding, include=True):
  return lambda x: jaxpool.avg_pool(x, window, strides, padding, count_include_pad=include)


GPU_CASES = {
    "gpu sums: avg 5x5/1 p2 nopad fwd+bwd: canonical": (
        G, "float32", _grad_of_square(_avg((5, 5), 1, 2, False)), "sum", CANONICAL_SUM),
    "gpu sums: avg 5x5/1 p2 nopad fwd+bwd: jax derivative": (
        G, "float32", _grad_of_square(_avg((5, 5), 1, 2, False)), "sum", {"backward": "jax"}),
    "gpu sums: avg 5x5/1 p2 nopad fwd+bwd: window values": (
        G, "float32", _grad_of_square(_avg((5, 5), 1, 2, False)), "sum", {"values": "window"}),
    "gpu sums: avg 5x5/1 p2 fwd+bwd: canonical": (
        G, "float32", _grad_of_square(_avg((5, 5), 1, 2)), "sum", CANONICAL_SUM),
    "gpu sums: avg 5x5/1 p2 fwd: canonical": (
        G, "float32", _avg((5, 5), 1, 2), "sum", CANONICAL_SUM),
    "gpu sums: avg 3x3/2 p1 fwd+bwd: canonical": (
        G, "float32", _grad_of_square(_avg((3, 3), 2, 1)), "sum", CANONICAL_SUM),
    "gpu sums: avg 3x3/2 p1 fwd+bwd: jax derivative": (
        G, "float32", _grad_of_square(_avg((3, 3), 2, 1)), "sum", {"backward": "jax"}),
    "gpu sums: avg 3x3/2 p1 fwd+bwd: window values": (
        G, "float32", _grad_of_square(_avg((3, 3), 2, 1)), "sum", {"values": "window"}),
    "gpu sums: avg 3x3/2 p1 fwd: canonical": (
        G, "float32", _avg((3, 3), 2, 1), "sum", CANONICAL_SUM),
    "gpu sums: avg 3x3/2 p1 nopad fwd+bwd: canonical": (
        G, "float32", _grad_of_square(_avg((3, 3), 2, 1, False)), "sum", CANONICAL_SUM),
    "gpu sums: avg bf16 3x3/2 p1 fwd+bwd: canonical": (
        G, "bfloat16", _grad_of_square(_avg((3, 3), 2, 1)), "sum", CANONICAL_SUM),
    "gpu sums: avg 3x3/1 p1 fwd+bwd: canonical": (
        G, "float32", _grad_of_square(_avg((3, 3), 1, 1)), "sum", CANONICAL_SUM),
    "gpu sums: avg 3x3/1 p1 fwd: canonical": (
        G, "float32", _avg((3, 3), 1, 1), "sum", CANONICAL_SUM),
    "gpu sums: avg 1-D 3/2 p1 fwd+bwd: tiles and planes": (  # canonical since session 23
        (128, 1024, 64), "float32", _grad_of_square(_avg((3,), 2, 1)), "sum",
        {"values": "tiles", "backward": "planes"}),
    "gpu sums: lp 3x3/2 fwd+bwd: canonical": (
        G, "float32", _grad_of_square(lambda x: jaxpool.lp_pool(x, 2.0, (3, 3), 2)), "sum",
        CANONICAL_SUM),
    "gpu sums: adaptive avg 56->5 fwd+bwd: canonical": (
        G, "float32", _grad_of_square(lambda x: jaxpool.adaptive_avg_pool(x, (5, 5))), "sum",
        CANONICAL_SUM),
    "gpu sums: adaptive avg 56->5 fwd+bwd: window values": (
        G, "float32", _grad_of_square(lambda x: jaxpool.adaptive_avg_pool(x, (5, 5))), "sum",
        {"values": "window"}),
    "gpu sums: adaptive avg 56->5 fwd: canonical": (
        G, "float32", lambda x: jaxpool.adaptive_avg_pool(x, (5, 5)), "sum", CANONICAL_SUM),
    "gpu sums: adaptive avg channels_first 56->5 fwd+bwd: canonical": (
        (64, 64, 56, 56), "float32", _grad_of_square(lambda x: jaxpool.adaptive_avg_pool(
            x, (5, 5), data_format="channels_first")), "sum", CANONICAL_SUM),
    # the CPU rule's sum derivative (benchmarks/README.md, "CUDA sums' derivative: the
    # CPU rule"), against the form it replaced
    "gpu sums: adaptive avg channels_first 56->5 fwd+bwd: reduce_window transpose": (
        (64, 64, 56, 56), "float32", _grad_of_square(lambda x: jaxpool.adaptive_avg_pool(
            x, (5, 5), data_format="channels_first")), "sum", {"backward": "jax"}),
    "gpu sums: avg 5x5/1 p2 fwd+bwd: joint planes": (
        G, "float32", _grad_of_square(_avg((5, 5), 1, 2)), "sum", {"backward": "planes"}),
    "gpu sums: avg 16x16/6 fwd+bwd: joint planes": (
        G, "float32", _grad_of_square(_avg((16, 16), 6, 0)), "sum", {"backward": "planes"}),
    "gpu indices: whole axis 56x56 fwd: chain": (
        G, "float32", lambda x: jaxpool.max_pool_with_indices(x, (56, 56)), "indices",
        OLD_INDICES),
    "gpu indices: whole axis 56x56 fwd: folds": (
        G, "float32", lambda x: jaxpool.max_pool_with_indices(x, (56, 56)), "indices",
        {"fold": "once"}),
    "gpu indices: whole axis 56x56 fwd+bwd: chain": (
        G, "float32", _grad(lambda x: jaxpool.max_pool_with_indices(x, (56, 56))[0]),
        "indices", OLD_INDICES),
    "gpu indices: 8x8/8 fwd: chain": (
        G, "float32", lambda x: jaxpool.max_pool_with_indices(x, (8, 8)), "indices",
        OLD_INDICES),
    "gpu indices: 8x8/8 fwd+bwd: chain": (
        G, "float32", _grad(lambda x: jaxpool.max_pool_with_indices(x, (8, 8))[0]),
        "indices", OLD_INDICES),
    "gpu indices: pool+unpool 56x56 fwd: chain": (
        G, "float32", _pool_unpool((56, 56), None, 0), "indices", OLD_INDICES),
    "gpu indices: pool+unpool 3-D 2x2x2 fwd: jax derivative": (
        (32, 16, 28, 28, 32), "float32", _pool_unpool((2, 2, 2), None, 0), "indices",
        {"residual": None, "backward": "jax"}),
    "gpu indices: pool+unpool 2x2 fwd: jax derivative": (
        G, "float32", _pool_unpool((2, 2), None, 0), "indices",
        {"residual": None, "backward": "jax"}),
}


def _platform() -> str:
  """The planner's name for the backend this process runs on."""
  return {"cpu": "cpu", "gpu": "gpu"}.get(jax.default_backend(), "accelerator")


def _compiled(f, x, op: str | None, change):
  """``f`` compiled with the planner as it is (``op=None``), or with ``change`` applied
  to this backend's plans of ``op`` (for ``"axis_sum"``, the form returned instead)."""
  plan, form = planner.plan, planner.axis_sum_form
  here = _platform()

  def changed_plan(o, taps, dtype, target, **kw):
    p = plan(o, taps, dtype, target, **kw)
    if o == op and target.platform == here:
      p = dataclasses.replace(p, **change)
    return p

  def changed_form(size, inner, target):
    return change if target.platform == here else form(size, inner, target)

  if op == "axis_sum":
    planner.axis_sum_form = changed_form
  elif op is not None:
    planner.plan = changed_plan
  try:
    jax.clear_caches()
    return jax.jit(f).lower(x).compile()
  finally:
    planner.plan, planner.axis_sum_form = plan, form


def _medians(runs: dict, x, rounds: int, batch: int = 0) -> dict[str, float]:
  """Median ms per call of each compiled run (outputs may be tuples): blocks of 3 calls
  after one untimed call, the runs taking turns ``rounds`` times. With ``batch``, a block
  is that many back-to-back calls and one wait (on a GPU: the launch queue is timed, not
  one round trip per call)."""
  times = {k: [] for k in runs}
  calls = batch or 3
  for _ in range(rounds):
    for k, run in runs.items():
      jax.block_until_ready(run(x))
      start = time.perf_counter()
      out = None
      for _ in range(calls):
        out = run(x)
        if not batch:
          jax.block_until_ready(out)
      jax.block_until_ready(out)
      times[k].append((time.perf_counter() - start) / calls * 1e3)
  return {k: float(np.median(t)) for k, t in times.items()}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--rounds", type=int, default=9)
  parser.add_argument("--only", nargs="*", default=None, metavar="TEXT")
  args = parser.parse_args(argv)
  here = _platform()
  cases = CASES if here == "cpu" else GPU_CASES if here == "gpu" else {}
  batch = 0 if here == "cpu" else 10
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, rounds={args.rounds}\n")
  print("| case | planned ms | changed ms | planned / changed |")
  print("| --- | ---: | ---: | ---: |")
  for name, (shape, dtype, f, op, change) in cases.items():
    if args.only and not any(text in name for text in args.only):
      continue
    x = jnp.asarray(np.random.default_rng(0).standard_normal(shape), dtype)
    runs = {"planned": _compiled(f, x, None, None), "changed": _compiled(f, x, op, change)}
    ms = _medians(runs, x, args.rounds, batch)
    print(f"| {name} | {ms['planned']:.2f} | {ms['changed']:.2f} | "
          f"{ms['planned'] / ms['changed']:.2f}x |", flush=True)


if __name__ == "__main__":
  main()
