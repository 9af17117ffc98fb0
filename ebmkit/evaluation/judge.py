"""Feature extractors for IS/FID and the judge of class-conditional samples.

Three networks can give IS/FID features, in the order they are preferred:
the standard one of published IS/FID numbers (the 2015 Inception graph of
TTUR's and TF-GAN's FID code, pool_3 features and its 1008-way softmax,
from a local .pb file: `frozen_inception_extractor`); Keras' Inception-v3
with ImageNet weights already on this machine (a different network, so its
numbers are not comparable to published ones); otherwise an independent
classifier trained on the same data set: its p(y|x) gives the Inception
Score, its penultimate features the FID, and it judges class-conditional
samples. Nothing is downloaded here.
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
  """name, probs(x) -> p(y|x), features(x) -> feature vectors.

  Attributes:
    name: "classifier", "inception_v3" or "inception_pool3".
    model: x in [−1, 1] -> [logits, features].
    description: a sentence on the network (where it came from).
    label: what its IS/FID are called in reports ("judge-classifier IS").
    standard: whether it is the network of published IS/FID numbers.
  """

  def __init__(self, name, model, description, label=None, standard=False):
    self.name, self.model, self.description = name, model, description
    self.label = label or name
    self.standard = standard

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
                   f"an independent convnet classifier trained on the "
                   f"training split ({epochs} epochs; test accuracy "
                   f"{accuracy:.4f}), saved at {path}",
                   label="judge-classifier"), accuracy


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
  return Extractor("inception_v3", model,
                   f"Keras Inception-v3 with ImageNet weights ({path}), "
                   f"avg_pool features; not the graph of published IS/FID "
                   f"numbers",
                   label="Keras-Inception-v3")


# Tensor names of the two published frozen graphs of the 2015 Inception
# network: TTUR's/OpenAI's classify_image_graph_def.pb takes images of any
# size in [0, 255] at ExpandDims:0 (it resizes to 299 itself) and has the
# softmax weights at softmax/logits/MatMul (IS as in Salimans et al. 2016);
# TF-GAN's inceptionv1_for_inception_score.pb takes 299×299 images in
# [−1, 1] at Mul:0 and has logits:0.
_TTUR = {"input": "ExpandDims:0", "pool": "pool_3:0",
         "softmax_matmul": "softmax/logits/MatMul"}
_TFGAN = {"input": "Mul:0", "pool": "pool_3:0", "logits": "logits:0"}


def _graph_def(path):
  graph_def = tf.compat.v1.GraphDef()
  with tf.io.gfile.GFile(path, "rb") as f:
    graph_def.ParseFromString(f.read())
  return graph_def


def frozen_inception_extractor(path):
  """The standard IS/FID network: Inception pool_3 from a frozen graph.

  Args:
    path: TTUR's classify_image_graph_def.pb or TF-GAN's
      inceptionv1_for_inception_score.pb, already on this machine.

  Returns:
    An Extractor: features are pool_3's 2048 values, probs its 1008-way
    softmax. Inputs in [−1, 1]; 1-channel images are repeated to RGB.

  Raises:
    FileNotFoundError: no file at `path`.
    ValueError: the graph has neither layout's tensors.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"evaluate.fid_network_path: no file at {path}. ebmkit never "
        f"downloads it: copy TTUR's classify_image_graph_def.pb (from "
        f"inception-2015-12-05.tgz) or TF-GAN's "
        f"inceptionv1_for_inception_score.pb there.")
  graph_def = _graph_def(path)
  names = {node.name for node in graph_def.node}
  has = lambda tensor: tensor.split(":")[0] in names
  if all(has(t) for t in _TTUR.values()):
    layout, pixels_0_255 = _TTUR, True
  elif all(has(t) for t in _TFGAN.values()):
    layout, pixels_0_255 = _TFGAN, False
  else:
    raise ValueError(
        f"{path} is not a known Inception graph: expected the tensors "
        f"{sorted(_TTUR.values())} (TTUR) or {sorted(_TFGAN.values())} "
        f"(TF-GAN).")

  def import_and_read(x):
    pool, = tf.graph_util.import_graph_def(
        graph_def, input_map={layout["input"]: x},
        return_elements=[layout["pool"]], name="inception")
    features = tf.reshape(pool, (tf.shape(x)[0], -1))
    if "logits" in layout:
      logits = tf.compat.v1.get_default_graph().get_tensor_by_name(
          "inception/" + layout["logits"])
    else:
      weights = tf.compat.v1.get_default_graph().get_operation_by_name(
          "inception/" + layout["softmax_matmul"]).inputs[1]
      logits = tf.matmul(features, weights)
    return logits, features

  run = tf.compat.v1.wrap_function(
      import_and_read, [tf.TensorSpec([None, None, None, 3], tf.float32)])

  def model(x):
    x = tf.convert_to_tensor(x, tf.float32)
    if x.shape[-1] == 1:
      x = tf.image.grayscale_to_rgb(x)
    x = (x + 1.0) * 127.5  # Pixels in [0, 255].
    if not pixels_0_255:  # TF-GAN's preprocessing: (pixel − 128) / 128.
      x = (tf.image.resize(x, (299, 299), method="bilinear") - 128.0) / 128.0
    return run(x)

  kind = "TTUR" if pixels_0_255 else "TF-GAN"
  return Extractor("inception_pool3", model,
                   f"the standard FID network: 2015 Inception pool_3 "
                   f"features and softmax ({kind} frozen graph, {path})",
                   label="Inception-pool3", standard=True)
