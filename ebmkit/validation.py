"""What a valid input batch is, defined once for training, the Python
inference API and the SavedModel.

A batch is valid when it has the model's sample shape, holds finite numbers,
and stays within the model's data range (`ReplayBuffer.data_range`, [−1, 1]
for images scaled as pixel / 127.5 − 1) widened by `TOLERANCE` of its width
on each side: training images carry σ_data noise and augmentation, so values
slightly outside the range are normal.
"""

import numpy as np
import tensorflow as tf

TOLERANCE = 0.25  # Of the data range's width, allowed beyond each end.
_SCALE_HINT = "scale pixels as pixel / 127.5 - 1 (ebmkit.data.to_unit_range)"


def bounds(data_range):
  """(lowest, highest) valid input value for a data range (low, high)."""
  low, high = (float(v) for v in data_range)
  slack = TOLERANCE * (high - low)
  return low - slack, high + slack


def _shape_text(sample_shape):
  return f"[n, {', '.join(str(d) for d in sample_shape)}]"


def check_array(x, sample_shape, data_range):
  """Validates a NumPy (or eager) batch; returns it as float32.

  Raises:
    ValueError: wrong dtype, rank or shape, NaN/Inf, or values outside the
      valid range (see `bounds`).
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
  return x


def check_tensor(x, sample_shape, data_range):
  """The same checks inside a graph (train step, SavedModel signature).

  A static shape that cannot match fails at trace time with a ValueError;
  the rest are in-graph assertions (InvalidArgument errors at run time).

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
  lowest, highest = bounds(data_range)
  low, high = data_range
  checks = [
      tf.debugging.assert_equal(
          tf.shape(x)[1:], tf.constant(sample_shape, tf.int32),
          message=f"ebmkit: inputs must have shape "
                  f"{_shape_text(sample_shape)}."),
      tf.debugging.assert_all_finite(x, "ebmkit: inputs contain NaN or Inf."),
      tf.debugging.assert_greater_equal(
          tf.reduce_min(x), tf.cast(lowest, x.dtype),
          message=f"ebmkit: inputs go below the data range [{low}, {high}]: "
                  f"{_SCALE_HINT}."),
      tf.debugging.assert_less_equal(
          tf.reduce_max(x), tf.cast(highest, x.dtype),
          message=f"ebmkit: inputs go above the data range [{low}, {high}] "
                  f"(uint8 pixels not scaled?): {_SCALE_HINT}."),
  ]
  with tf.control_dependencies(checks):
    return tf.identity(x)
