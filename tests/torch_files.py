"""Writes files in torch.save's two layouts without torch (for the reader's
tests): zip (torch >= 1.6) and legacy. Written from the format's description,
checked against files torch itself wrote (tests/data)."""

import collections
import contextlib
import io
import pickle
import struct
import sys
import types
import zipfile

import numpy as np

_STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage",
                  np.dtype(np.float64): "DoubleStorage",
                  np.dtype(np.float16): "HalfStorage",
                  np.dtype(np.int64): "LongStorage",
                  np.dtype(np.int32): "IntStorage",
                  np.dtype(np.uint8): "ByteStorage",
                  np.dtype(np.bool_): "BoolStorage"}


class Tensor:
  """An array saved as torch saves a tensor: a storage, offset, size, stride
  (a transposed array keeps its storage and gets permuted strides)."""

  def __init__(self, array, transpose=False):
    self.array = np.asarray(array)
    self.transpose = transpose

  def parts(self):
    base = np.array(self.array.T if self.transpose else self.array, order="C")
    size = self.array.shape
    stride = [s // max(base.itemsize, 1) for s in
              (base.T.strides if self.transpose else base.strides)]
    return base, tuple(size), tuple(stride)


@contextlib.contextmanager
def _fake_torch():
  """Modules named torch and torch._utils, so that pickle can name their
  globals (pickle checks that a global can be imported)."""
  torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

  def rebuild(*args):
    del args
  rebuild.__module__, rebuild.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
  utils._rebuild_tensor_v2 = rebuild
  for name in set(_STORAGE_NAMES.values()):
    setattr(torch, name, type(name, (), {"__module__": "torch"}))
  torch._utils = utils
  saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
  sys.modules.update({"torch": torch, "torch._utils": utils})
  try:
    yield torch, rebuild
  finally:
    for k, v in saved.items():
      if v is None:
        sys.modules.pop(k, None)
      else:
        sys.modules[k] = v


def _pickle(obj, legacy):
  """(pickle bytes, {key: contiguous array}) for `obj` with Tensors."""
  storages = {}
  with _fake_torch() as (torch, rebuild):

    class _Storage:
      def __init__(self, base):
        self.base, self.key = base, str(len(storages))
        storages[self.key] = base

    def convert(o):
      if isinstance(o, Tensor):
        base, size, stride = o.parts()
        return _Reduced(rebuild, (_Storage(base), 0, size, stride, False,
                                  collections.OrderedDict()))
      if isinstance(o, dict):
        return type(o)((k, convert(v)) for k, v in o.items())
      return o

    class Pickler(pickle.Pickler):
      def persistent_id(self, o):
        if isinstance(o, _Storage):
          storage_type = getattr(torch, _STORAGE_NAMES[o.base.dtype])
          pid = ("storage", storage_type, o.key, "cpu", o.base.size)
          return pid + (None,) if legacy else pid
        return None

    out = io.BytesIO()
    Pickler(out, protocol=2).dump(convert(obj))
  return out.getvalue(), storages


class _Reduced:
  def __init__(self, fn, args):
    self.fn, self.args = fn, args

  def __reduce__(self):
    return self.fn, self.args


def save_zip(path, obj, raw_pickle=None):
  """torch.save's zip layout; `raw_pickle` replaces data.pkl (hostile files)."""
  data, storages = _pickle(obj, legacy=False)
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/data.pkl", raw_pickle or data)
    z.writestr("archive/byteorder", "little")
    for key, base in storages.items():
      z.writestr(f"archive/data/{key}", base.astype(base.dtype.newbyteorder(
          "<")).tobytes())
    z.writestr("archive/version", "3\n")


def save_legacy(path, obj):
  """torch.save's legacy layout (torch < 1.6)."""
  data, storages = _pickle(obj, legacy=True)
  with open(path, "wb") as f:
    for header in (0x1950a86a20f9469cfc6c, 1001,
                   {"protocol_version": 1001, "little_endian": True}):
      pickle.dump(header, f, protocol=2)
    f.write(data)
    pickle.dump(list(storages), f, protocol=2)
    for base in storages.values():
      f.write(struct.pack("<q", base.size))
      f.write(base.astype(base.dtype.newbyteorder("<")).tobytes())
