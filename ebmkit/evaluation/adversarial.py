"""PGD attacks, the paper's SGLD-refinement defence and distal adversarials."""

import numpy as np
import tensorflow as tf

from ebmkit.models import sampling


def _flat_norm(t):
  return tf.sqrt(tf.reduce_sum(tf.square(t), axis=[1, 2, 3], keepdims=True))


def _loss(logits_fn, x, y, eot_samples):
  """Per-example cross-entropy, averaged over `eot_samples` calls of a
  possibly random `logits_fn` (expectation over transformation)."""
  total = 0.0
  for _ in range(eot_samples):
    total += tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(y, tf.int32), logits=logits_fn(x))
  return total / eot_samples


def pgd(logits_fn, x, y, eps, norm="linf", steps=10, step_size=None,
        random_start=True, data_range=(-1.0, 1.0), seed=0, restarts=1,
        eot_samples=1):
  """Projected gradient ascent on the cross-entropy within an ε-ball.

  Args:
    logits_fn: x -> logits [n, K]; differentiable in x (or with a
      straight-through gradient, as the defence below).
    x: clean inputs [n, H, W, C]; y: int labels [n].
    eps: radius ε of the threat model, in input units (the data range is
      [−1, 1], width 2).
    norm: "linf" or "l2".
    steps: PGD iterations.
    step_size: per-iteration step (default 2.5·ε/steps).
    random_start: start from a uniform point of the ball (L∞) or a random
      direction at a uniform radius (L2).
    data_range: adversarial inputs are clipped to it.
    seed: for the random start (restart r uses seed + r).
    restarts: attacks from independent random starts; each example keeps
      the one with the highest loss (Madry et al. 2018). Without a random
      start, restarts repeat the same attack, so 1 is used.
    eot_samples: calls of `logits_fn` averaged in every gradient and in the
      choice among restarts (expectation over transformation, Athalye et
      al. 2018), for a random defence such as the SGLD refinement.

  Returns:
    Adversarial inputs, each within ε of its clean input in the given norm.
  """
  if norm not in ("linf", "l2"):
    raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}.")
  if restarts < 1 or eot_samples < 1:
    raise ValueError(f"restarts and eot_samples must be >= 1, got "
                     f"{restarts} and {eot_samples}.")
  x = tf.convert_to_tensor(x, tf.float32)
  if eps <= 0:
    return x
  step_size = 2.5 * eps / steps if step_size is None else step_size

  def project(delta):
    if norm == "linf":
      delta = tf.clip_by_value(delta, -eps, eps)
    else:
      delta *= tf.minimum(1.0, eps / (_flat_norm(delta) + 1e-12))
    # Stay in the data range (this only shrinks δ, so the ball still holds).
    return tf.clip_by_value(x + delta, *data_range) - x

  def attack(restart_seed):
    rng = tf.random.Generator.from_seed(restart_seed)
    delta = tf.zeros_like(x)
    if random_start:
      if norm == "linf":
        delta = rng.uniform(tf.shape(x), -eps, eps)
      else:
        direction = rng.normal(tf.shape(x))
        radius = eps * rng.uniform([tf.shape(x)[0], 1, 1, 1])
        delta = direction / _flat_norm(direction) * radius
    delta = project(delta)
    for _ in range(steps):
      with tf.GradientTape() as tape:
        tape.watch(delta)
        loss = tf.reduce_sum(_loss(logits_fn, x + delta, y, eot_samples))
      grad = tape.gradient(loss, delta)
      if norm == "linf":
        delta += step_size * tf.sign(grad)
      else:
        delta += step_size * grad / (_flat_norm(grad) + 1e-12)
      delta = project(delta)
    return x + delta

  best = attack(seed)
  if restarts == 1 or not random_start:
    return best
  best_loss = _loss(logits_fn, best, y, eot_samples)
  for r in range(1, restarts):
    candidate = attack(seed + r)
    loss = _loss(logits_fn, candidate, y, eot_samples)
    better = loss > best_loss
    best = tf.where(better[:, None, None, None], candidate, best)
    best_loss = tf.where(better, loss, best_loss)
  return best


def accuracy(logits_fn, x, y, batch_size=500):
  correct = 0
  for i in range(0, len(x), batch_size):
    logits = logits_fn(tf.constant(x[i:i + batch_size], tf.float32))
    correct += int(np.sum(np.argmax(logits, -1) == y[i:i + batch_size]))
  return correct / len(x)


def sgld_defended_logits(model, steps=10, step_size=1.0, noise=0.01,
                         duplicates=4):
  """The paper's defence: a few SGLD steps on E(x) from the input, averaged
  over duplicate chains, before classifying.

  The refinement gets a straight-through gradient (identity in the backward
  pass, BPDA), so PGD can attack the defended classifier.

  Returns:
    x -> log of the chains' mean p(y|x), usable as logits.
  """
  sampler = sampling.LangevinSampler(steps, step_size, noise, seed=0)

  def logits_fn(x):
    repeated = tf.repeat(x, duplicates, axis=0)
    refined = sampling.run_chain(model, repeated, sampler=sampler)
    refined = repeated + tf.stop_gradient(refined - repeated)  # BPDA.
    probs = tf.nn.softmax(model(refined)["logits"])
    probs = tf.reshape(probs, (-1, duplicates, probs.shape[-1]))
    return tf.math.log(tf.reduce_mean(probs, axis=1) + 1e-12)

  return logits_fn


def distal_adversarials(model, image_shape, num_classes, per_class=4,
                        steps=500, step_size=0.02, threshold=0.9,
                        data_range=(-1.0, 1.0), seed=0):
  """Drives uniform noise to p(y = c|x) > threshold for every class c.

  Normalised gradient ascent on log p(c|x), clipped to the data range; each
  image stops when it passes the threshold.

  Returns:
    (images [num_classes·per_class, *image_shape] ordered by class,
     p(c|x) of each, the number of steps each took).
  """
  rng = np.random.default_rng(seed)
  x = tf.Variable(rng.uniform(*data_range, (num_classes * per_class,)
                              + tuple(image_shape)).astype(np.float32))
  target = tf.constant(np.repeat(np.arange(num_classes), per_class), tf.int32)
  done = np.zeros(len(target), bool)
  taken = np.full(len(target), steps)

  @tf.function
  def step():
    current = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
      tape.watch(current)
      log_p = tf.gather(model(current)["log_pyx"], target, batch_dims=1)
      total = tf.reduce_sum(log_p)
    grad = tape.gradient(total, current)
    return tf.exp(log_p), grad / (_flat_norm(grad) + 1e-12)

  for i in range(steps):
    prob, direction = step()
    prob = prob.numpy()
    newly = (prob > threshold) & ~done
    taken[newly] = i
    done |= newly
    if done.all():
      break
    keep = tf.constant(done[:, None, None, None], tf.float32)
    moved = x + step_size * np.sqrt(np.prod(image_shape)) * direction
    x.assign(tf.clip_by_value(keep * x + (1 - keep) * moved, *data_range))
  prob, _ = step()
  return x.numpy(), prob.numpy(), taken
