"""PyTorch .pth reading without torch: exact round trips, refusal of unsafe or broken files."""
import collections
import os
import pickle
import struct
import subprocess
import zipfile

import numpy as np
import pytest

from gan_core.eval.torch_pickle import (LEGACY_MAGIC_NUMBER, UnsafePickleError, WeightFileError,
                                        load, load_state_dict)

FORMATS = ["zip", "legacy"]


@pytest.fixture
def torch():
  return pytest.importorskip("torch")


def save(torch, obj, path, fmt):
  torch.save(obj, str(path), _use_new_zipfile_serialization=(fmt == "zip"))
  return path


def expected(tensor):
  """What the reader should return for `tensor`, as (values as float64 / ints, dtype name)."""
  tensor = tensor.detach()
  name = str(tensor.dtype).removeprefix("torch.")
  if name == "bfloat16":
    return tensor.float().numpy(), name
  return tensor.contiguous().numpy(), name


def assert_matches(got, want_tensors):
  assert list(got) == list(want_tensors)  # same keys, same order
  for key, tensor in want_tensors.items():
    values, dtype = expected(tensor)
    array = got[key]
    assert isinstance(array, np.ndarray), key
    assert array.dtype.name == dtype, (key, array.dtype)
    assert array.shape == tuple(tensor.shape), key
    assert array.flags.c_contiguous and array.flags.writeable, key
    if dtype == "bfloat16":
      array = array.astype(np.float32)
    np.testing.assert_array_equal(array, values, err_msg=key)


def varied_state(torch):
  """Many dtypes and shapes, views with offsets and strides, storage shared by two entries."""
  g = torch.Generator().manual_seed(0)
  big = torch.arange(24, dtype=torch.float32).reshape(4, 6)
  shared = torch.arange(10, dtype=torch.int64) * 3
  state = collections.OrderedDict()
  state["z_first"] = torch.randn(2, 3, 4, 5, generator=g)  # keys deliberately not sorted
  state["f64"] = torch.randn(7, generator=g, dtype=torch.float64)
  state["f16"] = torch.randn(3, 2, generator=g).half()
  state["i64"] = torch.tensor([-(2**62), 5, 2**40, -1])
  state["bool"] = torch.tensor([True, False, True])
  state["u8"] = torch.arange(256).to(torch.uint8)
  state["i32"] = torch.tensor([-7, 2**31 - 1], dtype=torch.int32)
  state["scalar"] = torch.tensor(3.5)
  state["int_scalar"] = torch.tensor(7)
  state["transposed"] = big.t()
  state["sliced"] = big[1:3, 2:5]
  state["shared_a"] = shared[:5]
  state["shared_b"] = shared[3:]
  state["empty"] = torch.zeros(0, 3)
  state["expanded"] = torch.tensor([1.0, 2.0]).expand(3, 2)
  state["bf16"] = torch.tensor([1.5, -2.0, 3.25], dtype=torch.bfloat16)
  state["param"] = torch.nn.Parameter(torch.randn(2, 2, generator=g))
  assert state["sliced"].storage_offset() > 0 and not state["transposed"].is_contiguous()
  return state


@pytest.mark.parametrize("fmt", FORMATS)
def test_varied_state_dict_round_trips_exactly(torch, tmp_path, fmt):
  state = varied_state(torch)
  got = load_state_dict(save(torch, state, tmp_path / "w.pth", fmt))
  assert_matches(got, state)
  got["shared_a"][3] = -1  # arrays are independent copies even where storage was shared
  assert got["shared_b"][0] == 9


def test_uint16_tensor_round_trips(torch, tmp_path):
  state = {"u16": torch.tensor([1, 2, 60000], dtype=torch.uint16)}  # untyped storage + dtype
  got = load_state_dict(save(torch, state, tmp_path / "w.pth", "zip"))
  assert got["u16"].dtype == np.uint16 and got["u16"].tolist() == [1, 2, 60000]


@pytest.mark.parametrize("fmt", FORMATS)
def test_module_state_dict_round_trips(torch, tmp_path, fmt):
  torch.manual_seed(0)
  model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
  model(torch.randn(2, 3, 8, 8))  # training mode: running stats and the counter move
  state = model.state_dict()
  got = load_state_dict(save(torch, state, tmp_path / "m.pth", fmt))
  assert_matches(got, state)
  counter = got["1.num_batches_tracked"]
  assert counter.shape == () and counter.dtype == np.int64 and counter == 1


def test_checkpoint_dict_with_state_dict_entry(torch, tmp_path):
  state = {"w": torch.ones(2, 3)}
  path = save(torch, {"epoch": 3, "state_dict": state, "note": "hi"}, tmp_path / "c.pth", "zip")
  assert_matches(load_state_dict(path), state)
  whole = load(path)
  assert whole["epoch"] == 3 and whole["note"] == "hi" and whole["state_dict"]["w"].sum() == 6


def test_non_tensor_entries_are_not_a_state_dict(torch, tmp_path):
  path = save(torch, {"w": torch.ones(2), "epoch": 3}, tmp_path / "c.pth", "zip")
  with pytest.raises(WeightFileError, match="'epoch' is a int, not a tensor"):
    load_state_dict(path)


# Hand-built torch-style pickles, so that the reading itself is also tested without torch.

def _op_str(s):
  data = s.encode()
  return b"X" + struct.pack("<I", len(data)) + data


def _op_int(i):
  return b"J" + struct.pack("<i", i)


def _op_tuple(items):
  return b"(" + b"".join(_op_int(i) for i in items) + b"t"


def fake_torch_pickle(entries):
  """A protocol-2 pickle of {name: _rebuild_tensor_v2(storage, offset, size, stride, ...)}.

  `entries` holds (name, storage class, storage key, numel, offset, size, stride).
  """
  out = [b"\x80\x02}("]
  for name, storage_class, key, numel, offset, size, stride in entries:
    out += [_op_str(name), b"ctorch._utils\n_rebuild_tensor_v2\n(",
            b"(", _op_str("storage"), f"ctorch\n{storage_class}\n".encode(), _op_str(key),
            _op_str("cpu"), _op_int(numel), b"tQ",
            _op_int(offset), _op_tuple(size), _op_tuple(stride),
            b"\x89ccollections\nOrderedDict\n)Rt", b"R"]
  return b"".join(out + [b"u."])


def write_torch_zip(path, data_pkl, blobs, byteorder="little", prefix="archive"):
  with zipfile.ZipFile(path, "w") as z:
    z.writestr(f"{prefix}/data.pkl", data_pkl)
    if byteorder is not None:
      z.writestr(f"{prefix}/byteorder", byteorder)
    for key, data in blobs.items():
      z.writestr(f"{prefix}/data/{key}", data)
    z.writestr(f"{prefix}/version", "3\n")
  return path


@pytest.mark.parametrize("byteorder", ["little", "big", None])
def test_hand_built_zip_with_views_and_byte_order(tmp_path, byteorder):
  order = ">" if byteorder == "big" else "<"
  floats = np.arange(12, dtype=f"{order}f4")
  ints = np.array([3, -2, 1], dtype=f"{order}i2")
  cplx = np.array([1 + 2j, -3.5j], dtype=f"{order}c8")
  data_pkl = fake_torch_pickle([
      ("b_view", "FloatStorage", "0", 12, 5, (2, 3), (1, 2)),  # offset 5, strided
      ("a_int", "ShortStorage", "1", 3, 0, (3,), (1,)),
      ("c_cplx", "ComplexFloatStorage", "2", 2, 1, (), ()),  # 0-d, offset 1
  ])
  path = write_torch_zip(tmp_path / "h.pth", data_pkl,
                         {"0": floats.tobytes(), "1": ints.tobytes(), "2": cplx.tobytes()},
                         byteorder, prefix="h")
  got = load_state_dict(path)
  assert list(got) == ["b_view", "a_int", "c_cplx"]
  np.testing.assert_array_equal(got["b_view"], np.float32([[5, 7, 9], [6, 8, 10]]))
  np.testing.assert_array_equal(got["a_int"], np.int16([3, -2, 1]))
  assert got["c_cplx"].shape == () and got["c_cplx"] == -3.5j
  for array in got.values():
    assert array.dtype.isnative


def test_view_outside_its_storage_is_refused(tmp_path):
  data_pkl = fake_torch_pickle([("w", "FloatStorage", "0", 4, 2, (2, 2), (2, 1))])
  path = write_torch_zip(tmp_path / "h.pth", data_pkl, {"0": np.zeros(4, np.float32).tobytes()})
  with pytest.raises(WeightFileError, match="reaches element 5"):
    load_state_dict(path)


# Malicious files: refused before anything in them runs.

class _Payload:
  def __init__(self, func, args):
    self.func, self.args = func, args

  def __reduce__(self):
    return self.func, self.args


def payloads(marker):
  return {
      "os.system": _Payload(os.system, (f"touch {marker}",)),
      "builtins.eval": _Payload(eval, (f"open({str(marker)!r}, 'w').close()",)),
      "subprocess.call": _Payload(subprocess.call, (["touch", str(marker)],)),
  }


def legacy_stream(object_pickle, storage_keys=()):
  head = [pickle.dumps(LEGACY_MAGIC_NUMBER, 2), pickle.dumps(1001, 2),
          pickle.dumps({"protocol_version": 1001, "little_endian": True}, 2)]
  return b"".join(head + [object_pickle, pickle.dumps(list(storage_keys), 2)])


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("kind", ["os.system", "builtins.eval", "subprocess.call"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_code_execution_payloads_are_refused(tmp_path, fmt, kind, protocol):
  marker = tmp_path / "pwned"
  evil = pickle.dumps(collections.OrderedDict(w=payloads(marker)[kind]), protocol)
  path = tmp_path / "evil.pth"
  if fmt == "zip":
    write_torch_zip(path, evil, {})
  else:
    path.write_bytes(legacy_stream(evil))
  # Protocol 2 writes Python 2 module names (__builtin__, commands) for some globals.
  names = {"os.system": r"(posix|os|nt)\.system", "builtins.eval": r"(builtins|__builtin__)\.eval",
           "subprocess.call": r"(subprocess|commands)\.call"}
  with pytest.raises(UnsafePickleError, match=names[kind]) as error:
    load_state_dict(path)
  assert "not a plain tensor state dict" in str(error.value)
  assert "refused for safety" in str(error.value)
  assert isinstance(error.value, pickle.UnpicklingError)
  assert not marker.exists()


def test_payload_in_legacy_header_is_refused(tmp_path):
  marker = tmp_path / "pwned"
  evil = pickle.dumps(payloads(marker)["os.system"], 2)
  stream = b"".join([pickle.dumps(LEGACY_MAGIC_NUMBER, 2), pickle.dumps(1001, 2), evil,
                     pickle.dumps({}, 2), pickle.dumps([], 2)])
  path = tmp_path / "evil.pth"
  path.write_bytes(stream)
  with pytest.raises(UnsafePickleError, match="system"):
    load(path)
  assert not marker.exists()


class CustomThing:
  def __init__(self):
    self.value = 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_state_dict_with_custom_object_is_refused(torch, tmp_path, fmt):
  path = save(torch, {"w": torch.ones(2), "extra": CustomThing()}, tmp_path / "c.pth", fmt)
  with pytest.raises(UnsafePickleError, match=r"test_torch_pickle\.CustomThing"):
    load_state_dict(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_whole_module_pickle_is_refused(torch, tmp_path, fmt):
  path = save(torch, torch.nn.Linear(2, 3), tmp_path / "module.pth", fmt)
  with pytest.raises(UnsafePickleError, match=r"torch\.nn\.modules\.linear\.Linear"):
    load_state_dict(path)


# Broken or foreign files.

def test_missing_file(tmp_path):
  with pytest.raises(WeightFileError, match="no such file"):
    load_state_dict(tmp_path / "absent.pth")


def test_random_bytes_are_not_a_pth_file(tmp_path):
  path = tmp_path / "noise.pth"
  path.write_bytes(np.random.default_rng(0).bytes(4096))
  with pytest.raises(WeightFileError, match="not a PyTorch .pth file"):
    load_state_dict(path)


def test_other_zip_and_empty_file_are_not_pth_files(tmp_path):
  other = tmp_path / "other.zip"
  with zipfile.ZipFile(other, "w") as z:
    z.writestr("readme.txt", "hello")
  with pytest.raises(WeightFileError, match="not a PyTorch .pth file"):
    load_state_dict(other)
  empty = tmp_path / "empty.pth"
  empty.write_bytes(b"")
  with pytest.raises(WeightFileError, match="empty file"):
    load_state_dict(empty)


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_file(torch, tmp_path, fmt):
  path = save(torch, {"w": torch.randn(64, 64)}, tmp_path / "t.pth", fmt)
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])
  with pytest.raises(WeightFileError, match="truncated"):
    load_state_dict(path)


def test_zip_with_missing_storage_blob(tmp_path):
  data_pkl = fake_torch_pickle([("w", "FloatStorage", "0", 2, 0, (2,), (1,)),
                                ("v", "FloatStorage", "1", 2, 0, (2,), (1,))])
  path = write_torch_zip(tmp_path / "m.pth", data_pkl, {"0": np.zeros(2, np.float32).tobytes()})
  with pytest.raises(WeightFileError, match=r"storage blob 'archive/data/1' is missing"):
    load_state_dict(path)


def test_corrupt_pickle_in_zip(tmp_path):
  path = write_torch_zip(tmp_path / "c.pth", b"\x80\x02}(Xgarbage", {})
  with pytest.raises(WeightFileError, match="data.pkl"):
    load_state_dict(path)


def test_error_types():
  assert issubclass(WeightFileError, ValueError)
  assert issubclass(UnsafePickleError, pickle.UnpicklingError)
