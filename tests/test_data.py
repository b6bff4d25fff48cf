"""Tests for jaxnoisy.data: IDX reader, Fashion-MNIST sources, splits."""

import gzip
import io
import struct
import types
from pathlib import Path

import numpy as np
import pytest

from jaxnoisy.data import (
    DATASET_INFO,
    IDX_FILES,
    DataNotFoundError,
    datasets,
    load_dataset,
    load_fashion_mnist,
    make_splits,
    read_idx,
)

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
    with pytest.raises(ValueError, match="valid: fashion_mnist"):
        load_dataset("imagenet")


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


def test_tfds_mock_data(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    from tensorflow_datasets.testing import mocking

    # tfds 4.9.10's mock assigns `__getitems__` as a plain attribute of a
    # MagicMock, so `self` is never bound and batched reads raise TypeError
    # (`__getitem__` works because MagicMock binds supported dunders). Patch
    # just that helper so the mocked data source supports batched reads.
    def getitems(record_keys, generator, serialized=False):
        return [generator[k] for k in record_keys]

    monkeypatch.setattr(mocking, "_getitems", getitems)
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
