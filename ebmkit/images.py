"""Sample grids as PNG files and TensorBoard images."""

import math
import os

import numpy as np
import tensorflow as tf


def make_grid(images, columns=None, pad=1, scale=1):
  """Tiles images in [-1, 1] into one uint8 picture.

  Args:
    images: array [n, H, W, C] (C = 1 or 3) with values in [-1, 1].
    columns: images per row (default: ceil(sqrt(n))).
    pad: pixels of white between images.
    scale: integer upscaling (nearest neighbour), so 8×8 images stay visible.

  Returns:
    A uint8 array [rows·(H·scale+pad)+pad, columns·(W·scale+pad)+pad, C].
  """
  images = np.asarray(images, np.float32)
  if images.ndim != 4:
    raise ValueError(f"make_grid needs images [n, H, W, C], got shape "
                     f"{images.shape}.")
  n, h, w, c = images.shape
  columns = columns or max(1, math.ceil(math.sqrt(n)))
  rows = max(1, math.ceil(n / columns))
  images = np.nan_to_num(images, nan=-1.0)  # A diverged chain shows black.
  pixels = np.round((np.clip(images, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
  if scale > 1:
    pixels = pixels.repeat(scale, axis=1).repeat(scale, axis=2)
    h, w = h * scale, w * scale
  grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255,
                 np.uint8)
  for i in range(n):
    r, col = divmod(i, columns)
    top, left = pad + r * (h + pad), pad + col * (w + pad)
    grid[top:top + h, left:left + w] = pixels[i]
  return grid


def save_png(path, picture):
  """Writes a uint8 array [H, W, C] to `path` as PNG (folders created)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tf.io.write_file(path, tf.io.encode_png(tf.convert_to_tensor(picture)))
  return path


def default_scale(image_size):
  """An upscaling that makes a cell at least ~32 pixels wide."""
  return max(1, 32 // int(image_size))
