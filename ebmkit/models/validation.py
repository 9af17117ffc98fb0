"""What a valid input batch is, defined once for training, the Python
inference API and the SavedModel.

A batch is valid when it has the model's sample shape, holds finite numbers,
and stays within the model's data range (`ReplayBuffer.data_range`, [−1, 1]
for images scaled as pixel / 127.5 − 1) widened by `TOLERANCE` of its width
on each side: training images carry σ_data noise and augmentation, so values
slightly outside the range are normal.

A batch that fits the range can still be scaled wrongly: pixel / 255 puts
[−1, 1] images in [0, 1], the range's upper half, and every check above
passes while accuracy collapses. So a batch of at least `MIN_BATCH_EXAMPLES`
inputs whose smallest value lies in the upper half (lowered by the same
`TOLERANCE` of the width, for the training noise) is rejected too. Real
batches never do that: digits have a −1 background, and a natural image
whose pixels are all >= 64 / 255 in every channel is rare (a few percent at
most), so 16 of them in one batch is beyond chance, while a single bright
image legitimately is. Below 16 inputs the Python API only warns and the
graph lets the batch pass.
"""

import warnings

import numpy as np
import tensorflow as tf

TOLERANCE = 0.25  # Of the data range's width, allowed beyond each end.
MIN_BATCH_EXAMPLES = 16  # Inputs a batch needs before it is judged as a whole.
_SCALE_HINT = "scale pixels as pixel / 127.5 - 1 (ebmkit.data.pipeline.to_unit_range)"


def bounds(data_range):
  """(lowest, highest) valid input value for a data range (low, high)."""
  low, high = (float(v) for v in data_range)
  slack = TOLERANCE * (high - low)
  return low - slack, high + slack


def upper_half_floor(data_range):
  """The value a batch's minimum reaches or exceeds when the whole batch
  sits in the upper half of `data_range` (scaled to [0, 1] for [−1, 1]
  data): the range's midpoint lowered by `TOLERANCE` of its width."""
  low, high = (float(v) for v in data_range)
  return (low + high) / 2 - TOLERANCE * (high - low)


def _upper_half_text(data_range):
  low, high = (float(v) for v in data_range)
  return (f"the whole batch lies in the upper half of the data range "
          f"[{low:g}, {high:g}] (no value below "
          f"{upper_half_floor(data_range):g}, where real data has values near "
          f"{low:g}), as if scaled to [{(low + high) / 2:g}, {high:g}] (e.g. "
          f"pixel / 255): {_SCALE_HINT}.")


def _shape_text(sample_shape):
  return f"[n, {', '.join(str(d) for d in sample_shape)}]"


def check_array(x, sample_shape, data_range):
  """Validates a NumPy (or eager) batch; returns it as float32.

  A batch of fewer than `MIN_BATCH_EXAMPLES` inputs that lies in the upper
  half of the range gets a warning instead of the error.

  Raises:
    ValueError: wrong dtype, rank or shape, NaN/Inf, values outside the
      valid range (see `bounds`), or a batch of at least
      `MIN_BATCH_EXAMPLES` inputs all in the range's upper half (see
      `upper_half_floor`).
  """
  sample_shape = tuple(sample_shape)
  x = x.numpy() if tf.is_tensor(x) else np.asarray(x)
  if not (np.issubdtype(x.dtype, np.floating)
          or np.issubdtype(x.dtype, np.integer)):
    raise ValueError(f"Inputs must be numbers, got dtype {x.dtype}.")
  if x.ndim != len(sample_shape) + 1:
    raise ValueError(
        f"Inputs must be a batch of shape {_shape_text(sample_shape)} (rank "
        f"{len(sample_shape) + 1}), got rank {x.ndim} shape {x.shape}. Add a "
        f"batch axis for a single example: x[None].")
  if tuple(x.shape[1:]) != sample_shape:
    raise ValueError(f"Each input must have shape {sample_shape}, got "
                     f"{tuple(x.shape[1:])}.")
  x = x.astype(np.float32)
  if not np.isfinite(x).all():
    raise ValueError(f"Inputs contain {np.sum(~np.isfinite(x))} NaN or Inf "
                     "values.")
  lowest, highest = bounds(data_range)
  if x.size and (x.min() < lowest or x.max() > highest):
    raise ValueError(
        f"Inputs must be in the data range [{data_range[0]}, {data_range[1]}]"
        f", got values in [{x.min():.3g}, {x.max():.3g}]: {_SCALE_HINT}.")
  if x.size and x.min() >= upper_half_floor(data_range):
    text = (f"{len(x)} inputs, smallest value {x.min():.3g}: "
            f"{_upper_half_text(data_range)}")
    if len(x) >= MIN_BATCH_EXAMPLES:
      raise ValueError(f"Inputs look wrongly scaled ({text}")
    warnings.warn(f"ebmkit: inputs may be wrongly scaled ({text}",
                  stacklevel=3)
  return x


def runtime_rank(t):
  """The rank `t` has when the graph runs, as an int32 scalar.

  A SavedModel signature accepts tensors of any rank, whatever its
  TensorSpec, while TensorFlow folds `tf.rank(t)` (and `tf.size(tf.shape(t))`)
  to the spec's static rank; a boolean mask's length is known only at run
  time.
  """
  dims = tf.shape(t)
  return tf.size(tf.boolean_mask(dims, dims >= 0))


def check_tensor(x, sample_shape, data_range):
  """The same checks inside a graph (train step, SavedModel signature).

  A static shape that cannot match fails at trace time with a ValueError;
  the rest are in-graph assertions (InvalidArgument errors at run time). The
  rank is asserted before the shape is compared (a SavedModel signature's
  static shape does not stop a tensor of another rank), and a batch in the
  upper half of the range is an error only from `MIN_BATCH_EXAMPLES` inputs.

  A `data_range` of None checks rank, shape and finiteness only (inputs
  without a bounded range, e.g. a GAN's latent codes z ~ N(0, I)).

  Returns:
    `x`, with the assertions as control dependencies.
  """
  sample_shape = tuple(int(d) for d in sample_shape)
  got = tuple(x.shape[1:]) if x.shape.rank is not None else None
  if got is not None and (len(got) != len(sample_shape) or any(
      g is not None and g != w for g, w in zip(got, sample_shape))):
    raise ValueError(
        f"Inputs have shape {got} per example but this model was built for "
        f"{sample_shape}: resize them in the data pipeline or build the model "
        f"for that shape.")
  shape_text = _shape_text(sample_shape)
  rank_check = tf.debugging.assert_equal(
      runtime_rank(x), len(sample_shape) + 1,
      message=f"ebmkit: inputs must be a batch of shape {shape_text} (rank "
              f"{len(sample_shape) + 1}; add a batch axis for a single "
              f"example).")
  # Everything else runs once the rank is right: comparing shapes of other
  # lengths, or reducing over the static rank's axes, fails with
  # TensorFlow's own error.
  with tf.control_dependencies([rank_check]):
    flat = tf.reshape(x, [-1])
    checks = [
        rank_check,
        tf.debugging.assert_equal(
            tf.shape(x)[1:], tf.constant(sample_shape, tf.int32),
            message=f"ebmkit: inputs must have shape {shape_text}."),
        tf.debugging.assert_all_finite(flat,
                                       "ebmkit: inputs contain NaN or Inf."),
    ]
  if data_range is None:
    with tf.control_dependencies(checks):
      return tf.identity(x)
  lowest, highest = bounds(data_range)
  low, high = data_range
  with tf.control_dependencies([rank_check]):
    smallest = tf.reduce_min(flat)
    upper_half = tf.logical_and(
        tf.shape(x)[0] >= MIN_BATCH_EXAMPLES,
        smallest >= tf.cast(upper_half_floor(data_range), x.dtype))
    checks += [
        tf.debugging.assert_greater_equal(
            smallest, tf.cast(lowest, x.dtype),
            message=f"ebmkit: inputs go below the data range [{low}, {high}]"
                    f": {_SCALE_HINT}."),
        tf.debugging.assert_less_equal(
            tf.reduce_max(flat), tf.cast(highest, x.dtype),
            message=f"ebmkit: inputs go above the data range [{low}, {high}] "
                    f"(uint8 pixels not scaled?): {_SCALE_HINT}."),
        tf.debugging.Assert(
            tf.logical_not(upper_half),
            ["ebmkit: inputs look wrongly scaled: "
             + _upper_half_text(data_range), "Batch size:", tf.shape(x)[0],
             "smallest value:", smallest]),
    ]
  with tf.control_dependencies(checks):
    return tf.identity(x)
