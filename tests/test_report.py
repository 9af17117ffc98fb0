"""What the evaluation report shows: the figures' drawn arrays and labels,
the standard FID network, held-out data, sample counts, PGD restarts/EOT."""

import os
import types

import numpy as np
import pytest
import tensorflow as tf

from ebmkit.evaluation import adversarial, classification, common, judge
from ebmkit.evaluation import metrics, plots, robustness, sample_quality


def bars(container):
  """(x centres, bottoms, heights) of a bar container's rectangles."""
  rects = list(container)
  return (np.array([r.get_x() + r.get_width() / 2 for r in rects]),
          np.array([r.get_y() for r in rects]),
          np.array([r.get_height() for r in rects]))


def by_label(ax):
  return {c.get_label(): c for c in ax.containers}


# -- reliability diagram -------------------------------------------------------

def hand_bins():
  """10 bins. Bin 1 (confidence 0.15, twice): 1 of 2 correct, accuracy 0.5
  above its confidence (under-confident). Bin 9 (0.95, 4 times): 2 of 4
  correct, accuracy 0.5 below (over-confident). The rest is empty."""
  conf = np.array([0.15, 0.15, 0.95, 0.95, 0.95, 0.95])
  # Two classes: the top class is 0 when conf >= 0.5; for 0.15 the top
  # probability is 0.85 on class 1, so use 10 classes to keep 0.15 on top.
  probs = np.full((6, 10), 0.0)
  probs[:, 0] = conf
  probs[:, 1:] = ((1 - conf) / 9)[:, None]
  labels = np.array([0, 3, 0, 0, 5, 5])
  return metrics.calibration_bins(probs, labels, num_bins=10)


def test_reliability_bins_by_hand():
  bins = hand_bins()
  assert list(np.flatnonzero(bins["count"])) == [1, 9]
  np.testing.assert_allclose(bins["accuracy"][[1, 9]], [0.5, 0.5])
  np.testing.assert_allclose(bins["confidence"][[1, 9]], [0.15, 0.95])


def test_reliability_diagram_draws_accuracy_gap_boxes_and_counts():
  fig = plots.reliability_figure(hand_bins(), ece=0.375)
  ax, ax_count = fig.axes
  drawn = by_label(ax)
  # Accuracy bars: the accuracy itself, from 0, for the 2 filled bins only.
  x, bottom, height = bars(drawn["accuracy"])
  np.testing.assert_allclose(x, [0.15, 0.95])
  np.testing.assert_allclose(bottom, [0.0, 0.0])
  np.testing.assert_allclose(height, [0.5, 0.5])
  # Gap boxes between accuracy and confidence: 0.15–0.5 (inside the
  # under-confident bar) and 0.5–0.95 (above the over-confident one).
  gap = drawn[plots.GAP_LABEL]
  _, bottom, height = bars(gap)
  np.testing.assert_allclose(bottom, [0.15, 0.5])
  np.testing.assert_allclose(height, [0.35, 0.45])
  assert all(not r.get_fill() and r.get_hatch() == "///" for r in gap)
  legend = [t.get_text() for t in ax.get_legend().get_texts()]
  assert set(legend) == {"accuracy", plots.GAP_LABEL, "perfect calibration"}
  # Counts below, with their numbers written on the bars.
  _, _, counts = bars(by_label(ax_count)["examples"])
  np.testing.assert_allclose(counts, [2, 4])
  assert [t.get_text() for t in ax_count.texts] == ["2", "4"]
  assert "ECE = 37.50% (n = 6)" in fig.get_suptitle()


def test_reliability_png_shows_the_gap_outline(tmp_path):
  path = plots.reliability_diagram(hand_bins(), 0.375,
                                   str(tmp_path / "r.png"))
  pixels = tf.io.decode_png(tf.io.read_file(path)).numpy()[..., :3]
  red = np.array([0xc4, 0x4e, 0x52])  # The gap boxes' edge colour.
  near = np.abs(pixels.astype(int) - red).sum(-1) < 40
  assert near.sum() > 100  # Outlines and hatching, not a stray pixel.


# -- labelled image tables -----------------------------------------------------

def test_image_table_labels_every_row_and_column():
  cells = np.stack([np.stack([np.full((8, 8, 1), v), np.full((8, 8, 1), -v)])
                    for v in (-1.0, 0.0, 0.5)])
  cells[2, 1] = np.nan  # An empty cell.
  fig = plots.image_table_figure(
      cells, row_labels=["class 0", "class 1", "class 2"],
      column_labels=["real (test)", "distal 1"],
      captions=[["a", "b"], ["c", "d"], ["e", "f"]], title="T")
  axes = fig.axes
  assert len(axes) == 6
  assert [axes[r * 2].get_ylabel() for r in range(3)] == [
      "class 0", "class 1", "class 2"]
  assert [axes[c].get_title() for c in range(2)] == ["real (test)",
                                                     "distal 1"]
  assert [ax.get_xlabel() for ax in axes[:5]] == ["a", "b", "c", "d", "e"]
  # The images as drawn: [−1, 1] mapped to [0, 1] for a grey colour map.
  np.testing.assert_allclose(axes[0].images[0].get_array(), 0.0)
  np.testing.assert_allclose(axes[1].images[0].get_array(), 1.0)
  np.testing.assert_allclose(axes[4].images[0].get_array(), 0.75)
  assert not axes[5].images and not axes[5].axison  # Left empty.
  # Readable: at least 100 pixels per cell at the saved 110 dpi.
  width, height = fig.get_size_inches() * plots.DPI
  assert width / 2 >= 100 and height / 3 >= 100


class Capture:
  """Stands in for plots.image_table: records what it was asked to draw."""

  def __init__(self):
    self.calls = []

  def __call__(self, cells, path, **kwargs):
    self.calls.append(dict(kwargs, cells=np.asarray(cells), path=path))
    return path


def test_distal_figure_has_a_row_per_class_after_a_real_image(
    trained, tmp_path, monkeypatch):
  _, model, x, y = trained
  capture = Capture()
  monkeypatch.setattr(plots, "image_table", capture)
  names = [f"digit {c}" for c in range(10)]
  fixed_judge = judge.Extractor(
      "classifier", lambda v: [tf.one_hot(tf.fill([tf.shape(v)[0]], 3), 10),
                               tf.zeros([tf.shape(v)[0], 2])], "d")
  out = robustness.distal(model, fixed_judge, (8, 8, 1), 10, str(tmp_path),
                        per_class=2, steps=3, x_train=x[50:], x_test=x[:50],
                        y_test=y[:50], names=names)
  drawn, = capture.calls
  assert drawn["row_labels"] == [f"class digit {c}" for c in range(10)]
  assert drawn["column_labels"] == ["real (test)", "distal 1", "distal 2"]
  assert drawn["cells"].shape == (10, 3, 8, 8, 1)
  for c in range(10):  # The first test image of each class heads its row.
    np.testing.assert_array_equal(drawn["cells"][c, 0],
                                  x[:50][np.flatnonzero(y[:50] == c)[0]])
  assert all(caption.endswith("judge: digit 3")
             for row in drawn["captions"] for caption in row[1:])
  assert out["judge_agrees"] == pytest.approx(0.1)  # Class 3 of 10.
  # Distances to the nearest of the 50 "training" images, by brute force.
  brute = lambda a: np.sqrt(((a.reshape(len(a), 1, -1) - x[50:].reshape(
      1, 50, -1)) ** 2).sum(-1)).min(1)
  near = out["nearest_train_distance"]
  assert near["test"]["mean"] == pytest.approx(brute(x[:50]).mean())
  assert near["test"]["examples"] == 50
  assert near["distal"]["examples"] == 20
  assert near["distal"]["mean"] == pytest.approx(brute(
      drawn["cells"][:, 1:].reshape(20, 8, 8, 1)).mean(), rel=1e-6)


# -- samples: counts, labels, models that never sample -------------------------

class StubBuffer:

  def __init__(self, size):
    self.size = size
    self.samples = types.SimpleNamespace(value=tf.constant(np.linspace(
        -1, 1, size * 64, dtype=np.float32).reshape(size, 8, 8, 1)))


class StubModel:
  """Samples constant images; a buffer of `buffer_size`."""

  classifies = True

  def __init__(self, draws_samples, buffer_size=64):
    self.draws_samples = draws_samples
    self.replay_buffer = StubBuffer(buffer_size)
    self.rng = np.random.default_rng(0)

  def sample(self, n, y=None, steps=None):  # pylint: disable=unused-argument
    n = n if y is None else len(y)
    return tf.constant(self.rng.uniform(-1, 1, (n, 8, 8, 1)), tf.float32)


def stub_extractor(label="judge-classifier"):
  # p(y|x): class = the sign of the image mean; features: mean and std.
  def model(v):
    v = tf.convert_to_tensor(v, tf.float32)
    mean = tf.reduce_mean(v, axis=[1, 2, 3])
    logits = tf.stack([mean, -mean] + [mean * 0 - 10.0] * 8, axis=1)
    return [logits, tf.stack([mean, tf.math.reduce_std(v, [1, 2, 3])], 1)]
  return judge.Extractor("classifier", model, "a stub judge", label=label)


def test_buffer_samples_report_the_count_used(tmp_path, monkeypatch):
  monkeypatch.setattr(plots, "image_table", Capture())
  x_test = np.random.default_rng(1).uniform(-1, 1, (40, 8, 8, 1))
  out = sample_quality.samples(StubModel(True, buffer_size=64), stub_extractor(),
                         stub_extractor(), x_test, 10, str(tmp_path),
                         steps=2, num_samples=100, conditional_per_class=1)
  assert out["fresh"]["num_samples"] == 100
  assert out["buffer"]["num_samples"] == 64  # min(100, the buffer's 64).
  assert out["fresh"]["network"] == out["buffer"]["network"] == (
      out["test_set"]["network"]) == "judge-classifier"
  assert out["feature_network"]["label"] == "judge-classifier"
  assert out["fid_reference"] == {"split": "test", "examples": 40}
  assert out["test_set"]["num_samples"] == 40
  assert out["draws"] == 1 and out["fresh"]["std"] == {
      "inception_score": 0.0, "fid": 0.0}


def test_models_that_never_sample_skip_buffer_is_fid(tmp_path, monkeypatch):
  capture = Capture()
  monkeypatch.setattr(plots, "image_table", capture)
  x_test = np.random.default_rng(1).uniform(-1, 1, (40, 8, 8, 1))
  out = sample_quality.samples(StubModel(False), stub_extractor(), stub_extractor(),
                         x_test, 10, str(tmp_path), steps=2, num_samples=50,
                         conditional_per_class=2, draws=3,
                         names=[f"n{c}" for c in range(10)])
  assert set(out["buffer"]) == {"skipped"}
  assert "buffer" not in out["figures"]
  assert not os.path.exists(tmp_path / "figures" / "samples_buffer.png")
  assert out["fresh"]["draws"] == 3
  # Class-conditional figure: one labelled row per class.
  drawn, = capture.calls
  assert drawn["row_labels"] == [f"class n{c}" for c in range(10)]
  assert drawn["cells"].shape == (10, 2, 8, 8, 1)
  assert all(c.startswith("judge: n") for row in drawn["captions"]
             for c in row)


def test_default_num_samples():
  assert common.default_num_samples((8, 8, 1)) == 500
  assert common.default_num_samples((32, 32, 3)) == 50000


# -- the standard FID network from a local file --------------------------------

def write_ttur_like_graph(path, weights):
  """A stand-in with the tensor names of TTUR's classify_image_graph_def:
  ExpandDims (pixels in [0, 255]) → pool_3 = the channel means → softmax
  weights at softmax/logits/MatMul."""
  graph = tf.Graph()
  with graph.as_default():
    x = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3],
                                 name="ExpandDims")
    pool = tf.identity(tf.reduce_mean(x, axis=[1, 2], keepdims=True),
                       name="pool_3")
    tf.matmul(tf.reshape(pool, [-1, 3]), tf.constant(weights, tf.float32),
              name="softmax/logits/MatMul")
  tf.io.write_file(path, graph.as_graph_def().SerializeToString())


def write_tfgan_like_graph(path):
  """TF-GAN's names: Mul (299×299 in [−1, 1]) → pool_3, logits."""
  graph = tf.Graph()
  with graph.as_default():
    x = tf.compat.v1.placeholder(tf.float32, [None, 299, 299, 3], name="Mul")
    pool = tf.identity(tf.reduce_max(x, axis=[1, 2], keepdims=True),
                       name="pool_3")
    tf.identity(tf.reshape(pool, [-1, 3])[:, :2], name="logits")
  tf.io.write_file(path, graph.as_graph_def().SerializeToString())


def test_frozen_ttur_graph_gives_pool3_features_and_softmax(tmp_path):
  path = str(tmp_path / "classify_image_graph_def.pb")
  weights = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
  write_ttur_like_graph(path, weights)
  extractor = common.select_extractor(None, (8, 8, 1), "auto",
                                        fid_network_path=path)
  assert extractor.standard and extractor.label == "Inception-pool3"
  x = np.stack([np.full((8, 8, 1), -1.0), np.full((8, 8, 1), 0.0)])
  # Grey to RGB, [−1, 1] to [0, 255]: channel means 0 and 127.5.
  np.testing.assert_allclose(extractor.features(x),
                             [[0.0] * 3, [127.5] * 3], rtol=1e-6)
  # logits = pool_3 · W = (0, 0) and (127.5, 0): softmax ½/½, then ≈ 1/0.
  np.testing.assert_allclose(extractor.probs(x), [[0.5, 0.5], [1.0, 0.0]],
                             atol=1e-6)


def test_frozen_tfgan_graph_resizes_to_299_in_its_own_scale(tmp_path):
  path = str(tmp_path / "inceptionv1_for_inception_score.pb")
  write_tfgan_like_graph(path)
  extractor = judge.frozen_inception_extractor(path)
  x = np.full((1, 8, 8, 3), 1.0)  # Pixel 255 → (255 − 128) / 128.
  np.testing.assert_allclose(extractor.features(x), [[127 / 128] * 3],
                             rtol=1e-5)


def test_fid_network_errors_are_explained(tmp_path):
  with pytest.raises(FileNotFoundError, match="never downloads it"):
    judge.frozen_inception_extractor(str(tmp_path / "missing.pb"))
  graph = tf.Graph()
  with graph.as_default():
    tf.compat.v1.placeholder(tf.float32, [None], name="something_else")
  path = str(tmp_path / "other.pb")
  tf.io.write_file(path, graph.as_graph_def().SerializeToString())
  with pytest.raises(ValueError, match="not a known Inception graph"):
    judge.frozen_inception_extractor(path)
  with pytest.raises(ValueError, match="needs evaluate.fid_network_path"):
    common.select_extractor(None, (8, 8, 1), "inception_pool3")


# -- held-out data: detection threshold and the OOD scores' signs --------------

def test_held_out_is_the_validation_split_else_the_end_of_train():
  x, y = np.arange(20.0)[:, None], np.arange(20) % 3
  x_judge, y_judge, x_held, y_held, held = common.held_out_split(
      x, y, "train")
  np.testing.assert_array_equal(x_judge[:, 0], np.arange(18.0))
  np.testing.assert_array_equal(x_held[:, 0], [18.0, 19.0])
  np.testing.assert_array_equal(y_held, [0, 1])
  assert len(y_judge) == 18
  assert held == {"split": "the last 10% of `train`", "examples": 2,
                  "seen_by_model": True}
  validation = (np.zeros((5, 1)), np.zeros(5, int))
  x_judge, _, x_held, _, held = common.held_out_split(
      x, y, "train[5000:]", validation, "train[:5000]")
  assert len(x_judge) == 20 and len(x_held) == 5  # The judge keeps all.
  assert held == {"split": "the validation split `train[:5000]`",
                  "examples": 5, "seen_by_model": False}


def test_detection_threshold_comes_from_held_out_data(trained):
  _, model, x, y = trained
  out = classification.detection(model, x[:50], y[:50], x[50:], y[50:],
                           {"split": "held", "examples": 50,
                            "seen_by_model": False}, target_fpr=0.1)
  energies = model(tf.constant(x))["class_energy"].numpy()
  wrong = lambda e, labels: e[np.arange(len(e))[:, None],
                              [[k for k in range(10) if k != c]
                               for c in labels]]
  # The threshold: the 10% quantile of the held-out incompatible pairs.
  assert out["threshold"] == pytest.approx(
      np.quantile(wrong(energies[:50], y[:50]), 0.1), rel=1e-5)
  # Its rates, measured on the other 50 (the test part) by hand.
  assert out["test_fpr"] == pytest.approx(
      np.mean(wrong(energies[50:], y[50:]) <= out["threshold"]))
  assert out["test_tpr"] == pytest.approx(
      np.mean(energies[50:][np.arange(50), y[50:]] <= out["threshold"]))
  assert out["calibration"]["split"] == "held"
  assert out["calibration_examples"] == 50 and out["test_examples"] == 50


# -- PGD restarts and EOT -----------------------------------------------------

def linear_logits(v):
  # Two classes; logit 1 − logit 0 = 4·(mean of the first half − ½).
  flat = tf.reshape(v, (tf.shape(v)[0], -1))
  score = 4.0 * (tf.reduce_mean(flat[:, :32], axis=1) - 0.5)
  return tf.stack([tf.zeros_like(score), score], axis=1)


def test_pgd_restarts_keep_the_strongest_attack_per_example():
  x = np.random.default_rng(0).uniform(-1, 1, (6, 8, 8, 1)).astype(np.float32)
  y = np.zeros(6, np.int32)
  kw = dict(eps=0.3, steps=1, step_size=0.05)  # Weak: starts matter.
  single = [adversarial.pgd(linear_logits, x, y, seed=s, **kw).numpy()
            for s in (7, 8, 9)]
  loss = lambda v: tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=y, logits=linear_logits(v)).numpy()
  best = np.argmax(np.stack([loss(v) for v in single]), axis=0)
  expected = np.stack([single[b][i] for i, b in enumerate(best)])
  restarted = adversarial.pgd(linear_logits, x, y, seed=7, restarts=3, **kw)
  np.testing.assert_allclose(restarted, expected)
  assert len(set(best)) > 1  # Different examples kept different starts.


def test_eot_averages_the_gradient_over_calls():
  calls = []

  def noisy(v):  # A random defence's stand-in: the sign flips every 3rd call.
    calls.append(1)
    sign = 1.0 if len(calls) % 3 else -1.0  # +, +, −, +, +, −, …
    return sign * linear_logits(v)

  x = np.zeros((2, 8, 8, 1), np.float32)
  y = np.zeros(2, np.int32)
  attack = dict(eps=0.1, steps=2, random_start=False)
  out = adversarial.pgd(noisy, x, y, eot_samples=3, **attack)
  assert len(calls) == 2 * 3  # Every step averages 3 calls.
  # At the start, score s = 4·(0 − ½) = −2. The cross-entropy of class 0 is
  # softplus(±s): its slope in s is σ(−2) = 0.119 for a + call and
  # −σ(2) = −0.881 for a − call; the mean of +, +, − is negative, so the
  # L∞ step lowers the first half to −ε (and stays there: at s = −2.4 the
  # mean is negative too). One call per step (+, then +) raises it to +ε.
  np.testing.assert_allclose(out.numpy().reshape(2, -1)[:, :32], -0.1,
                             rtol=1e-6)
  calls.clear()
  single = adversarial.pgd(noisy, x, y, eot_samples=1, **attack)
  np.testing.assert_allclose(single.numpy().reshape(2, -1)[:, :32], 0.1,
                             rtol=1e-6)
  # A deterministic function: EOT changes nothing.
  np.testing.assert_allclose(
      adversarial.pgd(linear_logits, x, y, 0.1, eot_samples=4, seed=3),
      adversarial.pgd(linear_logits, x, y, 0.1, seed=3), rtol=1e-6)


def test_the_report_says_how_long_each_part_took():
  from ebmkit.evaluation import gan_report  # pylint: disable=g-import-not-at-top
  line = gan_report.took({"wall_time_s": 12.3, "part_times_s": {
      "OOD detection": 4.04, "samples (IS, FID)": 7.6}})
  assert line == ("Evaluation took 12.3 s: OOD detection 4 s, samples "
                  "(IS, FID) 8 s.")
  assert gan_report.took({"wall_time_s": 5}) == "Evaluation took 5 s."


def test_importing_ebmkit_leaves_matplotlib_backend_alone(tmp_path):
  # A user who chose a backend keeps it: ebmkit draws its figures on
  # `matplotlib.figure.Figure` objects and needs none.
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  code = ("import matplotlib; matplotlib.use('svg'); import ebmkit; "
          "from ebmkit.evaluation import plots, gan_eval, evaluate; "
          "import numpy as np; "
          f"gan_eval.scatter_figure(np.zeros((4, 2)), np.ones((4, 2)), "
          f"{str(tmp_path / 'f.png')!r}); "
          "print(matplotlib.get_backend())")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, check=True, timeout=300)
  assert out.stdout.strip().splitlines()[-1] == "svg"
  with open(tmp_path / "f.png", "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
