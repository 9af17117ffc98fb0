"""JEM as the reference trains it: three training steps from the reference's
initial state, against the reference's own losses and weights.

The fixture (tests/data/reference_trajectory.{pt,npz}) was written by the
reference code (wgrathwohl/JEM's `CCF`, `get_sample_q` and Adam; torch
2.14) with tools/reference/write_trajectory_fixture.py: a WRN-10-1, σ = 0,
ρ = 0 and a buffer of one image, so the steps are deterministic;
the p(x) and cross-entropy terms on their own fixed batches, as the
reference's two loaders give them.
"""

import os

import gin
import keras
import numpy as np
import pytest

from ebmkit import gin_utils
from ebmkit.convert import converter
from ebmkit.models import energy_model
from ebmkit.training import experiment

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
NHWC = (0, 2, 3, 1)


def test_three_steps_follow_the_references_losses_and_weights():
  ref = np.load(os.path.join(DATA, "reference_trajectory.npz"))
  state, buffer = converter.read_checkpoint(
      os.path.join(DATA, "reference_trajectory.pt"))
  batch = ref["x_p_d"].shape[1]
  gin_utils.parse(["jem_reference_cifar10.gin"], [
      "DEPTH = 10", "WIDTH = 1", f"SGLD_STEPS = {int(ref['sgld_steps'])}",
      "SGLD_NOISE = 0.0", "REINIT_PROB = 0.0", "BUFFER_SIZE = 1",
      f"BATCH_SIZE = {batch}"])
  model = experiment.configured_model()
  converter.load_jem_state_dict(model, state)
  converter.load_replay_buffer(model, buffer)
  # Adam as the reference's (β = (0.9, 0.999), ε = 1e-8 as the recipe
  # binds it), at a constant rate: the fixture has no warm-up.
  model.compile(optimizer=keras.optimizers.Adam(
      float(ref["lr"]), epsilon=gin.query_parameter(
          "keras.optimizers.Adam.epsilon")))
  for k in range(len(ref["loss"])):
    logs = model.train_on_batch(
        {energy_model.IMAGES: np.transpose(ref["x_p_d"][k], NHWC),
         energy_model.LABELLED_IMAGES: np.transpose(ref["x_lab"][k], NHWC)},
        ref["y_lab"][k], return_dict=True)
    # train_on_batch reports this step's metrics (it resets them). px_loss
    # is a difference of two energies near −2.25: it agrees to 1e-4 of them.
    for name in ("loss", "px_loss", "clf_loss"):
      assert logs[name] == pytest.approx(ref[name][k], rel=1e-4, abs=3e-4), (
          k, name)
  # The weights after three Adam steps: the class layer and the first and
  # last convolutions, against the reference's (NCHW/OI → Keras layouts).
  weights = {v.path: v.numpy() for v in model.weights}
  kernel = lambda path: weights[[p for p in weights if p.endswith(path)][0]]
  np.testing.assert_allclose(kernel("class_output/kernel"),
                             ref["final/class_output.weight"].T,
                             rtol=1e-3, atol=2e-6)
  np.testing.assert_allclose(kernel("class_output/bias"),
                             ref["final/class_output.bias"],
                             rtol=1e-3, atol=2e-6)
  np.testing.assert_allclose(
      kernel("wrn_10_1/conv1/conv/kernel"),
      np.transpose(ref["final/f.conv1.weight"], (2, 3, 1, 0)),
      rtol=1e-3, atol=2e-6)
  # The chains wrote their samples back, as the reference's did: after 15
  # SGLD steps the buffer image has moved the same way, to 1% of its
  # largest move.
  start = np.transpose(buffer, NHWC)
  moved = model.replay_buffer.samples.numpy() - start
  want = np.transpose(ref["buffer"], NHWC) - start
  np.testing.assert_allclose(moved, want, atol=0.01 * np.abs(want).max())
  assert np.abs(want).max() > 1e-3
