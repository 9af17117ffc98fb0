"""Converting reference (PyTorch-layout) JEM weights: checked against NumPy."""

import collections
import hashlib
import json
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch_files

from ebmkit.convert import converter as convert
from ebmkit.convert import torch_checkpoint
from ebmkit.networks import backbones

from conftest import run_module

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")

RNG = np.random.default_rng(0)


def reference_shapes(depth, width, classes, norm):
  """Every parameter name and shape of the reference's CCF/F module: the
  Wide_ResNet `f` (with its unused read-out `f.linear`, 10 outputs whatever
  the classes, as the reference builds it), `energy_output`, `class_output`.
  Checked against a state dict torch wrote (tests/data)."""
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
  shapes["f.linear.weight"] = (10, in_planes)
  shapes["f.linear.bias"] = (10,)
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


def np_reference_forward(state, x, depth, norm, leak=0.2, head="class"):
  """The reference network's forward pass (eval mode), in NumPy, NCHW:
  CCF's logits (head="class") or F's log p(x) = energy_output (head="energy").
  """
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
  if head == "energy":
    return (out @ state["energy_output.weight"].T
            + state["energy_output.bias"])[:, 0]
  return out @ state["class_output.weight"].T + state["class_output.bias"]


def nhwc(x):
  return np.transpose(x, (0, 2, 3, 1)).astype(np.float32)


def uncond_model(depth, width):
  """The reference's F as an ebmkit model: scalar head on WRN features."""
  from ebmkit.models import heads as energy  # pylint: disable=g-import-not-at-top
  from ebmkit.models import energy_model as models
  model = models.EnergyModel(
      backbones.wide_resnet(depth, width, num_classes=0),
      head=energy.ScalarEnergyHead(), clf_weight=0.0)
  model.build((None, 32, 32, 3))
  return model


def test_the_reference_key_set_is_what_torch_wrote():
  # The fixtures were written by torch 2.14 from the reference's own modules
  # (wideresnet.Wide_ResNet inside F; random weights): every key is there.
  for name, norm in (("ccf_wrn10x1_batch", "batch"),
                     ("f_wrn10x1_legacy", None)):
    state, buffer = convert.read_checkpoint(os.path.join(DATA, name + ".pt"))
    want = reference_shapes(10, 1, 10, norm)
    assert set(state) == set(want)
    assert {k: v.shape for k, v in state.items()} == want
    assert buffer.shape == (10, 3, 32, 32)


@pytest.mark.parametrize("norm", [None, "batch"])
def test_converted_network_equals_the_numpy_reference(norm):
  depth, width, classes = 10, 2, 10
  state = random_state_dict(reference_shapes(depth, width, classes, norm))
  wrn = backbones.wide_resnet(depth, width, classes, norm=norm)
  wrn.build((None, 32, 32, 3))
  ignored = convert.load_jem_state_dict(wrn, state)
  expected_ignored = {"f.linear.weight", "f.linear.bias",
                      "energy_output.weight", "energy_output.bias"}
  expected_ignored |= {k for k in state if k.endswith("num_batches_tracked")}
  assert set(ignored) == expected_ignored
  x = RNG.uniform(-1, 1, (2, 3, 32, 32))
  expected = np_reference_forward(state, x, depth, norm)
  np.testing.assert_allclose(np.asarray(wrn(nhwc(x))), expected, rtol=1e-3,
                             atol=1e-3)


def test_the_unconditional_model_takes_energy_output():
  state = random_state_dict(reference_shapes(10, 1, 10, None))
  model = uncond_model(10, 1)
  ignored = convert.load_jem_state_dict(model, state)
  assert set(ignored) == {"f.linear.weight", "f.linear.bias",
                          "class_output.weight", "class_output.bias"}
  x = RNG.uniform(-1, 1, (3, 3, 32, 32))
  np.testing.assert_allclose(
      model(nhwc(x))["log_px"],
      np_reference_forward(state, x, 10, None, head="energy"), rtol=1e-3,
      atol=1e-3)
  lines = convert.describe_unused(ignored, uncond=True)
  assert any(l.startswith("class_output.*") for l in lines)


def test_the_architecture_is_read_from_the_state_dict():
  for depth, width, norm in ((10, 1, None), (16, 2, "batch"), (28, 10, None)):
    state = {k: np.zeros(s) for k, s in
             reference_shapes(depth, width, 100, norm).items()}
    assert convert.infer_architecture(state) == {
        "depth": depth, "width": width, "norm": norm, "num_classes": 100}


def test_a_converted_strided_convolution_equals_numpy():
  state = random_state_dict(reference_shapes(10, 1, 10, None))
  wrn = backbones.wide_resnet(10, 1, 10)
  wrn.build((None, 32, 32, 3))
  convert.load_jem_state_dict(wrn, state)
  block = wrn.blocks[1]  # layer2.0: stride 2, PyTorch symmetric padding 1.
  x = RNG.normal(size=(1, 32, 32, 32))  # conv2 of layer2.0: 32 → 32.
  got = block.conv2.get_layer("conv")(block.conv2.get_layer("pad")(nhwc(x)))
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
                 if k.startswith(("f.conv", "f.layer", "class_output")))
  assert wrn.count_params() == expected
  assert abs(expected - 36.5e6) < 0.05e6


# -- .pt files without torch ---------------------------------------------------

@pytest.mark.parametrize("save", [torch_files.save_zip,
                                  torch_files.save_legacy])
def test_the_reader_reads_both_torch_layouts(tmp_path, save):
  arrays = {"w": RNG.normal(size=(3, 4)).astype(np.float32),
            "t": RNG.normal(size=(5, 2)),  # float64, saved transposed
            "n": np.array(7, np.int64), "h": np.arange(6, dtype=np.float16),
            "b": np.array([True, False]), "e": np.zeros((0, 3), np.float32)}
  blob = {"model_state_dict": collections.OrderedDict(
      (k, torch_files.Tensor(v, transpose=(k == "t")))
      for k, v in arrays.items()),
          "replay_buffer": torch_files.Tensor(arrays["w"])}
  path = str(tmp_path / "file.pt")
  save(path, blob)
  got = torch_checkpoint.load(path)
  for k, v in arrays.items():
    assert got["model_state_dict"][k].dtype == v.dtype
    np.testing.assert_array_equal(got["model_state_dict"][k], v)
  np.testing.assert_array_equal(got["replay_buffer"], arrays["w"])


def test_a_forbidden_global_is_refused_and_never_run(tmp_path):
  marker = tmp_path / "ran"

  class Exploit:
    def __reduce__(self):
      return os.system, (f"touch {marker}",)

  path = str(tmp_path / "evil.pt")
  torch_files.save_zip(path, {}, raw_pickle=pickle.dumps(
      {"model_state_dict": Exploit()}, protocol=2))
  with pytest.raises(torch_checkpoint.UnsafeCheckpointError,
                     match="system.*refuses"):
    convert.read_checkpoint(path)
  assert not marker.exists()


def test_corrupt_files_are_named(tmp_path):
  path = tmp_path / "not_a_checkpoint.pt"
  path.write_bytes(b"hello world")
  with pytest.raises(torch_checkpoint.CheckpointFormatError):
    convert.read_checkpoint(str(path))
  good = str(tmp_path / "good.pt")
  torch_files.save_zip(good, {"w": torch_files.Tensor(np.ones(100,
                                                              np.float32))})
  truncated = str(tmp_path / "truncated.pt")
  with zipfile.ZipFile(good) as src, zipfile.ZipFile(truncated, "w") as dst:
    for name in src.namelist():
      raw = src.read(name)
      dst.writestr(name, raw[:40] if name.endswith("data/0") else raw)
  with pytest.raises(torch_checkpoint.CheckpointFormatError,
                     match="truncated"):
    convert.read_checkpoint(truncated)


def test_the_reader_matches_torch_where_torch_is_installed(tmp_path):
  torch = pytest.importorskip("torch")  # The fixtures cover torch's format.
  state = random_state_dict(reference_shapes(10, 1, 10, "batch"))
  buffer = RNG.uniform(-1, 1, (20, 3, 32, 32)).astype(np.float32)
  for legacy in (False, True):
    path = os.path.join(tmp_path, f"reference_{legacy}.pt")
    torch.save({"model_state_dict": {k: torch.tensor(v) for k, v in
                                     state.items()},
                "replay_buffer": torch.tensor(buffer)}, path,
               _use_new_zipfile_serialization=not legacy)
    got_state, got_buffer = convert.read_checkpoint(path)
    assert set(got_state) == set(state)
    for k in state:
      np.testing.assert_array_equal(got_state[k], state[k])
    np.testing.assert_array_equal(got_buffer, buffer)


# -- the converted workdir, used the way a user uses it -----------------------

run_cli = run_module  # `python -m <args>`, optionally on mock data.


@pytest.mark.slow
@pytest.mark.parametrize("name, uncond, head", [
    ("ccf_wrn10x1_batch", False, "logits"),
    ("f_wrn10x1_legacy", True, "log_px_scalar")])
def test_a_torch_written_checkpoint_converts_and_loads_like_a_trained_one(
    tmp_path, name, uncond, head):
  import ebmkit  # pylint: disable=g-import-not-at-top
  workdir, preset = str(tmp_path / "converted"), str(tmp_path / "preset")
  args = ["ebmkit.convert", f"--checkpoint={os.path.join(DATA, name)}.pt",
          f"--workdir={workdir}", f"--to_preset={preset}"] + (
              ["--uncond"] if uncond else [])
  proc = run_cli(args, cwd=str(tmp_path))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "not used: f.linear.*" in proc.stdout
  assert ("class_output" if uncond else "energy_output") in proc.stdout
  with open(os.path.join(workdir, "operative_config.gin")) as f:
    assert "load_dataset.name = 'cifar10'" in f.read()

  reference = np.load(os.path.join(DATA, "reference_outputs.npz"))
  model = ebmkit.load_model(workdir)  # No flags: the workdir says it all.
  x = nhwc(reference["x"])
  got = model(x)["log_px" if uncond else "logits"]
  # PyTorch's own forward pass of the reference module (eval mode).
  np.testing.assert_allclose(got, reference[f"{name}/{head}"], rtol=1e-4,
                             atol=1e-4)
  np.testing.assert_array_equal(model.replay_buffer.samples.numpy(),
                                nhwc(reference[f"{name}/buffer"]))
  # The preset written beside it is the same model, and says where it came
  # from.
  loaded = ebmkit.from_preset(preset)
  np.testing.assert_allclose(loaded(x)["log_px" if uncond else "logits"], got,
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(loaded.replay_buffer.samples.numpy(),
                                model.replay_buffer.samples.numpy())
  with open(os.path.join(preset, "card.json")) as f:
    card = json.load(f)
  with open(os.path.join(DATA, name + ".pt"), "rb") as f:
    assert card["source_sha256"] == hashlib.sha256(f.read()).hexdigest()
  assert card["dataset"] == "cifar10" and "not trained" in card["is_not"]
  assert card["source"] == os.path.join(DATA, name + ".pt")


@pytest.mark.slow
def test_the_cli_evaluates_and_exports_a_converted_workdir(tmp_path):
  workdir = str(tmp_path / "converted")
  proc = run_cli(["ebmkit.convert", f"--checkpoint={DATA}/ccf_wrn10x1_batch.pt",
                  f"--workdir={workdir}"], cwd=str(tmp_path))
  assert proc.returncode == 0, proc.stderr[-3000:]
  fast = [f"--gin_bindings={b}" for b in (
      "evaluate.sample_steps = 2", "evaluate.num_samples = 8",
      "evaluate.pgd_examples = 8", "evaluate.linf_eps = (0.0, 0.1)",
      "evaluate.l2_eps = (0.0,)", "evaluate.pgd_steps = 1",
      "evaluate.sgld_defense = False", "evaluate.distal_per_class = 1",
      "evaluate.distal_steps = 2", "evaluate.judge_epochs = 1",
      "evaluate.ood_examples = 16", "evaluate.ood_sets = ('interp',)",
      # Mock CIFAR has few images; the config's train[5000:] would be empty.
      "evaluate.train_split = 'train'")]
  proc = run_cli(["ebmkit.run", "--mode=eval", f"--workdir={workdir}"] + fast,
                 cwd=str(tmp_path), mock_examples=32)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(workdir, "results.json")) as f:
    evaluation = json.load(f)["evaluation"]
  assert evaluation["dataset"] == "cifar10"
  assert evaluation["checkpoint"].endswith("ckpt-0")
  proc = run_cli(["ebmkit.run", "--mode=export", f"--workdir={workdir}"],
                 cwd=str(tmp_path), mock_examples=32)
  assert proc.returncode == 0, proc.stderr[-3000:]
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  exported = tf.saved_model.load(os.path.join(workdir, "export"))
  reference = np.load(os.path.join(DATA, "reference_outputs.npz"))
  logits = exported.signatures["classify"](
      x=tf.constant(nhwc(reference["x"])))["logits"]
  np.testing.assert_allclose(logits, reference["ccf_wrn10x1_batch/logits"],
                             rtol=1e-4, atol=1e-4)


def test_to_preset_alone_writes_only_the_preset(tmp_path, monkeypatch):
  import tempfile  # pylint: disable=g-import-not-at-top
  import ebmkit  # pylint: disable=g-import-not-at-top
  made, mkdtemp = [], tempfile.mkdtemp

  def recorded(*args, **kwargs):
    made.append(mkdtemp(*args, **kwargs))
    return made[-1]

  monkeypatch.setattr(tempfile, "mkdtemp", recorded)
  preset = str(tmp_path / "preset")
  convert.main([f"--checkpoint={DATA}/ccf_wrn10x1_batch.pt",
                f"--to_preset={preset}"])
  (workdir,) = [m for m in made if "ebmkit_convert_" in m]
  assert not os.path.exists(workdir)  # The conversion's workdir is gone.
  reference = np.load(os.path.join(DATA, "reference_outputs.npz"))
  logits = ebmkit.from_preset(preset)(nhwc(reference["x"]))["logits"]
  np.testing.assert_allclose(logits, reference["ccf_wrn10x1_batch/logits"],
                             rtol=1e-4, atol=1e-4)
  with pytest.raises(SystemExit):  # Neither --workdir nor --to_preset.
    convert.main([f"--checkpoint={DATA}/ccf_wrn10x1_batch.pt"])
