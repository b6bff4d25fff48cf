"""Tests for jaxnoisy.data: IDX reader, Fashion-MNIST sources, splits."""

import gzip
import io
import logging
import struct
import types
from pathlib import Path

import numpy as np
import pytest

import pickle
import zipfile

import jax

from jaxnoisy.data import (
    CIFAR100N_LABEL_SETS,
    CIFAR100_FINE_TO_COARSE,
    CIFAR10N_LABEL_SETS,
    DATASET_INFO,
    align_to,
    cifar_n,
    order_from_tfds_ids,
    read_cifar_n_labels,
    read_cifar_python,
    IDX_FILES,
    DataCorruptError,
    DataNotFoundError,
    datasets,
    load_dataset,
    load_fashion_mnist,
    make_splits,
    read_idx,
)
from jaxnoisy.describe import describe, plot_transition_matrix

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


def _idx_bytes(arr: np.ndarray) -> bytes:
  codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}
  header = struct.pack(">BBBB", 0, 0, codes[arr.dtype], arr.ndim)
  header += struct.pack(f">{arr.ndim}I", *arr.shape)
  return header + arr.tobytes()


def _write_idx(path: Path, arr: np.ndarray, compress=True):
  data = _idx_bytes(arr)
  path.write_bytes(gzip.compress(data) if compress else data)


def test_read_idx_gzip_and_raw(tmp_path):
  images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  _write_idx(tmp_path / "a.gz", images)
  _write_idx(tmp_path / "a.raw", images, compress=False)
  for name in ("a.gz", "a.raw"):
    got = read_idx(tmp_path / name)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, images)
  ints = np.array([1, -2, 70000], dtype=">i4")
  _write_idx(tmp_path / "b.gz", ints)
  got = read_idx(tmp_path / "b.gz")
  assert got.dtype == np.int32 and got.dtype.isnative
  np.testing.assert_array_equal(got, [1, -2, 70000])


def test_read_idx_rejects_bad_files(tmp_path):
  (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x01\x02\x08\x01\x00\x00\x00\x01x"))
  with pytest.raises(ValueError, match="magic"):
    read_idx(tmp_path / "bad.gz")
  data = _idx_bytes(np.zeros((2, 2), np.uint8))[:-1]  # truncated payload
  (tmp_path / "short").write_bytes(data)
  with pytest.raises(ValueError, match="expected 4"):
    read_idx(tmp_path / "short")


def _fake_idx_dir(path: Path, n_train=12, n_test=5) -> dict:
  rng = np.random.default_rng(0)
  arrays = {
      "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
      "train_labels": rng.integers(0, 10, n_train).astype(np.uint8),
      "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
      "test_labels": rng.integers(0, 10, n_test).astype(np.uint8),
  }
  path.mkdir(parents=True, exist_ok=True)
  for key, fname in IDX_FILES.items():
    _write_idx(path / fname, arrays[key])
  return arrays


@pytest.fixture
def no_tfds(monkeypatch):
  """Make source (a) fail without touching the user's TFDS data dir."""

  def fail(name, tfds_data_dir):
    raise KeyError("not prepared (disabled in test)")

  monkeypatch.setattr(datasets, "_load_tfds", fail)


def test_load_from_idx_dir(tmp_path, no_tfds, monkeypatch):
  monkeypatch.delenv("JAXNOISY_DATA", raising=False)
  arrays = _fake_idx_dir(tmp_path / "fm")
  ds = load_fashion_mnist(tmp_path / "fm", try_prepare=False)
  assert ds.source == f"idx:{tmp_path / 'fm'}"
  assert ds.train_images.shape == (12, 28, 28, 1) and ds.train_images.dtype == np.uint8
  assert ds.test_labels.dtype == np.int32
  np.testing.assert_array_equal(ds.train_images[..., 0], arrays["train_images"])
  np.testing.assert_array_equal(ds.test_labels, arrays["test_labels"])
  assert ds.class_names == DATASET_INFO["fashion_mnist"].class_names
  # $JAXNOISY_DATA is used when data_dir is not given.
  monkeypatch.setenv("JAXNOISY_DATA", str(tmp_path / "fm"))
  assert load_dataset("fashion_mnist", try_prepare=False).source == ds.source


def test_missing_data_error(tmp_path, no_tfds, monkeypatch):
  empty = tmp_path / "empty"
  empty.mkdir()
  monkeypatch.setenv("JAXNOISY_DATA", str(empty))
  monkeypatch.setitem(datasets.SYSTEM_DATA_DIRS, "fashion_mnist", (str(empty),))
  with pytest.raises(DataNotFoundError) as info:
    load_fashion_mnist(empty, try_prepare=False)
  msg = str(info.value)
  assert isinstance(info.value, FileNotFoundError)
  assert "\n" not in msg
  for option in ("dataset-fashion-mnist", "JAXNOISY_DATA", "tensorflow"):
    assert option in msg


def test_unknown_dataset():
  with pytest.raises(ValueError, match="valid: cifar10, cifar100, cifar100_n, cifar10_n, "
                                       "clothing1m, fashion_mnist, mnist"):
    load_dataset("imagenet")
  # Clothing1M exists only prepared: the error says how to prepare it.
  with pytest.raises(FileNotFoundError, match="jaxnoisy prepare clothing1m ROOT"):
    load_dataset("clothing1m")


@pytest.mark.skipif(not DEBIAN_DIR.is_dir(), reason="Debian dataset-fashion-mnist not installed")
def test_real_debian_files(no_tfds, monkeypatch):
  monkeypatch.delenv("JAXNOISY_DATA", raising=False)
  ds = load_fashion_mnist(try_prepare=False)
  assert ds.source == f"idx:{DEBIAN_DIR}"
  assert ds.train_images.shape == (60000, 28, 28, 1)
  assert ds.test_images.shape == (10000, 28, 28, 1)
  assert ds.train_images.dtype == ds.test_images.dtype == np.uint8
  assert ds.train_labels.dtype == np.int32
  assert ds.train_labels.min() == 0 and ds.train_labels.max() == 9
  np.testing.assert_array_equal(np.bincount(ds.train_labels), [6000] * 10)
  assert ds.train_images.mean() / 255 == pytest.approx(DATASET_INFO["fashion_mnist"].mean[0], abs=1e-3)


# --------------------------------------------------------------------------
# Damaged or incomplete files, the TFDS probe.
# --------------------------------------------------------------------------


@pytest.fixture
def no_prepare(monkeypatch):
  """Fail the test if loading falls through to TFDS preparation."""

  def fail(name, tfds_data_dir):
    raise AssertionError("fell through to TFDS preparation")

  monkeypatch.setattr(datasets, "_prepare_tfds", fail)


def _cut_gzip(raw: bytes) -> bytes:
  return raw[: len(raw) // 2]


def _cut_payload(raw: bytes) -> bytes:
  return gzip.compress(gzip.decompress(raw)[:-10])


def _bad_magic(raw: bytes) -> bytes:
  return gzip.compress(b"\x01\x02" + gzip.decompress(raw)[2:])


@pytest.mark.parametrize("damage, how", [
    (_cut_gzip, "truncated or corrupt gzip data"),
    (_cut_payload, "truncated IDX file: payload has"),
    (_bad_magic, "bad magic number"),
])
@pytest.mark.parametrize("via", ["data_dir", "$JAXNOISY_DATA"])
def test_damaged_idx_file_in_chosen_dir_is_one_line_error(tmp_path, no_tfds, no_prepare,
                                                          monkeypatch, damage, how, via):
  monkeypatch.delenv("JAXNOISY_DATA", raising=False)
  d = tmp_path / "fm"
  _fake_idx_dir(d)
  bad = d / IDX_FILES["test_images"]
  bad.write_bytes(damage(bad.read_bytes()))
  good = tmp_path / "system"  # a good copy further down the search: not used
  _fake_idx_dir(good)
  monkeypatch.setitem(datasets.SYSTEM_DATA_DIRS, "fashion_mnist", (str(good),))
  kwargs = {}
  if via == "data_dir":
    kwargs["data_dir"] = d
  else:
    monkeypatch.setenv("JAXNOISY_DATA", str(d))
  with pytest.raises(DataCorruptError) as info:
    load_dataset("fashion_mnist", **kwargs)
  msg = str(info.value)
  assert "\n" not in msg and f"{bad}: " in msg and how in msg and via in msg
  assert "Fashion-MNIST file is damaged" in msg and "not found" not in msg


def test_damaged_idx_file_cli_error(tmp_path, no_tfds, no_prepare, monkeypatch, capsys):
  from jaxnoisy import cli

  monkeypatch.delenv("JAXNOISY_DATA", raising=False)
  _fake_idx_dir(tmp_path)
  bad = tmp_path / IDX_FILES["train_labels"]
  bad.write_bytes(_cut_payload(bad.read_bytes()))
  with pytest.raises(SystemExit) as exc:
    cli.main(["data", "describe", "fashion_mnist", "--data-dir", str(tmp_path)])
  assert exc.value.code == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and str(bad) in err and "truncated IDX file" in err


def test_incomplete_idx_dir_in_data_dir(tmp_path, no_tfds, no_prepare, monkeypatch):
  monkeypatch.delenv("JAXNOISY_DATA", raising=False)
  d = tmp_path / "fm"
  _fake_idx_dir(d)
  (d / IDX_FILES["test_labels"]).unlink()
  with pytest.raises(DataNotFoundError) as info:
    load_fashion_mnist(d)
  msg = str(info.value)
  assert "\n" not in msg and f"{d} (from data_dir) lacks {IDX_FILES['test_labels']}" in msg


def test_damaged_system_copy_is_reported_not_fatal(tmp_path, no_tfds, monkeypatch):
  """Files nobody pointed at (a system directory) only show up in the 'Tried' list."""
  monkeypatch.delenv("JAXNOISY_DATA", raising=False)
  d = tmp_path / "system"
  _fake_idx_dir(d)
  bad = d / IDX_FILES["train_images"]
  bad.write_bytes(_cut_gzip(bad.read_bytes()))
  monkeypatch.setitem(datasets.SYSTEM_DATA_DIRS, "fashion_mnist", (str(d),))
  with pytest.raises(DataNotFoundError) as info:
    load_fashion_mnist(try_prepare=False)
  msg = str(info.value)
  assert msg.startswith("Fashion-MNIST not found") and "truncated or corrupt gzip" in msg


def test_damaged_or_incomplete_cifar_pickles_in_data_dir(tmp_path, no_tfds, no_prepare,
                                                         monkeypatch):
  monkeypatch.delenv("JAXNOISY_DATA", raising=False)
  d = tmp_path / "cifar-10-batches-py"
  _write_cifar_python(d, _fake_cifar())
  bad = d / "data_batch_3"
  bad.write_bytes(bad.read_bytes()[:100])
  with pytest.raises(DataCorruptError) as info:
    load_dataset("cifar10", data_dir=tmp_path)
  msg = str(info.value)
  assert "\n" not in msg and f"{bad}: " in msg and "truncated" in msg
  bad.unlink()
  with pytest.raises(DataNotFoundError, match="lacks data_batch_3; add them"):
    load_dataset("cifar10", data_dir=tmp_path)


def test_empty_tfds_folder_prints_no_absl_warning(tmp_path, monkeypatch, caplog, capfd):
  """A version folder without dataset_info.json (an interrupted preparation)."""
  tfds = pytest.importorskip("tensorflow_datasets")
  monkeypatch.delenv("JAXNOISY_DATA", raising=False)
  monkeypatch.setitem(datasets.SYSTEM_DATA_DIRS, "fashion_mnist", ())
  (tmp_path / "tfds" / "fashion_mnist" / "3.0.1").mkdir(parents=True)
  with caplog.at_level(logging.WARNING):  # what TFDS itself logs there
    with pytest.raises(Exception):
      tfds.data_source("fashion_mnist", split="train", data_dir=tmp_path / "tfds",
                       download=False)
  assert "has no dataset_info.json" in caplog.text
  caplog.clear()
  capfd.readouterr()
  with caplog.at_level(logging.WARNING):
    with pytest.raises(DataNotFoundError) as info:
      load_fashion_mnist(tmp_path / "nothing", tfds_data_dir=tmp_path / "tfds",
                         try_prepare=False)
  assert "Variant folder" not in caplog.text
  out = capfd.readouterr()
  assert "Variant folder" not in out.err + out.out
  assert "TFDS data_source fashion_mnist: no prepared array_record copy" in str(info.value)


def test_tfds_mock_data(tmp_path, monkeypatch, mock_tfds):
  tfds = mock_tfds
  monkeypatch.setattr(datasets, "_TFDS_CHUNK", 3)  # exercise chunking
  with tfds.testing.mock_data(num_examples=7):
    ds = load_fashion_mnist(tmp_path / "no_idx_here", try_prepare=False)
  assert ds.source.startswith("tfds:")
  assert ds.train_images.shape == (7, 28, 28, 1) and ds.train_images.dtype == np.uint8
  assert ds.test_images.shape == (7, 28, 28, 1)
  assert ds.train_labels.dtype == np.int32
  assert ds.train_labels.min() >= 0 and ds.train_labels.max() < 10


def test_tfds_real_array_record(tmp_path, monkeypatch):
  """Unmocked read path: a tiny fashion_mnist prepared in array_record format.

  Preparing normally needs TensorFlow (PNG encoding, tf.io.gfile), so the
  builder's split generator is replaced by one yielding PIL-encoded PNG bytes,
  which TFDS stores as-is; reading decodes them with PIL/OpenCV, no TF.
  """
  tfds = pytest.importorskip("tensorflow_datasets")
  Image = pytest.importorskip("PIL.Image")
  rng = np.random.default_rng(1)
  images = {"train": rng.integers(0, 256, (9, 28, 28, 1), dtype=np.uint8),
            "test": rng.integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)}

  def png(a):
    buf = io.BytesIO()
    Image.fromarray(a[..., 0], mode="L").save(buf, format="PNG")
    return buf.getvalue()

  def gen(split):
    for i, img in enumerate(images[split]):
      yield i, {"image": png(img), "label": i % 10}

  builder = tfds.builder("fashion_mnist", data_dir=tmp_path / "tfds", file_format="array_record")
  builder._split_generators = types.MethodType(
      lambda self, dl_manager: {"train": gen("train"), "test": gen("test")}, builder
  )
  builder.download_and_prepare()

  monkeypatch.setattr(datasets, "_TFDS_CHUNK", 4)
  ds = load_fashion_mnist(tmp_path / "no_idx_here", tfds_data_dir=tmp_path / "tfds",
                          try_prepare=False)
  assert ds.source == f"tfds:{tmp_path / 'tfds'}"
  assert ds.train_images.shape == (9, 28, 28, 1) and ds.test_images.shape == (4, 28, 28, 1)
  # TFDS shuffles on preparation: compare (image, label) pairs as sets.
  for split, n in (("train", 9), ("test", 4)):
    got_imgs = getattr(ds, f"{split}_images")
    got_labels = getattr(ds, f"{split}_labels")
    want = {(images[split][i].tobytes(), i % 10) for i in range(n)}
    got = {(got_imgs[i].tobytes(), int(got_labels[i])) for i in range(n)}
    assert got == want


def test_splits_disjoint_and_reproducible():
  s = make_splits(1000, heldout_size=100, clean_size=50, seed=3)
  assert (len(s.train), len(s.heldout), len(s.clean)) == (850, 100, 50)
  union = np.concatenate([s.train, s.heldout, s.clean])
  np.testing.assert_array_equal(np.sort(union), np.arange(1000))
  for part in s:
    assert np.all(np.diff(part) > 0)  # sorted, no duplicates
  s2 = make_splits(1000, heldout_size=100, clean_size=50, seed=3)
  for a, b in zip(s, s2):
    np.testing.assert_array_equal(a, b)
  s3 = make_splits(1000, heldout_size=100, clean_size=50, seed=4)
  assert not np.array_equal(s.heldout, s3.heldout)
  s0 = make_splits(10, heldout_size=0, clean_size=0, seed=0)
  assert len(s0.train) == 10 and s0.heldout.size == s0.clean.size == 0


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(heldout_size=-1, clean_size=0, seed=0), "heldout_size"),
        (dict(heldout_size=0, clean_size=-5, seed=0), "clean_size"),
        (dict(heldout_size=60, clean_size=40, seed=0), r"heldout_size \+ clean_size"),
        (dict(heldout_size=1.5, clean_size=0, seed=0), "heldout_size"),
        (dict(heldout_size=1, clean_size=0, seed=-1), "seed"),
    ],
)
def test_splits_validation(kwargs, name):
  with pytest.raises(ValueError, match=name):
    make_splits(100, **kwargs)


# --------------------------------------------------------------------------
# DATASET_INFO.
# --------------------------------------------------------------------------


def test_dataset_info_consistent():
  assert set(DATASET_INFO) == {"mnist", "fashion_mnist", "cifar10", "cifar100",
                               "cifar10_n", "cifar100_n", "clothing1m"}
  for name, info in DATASET_INFO.items():
    assert info.name == name
    assert len(info.class_names) == info.num_classes == len(set(info.class_names))
    assert len(info.mean) == len(info.std) == info.image_shape[-1]
    assert info.augment == (name.startswith("cifar") or name == "clothing1m")
    assert info.tfds_name == ("" if name == "clothing1m" else name)
  assert DATASET_INFO["mnist"].mean == (0.1307,) and DATASET_INFO["mnist"].std == (0.3081,)
  assert DATASET_INFO["cifar10"].mean == (0.4914, 0.4822, 0.4465)
  assert DATASET_INFO["cifar100"].std == (0.2673, 0.2564, 0.2762)
  assert DATASET_INFO["cifar10"].class_names[9] == "truck"


def test_cifar100_coarse_table():
  info = DATASET_INFO["cifar100"]
  assert info.fine_to_coarse == CIFAR100_FINE_TO_COARSE
  np.testing.assert_array_equal(np.bincount(CIFAR100_FINE_TO_COARSE), [5] * 20)
  names = info.class_names
  assert list(names) == sorted(names)  # CIFAR-100's fine labels are alphabetical

  def coarse_of(fine):
    return info.coarse_class_names[CIFAR100_FINE_TO_COARSE[names.index(fine)]]

  assert coarse_of("whale") == coarse_of("otter") == "aquatic_mammals"
  assert coarse_of("tractor") == "vehicles_2" and coarse_of("train") == "vehicles_1"
  assert coarse_of("sweet_pepper") == "fruit_and_vegetables"
  assert {f for f in names if coarse_of(f) == "people"} == {"baby", "boy", "girl", "man", "woman"}


# --------------------------------------------------------------------------
# MNIST from IDX.
# --------------------------------------------------------------------------


def test_mnist_from_idx_subdir(tmp_path, no_tfds, monkeypatch):
  monkeypatch.delenv("JAXNOISY_DATA", raising=False)
  arrays = _fake_idx_dir(tmp_path / "root" / "mnist")
  monkeypatch.setenv("JAXNOISY_DATA", str(tmp_path / "root"))
  ds = load_dataset("mnist", try_prepare=False)
  assert ds.name == "mnist" and ds.source == f"idx:{tmp_path / 'root' / 'mnist'}"
  assert ds.train_images.shape == (12, 28, 28, 1) and ds.mean == (0.1307,)
  np.testing.assert_array_equal(ds.train_labels, arrays["train_labels"])


def test_mnist_rejects_other_dataset_and_missing(tmp_path, no_tfds, monkeypatch):
  monkeypatch.delenv("JAXNOISY_DATA", raising=False)
  d = tmp_path / "fm"
  d.mkdir()
  grey = np.full((10000, 28, 28), 128, np.uint8)  # mean 0.5, far from MNIST's 0.1307
  for key, fname in IDX_FILES.items():
    arr = grey if "images" in key else np.zeros(10000, np.uint8)
    _write_idx(d / fname, arr)
  with pytest.raises(DataNotFoundError) as info:
    load_dataset("mnist", data_dir=d, try_prepare=False)
  msg = str(info.value)
  assert "\n" not in msg and "another dataset's files" in msg
  assert "JAXNOISY_DATA" in msg and "tensorflow" in msg


# --------------------------------------------------------------------------
# CIFAR python pickles.
# --------------------------------------------------------------------------


def _fake_cifar(n_train=20, n_test=5, num_classes=10, seed=0):
  rng = np.random.default_rng(seed)
  out = {
      "train_images": rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
      "train_labels": rng.integers(0, num_classes, n_train).astype(np.int32),
      "test_images": rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
      "test_labels": rng.integers(0, num_classes, n_test).astype(np.int32),
  }
  if num_classes == 100:
    for split in ("train", "test"):
      out[f"{split}_coarse_labels"] = np.asarray(CIFAR100_FINE_TO_COARSE, np.int32)[
          out[f"{split}_labels"]]
  return out


def _write_cifar_python(directory: Path, arrays: dict, name="cifar10"):
  """The python-version layout: pickled dicts with bytes keys, (N, 3072) rows."""
  directory.mkdir(parents=True, exist_ok=True)

  def dump(fname, images, labels, coarse=None):
    batch = {b"data": images.transpose(0, 3, 1, 2).reshape(len(images), -1),
             b"batch_label": b"fake"}
    if coarse is None:
      batch[b"labels"] = labels.tolist()
    else:
      batch[b"fine_labels"] = labels.tolist()
      batch[b"coarse_labels"] = coarse.tolist()
    (directory / fname).write_bytes(pickle.dumps(batch, protocol=2))

  if name == "cifar10":
    parts = np.array_split(np.arange(len(arrays["train_labels"])), 5)
    for i, idx in enumerate(parts, 1):
      dump(f"data_batch_{i}", arrays["train_images"][idx], arrays["train_labels"][idx])
    dump("test_batch", arrays["test_images"], arrays["test_labels"])
  else:
    for split in ("train", "test"):
      dump(split, arrays[f"{split}_images"], arrays[f"{split}_labels"],
           arrays[f"{split}_coarse_labels"])


def test_cifar10_and_cifar100_from_python_pickles(tmp_path, no_tfds, monkeypatch):
  monkeypatch.delenv("JAXNOISY_DATA", raising=False)
  c10 = _fake_cifar()
  _write_cifar_python(tmp_path / "cifar-10-batches-py", c10)
  c100 = _fake_cifar(num_classes=100, seed=1)
  _write_cifar_python(tmp_path / "cifar-100-python", c100, "cifar100")
  for name, arrays in (("cifar10", c10), ("cifar100", c100)):
    ds = load_dataset(name, data_dir=tmp_path, try_prepare=False)
    assert ds.source.startswith("python:")
    assert ds.num_classes == DATASET_INFO[name].num_classes
    for key, value in arrays.items():
      np.testing.assert_array_equal(getattr(ds, key), value)
    assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int32
  assert ds.train_coarse_labels.dtype == np.int32
  assert load_dataset("cifar10", data_dir=tmp_path, try_prepare=False).train_coarse_labels is None
  with pytest.raises(ValueError, match="name must be one of"):
    read_cifar_python(tmp_path, "mnist")


def test_cifar_python_refuses_code(tmp_path):
  d = tmp_path / "evil"
  _write_cifar_python(d, _fake_cifar())
  (d / "test_batch").write_bytes(pickle.dumps({b"data": Path.cwd}, protocol=2))
  with pytest.raises(pickle.UnpicklingError, match="refusing"):
    read_cifar_python(d)


# --------------------------------------------------------------------------
# TFDS mock data, every loader.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100", "cifar10_n", "cifar100_n"])
def test_tfds_mock_data_all_loaders(tmp_path, monkeypatch, mock_tfds, name):
  monkeypatch.setattr(datasets, "_TFDS_CHUNK", 4)
  info = DATASET_INFO[name]
  with mock_tfds.testing.mock_data(num_examples=6):
    ds = load_dataset(name, data_dir=tmp_path / "nothing", try_prepare=False)
  assert ds.source.startswith("tfds:") and ds.name == name
  assert ds.train_images.shape == (6, *info.image_shape) and ds.train_images.dtype == np.uint8
  assert ds.test_images.shape == (6, *info.image_shape)
  assert ds.train_labels.dtype == np.int32 and ds.train_labels.max() < info.num_classes
  assert ds.class_names == info.class_names and ds.mean == info.mean
  if name.startswith("cifar100"):
    for coarse in (ds.train_coarse_labels, ds.test_coarse_labels):
      assert coarse.shape == (6,) and coarse.dtype == np.int32 and coarse.max() < 20
  else:
    assert ds.train_coarse_labels is None
  expected_sets = {"cifar10_n": {"aggre", "random1", "random2", "random3", "worse"},
                   "cifar100_n": {"noisy"}}.get(name)
  if expected_sets is None:
    assert ds.noisy_label_sets is None
  else:
    assert set(ds.noisy_label_sets) == expected_sets
    for labels in ds.noisy_label_sets.values():
      assert labels.shape == (6,) and labels.dtype == np.int32
      assert labels.max() < info.num_classes


# --------------------------------------------------------------------------
# CIFAR-N: label files, alignment, loaders.
# --------------------------------------------------------------------------


def _published(clean, num_classes=10, seed=2):
  rng = np.random.default_rng(seed)
  sets = CIFAR10N_LABEL_SETS if num_classes == 10 else CIFAR100N_LABEL_SETS
  out = {"clean_label": clean.astype(np.int64)}
  for pub in sets.values():
    out[pub] = rng.integers(0, num_classes, clean.size)
  return out


def _torch_zip(path: Path, obj):
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/data.pkl", pickle.dumps(obj, protocol=2))
    z.writestr("archive/version", "3\n")


def test_read_cifar_n_label_formats(tmp_path):
  labels = _published(np.arange(10) % 10)
  np.savez(tmp_path / "a.npz", **labels)
  np.save(tmp_path / "b.npy", labels)  # a pickled dict
  _torch_zip(tmp_path / "c.pt", labels)
  with open(tmp_path / "d.pt", "wb") as f:  # torch's legacy (non-zip) format
    for obj in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001}, labels, []):
      pickle.dump(obj, f, protocol=2)
  for fname in ("a.npz", "b.npy", "c.pt", "d.pt"):
    got = read_cifar_n_labels(tmp_path / fname)
    assert set(got) == set(labels)
    for k, v in labels.items():
      assert got[k].dtype == np.int32
      np.testing.assert_array_equal(got[k], v)
  # image_order: entry j belongs to file index order[j]
  order = np.random.default_rng(0).permutation(10)
  got = read_cifar_n_labels(tmp_path / "a.npz", image_order=order)
  np.testing.assert_array_equal(got["worse_label"][order], labels["worse_label"])
  with pytest.raises(ValueError, match="image_order must be a permutation"):
    read_cifar_n_labels(tmp_path / "a.npz", image_order=np.zeros(10, int))
  with pytest.raises(ValueError, match="path must end in"):
    read_cifar_n_labels(tmp_path / "x.csv")
  _torch_zip(tmp_path / "evil.pt", {"clean_label": Path.cwd})
  with pytest.raises(ValueError, match="convert it to .npz"):
    read_cifar_n_labels(tmp_path / "evil.pt")
  np.save(tmp_path / "evil.npy", {"clean_label": Path.cwd}, allow_pickle=True)
  with pytest.raises(ValueError, match="refusing"):
    read_cifar_n_labels(tmp_path / "evil.npy")
  np.savez(tmp_path / "bad.npz", a=np.zeros(3, int), b=np.zeros(4, int))
  with pytest.raises(ValueError, match="different lengths"):
    read_cifar_n_labels(tmp_path / "bad.npz")


def test_align_to_synthetic_permutation():
  rng = np.random.default_rng(0)
  ref = rng.integers(0, 256, (500, 4, 4, 3), dtype=np.uint8)
  sigma = rng.permutation(500)
  tgt = ref[sigma]
  perm = align_to(ref, tgt)
  assert perm.dtype == np.int64
  np.testing.assert_array_equal(perm, sigma)
  labels = rng.integers(0, 10, 500)
  np.testing.assert_array_equal(labels[perm], labels[sigma])
  # Identical images: matched one to one, disambiguated by keys when given.
  dup = np.zeros((4, 2, 2, 1), np.uint8)
  keys = np.array([0, 1, 2, 3])
  p = align_to(dup, dup[[3, 1, 0, 2]], reference_keys=keys, target_keys=keys[[3, 1, 0, 2]])
  np.testing.assert_array_equal(p, [3, 1, 0, 2])
  assert sorted(align_to(dup, dup).tolist()) == [0, 1, 2, 3]
  # Not a bijection: an image missing / duplicated, or shapes differ.
  bad = tgt.copy()
  bad[7] = bad[8]
  with pytest.raises(ValueError, match="not a permutation"):
    align_to(ref, bad)
  bad[7, 0, 0, 0] ^= 1
  with pytest.raises(ValueError, match="not a permutation"):
    align_to(ref, bad)
  with pytest.raises(ValueError, match="same shape"):
    align_to(ref, tgt[:-1])
  with pytest.raises(ValueError, match="together"):
    align_to(ref, tgt, reference_keys=labels)


def test_order_from_tfds_ids():
  np.testing.assert_array_equal(
      order_from_tfds_ids(np.array(["train_00002", "train_00000", "train_00001"])), [2, 0, 1])
  np.testing.assert_array_equal(order_from_tfds_ids([b"train_1", b"train_0"]), [1, 0])
  with pytest.raises(ValueError, match="permutation"):
    order_from_tfds_ids(["train_00000", "train_00000"])
  with pytest.raises(ValueError, match="look like"):
    order_from_tfds_ids(["test_00000"])


@pytest.fixture
def cifar10_n_files(tmp_path, monkeypatch):
  """Fake CIFAR-10 python pickles + CIFAR-10_human.npz in torchvision order."""
  monkeypatch.delenv("JAXNOISY_DATA", raising=False)
  arrays = _fake_cifar(n_train=40)
  _write_cifar_python(tmp_path / "cifar-10-batches-py", arrays)
  published = _published(arrays["train_labels"])
  np.savez(tmp_path / "CIFAR-10_human.npz", **published)
  return tmp_path, arrays, published


def _fake_tfds_cifar10(arrays, sigma, monkeypatch):
  """TFDS cifar10 'prepared' in a shuffled order sigma (record i = file index sigma[i])."""

  def load(name, tfds_data_dir):
    if name != "cifar10":
      raise KeyError(f"{name} not prepared (test)")
    out = {k: v for k, v in arrays.items() if not k.startswith("train")}
    out["train_images"] = arrays["train_images"][sigma]
    out["train_labels"] = arrays["train_labels"][sigma]
    out["_train_ids"] = np.array([f"train_{i:05d}" for i in sigma])
    return out

  monkeypatch.setattr(datasets, "_load_tfds", load)


def _check_sets(ds, published, order):
  assert set(ds.noisy_label_sets) == {"aggre", "random1", "random2", "random3", "worse"}
  for key, pub in CIFAR10N_LABEL_SETS.items():
    np.testing.assert_array_equal(ds.noisy_label_sets[key], published[pub][order])
    assert ds.noisy_label_sets[key].dtype == np.int32


def test_cifar10_n_from_python_pickles(cifar10_n_files, no_tfds):
  root, arrays, published = cifar10_n_files
  ds = load_dataset("cifar10_n", data_dir=root, try_prepare=False)
  assert ds.name == "cifar10_n" and ds.source.startswith("python:")
  assert ds.source.endswith(f"+labels:{root / 'CIFAR-10_human.npz'}")
  np.testing.assert_array_equal(ds.train_images, arrays["train_images"])
  _check_sets(ds, published, np.arange(40))


def test_cifar10_n_aligned_to_tfds_order_by_hash(cifar10_n_files, monkeypatch):
  root, arrays, published = cifar10_n_files
  sigma = np.random.default_rng(5).permutation(40)
  _fake_tfds_cifar10(arrays, sigma, monkeypatch)
  # Corrupt the ids: with the pickles present, alignment must come from image hashes.
  monkeypatch.setattr(cifar_n, "order_from_tfds_ids", lambda ids: 1 / 0)
  ds = load_dataset("cifar10_n", data_dir=root, try_prepare=False)
  assert ds.source.startswith("tfds:") and "+labels:" in ds.source
  np.testing.assert_array_equal(ds.train_images, arrays["train_images"][sigma])
  _check_sets(ds, published, sigma)


def test_cifar10_n_aligned_by_tfds_ids(cifar10_n_files, monkeypatch, tmp_path):
  root, arrays, published = cifar10_n_files
  sigma = np.random.default_rng(6).permutation(40)
  _fake_tfds_cifar10(arrays, sigma, monkeypatch)
  only_labels = tmp_path / "labels_only"
  only_labels.mkdir()
  (root / "CIFAR-10_human.npz").rename(only_labels / "CIFAR-10_human.npz")
  ds = load_dataset("cifar10_n", data_dir=only_labels, try_prepare=False)
  _check_sets(ds, published, sigma)
  # label_file= is used as given
  ds2 = load_dataset("cifar10_n", label_file=only_labels / "CIFAR-10_human.npz",
                     try_prepare=False)
  _check_sets(ds2, published, sigma)


def test_cifar10_n_misaligned_or_missing(cifar10_n_files, no_tfds, tmp_path):
  root, arrays, published = cifar10_n_files
  wrong = dict(published, clean_label=np.roll(published["clean_label"], 1))
  np.savez(root / "CIFAR-10_human.npz", **wrong)
  with pytest.raises(DataNotFoundError, match="clean_label disagrees"):
    load_dataset("cifar10_n", data_dir=root, try_prepare=False)
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(DataNotFoundError) as info:
    load_dataset("cifar10_n", data_dir=empty, try_prepare=False)
  msg = str(info.value)
  assert "\n" not in msg
  for option in ("UCSC-REAL", "CIFAR-10_human.pt", "label_file", "tensorflow"):
    assert option in msg


def test_cifar100_n_from_python_pickles(tmp_path, no_tfds, monkeypatch):
  monkeypatch.delenv("JAXNOISY_DATA", raising=False)
  arrays = _fake_cifar(n_train=15, num_classes=100)
  _write_cifar_python(tmp_path / "cifar100" / "cifar-100-python", arrays, "cifar100")
  published = _published(arrays["train_labels"], num_classes=100)
  _torch_zip(tmp_path / "CIFAR-100_human.pt", published)
  ds = load_dataset("cifar100_n", data_dir=tmp_path, try_prepare=False)
  assert set(ds.noisy_label_sets) == {"noisy"}
  np.testing.assert_array_equal(ds.noisy_label_sets["noisy"], published["noisy_label"])
  np.testing.assert_array_equal(ds.train_coarse_labels, arrays["train_coarse_labels"])


def test_dataset_validates_optional_fields():
  arrays = _fake_cifar(n_train=4, n_test=2)
  common = dict(name="cifar10", num_classes=10, class_names=DATASET_INFO["cifar10"].class_names,
                mean=(0.5,) * 3, std=(0.25,) * 3, **arrays)
  with pytest.raises(ValueError, match="train_coarse_labels must be int32"):
    datasets.Dataset(train_coarse_labels=np.zeros(3, np.int32), **common)
  with pytest.raises(ValueError, match=r"noisy_label_sets\['worse'\] must be in"):
    datasets.Dataset(noisy_label_sets={"worse": np.full(4, 10, np.int32)}, **common)


# --------------------------------------------------------------------------
# describe / plot_transition_matrix.
# --------------------------------------------------------------------------


def _small_dataset(noisy_sets=None):
  arrays = _fake_cifar(n_train=200, n_test=10)
  return datasets.Dataset(name="cifar10", num_classes=10,
                          class_names=DATASET_INFO["cifar10"].class_names,
                          mean=(0.5,) * 3, std=(0.25,) * 3, source="test",
                          noisy_label_sets=noisy_sets, **arrays)


def test_describe():
  import json

  ds = _small_dataset()
  out = describe(ds, "symmetric:0.4", jax.random.key(0))
  json.dumps(out)  # serialisable
  assert out["num_train"] == 200 and out["num_test"] == 10 and out["num_classes"] == 10
  assert out["image_shape"] == [32, 32, 3] and out["class_names"][0] == "airplane"
  assert out["noise"] == "symmetric:0.4" and out["noise_rate"] == pytest.approx(0.4)
  assert out["num_corrupted"] == 80
  t = np.asarray(out["transition_matrix"])
  assert t.shape == (10, 10)
  np.testing.assert_allclose(t[np.bincount(ds.train_labels, minlength=10) > 0].sum(1), 1.0)
  inst = describe(ds, "instance:0.3", jax.random.key(1))
  assert 0.0 < inst["noise_rate"] < 0.6
  worse = (ds.train_labels + 1) % 10
  real = describe(_small_dataset({"worse": worse.astype(np.int32)}), "cifar10n:worse",
                  jax.random.key(2))
  assert real["noise_rate"] == 1.0 and real["noisy_label_sets"] == ["worse"]
  with pytest.raises(ValueError, match="no 'aggre' label set"):
    describe(_small_dataset({"worse": worse.astype(np.int32)}), "cifar10n:aggre",
             jax.random.key(2))


def test_plot_transition_matrix(tmp_path):
  t = np.eye(3) * 0.6 + 0.4 / 3
  path = plot_transition_matrix(t, ["a", "b", "c"], tmp_path / "sub" / "t.png")
  assert path == tmp_path / "sub" / "t.png"
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert sorted(p.name for p in path.parent.iterdir()) == ["t.png"]  # no temp files left
  big = plot_transition_matrix(np.eye(100), [str(i) for i in range(100)], tmp_path / "b.png")
  assert big.stat().st_size > 0
  with pytest.raises(ValueError, match="matrix must be square"):
    plot_transition_matrix(np.zeros((2, 3)), ["a", "b"], tmp_path / "x.png")
  with pytest.raises(ValueError, match="class_names must have 3"):
    plot_transition_matrix(t, ["a"], tmp_path / "x.png")
