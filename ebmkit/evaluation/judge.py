"""Feature extractors for IS/FID and the judge of class-conditional samples.

Inception-v3 is used only when its ImageNet weights are already on this
machine (never downloaded here); otherwise, an independent classifier
trained on the same data set: its p(y|x) gives the Inception Score, its
penultimate features the FID, and it judges class-conditional samples.
"""

import os

import keras
import numpy as np
import tensorflow as tf

INCEPTION_WEIGHTS = "inception_v3_weights_tf_dim_ordering_tf_kernels.h5"


def inception_weights_path():
  return os.path.join(os.path.expanduser(os.environ.get("KERAS_HOME",
                                                        "~/.keras")),
                      "models", INCEPTION_WEIGHTS)


def _judge_network(image_shape, num_classes, width):
  """A small all-convolutional classifier, independent of any EBM's weights."""
  inputs = keras.Input(image_shape)
  h = inputs
  for i, filters in enumerate((width, 2 * width, 4 * width)):
    h = keras.layers.Conv2D(filters, 3, strides=1 if i == 0 else 2,
                            padding="same", activation="relu")(h)
    h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(h)
  features = keras.layers.GlobalAveragePooling2D(name="features")(h)
  logits = keras.layers.Dense(num_classes, name="logits")(features)
  return keras.Model(inputs, [logits, features], name="judge")


class Extractor:
  """name, probs(x) -> p(y|x), features(x) -> feature vectors."""

  def __init__(self, name, model, description):
    self.name, self.model, self.description = name, model, description

  def _batches(self, x, index, batch_size=256):
    outs = [self.model(tf.constant(x[i:i + batch_size], tf.float32))[index]
            for i in range(0, len(x), batch_size)]
    return np.concatenate([np.asarray(o) for o in outs])

  def probs(self, x):
    return tf.nn.softmax(self._batches(x, 0)).numpy()

  def features(self, x):
    return self._batches(x, 1)


def classifier_judge(train_images, train_labels, test_images, test_labels,
                     num_classes, path, epochs=20, learning_rate=1e-3,
                     batch_size=64, width=32, seed=1234):
  """Trains (or loads from `path`) the independent judge classifier.

  Args:
    train_images, train_labels: its training data ([n, H, W, C], int [n]).
    test_images, test_labels: the data its test accuracy is measured on.
    num_classes: classes of its read-out.
    path: its .keras file; loaded when it exists (the settings below then
      do nothing), else trained and saved there.
    epochs: training epochs.
    learning_rate: Adam's learning rate.
    batch_size: training batch size.
    width: filters of its first convolutions (doubled twice).
    seed: seed of its initialisation and shuffling.

  Returns:
    (Extractor of the judge, its test accuracy).
  """
  if os.path.isfile(path):
    model = keras.models.load_model(path)
  else:
    keras.utils.set_random_seed(seed)
    model = _judge_network(train_images.shape[1:], num_classes, width)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=[keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True), None])
    model.fit(train_images, train_labels, batch_size=batch_size,
              epochs=epochs, verbose=0)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    model.save(path)
  logits = model.predict(test_images, verbose=0)[0]
  accuracy = float(np.mean(np.argmax(logits, -1) == test_labels))
  return Extractor("classifier", model,
                   f"an independent convnet classifier trained on the same "
                   f"training split ({epochs} epochs; test accuracy "
                   f"{accuracy:.4f}), saved at {path}"), accuracy


def inception_extractor():
  """Inception-v3 with local ImageNet weights (inputs resized to 299×299)."""
  path = inception_weights_path()
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"Inception-v3 weights are not at {path}; ebmkit never downloads them "
        f"silently. Put {INCEPTION_WEIGHTS} there (keras.applications."
        f"InceptionV3(weights='imagenet') on a machine with network access "
        f"saves it) or use feature_extractor='classifier'.")
  base = keras.applications.InceptionV3(weights=path)
  features = base.get_layer("avg_pool").output
  inner = keras.Model(base.input, [base.output, features])
  inputs = keras.Input((None, None, 3))
  resized = keras.layers.Resizing(299, 299)(inputs)  # Already in [-1, 1].
  logits_and_features = inner(resized)
  # The top layer outputs probabilities; log turns them back into logits.
  model = keras.Model(inputs, [keras.ops.log(logits_and_features[0] + 1e-12),
                               logits_and_features[1]])
  return Extractor("inception_v3", model, f"Inception-v3 ({path})")
