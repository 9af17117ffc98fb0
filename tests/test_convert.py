"""Converting reference (PyTorch-layout) JEM weights: checked against NumPy."""

import numpy as np
import pytest

from ebmkit import backbones, convert

RNG = np.random.default_rng(0)


def reference_shapes(depth, width, classes, norm):
  """Parameter names and shapes of the reference Wide_ResNet + class_output."""
  shapes = {"f.conv1.weight": (16, 3, 3, 3), "f.conv1.bias": (16,)}

  def bn(prefix, n):
    if norm == "batch":
      for key in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"{prefix}.{key}"] = (n,)
      shapes[f"{prefix}.num_batches_tracked"] = ()

  in_planes = 16
  for stage, planes in enumerate((16 * width, 32 * width, 64 * width), 1):
    for i in range((depth - 4) // 6):
      p = f"f.layer{stage}.{i}"
      bn(p + ".bn1", in_planes)
      shapes[p + ".conv1.weight"] = (planes, in_planes, 3, 3)
      shapes[p + ".conv1.bias"] = (planes,)
      bn(p + ".bn2", planes)
      shapes[p + ".conv2.weight"] = (planes, planes, 3, 3)
      shapes[p + ".conv2.bias"] = (planes,)
      if (stage > 1 and i == 0) or in_planes != planes:
        shapes[p + ".shortcut.0.weight"] = (planes, in_planes, 1, 1)
        shapes[p + ".shortcut.0.bias"] = (planes,)
      in_planes = planes
  bn("f.bn1", in_planes)
  shapes["class_output.weight"] = (classes, in_planes)
  shapes["class_output.bias"] = (classes,)
  shapes["energy_output.weight"] = (1, in_planes)
  shapes["energy_output.bias"] = (1,)
  return shapes


def random_state_dict(shapes):
  state = {}
  for key, shape in shapes.items():
    if key.endswith("num_batches_tracked"):
      state[key] = np.array(7)
    elif key.endswith("running_var"):
      state[key] = RNG.uniform(0.5, 2.0, shape)
    else:
      fan_in = np.prod(shape[1:]) if len(shape) > 1 else 1
      state[key] = RNG.normal(0, 1 / np.sqrt(fan_in), shape)
  return state


def np_conv(x, w, b, stride=1, pad=1):
  """PyTorch Conv2d semantics on NCHW arrays with OIHW weights."""
  x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  _, _, h, wd = x.shape
  _, _, kh, kw = w.shape
  ho, wo = (h - kh) // stride + 1, (wd - kw) // stride + 1
  out = np.zeros((x.shape[0], w.shape[0], ho, wo))
  for i in range(kh):
    for j in range(kw):
      patch = x[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride]
      out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
  return out + b[None, :, None, None]


def np_reference_forward(state, x, depth, norm, leak=0.2):
  """The reference network's forward pass (eval mode), in NumPy, NCHW."""
  act = lambda z: np.where(z > 0, z, leak * z)

  def bn(prefix, z):
    if norm != "batch":
      return z
    g, b, m, v = (state[f"{prefix}.{k}"][None, :, None, None]
                  for k in ("weight", "bias", "running_mean", "running_var"))
    return (z - m) / np.sqrt(v + 1e-5) * g + b

  out = np_conv(x, state["f.conv1.weight"], state["f.conv1.bias"])
  for stage in (1, 2, 3):
    for i in range((depth - 4) // 6):
      p = f"f.layer{stage}.{i}"
      stride = 2 if (stage > 1 and i == 0) else 1
      h = np_conv(act(bn(p + ".bn1", out)), state[p + ".conv1.weight"],
                  state[p + ".conv1.bias"])
      h = np_conv(act(bn(p + ".bn2", h)), state[p + ".conv2.weight"],
                  state[p + ".conv2.bias"], stride=stride)
      if p + ".shortcut.0.weight" in state:
        out = np_conv(out, state[p + ".shortcut.0.weight"],
                      state[p + ".shortcut.0.bias"], stride=stride, pad=0)
      out = h + out
  out = act(bn("f.bn1", out)).mean(axis=(2, 3))  # avg_pool2d(8) on 8×8.
  return out @ state["class_output.weight"].T + state["class_output.bias"]


@pytest.mark.parametrize("norm", [None, "batch"])
def test_converted_network_equals_the_numpy_reference(norm):
  depth, width, classes = 10, 2, 10
  state = random_state_dict(reference_shapes(depth, width, classes, norm))
  wrn = backbones.wide_resnet(depth, width, classes, norm=norm)
  wrn.build((None, 32, 32, 3))
  ignored = convert.load_jem_state_dict(wrn, state)
  assert "energy_output.weight" in ignored
  x = RNG.uniform(-1, 1, (2, 3, 32, 32))
  expected = np_reference_forward(state, x, depth, norm)
  got = np.asarray(wrn(np.transpose(x, (0, 2, 3, 1)).astype(np.float32)))
  np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)


def test_a_converted_strided_convolution_equals_numpy():
  state = random_state_dict(reference_shapes(10, 1, 10, None))
  wrn = backbones.wide_resnet(10, 1, 10)
  wrn.build((None, 32, 32, 3))
  convert.load_jem_state_dict(wrn, state)
  block = wrn.blocks[1]  # layer2.0: stride 2, PyTorch symmetric padding 1.
  x = RNG.normal(size=(1, 32, 32, 32))  # conv2 of layer2.0: 32 → 32.
  got = block.conv2.get_layer("conv")(
      block.conv2.get_layer("pad")(np.transpose(x, (0, 2, 3, 1)).astype(
          np.float32)))
  expected = np_conv(x, state["f.layer2.0.conv2.weight"],
                     state["f.layer2.0.conv2.bias"], stride=2, pad=1)
  np.testing.assert_allclose(np.transpose(np.asarray(got), (0, 3, 1, 2)),
                             expected, rtol=1e-4, atol=1e-4)


def test_mismatches_are_named_and_nothing_is_assigned():
  state = random_state_dict(reference_shapes(10, 2, 10, None))
  wrn = backbones.wide_resnet(10, 2, 10)
  wrn.build((None, 32, 32, 3))
  before = [np.array(v) for v in wrn.weights]
  bad = dict(state)
  del bad["f.layer1.0.conv1.bias"]
  bad["f.extra.weight"] = np.zeros(3)
  bad["class_output.weight"] = np.zeros((100, 128))
  with pytest.raises(convert.ConversionError) as e:
    convert.load_jem_state_dict(wrn, bad)
  message = str(e.value)
  assert "missing keys: f.layer1.0.conv1.bias" in message
  assert "unexpected keys: f.extra.weight" in message
  assert "class_output.weight" in message and "(128, 100)" in message
  for b, v in zip(before, wrn.weights):
    np.testing.assert_array_equal(b, np.array(v))


def test_data_parallel_prefix_is_accepted():
  state = random_state_dict(reference_shapes(10, 1, 10, None))
  wrn = backbones.wide_resnet(10, 1, 10)
  wrn.build((None, 32, 32, 3))
  convert.load_jem_state_dict(wrn, {"module." + k: v for k, v in state.items()})
  np.testing.assert_allclose(
      np.asarray(wrn.class_output.bias), state["class_output.bias"], rtol=1e-6)


def test_wrn_28_10_has_the_architectures_parameter_count():
  wrn = backbones.wide_resnet(28, 10, 10)
  wrn.build((None, 32, 32, 3))
  expected = sum(int(np.prod(s)) for k, s in
                 reference_shapes(28, 10, 10, None).items()
                 if not k.startswith("energy_output"))
  assert wrn.count_params() == expected
  assert abs(expected - 36.5e6) < 0.05e6


def test_conversion_tool_writes_a_workdir_that_evaluates(tmp_path):
  import os, subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  import gin  # pylint: disable=g-import-not-at-top
  from ebmkit import checkpoints, data, gin_utils, train  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  state = random_state_dict(reference_shapes(10, 1, 10, None))
  buffer = RNG.uniform(-1, 1, (20, 3, 32, 32)).astype(np.float32)
  npz = os.path.join(tmp_path, "reference.npz")
  np.savez(npz, replay_buffer=buffer, **state)
  workdir = os.path.join(tmp_path, "converted")
  proc = subprocess.run(
      [sys.executable, os.path.join(repo, "tools", "convert_jem_checkpoint.py"),
       f"--checkpoint={npz}", f"--workdir={workdir}",
       "--gin_bindings=DEPTH = 10", "--gin_bindings=WIDTH = 1",
       "--gin_bindings=BUFFER_SIZE = 20"],
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "energy_output.weight" in proc.stdout

  # Rebuild from the written operative config; the restored network computes
  # the reference's logits and holds the reference's buffer (as NHWC).
  gin_utils.parse([os.path.join(workdir, "operative_config.gin")])
  model = train.build_model(data.dataset_info("cifar10"))
  assert checkpoints.restore_model(model, workdir).endswith("ckpt-0")
  x = RNG.uniform(-1, 1, (2, 3, 32, 32))
  np.testing.assert_allclose(
      model(np.transpose(x, (0, 2, 3, 1)).astype(np.float32))["logits"],
      np_reference_forward(state, x, 10, None), rtol=1e-3, atol=1e-3)
  np.testing.assert_array_equal(model.replay_buffer.samples.numpy(),
                                np.transpose(buffer, (0, 2, 3, 1)))
  gin.clear_config()


def test_conversion_tool_reads_the_reference_torch_format(tmp_path):
  torch = pytest.importorskip("torch")  # Optional: only the tool needs it.
  import os, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  sys.path.insert(0, os.path.join(repo, "tools"))
  try:
    import convert_jem_checkpoint as tool  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.pop(0)
  state = random_state_dict(reference_shapes(10, 1, 10, None))
  buffer = RNG.uniform(-1, 1, (20, 3, 32, 32)).astype(np.float32)
  path = os.path.join(tmp_path, "reference.pt")
  torch.save({"model_state_dict": {k: torch.tensor(v) for k, v in
                                   state.items()},
              "replay_buffer": torch.tensor(buffer)}, path)
  got_state, got_buffer = tool.read_checkpoint(path)
  assert set(got_state) == set(state)
  np.testing.assert_array_equal(got_state["f.conv1.weight"],
                                state["f.conv1.weight"])
  np.testing.assert_array_equal(got_buffer, buffer)
