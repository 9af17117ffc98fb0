"""Backbone networks: classifiers whose logits become energies."""

import gin
import keras


@gin.configurable
def small_convnet(num_classes=10, widths=(32, 64, 128), activation="swish",
                  dropout=0.0, name="small_convnet"):
  """A small all-convolutional classifier for small images (e.g. 8×8 digits).

  The first convolution keeps the resolution; each later one halves it
  (stride 2). Global average pooling and a dense layer give the logits.
  Smooth activations (swish) give SGLD smoother input gradients than ReLU.

  Args:
    num_classes: K, the number of logits (1 for a scalar-energy backbone).
    widths: filters of each 3×3 convolution.
    activation: activation after each convolution (e.g. "swish",
      "leaky_relu", "relu").
    dropout: dropout rate before the read-out (0 disables it).
    name: the model's name.

  Returns:
    An unbuilt `keras.Sequential`; it is built on first use.
  """
  if num_classes < 1:
    raise ValueError(f"small_convnet.num_classes must be >= 1, got "
                     f"{num_classes}.")
  if not widths:
    raise ValueError("small_convnet.widths needs at least one layer width.")
  layers = []
  for i, width in enumerate(widths):
    layers.append(keras.layers.Conv2D(
        int(width), 3, strides=1 if i == 0 else 2, padding="same",
        name=f"conv{i}"))
    layers.append(keras.layers.Activation(activation, name=f"act{i}"))
  layers.append(keras.layers.GlobalAveragePooling2D(name="pool"))
  if dropout:
    layers.append(keras.layers.Dropout(dropout, name="dropout"))
  layers.append(keras.layers.Dense(num_classes, name="logits"))
  return keras.Sequential(layers, name=name)
