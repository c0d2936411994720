"""Every error in the contract: the right type, at trace time, naming the argument."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpool

X = np.zeros((2, 8, 8, 3), np.float32)
IDX = np.zeros((2, 4, 4, 3), np.int32)

# (callable, exception type, regex the message must match)
CASES = {
    # data_format and rank
    "data_format": (lambda: jaxpool.max_pool(X, (2, 2), data_format="NHWC"), ValueError,
                    r"data_format must be one of .* got 'NHWC'"),
    "rank": (lambda: jaxpool.max_pool(np.zeros((8, 8)), (2, 2)), ValueError,
             r"at least 3 dims .* got shape \(8, 8\)"),
    # window_shape
    "window_type": (lambda: jaxpool.max_pool(X, 2), TypeError,
                    r"window_shape must be a sequence of ints, one per spatial dim .*got "
                    r"the bare int 2; did you mean \(2, 2\)\?"),
    "window_zero": (lambda: jaxpool.avg_pool(X, (0, 2)), ValueError,
                    r"window_shape entries must be >= 1.*0 on spatial dim 0"),
    "window_float": (lambda: jaxpool.max_pool(X, (2.0, 2)), TypeError, r"window_shape must hold"),
    # strides / dilation
    "strides_len": (lambda: jaxpool.max_pool(X, (2, 2), (1, 1, 1)), ValueError,
                    r"strides must have 2 entries .* got 3"),
    "strides_zero": (lambda: jaxpool.max_pool(X, (2, 2), 0), ValueError,
                     r"strides must be >= 1 .* got strides=0"),
    "strides_type": (lambda: jaxpool.max_pool(X, (2, 2), "2"), TypeError,
                     r"strides must be an int or a sequence of 2 ints, got '2'"),
    "dilation_zero": (lambda: jaxpool.max_pool(X, (2, 2), dilation=(1, 0)), ValueError,
                      r"dilation must be >= 1 .*0 on spatial dim 1"),
    "dilation_bool": (lambda: jaxpool.max_pool(X, (2, 2), dilation=True), TypeError,
                      r"dilation must be an int"),
    # padding
    "padding_over_half": (lambda: jaxpool.max_pool(X, (3, 3), 1, (2, 1)), ValueError,
                          r"padding=\(2, 1\) exceeds window_shape // 2 = \(1, 1\) on spatial "
                          r"dim 0"),
    "padding_negative": (lambda: jaxpool.max_pool(X, (3, 3), 1, -1), ValueError,
                         r"padding must be >= 0"),
    "padding_pair_negative": (lambda: jaxpool.max_pool(X, (3, 3), 1, ((0, -1), (0, 0))),
                              ValueError, r"padding pairs must be >= 0"),
    "padding_string": (lambda: jaxpool.max_pool(X, (3, 3), 1, "FULL"), ValueError,
                       r"padding string must be 'VALID' or 'SAME', got 'FULL'"),
    "padding_type": (lambda: jaxpool.max_pool(X, (3, 3), 1, 1.5), TypeError,
                     r"padding must be an int, 2 ints, 2 \(lo, hi\) pairs"),
    "padding_len": (lambda: jaxpool.max_pool(X, (3, 3), 1, (1, 1, 1)), TypeError,
                    r"padding must be an int, 2 ints"),
    "window_in_padding": (lambda: jaxpool.max_pool(X, (2, 2), 1, ((3, 0), (0, 0))), ValueError,
                          r"output position 0 on spatial dim 0 reads only padding"),
    "dilated_window_in_padding": (
        lambda: jaxpool.max_pool(np.zeros((1, 2, 1)), (2,), 1, "SAME", dilation=3),
        ValueError, r"reads only padding"),
    # output size
    "output_too_small": (lambda: jaxpool.max_pool(X, (9, 2)), ValueError,
                         r"output size would be 0 < 1 on spatial dim 0: input size 8, window 9"),
    # flags
    "ceil_mode_type": (lambda: jaxpool.max_pool(X, (2, 2), ceil_mode=1), TypeError,
                       r"ceil_mode must be a bool, got 1"),
    "count_include_pad_type": (lambda: jaxpool.avg_pool(X, (2, 2), count_include_pad="yes"),
                               TypeError, r"count_include_pad must be a bool"),
    "divisor_zero": (lambda: jaxpool.avg_pool(X, (2, 2), divisor_override=0), ValueError,
                     r"divisor_override must be > 0, got 0"),
    "divisor_float": (lambda: jaxpool.avg_pool(X, (2, 2), divisor_override=2.0), TypeError,
                      r"divisor_override must be None or an int > 0, got 2.0"),
    # dtypes
    "avg_int": (lambda: jaxpool.avg_pool(X.astype(np.int32), (2, 2)), TypeError,
                r"avg_pool: input must have a floating dtype, got dtype int32"),
    "max_complex": (lambda: jaxpool.max_pool(X.astype(np.complex64), (2, 2)), TypeError,
                    r"real \(float, int or bool\) dtype, got dtype complex64"),
    # lp
    "p_inf": (lambda: jaxpool.lp_pool(X, float("inf"), (2, 2)), ValueError,
              r"p must be finite, got p=inf; for p=inf use jaxpool.max_pool"),
    "p_zero": (lambda: jaxpool.lp_pool(X, 0, (2, 2)), ValueError, r"p must be a finite float > 0"),
    "p_nan": (lambda: jaxpool.lp_pool(X, float("nan"), (2, 2)), ValueError, r"got p=nan"),
    "p_type": (lambda: jaxpool.lp_pool(X, "2", (2, 2)), TypeError, r"p must be a finite float"),
    # unpool
    "unpool_shape": (lambda: jaxpool.max_unpool(X[:, :4, :4], IDX[:, :2], (2, 2)), ValueError,
                     r"indices must have the shape of values, got values \(2, 4, 4, 3\) and "
                     r"indices \(2, 2, 4, 3\)"),
    "unpool_index_dtype": (lambda: jaxpool.max_unpool(X[:, :4, :4], IDX.astype(np.float32), (2, 2)),
                           TypeError, r"indices must have an integer dtype, got float32"),
    "unpool_output_size": (
        lambda: jaxpool.max_unpool(X[:, :4, :4], IDX, (2, 2), output_size=(10, 8)), ValueError,
        r"output_size=\(10, 8\) is out of range on spatial dim 0: must be strictly between 6 "
        r"and 10"),
    "unpool_in_window": (
        lambda: jaxpool.max_unpool(X[:, :4, :4], IDX, (2, 2), indices_in_window="yes"),
        TypeError, r"indices_in_window must be a bool, got 'yes'"),
    "unpool_output_size_len": (
        lambda: jaxpool.max_unpool(X[:, :4, :4], IDX, (2, 2), output_size=(8, 8, 3)),
        ValueError, r"output_size must have 2 entries \(the spatial dims\) or 4 \(the pooled "
                    r"input's shape\), got \(8, 8, 3\)"),
    "unpool_index_range": (
        lambda: jaxpool.max_unpool(X[:, :4, :4], IDX + 64, (2, 2)), ValueError,
        r"indices must lie in \[0, 64\), got 64 .*output_size=x.shape"),
    "unpool_wrong_window": (
        lambda: jaxpool.max_unpool(X[:, :4, :4], IDX, (3, 3), output_size=(8, 8)), ValueError,
        r"window, strides or padding may not match the pooling that produced the indices"),
    "unpool_same": (lambda: jaxpool.max_unpool(X[:, :4, :4], IDX, (2, 2), padding="SAME"),
                    ValueError, r"padding='SAME' depends on the pooled input's size"),
    # adaptive / global / channel
    "adaptive_zero": (lambda: jaxpool.adaptive_avg_pool(X, (0, 2)), ValueError,
                      r"output_size entries must be >= 1, got output_size=\(0, 2\)"),
    "adaptive_type": (lambda: jaxpool.adaptive_max_pool(X, "7"), TypeError,
                      r"output_size must be a non-empty sequence of ints"),
    "adaptive_rank": (lambda: jaxpool.adaptive_avg_pool(np.zeros((7, 7)), (1, 1)), ValueError,
                      r"at least 3 dims"),
    "global_missing_num_spatial": (lambda: jaxpool.global_avg_pool(np.zeros((7, 3))),
                                   TypeError, r"num_spatial_dims"),
    "global_none_num_spatial": (lambda: jaxpool.global_max_pool(X, None), TypeError,
                                r"num_spatial_dims must be an int >= 1 .*got None"),
    "channel_first_num_spatial": (
        lambda: jaxpool.channel_pool(X, data_format="channels_first"), TypeError,
        r"num_spatial_dims must be an int >= 1 .*got None"),
    "bare_int_window": (lambda: jaxpool.max_pool(X, 3), TypeError,
                        r"got the bare int 3; did you mean \(3, 3\)\?"),
    "bare_int_adaptive": (lambda: jaxpool.adaptive_avg_pool(X, 1), TypeError,
                          r"got the bare int 1; did you mean \(1, 1\)\?"),
    "global_num_spatial": (lambda: jaxpool.global_max_pool(X, 0), ValueError,
                           r"num_spatial_dims must be >= 1, got 0"),
    "global_keepdims": (lambda: jaxpool.global_max_pool(X, 2, keepdims=None), TypeError,
                        r"keepdims must be a bool"),
    "channel_op": (lambda: jaxpool.channel_pool(X, "sum"), ValueError,
                   r"op must be one of \('max', 'avg', 'mean'\), got 'sum'"),
    "channel_avg_int": (lambda: jaxpool.channel_pool(X.astype(np.int8), "avg"), TypeError,
                        r"floating dtype"),
    # lengths (runtime extents) and segments
    "lengths_shape": (lambda: jaxpool.adaptive_avg_pool(X, (2, 2), lengths=np.ones((2,), int)),
                      ValueError, r"lengths must have shape \(2, 2\) \(the batch shape of x, "
                                  r"then one length per spatial dim\), got \(2,\)"),
    "lengths_shape_1d": (
        lambda: jaxpool.global_max_pool(X[:, 0], 1, lengths=np.ones((3,), int)), ValueError,
        r"lengths must have shape \(2, 1\) or \(2,\) .*got \(3,\)"),
    "lengths_float": (lambda: jaxpool.adaptive_max_pool(X, (2, 2), lengths=np.ones((2, 2))),
                      TypeError, r"lengths must be an integer array .*got dtype float64"),
    "lengths_channels_first": (
        lambda: jaxpool.global_avg_pool(X, 2, lengths=np.ones((2, 8, 2), int),
                                        data_format="channels_first"), ValueError,
        r"lengths must have shape \(2, 2\)"),
    "segment_op": (lambda: jaxpool.segment_pool(X[0], np.zeros(8, int), 2, "mean"), ValueError,
                   r"op must be one of \('avg', 'max', 'min', 'sum'\), got 'mean'"),
    "segment_ids_shape": (lambda: jaxpool.segment_pool(X, np.zeros((2, 7), int), 2), ValueError,
                          r"segment_ids must have the shape of x's leading axes .*x of shape "
                          r"\(2, 8, 8, 3\)\), got \(2, 7\)"),
    "segment_ids_scalar": (lambda: jaxpool.segment_pool(X, 0, 2), ValueError,
                           r"segment_ids must have the shape of x's leading axes .*got \(\)"),
    "segment_ids_float": (lambda: jaxpool.segment_pool(X, np.zeros(2), 2), TypeError,
                          r"segment_ids must be an integer array, got dtype float64"),
    "segment_num_type": (lambda: jaxpool.segment_pool(X, np.zeros(2, int), 2.0), TypeError,
                         r"num_segments must be a static int >= 1, got 2.0"),
    "segment_num_traced": (
        lambda: jax.jit(lambda n: jaxpool.segment_pool(X, np.zeros(2, int), n))(2), TypeError,
        r"num_segments must be a static int >= 1"),
    "segment_num_zero": (lambda: jaxpool.segment_pool(X, np.zeros(2, int), 0), ValueError,
                         r"num_segments must be >= 1, got 0"),
    "segment_avg_int": (lambda: jaxpool.segment_pool(X.astype(np.int32), np.zeros(2, int), 2),
                        TypeError, r"floating dtype, got dtype int32"),
    # fractional max
    "fractional_both_sizes": (
        lambda: jaxpool.fractional_max_pool(X, (2, 2), (4, 4), output_ratio=0.5,
                                            key=jax.random.key(0)), ValueError,
        r"give exactly one of output_size or output_ratio"),
    "fractional_no_randomness": (lambda: jaxpool.fractional_max_pool(X, (2, 2), (4, 4)),
                                 ValueError, r"give exactly one of key or samples"),
    "fractional_too_large": (
        lambda: jaxpool.fractional_max_pool(X, (3, 3), (7, 4), key=jax.random.key(0)),
        ValueError, r"output size 7 with window 3 needs an input of at least 9 on spatial "
                    r"dim 0 \(o \+ k - 1\), got 8"),
    "fractional_ratio_range": (
        lambda: jaxpool.fractional_max_pool(X, (2, 2), output_ratio=1.5, key=jax.random.key(0)),
        ValueError, r"output_ratio entries must lie in \(0, 1\), got 1.5"),
    "fractional_ratio_type": (
        lambda: jaxpool.fractional_max_pool(X, (2, 2), output_ratio="half",
                                            key=jax.random.key(0)), TypeError,
        r"output_ratio must be a float or 2 floats"),
    "fractional_samples_shape": (
        lambda: jaxpool.fractional_max_pool(X, (2, 2), (4, 4), samples=np.zeros((2, 2))),
        ValueError, r"samples must have shape \(2, 3, 2\) .*got \(2, 2\)"),
    "fractional_samples_dtype": (
        lambda: jaxpool.fractional_max_pool_with_indices(X, (2, 2), (4, 4),
                                                         samples=np.zeros((2, 3, 2), int)),
        TypeError, r"samples must be floating"),
    "fractional_bare_window": (
        lambda: jaxpool.fractional_max_pool(X, 2, (4, 4), key=jax.random.key(0)), TypeError,
        r"did you mean \(2, 2\)"),
    # GeM, average+max, blur
    "gem_p_zero": (lambda: jaxpool.gem_pool(X, 2, 0.0), ValueError,
                   r"gem_pool: p must be finite and > 0, got p=0.0"),
    "gem_p_type": (lambda: jaxpool.gem_pool(X, 2, "3"), TypeError,
                   r"p must be a real scalar .*got '3'"),
    "gem_p_vector": (lambda: jaxpool.gem_pool(X, 2, np.ones(2)), TypeError,
                     r"p must be a real scalar"),
    "gem_eps_type": (lambda: jaxpool.gem_pool(X, 2, eps="tiny"), TypeError,
                     r"eps must be a float, got 'tiny'"),
    "gem_int": (lambda: jaxpool.gem_pool(X.astype(np.int32), 2), TypeError, r"floating dtype"),
    "gem_num_spatial": (lambda: jaxpool.gem_pool(X, None), TypeError, r"num_spatial_dims"),
    "avgmax_int": (lambda: jaxpool.adaptive_avgmax_pool(X.astype(np.int8), (1, 1)), TypeError,
                   r"adaptive_avgmax_pool: input must have a floating dtype"),
    "catavgmax_zero": (lambda: jaxpool.adaptive_catavgmax_pool(X, (0, 1)), ValueError,
                       r"output_size entries must be >= 1"),
    "blur_int": (lambda: jaxpool.blur_pool(X.astype(np.int32), 3), TypeError,
                 r"blur_pool: input must have a floating dtype .*got dtype int32"),
    "blur_kernel_zero": (lambda: jaxpool.blur_pool(X, 0), ValueError,
                         r"kernel_size must be >= 1 .*got kernel_size=0"),
    "blur_kernel_len": (lambda: jaxpool.blur_pool(X, (3, 3), (2, 2, 2)), ValueError,
                        r"strides must have 2 entries"),
    "blur_rank": (lambda: jaxpool.blur_pool(np.zeros((4, 4)), (3, 3)), ValueError,
                  r"at least 3 dims"),
    "max_blur_size": (lambda: jaxpool.max_blur_pool(X, 3, max_pool_size=9), ValueError,
                      r"max_blur_pool: max_pool_size=9 exceeds the input size \(8, 8\)"),
    "max_blur_bool": (lambda: jaxpool.max_blur_pool(X > 0, 3), TypeError, r"floating dtype"),
    "segment_sum_bool": (lambda: jaxpool.segment_pool(X > 0, np.zeros(2, int), 2, "sum"),
                         TypeError, r"op='sum' needs a numeric input, got dtype bool"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_error(name):
  fn, exc, pattern = CASES[name]
  with pytest.raises(exc, match=pattern) as info:
    fn()
  assert not isinstance(info.value, AssertionError)


@pytest.mark.parametrize("name", ["padding_over_half", "output_too_small", "window_in_padding",
                                  "unpool_output_size", "adaptive_zero"])
def test_errors_raise_at_trace_time(name):
  """Under jit the error comes from tracing (shapes only), not from running."""
  fn, exc, pattern = CASES[name]
  with pytest.raises(exc, match=pattern):
    jax.jit(lambda: fn())()
  with pytest.raises(exc, match=pattern):
    jax.eval_shape(fn)


def test_function_name_in_every_message():
  for name, (fn, exc, _) in CASES.items():
    with pytest.raises(exc) as info:
      fn()
    # (Python's own message for a missing argument starts "global_avg_pool() missing")
    assert str(info.value).split(":")[0].split("()")[0] in {
        "max_pool", "min_pool", "avg_pool", "lp_pool", "max_unpool", "adaptive_avg_pool",
        "adaptive_max_pool", "global_avg_pool", "global_max_pool", "channel_pool",
        "max_pool_with_indices", "segment_pool", "gem_pool", "adaptive_avgmax_pool",
        "adaptive_catavgmax_pool", "blur_pool", "max_blur_pool", "fractional_max_pool",
        "fractional_max_pool_with_indices"}, name


def test_no_assert_statements_in_library():
  import pathlib

  root = pathlib.Path(jaxpool.__file__).parent
  offenders = [f"{p.name}:{i}" for p in root.glob("*.py")
               for i, line in enumerate(p.read_text().splitlines(), 1)
               if line.strip().startswith("assert ")]
  assert offenders == []


def test_jnp_inputs_accepted():
  assert jaxpool.max_pool(jnp.zeros((1, 4, 4, 1)), (2, 2)).shape == (1, 2, 2, 1)
  assert jaxpool.max_pool([[[1.0], [2.0]]], (2,)).shape == (1, 1, 1)
