"""Reading PyTorch checkpoint files (`torch.save`) without torch.

A `.pt` file holds a pickle of the saved structure whose tensors refer to raw
storages by key. Two layouts exist:
  - zip (torch >= 1.6): `<name>/data.pkl` plus one `<name>/data/<key>` entry
    per storage, little-endian unless `<name>/byteorder` says otherwise;
  - legacy (torch < 1.6, or `_use_new_zipfile_serialization=False`): a
    magic-number pickle, a protocol pickle, a system-info pickle, the data
    pickle, a pickle of the storage keys, then each storage as an int64
    element count followed by its bytes.

Unpickling runs whatever callables a pickle names, so a checkpoint from the
internet is code unless the unpickler refuses them. This reader allows only
what a state dict of tensors needs (the tensor rebuild functions, the storage
types and `collections.OrderedDict`) and refuses every other global with
`UnsafeCheckpointError`, before anything from the file is called.
"""

import collections
import io
import pickle
import struct
import zipfile

import numpy as np

_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001

# Storage class name → NumPy dtype (bfloat16 is widened to float32 below).
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32,
    "HalfStorage": np.float16, "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class UnsafeCheckpointError(pickle.UnpicklingError):
  """The checkpoint's pickle names a callable outside the allow-list."""


class CheckpointFormatError(ValueError):
  """The file is not a PyTorch checkpoint this reader understands."""


class _StorageType:
  """Stands for `torch.<Name>Storage` in the pickle."""

  def __init__(self, name):
    self.name = name
    self.dtype = _STORAGE_DTYPES[name]

  @property
  def itemsize(self):
    return 2 if self.dtype == "bfloat16" else np.dtype(self.dtype).itemsize


class _Storage:
  """A storage whose bytes may arrive after the pickle (legacy layout)."""

  def __init__(self, storage_type, numel):
    self.type = storage_type
    self.numel = int(numel)
    self.array = None

  def set_bytes(self, raw, byteorder="little"):
    want = self.numel * self.type.itemsize
    if len(raw) < want:
      raise CheckpointFormatError(
          f"A {self.type.name} of {self.numel} elements needs {want} bytes; "
          f"the file has {len(raw)}: it is truncated.")
    end = "<" if byteorder == "little" else ">"
    if self.type.dtype == "bfloat16":
      bits = np.frombuffer(raw[:want], end + "u2").astype(np.uint32) << 16
      self.array = bits.view(np.float32)
    else:
      dtype = np.dtype(self.type.dtype).newbyteorder(end)
      self.array = np.frombuffer(raw[:want], dtype).astype(
          np.dtype(self.type.dtype).newbyteorder("="))


class _Tensor:
  """A tensor waiting for its storage's bytes."""

  def __init__(self, storage, offset, size, stride):
    self.storage, self.offset = storage, int(offset)
    self.size, self.stride = tuple(int(s) for s in size), tuple(
        int(s) for s in stride)

  def to_numpy(self):
    flat = self.storage.array
    if len(self.size) != len(self.stride):
      raise CheckpointFormatError(
          f"A tensor has size {self.size} but stride {self.stride}.")
    if any(s < 0 for s in self.size + self.stride) or self.offset < 0:
      raise CheckpointFormatError("A tensor has a negative size or stride.")
    if 0 in self.size:
      return np.zeros(self.size, flat.dtype)
    if np.prod(self.size, dtype=np.float64) > 2 ** 32:
      raise CheckpointFormatError(f"A tensor of size {self.size} is larger "
                                  f"than any checkpoint ebmkit reads.")
    last = self.offset + sum((n - 1) * s for n, s in zip(self.size,
                                                         self.stride))
    if last >= len(flat):
      raise CheckpointFormatError(
          f"A tensor of size {self.size} reaches element {last} of a storage "
          f"of {len(flat)}: the file is corrupt.")
    view = np.lib.stride_tricks.as_strided(
        flat[self.offset:], self.size,
        tuple(s * flat.itemsize for s in self.stride))
    return np.array(view)


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False,
                    backward_hooks=None, metadata=None):
  del requires_grad, backward_hooks, metadata
  if not isinstance(storage, _Storage):
    raise CheckpointFormatError("A tensor's storage is not a storage.")
  return _Tensor(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
  del requires_grad, backward_hooks
  return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
  """Resolves only allow-listed globals; storages come from `load_storage`."""

  def __init__(self, file, load_storage):
    super().__init__(file)
    self._load_storage = load_storage

  def find_class(self, module, name):
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(name)
    if (module, name) in _ALLOWED:
      return _ALLOWED[(module, name)]
    raise UnsafeCheckpointError(
        f"The checkpoint's pickle asks for {module}.{name}, which a state "
        f"dict of tensors never needs; ebmkit refuses it rather than run code "
        f"from the file. If you trust the file, load it with torch and save "
        f"{{'model_state_dict': ..., 'replay_buffer': ...}} of plain tensors.")

  def persistent_load(self, pid):
    if not isinstance(pid, tuple) or not pid or pid[0] not in ("storage",
                                                               b"storage"):
      raise CheckpointFormatError(f"Unknown persistent id {pid!r:.80}.")
    storage_type, key = pid[1], pid[2]
    if not isinstance(storage_type, _StorageType):
      raise CheckpointFormatError(f"Unknown storage type {storage_type!r:.80}.")
    numel = pid[4]
    view = pid[5] if len(pid) > 5 else None
    if view is not None:
      raise CheckpointFormatError("Storage views (torch < 0.4 files) are not "
                                  "supported; re-save the file with torch.")
    key = key.decode() if isinstance(key, bytes) else str(key)
    return self._load_storage(key, storage_type, numel)


def _materialise(obj):
  """Replaces every `_Tensor` in a nested structure by a NumPy array."""
  if isinstance(obj, _Tensor):
    return obj.to_numpy()
  if isinstance(obj, dict):
    out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
    for k, v in obj.items():
      out[k] = _materialise(v)
    return out
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialise(v) for v in obj)
  return obj


def _load_zip(path):
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pickles) != 1:
      raise CheckpointFormatError(
          f"{path} is a zip archive but not a torch checkpoint (no single "
          f"data.pkl inside).")
    prefix = pickles[0][:-len("data.pkl")]
    byteorder = "little"
    if prefix + "byteorder" in names:
      byteorder = archive.read(prefix + "byteorder").decode().strip()
    storages = {}

    def load_storage(key, storage_type, numel):
      if key not in storages:
        entry = f"{prefix}data/{key}"
        if entry not in names:
          raise CheckpointFormatError(f"{path} lacks the storage {entry}.")
        storage = _Storage(storage_type, numel)
        storage.set_bytes(archive.read(entry), byteorder)
        storages[key] = storage
      return storages[key]

    result = _Unpickler(io.BytesIO(archive.read(pickles[0])),
                        load_storage).load()
  return _materialise(result)


def _load_legacy(path):
  with open(path, "rb") as f:
    header = _Unpickler(f, None)
    try:
      magic = header.load()
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
      raise CheckpointFormatError(
          f"{path} is neither a zip nor a legacy torch checkpoint "
          f"({e}).") from e
    if magic != _LEGACY_MAGIC:
      raise CheckpointFormatError(
          f"{path} is not a torch checkpoint (no torch magic number).")
    if header.load() != _LEGACY_PROTOCOL:
      raise CheckpointFormatError(f"{path}: unknown legacy torch protocol.")
    sys_info = header.load()
    little = not isinstance(sys_info, dict) or sys_info.get("little_endian",
                                                            True)
    storages = {}

    def load_storage(key, storage_type, numel):
      return storages.setdefault(key, _Storage(storage_type, numel))

    result = _Unpickler(f, load_storage).load()
    keys = _Unpickler(f, None).load()
    for key in keys:
      storage = storages.get(str(key))
      if storage is None:
        raise CheckpointFormatError(f"{path} lists an unknown storage {key}.")
      count = f.read(8)
      if len(count) < 8:
        raise CheckpointFormatError(f"{path} is truncated.")
      (numel,) = struct.unpack("<q" if little else ">q", count)
      storage.set_bytes(f.read(numel * storage.type.itemsize),
                        "little" if little else "big")
  return _materialise(result)


def load(path):
  """Reads a `torch.save` file of tensors into NumPy arrays.

  Args:
    path: a .pt/.pth file written by `torch.save` (zip or legacy layout).

  Returns:
    The saved structure (dicts, OrderedDicts, lists, numbers) with every
    tensor as a NumPy array (bfloat16 widened to float32).

  Raises:
    UnsafeCheckpointError: the pickle names a callable outside the
      allow-list (nothing from the file has been called).
    CheckpointFormatError: the file is not a torch checkpoint or is corrupt.
  """
  if zipfile.is_zipfile(path):
    return _load_zip(path)
  return _load_legacy(path)
