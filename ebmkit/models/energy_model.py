"""EnergyModel: any Keras backbone trained as an energy-based model (JEM)."""

import keras
import numpy as np
import tensorflow as tf

from ebmkit import compat
from ebmkit import images
from ebmkit.models import buffer as buffer_lib
from ebmkit.models import heads as energy_lib
from ebmkit.models import kind
from ebmkit.models import metrics as model_metrics
from ebmkit.models import objective
from ebmkit.models import replicas
from ebmkit.models import sampling
from ebmkit.models import validation

# The batches' layout, for users of the model (`objective` owns it).
IMAGES = objective.IMAGES
LABELLED_IMAGES = objective.LABELLED_IMAGES
split_images = objective.split_images


def has_batch_norm(layer):
  """Whether `layer` or any layer inside it is a BatchNormalization."""
  return any(isinstance(l, keras.layers.BatchNormalization)
             for l in compat.flatten_layers(layer))


@keras.saving.register_keras_serializable(package="ebmkit")
class EnergyModel(keras.Model, kind.ModelKind):
  """A backbone read as an energy-based model, trained with SGLD samples.

  The loss of one training step is
    L = w_clf·CE(f(x), y)
      + w_px ·(mean E(x) − mean E(x̂))            x̂ ~ SGLD on E(x)
      + w_pxy·(mean E(x, y) − mean E(x̂_y, y))    x̂_y ~ SGLD on E(x, y)
      + w_l2 ·mean(E(x)² + E(x̂)²)
  where the chains start from the replay buffer and are written back to it.
  With (w_clf, w_px, w_pxy) = (1, 1, 0) this is JEM; (1, 0, 1) is "JEM
  p(x|y) factored"; a `ScalarEnergyHead` with (0, 1, 0) and w_l2 > 0 is IGEBM.

  Batches are (x, y), or for semi-supervised training, as the reference
  draws them, ({"images": x, "labelled_images": x_l}, y_l): the p(x) term
  reads x (any images), the cross-entropy and p(x|y) terms read the labelled
  batch x_l with labels y_l (`ebmkit.load_dataset(labels_per_class=...)`
  builds these). In a single batch, labels < 0 mark unlabelled examples.

  Calling the model returns the head's dict (`energy`, `log_px`, and for
  classifiers `class_energy`, `log_pyx`) plus `logits`/`features`.

  Args:
    backbone: a Keras model or layer; for an `EnergyHead` it outputs the
      classifier logits f(x) [batch, K], for a `ScalarEnergyHead` features.
    head: `EnergyHead` (default) or `ScalarEnergyHead`.
    replay_buffer: a `ReplayBuffer` (default: 10,000 samples, ρ = 0.05).
    sampler: a `LangevinSampler` (default: α = 1, σ = 0.01, η = 20), or an
      `mcmc.MCMCSampler` (MALA or HMC from tensorflow-probability).
    clf_weight: w_clf, weight of the cross-entropy.
    px_weight: w_px, weight of the log p(x) term.
    pxy_weight: w_pxy, weight of the log p(x|y) term.
    l2_weight: w_l2, weight of the energy-magnitude penalty.
    px_conditional_chains: draw the p(x) term's samples class by class, as
      the reference does with a class-conditional buffer: y ~ p(y) (uniform),
      then SGLD on E(x, y) from buffer slice y; the loss still uses E(x̂).
    seed: int seed for the model's own draws (labels for conditional chains).
    separate_passes: run the backbone once per part of the step (data,
      samples, labelled batch) instead of once over their concatenation, so
      that batch normalisation normalises each part by its own statistics
      and its running averages see each part apart, as in the reference.
      "auto": when the backbone has a BatchNormalization layer (one joint
      pass is faster otherwise and gives the same result).
  """

  def __init__(self, backbone=None, head=None, replay_buffer=None,
               sampler=None, clf_weight=1.0, px_weight=1.0, pxy_weight=0.0,
               l2_weight=0.0, px_conditional_chains=False, seed=None,
               separate_passes="auto", **kwargs):
    super().__init__(**kwargs)
    if backbone is None:
      raise ValueError("EnergyModel needs a `backbone`: a Keras model that "
                       "maps inputs to logits (or to features for a "
                       "ScalarEnergyHead).")
    for name, value in (("clf_weight", clf_weight), ("px_weight", px_weight),
                        ("pxy_weight", pxy_weight), ("l2_weight", l2_weight)):
      if value < 0:
        raise ValueError(f"EnergyModel.{name} must be >= 0, got {value}.")
    self.backbone = backbone
    self.head = head if head is not None else energy_lib.EnergyHead()
    self.replay_buffer = (replay_buffer if replay_buffer is not None
                          else buffer_lib.ReplayBuffer())
    self.sampler = (sampler if sampler is not None
                    else sampling.LangevinSampler())
    self.clf_weight = float(clf_weight)
    self.px_weight = float(px_weight)
    self.pxy_weight = float(pxy_weight)
    self.l2_weight = float(l2_weight)
    self.px_conditional_chains = bool(px_conditional_chains)
    self.seed = seed
    self.seed_generator = replicas.SeedGenerator(seed)
    if separate_passes not in ("auto", True, False):
      raise ValueError(f"EnergyModel.separate_passes must be 'auto', True or "
                       f"False, got {separate_passes!r}.")
    self.separate_passes = separate_passes
    self.num_classes = None
    if not self.classifies and (self.clf_weight or self.pxy_weight
                                or self.px_conditional_chains):
      raise ValueError(
          "A ScalarEnergyHead has no classes: set clf_weight=0, pxy_weight=0 "
          "and px_conditional_chains=False, or use EnergyHead to train a "
          "classifier.")
    if not (self.clf_weight or self.px_weight or self.pxy_weight):
      raise ValueError("EnergyModel has nothing to train: clf_weight, "
                       "px_weight and pxy_weight are all 0.")

    # l2_loss is tracked whenever sampling is on, so that a divergence
    # recovery can switch the penalty on; it is reported once its weight > 0.
    tracked = ["loss"] + [t for t, w in zip(objective.TERMS,
                                            self._term_weights)
                          if w or (t == "l2_loss" and self.draws_samples)]
    if self.classifies:
      tracked.append("accuracy")
    tracked.append("energy_data")
    if self.draws_samples:
      tracked.append("energy_samples")
    self._trackers = model_metrics.trackers(tracked)
    self._reported = {name: model_metrics.Reported(m)
                      for name, m in self._trackers.items()}
    # Metrics from `compile(metrics=..., weighted_metrics=...)`: (the metric
    # wrapped as `model_metrics.Reported`, whether it reads sample_weight).
    model_metrics.set_untracked(self, "_extra_metrics", [])
    # Compiled samplers for `sample`, by (conditional, xla).
    model_metrics.set_untracked(self, "_samplers", {})

  # -- structure -------------------------------------------------------------

  @property
  def classifies(self):
    """Whether the model has classes (an `EnergyHead` over logits)."""
    return bool(getattr(self.head, "classifies", False))

  trains_distributed = True  # Per-replica buffer shards (`replicas`).

  @property
  def sample_shape(self):
    return tuple(self.replay_buffer.sample_shape)

  @property
  def data_range(self):
    return tuple(self.replay_buffer.data_range)

  def needs_informative_init(self):
    return self.replay_buffer.init == "informative"

  def sample_grid(self, num_images=64):
    """A grid of replay-buffer samples, evenly spaced over the buffer's
    slots, so that it shows every class slice of a class-conditional one."""
    buf = self.replay_buffer
    slots = np.linspace(0, buf.size - 1, min(num_images, buf.size)).astype(
        int)
    samples = tf.gather(buf.samples.value, slots).numpy()
    return images.make_grid(samples, scale=images.default_scale(
        samples.shape[1]))

  def serving_signatures(self, detection=False):
    if not self.classifies:
      return ("energy", "log_px", "ood_score", "sample")
    return ("classify", "energy", "log_px", "ood_score", "sample",
            "conditional_density") + (("detect",) if detection else ())

  def export_metadata(self, data_range=None, detection=None):
    return {"input_shape": list(self.sample_shape),
            "data_range": list(data_range or self.data_range),
            "detection": detection}

  @property
  def _term_weights(self):
    return (self.clf_weight, self.px_weight, self.pxy_weight, self.l2_weight)

  @property
  def draws_samples(self):
    """Whether training samples (a p(x) or p(x|y) term is on)."""
    return bool(self.px_weight or self.pxy_weight)

  @property
  def passes_apart(self):
    """Whether the train step runs the backbone once per part (see
    `separate_passes`)."""
    if self.separate_passes == "auto":
      return has_batch_norm(self.backbone)
    return bool(self.separate_passes)

  @property
  def metrics(self):
    """The metrics `fit` and `evaluate` report, in `metrics_names` order:
    loss, each loss term with a weight, accuracy, the compiled metrics,
    energy_data, energy_samples."""
    names = [n for n in self._trackers
             if n != "l2_loss" or self.l2_weight]  # See __init__.
    extra = [reported for reported, _ in self._extra_metrics]
    at = names.index("energy_data")
    return ([self._reported[n] for n in names[:at]] + extra
            + [self._reported[n] for n in names[at:]])

  # -- Keras API -------------------------------------------------------------

  def compile(self, optimizer="rmsprop", loss=None, loss_weights=None,
              metrics=None, weighted_metrics=None, **kwargs):
    """Configures training, as `keras.Model.compile`, except for the loss.

    The loss is the model's own (the class docstring's L), set by
    clf_weight, px_weight, pxy_weight and l2_weight, so `loss` and
    `loss_weights` are refused. `metrics` and `weighted_metrics` (names,
    functions or `keras.metrics.Metric`s) are computed on the classifier,
    with y_true the integer labels and y_pred p(y|x) = softmax f(x)
    (probabilities, which Keras' metrics assume unless told
    `from_logits=True`); unlabelled examples (label < 0) do not count, and
    `weighted_metrics` also read `sample_weight`. `fit` and `evaluate`
    report them after `accuracy`, which the model reports anyway ("accuracy"
    in `metrics` adds nothing). Other arguments are Keras'.

    Raises:
      ValueError: for a `loss` or `loss_weights`, metrics on a model without
        classes, or a metric named like one the model reports.
    """
    if loss is not None or loss_weights is not None:
      raise ValueError(
          "EnergyModel computes its own loss (the weighted sum of its "
          "cross-entropy, p(x), p(x|y) and L2 terms), so compile(loss=...) "
          "would be ignored. Set the terms' weights with the EnergyModel "
          "arguments clf_weight, px_weight, pxy_weight and l2_weight, and "
          "leave loss and loss_weights out of compile().")
    extra = model_metrics.compile_metrics(metrics, weighted_metrics,
                                          self.classifies, list(self._trackers))
    super().compile(optimizer=optimizer, metrics=metrics,
                    weighted_metrics=weighted_metrics, **kwargs)
    # Keras' own CompileMetrics would read the model's dict output; the train
    # and test steps update the metrics above instead. The compile config
    # still holds them, so a .keras file recompiles with them.
    self._compile_metrics = None
    model_metrics.set_untracked(self, "_extra_metrics", [
        (model_metrics.Reported(m), w) for m, w in extra])

  def compile_from_config(self, config):
    """Compiles as `get_compile_config()` (a .keras file) says, through this
    model's own `compile` (Keras skips a custom `compile` otherwise)."""
    self.compile(**keras.saving.deserialize_keras_object(config))
    if self.built:
      self.optimizer.build(self.trainable_variables)

  def fit(self, *args, **kwargs):
    """`keras.Model.fit`; under a `tf.distribute` strategy each replica's
    chains use their own shard of the replay buffer, gathered back into it
    when `fit` returns (`ebmkit.replicas`)."""
    with replicas.sharded(self.replay_buffer, self.distribute_strategy):
      return super().fit(*args, **kwargs)

  def summary(self, line_length=None, positions=None, print_fn=None,
              expand_nested=False, show_trainable=False, layer_range=None):
    """`keras.Model.summary`, plus a line on the replay buffer's share of
    the non-trainable parameters (its stored samples are model state, not
    weights a step trains)."""
    super().summary(line_length=line_length, positions=positions,
                    print_fn=print_fn, expand_nested=expand_nested,
                    show_trainable=show_trainable, layer_range=layer_range)
    buf = self.replay_buffer
    if not buf.built:
      return
    stored = int(np.prod(buf.samples.shape))
    line = (f" of which replay buffer ({buf.name!r}): {buf.size:,} samples × "
            f"{tuple(buf.sample_shape)} = {stored:,} values")
    rest = buf.count_params() - stored
    if rest:
      line += f", plus {rest:,} of its informative initialisation"
    (print_fn or print)(line)

  def build(self, input_shape):
    if isinstance(input_shape, dict):  # A semi-supervised batch.
      input_shape = input_shape[IMAGES]
    input_shape = tuple(input_shape)
    if not self.backbone.built:
      self.backbone.build(input_shape)
    out_shape = self.backbone.compute_output_shape(input_shape)
    if self.classifies:
      self.num_classes = int(out_shape[-1])
      buffer_classes = self.replay_buffer.num_classes
      if buffer_classes is not None and buffer_classes != self.num_classes:
        raise ValueError(
            f"The class-conditional ReplayBuffer has num_classes="
            f"{buffer_classes} but the backbone outputs {self.num_classes} "
            f"logits; make them equal (NUM_CLASSES in the shipped configs).")
    if not self.head.built:
      self.head.build(out_shape)
    if not self.replay_buffer.built:
      self.replay_buffer.build(input_shape[1:])
    self.sampler.build(input_shape)
    self.built = True

  def _backbone(self, x, training=False):
    # Under a mixed-precision policy the backbone computes in bfloat16;
    # energies, LogSumExp and the loss stay float32.
    return tf.cast(self.backbone(x, training=training), tf.float32)

  def call(self, x, training=False):
    x = split_images(x)[0]
    out = self._backbone(x, training=training)
    result = dict(self.head(out))
    result["logits" if self.classifies else "features"] = out
    return result

  def compute_output_spec(self, x, training=False):
    x = split_images(x)[0]
    out = self.backbone.compute_output_spec(x)
    result = dict(self.head.compute_output_spec(out))
    result["logits" if self.classifies else "features"] = out
    return result

  # -- energies --------------------------------------------------------------

  def energy(self, x, training=False):
    """E(x), shape [batch]."""
    return self.head(self._backbone(x, training=training))["energy"]

  def class_energy(self, x, y, training=False):
    """E(x, y) = -f(x)[y] for int labels y [batch]; a label < 0 (unlabelled,
    as in training batches) gives E(x) instead."""
    self._require_classes("class_energy")
    logits = self._backbone(x, training=training)
    y = tf.cast(y, tf.int32)
    # A select, not a tf.cond: a cond inside SGLD's while loop and gradient
    # tape makes TensorFlow log "Type inference failed ... invalid graph"
    # when the graph runs (the SavedModel's `sample` picked E(x) or E(x, y)
    # by class_id so).
    return tf.where(
        y >= 0,
        energy_lib.class_energy_from_logits(logits, tf.maximum(y, 0)),
        energy_lib.energy_from_logits(logits))

  def _require_classes(self, what):
    if not self.classifies:
      raise ValueError(f"{what} needs class energies, but this model has a "
                       "ScalarEnergyHead (an unconditional EBM).")

  # -- sampling --------------------------------------------------------------

  def sample(self, num_samples=64, y=None, steps=None, from_buffer=False,
             jit_compile="auto"):
    """Draws samples with a standalone compiled sampler.

    Args:
      num_samples: number of chains (ignored when `y` is given).
      y: optional int labels [n]: sample x ~ p(x|y) from E(x, y).
      steps: SGLD steps; defaults to the sampler's η.
      from_buffer: start the chains from the replay buffer (persistent
        chains) instead of U(low, high) noise; the buffer is not updated.
      jit_compile: compile the chain with XLA ("auto": on a GPU/TPU only).

    Returns:
      Samples, a float32 tensor [n, *sample_shape].
    """
    if not self.built:
      raise ValueError("Build the model (call it on a batch, or fit it) "
                       "before sampling.")
    conditional = y is not None
    if conditional:
      self._require_classes("Class-conditional sampling")
      y = tf.convert_to_tensor(y, tf.int32)
      num_samples = int(y.shape[0])
    steps = self.sampler.steps if steps is None else int(steps)
    buf = self.replay_buffer
    if from_buffer:
      starts, _ = buf.draw(num_samples, y=y)
    else:
      starts = buf.fresh(num_samples, y)
    jit_compile = sampling.resolve_jit_compile(jit_compile)
    key = (conditional, jit_compile)
    if key not in self._samplers:
      if conditional:
        energy_fn = lambda v, labels: sampling.chain_energy(self, labels)(v)
      else:
        energy_fn = lambda v: sampling.chain_energy(self)(v)
      self._samplers[key] = sampling.compiled_sampler(
          self.sampler, energy_fn, jit_compile)
    args = (y,) if conditional else ()
    return self._samplers[key](starts, tf.constant(steps, tf.int32), *args)

  # -- training --------------------------------------------------------------

  def _build_for(self, x):
    # TF defers building to the first trace of the train/test function.
    if not self.built:
      self.build(tuple(x.shape))

  def _check_batch(self, x, y):
    """Clear errors for data that does not fit the model: the one input
    check (`validation.check_tensor`) plus in-graph label checks."""
    x = validation.check_tensor(x, self.replay_buffer.sample_shape,
                                self.replay_buffer.data_range)
    if y is None or not self.classifies:
      return x
    yi = tf.cast(y, tf.int32)
    checks = [
        tf.debugging.assert_greater_equal(
            yi, -1, message="ebmkit: labels must be class indices >= 0 "
                            "(or -1 for unlabelled examples)."),
        tf.debugging.assert_less(
            yi, self.num_classes,
            message=f"ebmkit: labels must be < {self.num_classes}, the "
                    f"number of classes the backbone outputs."),
    ]
    with tf.control_dependencies(checks):
      return tf.identity(x)

  def _forward(self, parts, training=True):
    """Backbone outputs of each part: one pass over their concatenation, or
    one pass per part (`separate_passes`)."""
    if self.passes_apart or len(parts) == 1:
      return [self._backbone(p, training=training) for p in parts]
    sizes = tf.stack([tf.shape(p)[0] for p in parts])
    return tf.split(self._backbone(tf.concat(parts, 0), training=training),
                    sizes)

  def _objective(self, x, x_labelled, y, sample_weight, chains, training):
    """(loss, its terms, classifier logits, E(x̂)) of a batch and its chains'
    samples `chains`, a list of (name, samples, labels or None)."""
    # The reference's order of forward passes: data, p(x) samples, the
    # labelled batch, p(x|y) samples (it matters to batch-norm averages).
    parts = [("data", x)] + [(c[0], c[1]) for c in chains if c[0] == "px"]
    if x_labelled is not None:
      parts.append(("labelled", x_labelled))
    parts += [(c[0], c[1]) for c in chains if c[0] == "pxy"]
    outs = self._forward([p for _, p in parts], training)
    # One head call over every part (a spectral-normalised head then
    # updates once per step).
    sizes = tf.stack([tf.shape(o)[0] for o in outs])
    energies = tf.split(self.head(tf.concat(outs, 0), training=training)[
        "energy"], sizes)
    named = {name: (out, e) for (name, _), out, e in zip(parts, outs,
                                                        energies)}
    terms, clf_out, energy_samples = objective.loss_terms(
        named, y, chains, self.clf_weight, self.l2_weight, sample_weight)
    loss = objective.total(terms, self._term_weights)
    return loss, terms, clf_out, energy_samples

  def train_step(self, data):
    """One training step: SGLD from the replay buffer, then a gradient step
    on the class docstring's L.

    `sample_weight` (or Keras' `class_weight`, which becomes it) weights each
    labelled example's cross-entropy, summed over the number of labelled
    examples (Keras' "sum_over_batch_size"), and its accuracy (a weighted
    mean); in a semi-supervised batch it goes with the labelled images, as
    y does. The energy terms compare the data with the samples as wholes and
    are not weighted.
    """
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    x, x_labelled = split_images(x)
    self._build_for(x)
    x = self._check_batch(x, y if x_labelled is None else None)
    if x_labelled is not None:
      x_labelled = self._check_batch(x_labelled, y)
    x_clf = x if x_labelled is None else x_labelled
    batch_size = tf.shape(x)[0]
    chains = []  # (name, samples, labels or None)
    if self.px_weight:
      labels = (self._random_labels(batch_size) if self.px_conditional_chains
                else None)
      starts, slots = self.replay_buffer.draw(batch_size, y=labels)
      samples = sampling.run_chain(self, starts, labels)
      self.replay_buffer.write(slots, samples)
      chains.append(("px", samples, None))
    if self.pxy_weight:
      objective.require_labels(y, "pxy_weight")
      # Unlabelled examples (label < 0) get a class drawn from p(y).
      labels = tf.cast(y, tf.int32)
      labels = tf.where(labels >= 0, labels,
                        self._random_labels(tf.shape(x_clf)[0]))
      starts, slots = self.replay_buffer.draw(tf.shape(x_clf)[0], y=labels)
      samples = sampling.run_chain(self, starts, labels)
      self.replay_buffer.write(slots, samples)
      chains.append(("pxy", samples, labels))
    with tf.GradientTape() as tape:
      loss, terms, clf_out, energy_samples = self._objective(
          x, x_labelled, y, sample_weight, chains, training=True)
      # Keras sums the replicas' gradients under tf.distribute.
      scaled_loss = replicas.scale_loss(loss)
    variables = self.trainable_variables
    grads = tape.gradient(scaled_loss, variables)
    if getattr(self.optimizer, "sharpness_aware", False):
      grads = self._sharpness_aware_gradients(
          grads, variables, lambda: replicas.scale_loss(self._objective(
              x, x_labelled, y, sample_weight, chains, training=True)[0]))
    self.optimizer.apply(grads, variables)
    logs = self._update_metrics(loss, terms, clf_out, y, energy_samples,
                                sample_weight)
    if chains and getattr(self.sampler, "reports_acceptance", False):
      # A Metropolis-adjusted sampler (`mcmc.MCMCSampler`): this step's
      # acceptance rate, in the progress bar, epoch lines and TensorBoard.
      logs["acceptance"] = tf.identity(self.sampler.acceptance_rate)
    return logs

  def _sharpness_aware_gradients(self, grads, variables, loss_fn):
    """SAM's gradient (`ebmkit.training.sam.SAM`): the same batch and the
    same samples x̂ at the perturbed weights. As SADA-JEM does, the second
    pass leaves batch norm's moving statistics as the first left them."""
    moving = self.backbone.non_trainable_variables
    kept = [tf.identity(v) for v in moving]
    grads = self.optimizer.sharpness_aware_gradients(loss_fn, grads,
                                                     variables)
    for v, value in zip(moving, kept):
      v.assign(value)
    return grads

  def test_step(self, data):
    """One evaluation batch: the training's metrics, without running SGLD.

    Every metric has its training name and meaning (`loss` the weighted sum
    of the terms, `sample_weight` as in `train_step`), so val_loss compares
    with loss. Only x̂, the samples of the p(x) and p(x|y) terms, differ:
    they are the replay buffer's stored samples, read as they are
    (`ReplayBuffer.stored`: evenly spaced slots, slice y for p(x|y) chains
    of a class-conditional buffer) instead of chains run on from them. The
    stored samples are the ends of the latest chains, so px_loss, pxy_loss,
    l2_loss and energy_samples are a cheap, sampling-free estimate of the
    training's; evaluating draws no random numbers and leaves the buffer as
    it is. Unlabelled examples (label < 0) get classes 0, 1, ..., K-1 in
    turn for the p(x|y) term (training draws them from p(y)).
    """
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    x, x_labelled = split_images(x)
    self._build_for(x)
    x_clf = x if x_labelled is None else x_labelled
    chains = []
    if self.px_weight:
      chains.append(("px", self.replay_buffer.stored(tf.shape(x)[0]), None))
    if self.pxy_weight:
      objective.require_labels(y, "pxy_weight")
      n = tf.shape(x_clf)[0]
      labels = tf.cast(y, tf.int32)
      labels = tf.where(labels >= 0, labels, tf.range(n) % self.num_classes)
      chains.append(("pxy", self.replay_buffer.stored(n, labels), labels))
    loss, terms, clf_out, energy_samples = self._objective(
        x, x_labelled, y, sample_weight, chains, training=False)
    return self._update_metrics(loss, terms, clf_out, y, energy_samples,
                                sample_weight)

  def _random_labels(self, n):
    """y ~ p(y), uniform over the classes."""
    return keras.random.randint((n,), 0, self.num_classes,
                                seed=self.seed_generator)

  def _update_metrics(self, loss, terms, logits, y, energy_samples,
                      sample_weight=None):
    model_metrics.update(self._trackers, self._extra_metrics, self.classifies,
                         loss, terms, logits, y, energy_samples,
                         sample_weight)
    return {m.name: m.result() for m in self.metrics}

  # -- serialization ---------------------------------------------------------

  def get_config(self):
    ser = keras.saving.serialize_keras_object
    return {
        **super().get_config(),
        "backbone": ser(self.backbone),
        "head": ser(self.head),
        "replay_buffer": ser(self.replay_buffer),
        "sampler": ser(self.sampler),
        "clf_weight": self.clf_weight,
        "px_weight": self.px_weight,
        "pxy_weight": self.pxy_weight,
        "l2_weight": self.l2_weight,
        "px_conditional_chains": self.px_conditional_chains,
        "seed": self.seed,
        "separate_passes": self.separate_passes,
    }

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    for key in ("backbone", "head", "replay_buffer", "sampler"):
      config[key] = keras.saving.deserialize_keras_object(config[key])
    return cls(**config)
