"""Read PyTorch `.pth` state dicts into NumPy arrays, without PyTorch and without trusting pickle.

A `.pth` file written by `torch.save(model.state_dict(), path)` is a pickle. Unpickling it
normally may run any code the file asks for, so this reader uses a restricted unpickler that
only knows the handful of globals a plain tensor state dict needs:

- `collections.OrderedDict`;
- `torch._utils._rebuild_tensor_v2`, `_rebuild_tensor_v3`, `_rebuild_tensor` (legacy) and
  `_rebuild_parameter`, replaced here by our own functions that build NumPy arrays;
- the typed storage classes (`torch.FloatStorage`, `torch.LongStorage`, ...), the untyped
  `torch.storage.UntypedStorage`, and dtype globals such as `torch.float32`, replaced by
  inert markers.

Any other global (a module object, a custom class, `os.system`, ...) raises
`UnsafePickleError` before anything is called, so nothing in the file is ever executed.

Both serialisation formats are read:

1. the zip format (the default since torch 1.6): `<prefix>/data.pkl` holds the object pickle,
   `<prefix>/data/<key>` the raw storage bytes, `<prefix>/byteorder` their byte order
   ('little' when absent, as torch assumes);
2. the legacy format (`_use_new_zipfile_serialization=False`): consecutive pickles of the
   magic number, the protocol version, a sys-info dict, the object and the list of storage
   keys, followed for each key by an 8-byte little-endian element count and the raw bytes.

  from gan_core.eval.torch_pickle import load_state_dict
  weights = load_state_dict("generator.pth")   # {'conv.weight': np.ndarray, ...}
"""
from __future__ import annotations

import collections
import dataclasses
import io
import os
import pickle
import struct
import sys
import zipfile
import zlib
from typing import Any, BinaryIO

import numpy as np

__all__ = ["UnsafePickleError", "WeightFileError", "load", "load_state_dict", "save",
           "save_state_dict"]

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
_LEGACY_MAGIC_BYTES = b"\x8a\x0a" + LEGACY_MAGIC_NUMBER.to_bytes(10, "little")


class WeightFileError(ValueError):
  """The file is missing, truncated, corrupt or not a PyTorch `.pth` file."""


class UnsafePickleError(pickle.UnpicklingError):
  """The pickle asks for something other than tensors, storages and dicts; it is refused."""


# Storage class name -> element dtype name (also the torch dtype name).
_STORAGE_DTYPES = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
}
# torch dtype names that map onto NumPy dtypes (the last three only through ml_dtypes).
_PLAIN_DTYPES = frozenset({
    "float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "uint16",
    "uint32", "uint64", "bool", "complex64", "complex128"})
_ML_DTYPES = frozenset({"bfloat16", "float8_e4m3fn", "float8_e5m2"})


def _numpy_dtype(name: str) -> np.dtype:
  """The NumPy dtype for a torch dtype name; WeightFileError if there is none."""
  if name in _PLAIN_DTYPES:
    return np.dtype(name)
  if name in _ML_DTYPES:
    try:
      import ml_dtypes  # installed with jax
    except ImportError as e:
      raise WeightFileError(
          f"the file holds {name} tensors, which need the ml_dtypes package") from e
    return np.dtype(getattr(ml_dtypes, name))
  raise WeightFileError(f"unsupported tensor dtype {name!r}")


@dataclasses.dataclass(frozen=True)
class _StorageType:
  """Stands in for a `torch.<X>Storage` class; `dtype` is None for untyped (byte) storage."""
  name: str
  dtype: str | None


@dataclasses.dataclass(frozen=True)
class _TorchDtype:
  """Stands in for a `torch.<dtype>` global such as `torch.float32`."""
  name: str


class _Storage:
  """A lazily read storage: blob `key` as `dtype` elements, or (for a legacy view) `numel`
  of them from element `offset` on."""
  __slots__ = ("blobs", "key", "dtype", "offset", "numel")

  def __init__(self, blobs: _BlobSource, key: str, dtype: str, offset: int,
               numel: int | None):
    self.blobs, self.key, self.dtype, self.offset, self.numel = blobs, key, dtype, offset, numel

  def raw(self) -> np.ndarray:
    """This storage's bytes (a read-only uint8 array, in the file's byte order)."""
    data = self.blobs.get(self.key)
    if self.numel is None:
      return data
    itemsize = _numpy_dtype(self.dtype).itemsize
    start = self.offset * itemsize
    stop = start + self.numel * itemsize
    if stop > data.size:
      raise WeightFileError(
          f"storage view {self.key!r}[{self.offset}:{self.offset + self.numel}] lies outside "
          f"its storage of {data.size} bytes")
    return data[start:stop]

  def __setstate__(self, state: Any) -> None:
    raise UnsafePickleError("the pickle sets state on a storage, which torch never does")


class _Tensor:
  """A tensor to build once all storages can be read (legacy files store them after the pickle)."""
  __slots__ = ("storage", "offset", "size", "stride", "dtype")

  def __init__(self, storage: _Storage, offset: int, size: tuple[int, ...],
               stride: tuple[int, ...], dtype: str):
    self.storage, self.offset, self.size, self.stride, self.dtype = (
        storage, offset, size, stride, dtype)

  def __setstate__(self, state: Any) -> None:
    raise UnsafePickleError("the pickle sets state on a tensor, which torch never does")

  def to_numpy(self, byteorder: str) -> np.ndarray:
    """A fresh C-contiguous array with this tensor's values, in native byte order."""
    dtype = _numpy_dtype(self.dtype)
    if any(n == 0 for n in self.size):
      return np.zeros(self.size, dtype)
    flat = _elements(self.storage.raw(), dtype, byteorder)
    last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
    if last >= flat.size:
      raise WeightFileError(
          f"tensor of size {self.size}, stride {self.stride} at offset {self.offset} reaches "
          f"element {last} of a storage with only {flat.size} {self.dtype} elements")
    view = np.lib.stride_tricks.as_strided(
        flat[self.offset:], shape=self.size,
        strides=tuple(s * dtype.itemsize for s in self.stride), writeable=False)
    out = view.copy(order="C")
    if dtype == np.bool_:  # bytes other than 0 and 1 would make odd booleans
      out = out.view(np.uint8) != 0
    return out


def _elements(raw: np.ndarray, dtype: np.dtype, byteorder: str) -> np.ndarray:
  """Reinterpret storage bytes as elements of `dtype` in native byte order."""
  count = raw.size // dtype.itemsize
  raw = raw[:count * dtype.itemsize]
  if byteorder == sys.byteorder or dtype.itemsize == 1:
    return raw.view(dtype)
  # Swap each scalar (each half of a complex number), then reinterpret.
  unit = dtype.itemsize // 2 if dtype.kind == "c" else dtype.itemsize
  return raw.view(f"u{unit}").byteswap().view(dtype)


def _check_ints(value: Any, what: str) -> tuple[int, ...]:
  if not isinstance(value, (tuple, list)) or not all(
      isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
    raise WeightFileError(f"bad tensor {what} {value!r}: expected a tuple of non-negative ints")
  return tuple(value)


def _make_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any,
                 dtype: str | None = None) -> _Tensor:
  if not isinstance(storage, _Storage):
    raise WeightFileError(f"a tensor is built from {type(storage).__name__}, not a storage")
  if not isinstance(storage_offset, int) or storage_offset < 0:
    raise WeightFileError(f"bad tensor storage offset {storage_offset!r}")
  size, stride = _check_ints(size, "size"), _check_ints(stride, "stride")
  if len(size) != len(stride):
    raise WeightFileError(f"tensor size {size} and stride {stride} differ in length")
  return _Tensor(storage, storage_offset, size, stride, dtype or storage.dtype)


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any,
                       requires_grad: Any = False, backward_hooks: Any = None,
                       metadata: Any = None) -> _Tensor:
  """Stands in for `torch._utils._rebuild_tensor_v2`; hooks and metadata are ignored."""
  del requires_grad, backward_hooks, metadata
  return _make_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage: Any, storage_offset: Any, size: Any, stride: Any,
                       requires_grad: Any, backward_hooks: Any, dtype: Any,
                       metadata: Any = None) -> _Tensor:
  """Stands in for `torch._utils._rebuild_tensor_v3` (untyped storage plus a dtype)."""
  del requires_grad, backward_hooks, metadata
  if not isinstance(dtype, _TorchDtype):
    raise WeightFileError(f"bad tensor dtype {dtype!r}")
  return _make_tensor(storage, storage_offset, size, stride, dtype.name)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> _Tensor:
  """Stands in for the legacy `torch._utils._rebuild_tensor`."""
  return _make_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any) -> Any:
  """Stands in for `torch._utils._rebuild_parameter`: a parameter is just its data."""
  del requires_grad, backward_hooks
  if not isinstance(data, _Tensor):
    raise WeightFileError(f"a parameter wraps {type(data).__name__}, not a tensor")
  return data


class _NumpyDtype:
  """Stands in for `numpy.dtype` of a plain number type (the dtype of a pickled NumPy scalar,
  e.g. a best score that a training script saved as `np.float64`)."""

  def __init__(self, name: Any, align: Any = False, copy: Any = True):
    if not isinstance(name, str) or name.lstrip("<>=|") not in _NUMPY_SCALAR_CODES:
      raise UnsafePickleError(f"numpy.dtype({name!r}) is not a plain number type; refused")
    self.dtype = np.dtype(name)

  def __setstate__(self, state: Any) -> None:
    if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">"):
      self.dtype = self.dtype.newbyteorder(state[1])


_NUMPY_SCALAR_CODES = frozenset({"f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8",
                                 "b1"})


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
  """Stands in for `numpy.core.multiarray.scalar`: the Python number of a NumPy scalar."""
  if not isinstance(dtype, _NumpyDtype) or not isinstance(data, bytes) \
      or len(data) != dtype.dtype.itemsize:
    raise UnsafePickleError("a NumPy scalar that is not a plain number; refused")
  return np.frombuffer(data, dtype.dtype)[0].item()


def _latin1_bytes(text: Any, encoding: Any = "utf-8") -> bytes:
  """Stands in for `_codecs.encode`, which protocol-2 pickles use to write bytes objects."""
  if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
    raise UnsafePickleError("_codecs.encode with other than (str, 'latin1'); refused")
  return text.encode("latin1")


def _allowed_global(module: str, name: str) -> Any:
  """What a permitted global stands for, or None when it is not permitted."""
  if module == "collections" and name == "OrderedDict":
    return collections.OrderedDict
  if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "scalar":
    return _numpy_scalar
  if module == "numpy" and name == "dtype":
    return _NumpyDtype
  if module == "_codecs" and name == "encode":  # How protocol 2 spells bytes.
    return _latin1_bytes
  if module == "torch._utils":
    return {
        "_rebuild_tensor_v2": _rebuild_tensor_v2,
        "_rebuild_tensor_v3": _rebuild_tensor_v3,
        "_rebuild_tensor": _rebuild_tensor,
        "_rebuild_parameter": _rebuild_parameter,
    }.get(name)
  if module == "torch" and name in _STORAGE_DTYPES:
    return _StorageType(name, _STORAGE_DTYPES[name])
  if module in ("torch", "torch.storage") and name == "UntypedStorage":
    return _StorageType(name, None)
  if module == "torch" and (name in _PLAIN_DTYPES or name in _ML_DTYPES):
    return _TorchDtype(name)
  return None


class _BlobSource:
  """Raw storage bytes by key, as read-only uint8 arrays."""

  def __init__(self) -> None:
    self._cache: dict[str, np.ndarray] = {}

  def get(self, key: str) -> np.ndarray:
    if key not in self._cache:
      self._cache[key] = self._read(key)
    return self._cache[key]

  def _read(self, key: str) -> np.ndarray:
    raise NotImplementedError


class _ZipBlobs(_BlobSource):
  """Storage blobs `<prefix>data/<key>` of an open zip archive, read on first use."""

  def __init__(self, archive: zipfile.ZipFile, prefix: str, path: str):
    super().__init__()
    self._archive, self._prefix, self._path = archive, prefix, path

  def _read(self, key: str) -> np.ndarray:
    name = f"{self._prefix}data/{key}"
    try:
      data = self._archive.read(name)
    except KeyError:
      raise WeightFileError(
          f"{self._path}: storage blob {name!r} is missing from the archive") from None
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError) as e:
      raise WeightFileError(f"{self._path}: truncated or corrupt storage blob {name!r}: {e}") from e
    return np.frombuffer(data, np.uint8)


class _LegacyBlobs(_BlobSource):
  """Storage blobs of a legacy file; they are filled in after the object pickle is read."""

  def __init__(self, path: str):
    super().__init__()
    self._path = path
    self.dtypes: dict[str, str] = {}

  def declare(self, key: str, dtype: str) -> None:
    """Remember a root storage's dtype: the data section counts its elements, not bytes."""
    self.dtypes.setdefault(key, dtype)

  def put(self, key: str, data: bytes) -> None:
    self._cache[key] = np.frombuffer(data, np.uint8)

  def _read(self, key: str) -> np.ndarray:
    raise WeightFileError(f"{self._path}: the data of storage {key!r} is missing from the file")


class RestrictedUnpickler(pickle.Unpickler):
  """An unpickler that resolves only the globals of a plain tensor state dict.

  With `blobs` given, persistent ids `('storage', storage_type, key, location, numel[,
  view_metadata])` become lazily read storages; without it any persistent id is refused, and
  with `allow_globals=False` every global is (for the small header pickles of legacy files).
  """

  def __init__(self, file: BinaryIO, blobs: _BlobSource | None = None,
               allow_globals: bool = True):
    super().__init__(file, encoding="utf-8")
    self._blobs = blobs
    self._allow_globals = allow_globals
    self._storages: dict[tuple[str, str], _Storage] = {}

  def find_class(self, module: str, name: str) -> Any:
    found = _allowed_global(module, name) if self._allow_globals else None
    if found is None:
      raise UnsafePickleError(
          f"the pickle asks for the global {module}.{name}: the file is not a plain tensor "
          "state dict (only tensors, storages and OrderedDict are allowed), so it is refused "
          "for safety and nothing in it was run")
    return found

  def persistent_load(self, pid: Any) -> Any:
    if self._blobs is None:
      raise UnsafePickleError(f"unexpected persistent id {pid!r} in a header pickle")
    if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
      kind = pid[0] if isinstance(pid, tuple) and pid else pid
      raise UnsafePickleError(
          f"the pickle refers to a persistent object of kind {kind!r}: the file is not a plain "
          "tensor state dict (only storages are allowed), so it is refused for safety")
    if len(pid) not in (5, 6):
      raise WeightFileError(f"malformed storage reference {pid!r}")
    _, storage_type, key, _location, numel = pid[:5]
    view = pid[5] if len(pid) == 6 else None
    if not isinstance(storage_type, _StorageType):
      raise WeightFileError(f"malformed storage reference {pid!r}: no storage type")
    if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
      raise WeightFileError(f"malformed storage reference {pid!r}")
    dtype = storage_type.dtype or "uint8"
    offset, size = 0, None
    if view is not None:  # legacy storage views: (view_key, element offset, element count)
      if not (isinstance(view, tuple) and len(view) == 3 and isinstance(view[0], str)
              and all(isinstance(v, int) and v >= 0 for v in view[1:])):
        raise WeightFileError(f"malformed storage view {view!r}")
      key_of_view, offset, size = view
      cache_key = (key_of_view, dtype)
    else:
      cache_key = (key, dtype)
    if cache_key not in self._storages:
      self._storages[cache_key] = _Storage(self._blobs, key, dtype, offset, size)
    if isinstance(self._blobs, _LegacyBlobs):
      self._blobs.declare(key, dtype)
    return self._storages[cache_key]


def _unpickle(file: BinaryIO, path: str, what: str, blobs: _BlobSource | None = None,
              allow_globals: bool = True) -> Any:
  """One restricted pickle from `file`; format problems become WeightFileError."""
  try:
    return RestrictedUnpickler(file, blobs, allow_globals).load()
  except (UnsafePickleError, WeightFileError):
    raise
  except EOFError as e:
    raise WeightFileError(f"{path}: truncated file (the {what} pickle ends early)") from e
  except (pickle.UnpicklingError, ValueError, TypeError, KeyError, IndexError, AttributeError,
          struct.error, OverflowError, RecursionError, MemoryError, UnicodeDecodeError) as e:
    raise WeightFileError(f"{path}: corrupt {what} pickle ({type(e).__name__}: {e})") from e


def _to_numpy_tree(obj: Any, byteorder: str) -> Any:
  """Replace tensors (and bare storages) in dicts, lists and tuples with NumPy arrays."""
  memo: dict[int, Any] = {}

  def convert(x: Any) -> Any:
    if id(x) in memo:
      return memo[id(x)]
    if isinstance(x, _Tensor):
      out = memo[id(x)] = x.to_numpy(byteorder)
    elif isinstance(x, _Storage):
      out = memo[id(x)] = _elements(x.raw(), _numpy_dtype(x.dtype), byteorder).copy()
    elif isinstance(x, _TorchDtype):
      out = _numpy_dtype(x.name)
    elif isinstance(x, dict):
      out = memo[id(x)] = type(x)() if type(x) in (dict, collections.OrderedDict) else {}
      for k, v in x.items():
        out[k] = convert(v)
    elif isinstance(x, list):
      out = memo[id(x)] = []
      out.extend(convert(v) for v in x)
    elif isinstance(x, tuple):
      out = tuple(convert(v) for v in x)
    else:
      out = x
    return out

  try:
    return convert(obj)
  except RecursionError as e:
    raise WeightFileError("the pickled object is nested too deeply") from e


def _load_zip(path: str, file: BinaryIO) -> Any:
  try:
    archive = zipfile.ZipFile(file)
  except (zipfile.BadZipFile, OSError, EOFError) as e:
    raise WeightFileError(f"{path}: corrupt zip archive ({e})") from e
  with archive:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    pickles = pickles or [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
    if not pickles:
      raise WeightFileError(
          f"{path}: not a PyTorch .pth file (a zip archive without a */data.pkl record)")
    prefix = pickles[0][:-len("data.pkl")]
    try:
      data = archive.read(pickles[0])
      byteorder = "little"
      if f"{prefix}byteorder" in names:
        byteorder = archive.read(f"{prefix}byteorder").decode("ascii", "replace").strip()
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError) as e:
      raise WeightFileError(f"{path}: truncated or corrupt zip archive ({e})") from e
    if byteorder not in ("little", "big"):
      raise WeightFileError(f"{path}: unknown byte order {byteorder!r}")
    blobs = _ZipBlobs(archive, prefix, path)
    obj = _unpickle(io.BytesIO(data), path, "data.pkl", blobs)
    return _to_numpy_tree(obj, byteorder)


def _load_legacy(path: str, file: BinaryIO, file_size: int) -> Any:
  magic = _unpickle(file, path, "magic number", allow_globals=False)
  if magic != LEGACY_MAGIC_NUMBER:
    raise WeightFileError(f"{path}: not a PyTorch .pth file (wrong magic number)")
  version = _unpickle(file, path, "protocol version", allow_globals=False)
  if version != LEGACY_PROTOCOL_VERSION:
    raise WeightFileError(f"{path}: unsupported legacy protocol version {version!r}")
  sys_info = _unpickle(file, path, "sys info", allow_globals=False)
  little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
  blobs = _LegacyBlobs(path)
  obj = _unpickle(file, path, "object", blobs)
  keys = _unpickle(file, path, "storage keys", allow_globals=False)
  if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
    raise WeightFileError(f"{path}: corrupt legacy file (bad storage key list)")
  for key in keys:
    if key not in blobs.dtypes:
      raise WeightFileError(f"{path}: corrupt legacy file (data for unknown storage {key!r})")
    itemsize = _numpy_dtype(blobs.dtypes[key]).itemsize
    header = file.read(8)
    if len(header) < 8:
      raise WeightFileError(f"{path}: truncated file (storage {key!r} is missing)")
    (count,) = struct.unpack("<q", header)
    nbytes = count * itemsize
    if count < 0 or nbytes > file_size - file.tell():
      raise WeightFileError(
          f"{path}: truncated file (storage {key!r} needs {max(nbytes, 0)} bytes, "
          f"{file_size - file.tell()} remain)")
    blobs.put(key, file.read(nbytes))
  return _to_numpy_tree(obj, "little" if little else "big")


def load(path: str | os.PathLike[str]) -> Any:
  """The object in a PyTorch `.pth` file, with every tensor as a NumPy array.

  Only plain data is accepted: dicts (ordered as in the file), lists, tuples, numbers,
  strings and tensors. Raises WeightFileError for a missing, truncated or foreign file and
  UnsafePickleError for any pickle that asks for other classes or functions.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise WeightFileError(f"{path}: no such file")
  if not os.path.isfile(path):
    raise WeightFileError(f"{path}: not a regular file")
  with open(path, "rb") as file:
    file_size = os.fstat(file.fileno()).st_size
    head = file.read(64)
    file.seek(0)
    if not head:
      raise WeightFileError(f"{path}: empty file, not a PyTorch .pth file")
    if zipfile.is_zipfile(file):
      file.seek(0)
      return _load_zip(path, file)
    file.seek(0)
    if head.startswith(b"PK\x03\x04"):
      raise WeightFileError(
          f"{path}: truncated or corrupt zip archive (its central directory is missing); "
          "the file may be an incomplete download")
    if head[:1] == b"\x80" and _LEGACY_MAGIC_BYTES in head[:32]:
      return _load_legacy(path, file, file_size)
    if head[257:262] == b"ustar":
      raise WeightFileError(f"{path}: the tar-based .pth format of torch < 0.4 is not supported")
    raise WeightFileError(
        f"{path}: not a PyTorch .pth file (neither a zip archive nor a legacy torch pickle)")


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
  """The tensors of a PyTorch state-dict file as `{name: np.ndarray}`, in the file's order.

  Accepts files written by `torch.save(module.state_dict(), path)` in either format, and
  files whose top-level dict holds the state dict under 'state_dict'. Arrays are fresh,
  C-contiguous and in native byte order, with the tensors' dtypes (bfloat16 via ml_dtypes).
  """
  obj = load(path)
  if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
    obj = obj["state_dict"]
  if not isinstance(obj, dict):
    raise WeightFileError(f"{os.fspath(path)}: holds a {type(obj).__name__}, not a state dict")
  out: dict[str, np.ndarray] = {}
  for key, value in obj.items():
    if not isinstance(key, str) or not isinstance(value, np.ndarray):
      raise WeightFileError(
          f"{os.fspath(path)}: entry {key!r} is a {type(value).__name__}, not a tensor")
    out[key] = value
  return out



# ----------------------------------------------------------------------------- writing

_DTYPE_STORAGES = {np.dtype(dtype): storage for storage, dtype in _STORAGE_DTYPES.items()
                   if dtype in _PLAIN_DTYPES}


def _pickle_unicode(text: str) -> bytes:
  data = text.encode("utf-8")
  return b"X" + struct.pack("<I", len(data)) + data


def _pickle_int(value: int) -> bytes:
  return b"J" + struct.pack("<i", value)


def _pickle_int_tuple(values: tuple[int, ...]) -> bytes:
  return b"(" + b"".join(_pickle_int(v) for v in values) + b"t"


def _pickle_tensor(value: np.ndarray, blobs: list[tuple[str, bytes]], where: str) -> list[bytes]:
  array = np.array(value, order="C")  # (np.ascontiguousarray would make 0-d arrays 1-d)
  if array.dtype not in _DTYPE_STORAGES:
    raise ValueError(f"{where} has dtype {array.dtype}, which has no torch storage here")
  array = array.astype(array.dtype.newbyteorder("<"), copy=False)
  strides = tuple(s // array.itemsize for s in array.strides) if array.ndim else ()
  storage = _DTYPE_STORAGES[array.dtype]
  key = str(len(blobs))
  blobs.append((key, array.tobytes()))
  return [b"ctorch._utils\n_rebuild_tensor_v2\n(",
          b"(", _pickle_unicode("storage"), f"ctorch\n{storage}\n".encode(),
          _pickle_unicode(key), _pickle_unicode("cpu"), _pickle_int(array.size), b"tQ",
          _pickle_int(0), _pickle_int_tuple(array.shape), _pickle_int_tuple(strides),
          b"\x89ccollections\nOrderedDict\n)Rt", b"R"]


def _pickle_object(obj: Any, blobs: list[tuple[str, bytes]], where: str) -> list[bytes]:
  """Protocol-2 opcodes for plain data: dicts, lists, tuples, str, int, float, bool, None and
  NumPy arrays (as tensors). Nothing is memoised; shared objects are written twice."""
  if obj is None:
    return [b"N"]
  if obj is True or obj is False:
    return [b"\x88" if obj else b"\x89"]
  if isinstance(obj, (np.ndarray, np.generic)):
    return _pickle_tensor(obj, blobs, where)
  if isinstance(obj, int):
    if -2**31 <= obj < 2**31:
      return [_pickle_int(obj)]
    data = obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
    return [b"\x8a" + bytes([len(data)]) + data]
  if isinstance(obj, float):
    return [b"G" + struct.pack(">d", obj)]
  if isinstance(obj, str):
    return [_pickle_unicode(obj)]
  if isinstance(obj, tuple):
    return [b"("] + [p for v in obj for p in _pickle_object(v, blobs, where)] + [b"t"]
  if isinstance(obj, list):
    parts = [b"]"]
    if obj:
      parts += [b"("] + [p for v in obj for p in _pickle_object(v, blobs, where)] + [b"e"]
    return parts
  if isinstance(obj, dict):
    parts = [b"ccollections\nOrderedDict\n)R" if isinstance(obj, collections.OrderedDict)
             else b"}"]
    if obj:
      parts.append(b"(")
      for key, value in obj.items():
        if not isinstance(key, (str, int)) or isinstance(key, bool):
          raise ValueError(f"{where}: dict key {key!r} is not a str or int")
        parts += _pickle_object(key, blobs, where)
        parts += _pickle_object(value, blobs, f"{where}[{key!r}]")
      parts.append(b"u")
    return parts
  raise ValueError(f"{where} is a {type(obj).__name__}; only plain data and arrays are written")


def save(path: str | os.PathLike[str], obj: Any) -> None:
  """Writes plain data with NumPy arrays as tensors, as a zip-format `.pth` that
  `torch.load(path, weights_only=True)` and `load` read: a state dict, an optimizer
  state dict, a dict of counters. Written without PyTorch; only the globals `load`
  accepts appear in the pickle."""
  path = os.fspath(path)
  prefix = os.path.splitext(os.path.basename(path))[0] or "archive"
  blobs: list[tuple[str, bytes]] = []
  parts = [b"\x80\x02"] + _pickle_object(obj, blobs, "the object") + [b"."]
  _write_zip(path, prefix, b"".join(parts), blobs)


def save_state_dict(path: str | os.PathLike[str], state_dict: dict[str, np.ndarray]) -> None:
  """Writes `{name: array}` as a zip-format `.pth` file that `torch.load` reads.

  Each array becomes a contiguous tensor with its own storage (little-endian).
  Written without PyTorch; used to build test weight files and to export arrays
  for the PyTorch tools. The pickle holds only the globals `load` accepts.
  """
  save(path, collections.OrderedDict((name, np.asarray(value))
                                    for name, value in state_dict.items()))


def _write_zip(path: str, prefix: str, pickled: bytes, blobs: list[tuple[str, bytes]]) -> None:
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
    archive.writestr(f"{prefix}/data.pkl", pickled)
    archive.writestr(f"{prefix}/byteorder", "little")
    for key, data in blobs:
      archive.writestr(f"{prefix}/data/{key}", data)
    archive.writestr(f"{prefix}/version", "3\n")
