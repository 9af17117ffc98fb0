"""Energy heads: how a network's output is read as an energy.

A classifier's logits f(x) define a joint energy-based model (JEM):
E(x, y) = -f(x)[y], E(x) = -LogSumExp_y f(x)[y] and p(y|x) = softmax f(x).
An unconditional EBM (IGEBM) has one scalar energy per input instead.
"""

import keras
from keras import ops


def energy_from_logits(logits):
  """E(x) = -LogSumExp_y f(x)[y], one value per example."""
  return -ops.logsumexp(logits, axis=-1)


def class_energy_from_logits(logits, y):
  """E(x, y) = -f(x)[y] for integer labels `y` of shape [batch]."""
  y = ops.cast(y, "int32")
  return -ops.take_along_axis(logits, y[:, None], axis=-1)[:, 0]


@keras.saving.register_keras_serializable(package="ebmkit")
class EnergyHead(keras.layers.Layer):
  """Reads classifier logits f(x) as a joint energy model (JEM).

  Calling it returns a dict with
    `energy`: E(x) = -LogSumExp_y f(x)[y], shape [batch];
    `class_energy`: E(x, y) = -f(x)[y] for every y, shape [batch, K];
    `log_px`: unnormalised log p(x) = -E(x), shape [batch];
    `log_pyx`: log p(y|x) = log_softmax f(x), shape [batch, K].
  """

  classifies = True

  def __init__(self, **kwargs):
    # LogSumExp over float32 logits even under a mixed-precision policy
    # (Keras casts a layer's inputs to its compute dtype).
    kwargs.setdefault("dtype", "float32")
    super().__init__(**kwargs)

  def call(self, logits):
    logits = ops.cast(logits, "float32")  # LogSumExp in float32 always.
    energy = energy_from_logits(logits)
    return {
        "energy": energy,
        "class_energy": -logits,
        "log_px": -energy,
        "log_pyx": ops.log_softmax(logits, axis=-1),
    }

  def compute_output_shape(self, input_shape):
    batch, classes = input_shape[0], input_shape[-1]
    return {"energy": (batch,), "class_energy": (batch, classes),
            "log_px": (batch,), "log_pyx": (batch, classes)}

  def compute_output_spec(self, logits):
    return {k: keras.KerasTensor(v, "float32")
            for k, v in self.compute_output_shape(logits.shape).items()}


@keras.saving.register_keras_serializable(package="ebmkit")
class ScalarEnergyHead(keras.layers.Layer):
  """A scalar energy for unconditional EBMs (IGEBM style): E(x) = -w·h(x) - b.

  Reads the backbone's features h(x) (any shape [batch, ...]; flattened) and
  returns a dict with `energy` (shape [batch]) and `log_px` = -E(x).

  Args:
    use_bias: whether the linear read-out has a bias (it does not change the
      distribution, only the energy's offset).
    spectral_norm: wrap the read-out in `keras.layers.SpectralNormalization`
      (as IGEBM does for every layer).
  """

  classifies = False

  def __init__(self, use_bias=True, spectral_norm=False, **kwargs):
    kwargs.setdefault("dtype", "float32")  # See EnergyHead.
    super().__init__(**kwargs)
    self.use_bias = use_bias
    self.spectral_norm = spectral_norm
    self.flatten = keras.layers.Flatten()
    self.dense = keras.layers.Dense(1, use_bias=use_bias, name="readout")
    self.readout = (keras.layers.SpectralNormalization(self.dense)
                    if spectral_norm else self.dense)

  def build(self, input_shape):
    self.flatten.build(input_shape)
    self.readout.build(self.flatten.compute_output_shape(input_shape))

  def call(self, features, training=False):
    score = ops.cast(self.readout(self.flatten(features),
                                  training=training)[:, 0], "float32")
    return {"energy": -score, "log_px": score}

  def compute_output_shape(self, input_shape):
    return {"energy": (input_shape[0],), "log_px": (input_shape[0],)}

  def compute_output_spec(self, features, training=False):
    return {k: keras.KerasTensor(v, "float32")
            for k, v in self.compute_output_shape(features.shape).items()}

  def get_config(self):
    return {**super().get_config(), "use_bias": self.use_bias,
            "spectral_norm": self.spectral_norm}
