"""The streaming input path: batches read from ArrayRecord with grain equal the
device-resident path's, per process; training on either path gives the same model."""

import json

import jax
import numpy as np
import pytest

from jaxnoisy.data import arrayrecord, datasets
from jaxnoisy.data.stream import BatchStream, RecordImages, batch_positions
from jaxnoisy.train.trainer import NoisyData, Trainer, prepare_data, train
from test_prepare import clothing  # noqa: F401  (the tiny Clothing1M layout)
from test_trainer import CtrlC, TOY, final_params, toy_data


def write_toy(path, data: NoisyData, shards=2):
  """``data``'s training and test images as a prepared dataset (train: noisy and true
  labels; test: clean)."""
  arrayrecord.write_arrays(path, name="fashion_mnist", num_classes=10, shards=shards, splits={
      "train": dict(images=data.train_images, noisy=data.train_labels,
                    clean=data.train_true),
      "test": dict(images=data.test_images, clean=data.test_labels)})
  return arrayrecord.open_prepared(path)


def as_streamed(data: NoisyData, prepared) -> NoisyData:
  """``data`` with lazy images read from ``prepared``."""
  train = RecordImages(prepared, "train")
  test = RecordImages(prepared, "test")
  return data._replace(train_images=train, test_images=test,
                       heldout_images=test[np.arange(128)])


def test_record_images_read_what_was_written(tmp_path):
  data = toy_data(n=64)
  images = RecordImages(write_toy(tmp_path / "p", data, shards=3), "train")
  assert images.shape == data.train_images.shape and images.dtype == np.uint8
  np.testing.assert_array_equal(np.asarray(images), data.train_images)
  idx = np.array([5, 63, 0, 17])
  np.testing.assert_array_equal(np.asarray(images[idx]), data.train_images[idx])
  mask = data.train_true % 2 == 0
  np.testing.assert_array_equal(np.asarray(images[mask][2:5]), data.train_images[mask][2:5])
  np.testing.assert_array_equal(images[idx].read([3, 1]), data.train_images[[17, 63]])
  assert np.asarray(images[np.array([], int)]).shape == (0, 28, 28, 1)  # e.g. no clean set


def test_batch_positions_split_each_global_batch_over_processes():
  order = np.random.default_rng(0).permutation(100)
  whole = batch_positions(order, [0, 3], 8)
  np.testing.assert_array_equal(whole, np.stack([order[0:8], order[24:32]]))
  parts = [batch_positions(order, [0, 3], 8, p, 4) for p in range(4)]
  np.testing.assert_array_equal(np.concatenate(parts, axis=1), whole)
  with pytest.raises(ValueError, match="batch_size must be a multiple of the 3 processes"):
    batch_positions(order, [0], 8, 0, 3)


def test_stream_yields_this_process_slice_of_every_batch(tmp_path):
  data = toy_data(n=64)
  images = RecordImages(write_toy(tmp_path / "p", data), "train")
  order = np.random.default_rng(1).permutation(64)
  for p in range(2):
    got = list(BatchStream(images, 16, process_index=p, process_count=2,
                           num_threads=3).epoch(order, 1, 4))
    assert len(got) == 3
    for step, (x, idx) in zip(range(1, 4), got):
      want = order[step * 16 + p * 8: step * 16 + p * 8 + 8]
      np.testing.assert_array_equal(idx, want)
      np.testing.assert_array_equal(x, data.train_images[want])


def test_training_streamed_equals_training_from_device_arrays(tmp_path):
  """Same seed, same batches: the streamed run reaches the device path's parameters
  and metrics (2 devices, SAM); the device path on the same lazy images too."""
  data = toy_data()
  lazy = as_streamed(data, write_toy(tmp_path / "p", data))
  device = train(TOY, str(tmp_path / "device"), data=data, progress_bar=False)
  streamed = train(TOY.replace(input_path="stream"), str(tmp_path / "stream"), data=lazy,
                   progress_bar=False)
  read = train(TOY.replace(input_path="device"), str(tmp_path / "read"), data=lazy,
               progress_bar=False)
  for run in (streamed, read):
    for a, b in zip(final_params(device), final_params(run)):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert [r["test_accuracy"] for r in run["metrics"]] == \
           [r["test_accuracy"] for r in device["metrics"]]


def test_streamed_resume_is_exact(tmp_path):
  """Ctrl-C mid-epoch, then --resume: the stream restarts at the checkpointed step."""
  data = toy_data()
  lazy = as_streamed(data, write_toy(tmp_path / "p", data))
  config = TOY.replace(input_path="stream")
  full = train(config, str(tmp_path / "full"), data=lazy, progress_bar=False)
  with pytest.raises(KeyboardInterrupt):
    train(config, str(tmp_path / "cut"), data=lazy, progress_bar=CtrlC(11))
  resumed = train(config, str(tmp_path / "cut"), data=lazy, progress_bar=False, resume=True)
  for a, b in zip(final_params(full), final_params(resumed)):
    np.testing.assert_array_equal(a, b)


def test_auto_path_streams_by_size_and_stream_needs_prepared_data(tmp_path):
  data = toy_data()
  lazy = as_streamed(data, write_toy(tmp_path / "p", data))
  assert not Trainer(TOY, lazy).streamed                        # 400 KB < 4 GiB
  assert Trainer(TOY.replace(stream_above_gib=1e-4), lazy).streamed
  assert not Trainer(TOY.replace(stream_above_gib=1e-4), data).streamed  # in memory
  with pytest.raises(ValueError, match="input_path 'stream' reads a dataset prepared"):
    Trainer(TOY.replace(input_path="stream"), data)
  with pytest.raises(ValueError, match="input_path must be device or auto"):
    TOY.replace(input_path="stream", seeds=2).validate()


def test_prepared_data_dir_loads_lazily_with_the_noise_of_the_arrays(tmp_path):
  """--data-dir of a prepared dataset: the same splits and noise as the arrays give."""
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (300, 28, 28, 1), dtype=np.uint8)
  y = rng.integers(0, 10, 300).astype(np.int32)
  xt, yt = x[:50].copy(), y[:50].copy()
  arrayrecord.write_arrays(tmp_path / "p", name="fashion_mnist", num_classes=10, splits={
      "train": dict(images=x, clean=y), "test": dict(images=xt, clean=yt)})
  config = TOY.replace(dataset="fashion_mnist", data_dir=str(tmp_path / "p"),
                       heldout_size=40, clean_size=20, train_size=200, noise="symmetric:0.4")
  dataset = datasets.load_dataset("fashion_mnist", data_dir=str(tmp_path / "p"))
  assert isinstance(dataset.train_images, RecordImages)
  lazy = prepare_data(config, dataset)
  eager = prepare_data(config, datasets._make_dataset(
      "fashion_mnist", dict(train_images=x, train_labels=y, test_images=xt,
                            test_labels=yt), "arrays"))
  for name in NoisyData._fields:
    a, b = getattr(lazy, name), getattr(eager, name)
    if isinstance(b, np.ndarray):
      np.testing.assert_array_equal(np.asarray(a), b, err_msg=name)
  with pytest.raises(ValueError, match="holds dataset 'fashion_mnist', not 'mnist'"):
    datasets.load_dataset("mnist", data_dir=str(tmp_path / "p"))
  info = json.loads((tmp_path / "p" / "info.json").read_text())
  assert info["splits"]["train"]["num_examples"] == 300


def test_crop_size_windows_and_center_crop():
  """Random crop_size windows lie inside the image, vary, and repeat with the key;
  center_crop is torchvision's central window."""
  from jaxnoisy.data.augment import augment_batch, center_crop
  images = np.arange(6 * 10 * 12 * 2, dtype=np.int32).reshape(6, 10, 12, 2)
  out = np.asarray(augment_batch(jax.random.key(0), images, crop_padding=0, crop_size=7,
                                 flip=False))
  again = np.asarray(augment_batch(jax.random.key(0), images, crop_padding=0, crop_size=7,
                                   flip=False))
  np.testing.assert_array_equal(out, again)
  offsets = set()
  for x, crop in zip(images, out):
    dy, dx = divmod(int(crop[0, 0, 0] - x[0, 0, 0]) // 2, 12)  # value = (y·12 + x)·2 + c
    assert 0 <= dy <= 3 and 0 <= dx <= 5
    np.testing.assert_array_equal(crop, x[dy:dy + 7, dx:dx + 7])
    offsets.add((dy, dx))
  assert len(offsets) > 1
  np.testing.assert_array_equal(center_crop(images, 7), images[:, 2:9, 2:9])  # round(1.5)=2
  with pytest.raises(ValueError, match=r"crop_size must be in \[1, 10\], got 11"):
    center_crop(images, 11)


def test_clothing1m_trains_streamed_from_its_published_layout(clothing, tmp_path):
  """The tiny Clothing1M layout, prepared, trains a method with a clean subset on the
  stream path: noisy web labels, unknown true labels, clean_val as the clean set,
  clean_test as the test set, random crops of the stored images."""
  from jaxnoisy.train.config import TrainConfig
  root, expected = clothing
  arrayrecord.prepare_clothing1m(root, tmp_path / "prepared", image_size=20, shards=2)
  config = TrainConfig(method="l2rw", dataset="clothing1m", data_dir=str(tmp_path / "prepared"),
                       noise="clothing1m:noisy", model="cnn", crop_size=16, epochs=2,
                       batch_size=4, heldout_size=2, clean_size=4, clean_batch_size=4,
                       learning_rate=0.01, num_devices=2, input_path="stream",
                       eval_batch_size=8)
  data = prepare_data(config)
  keys, noisy, clean = expected["noisy_train"]
  noisy, clean = np.asarray(noisy), np.asarray(clean)
  assert sorted(data.train_labels.tolist() + data.heldout_labels.tolist()) == \
      sorted(noisy.tolist())
  known = clean >= 0
  assert data.noise_summary["true_labels_known"] == known.mean()
  assert (data.train_corrupted == ((data.train_true >= 0) &
                                   (data.train_true != data.train_labels))).all()
  np.testing.assert_array_equal(data.clean_labels, expected["clean_val"][2])
  np.testing.assert_array_equal(data.test_labels, expected["clean_test"][2])
  assert Trainer(config, data).streamed
  result = train(config, str(tmp_path / "run"), data=data, progress_bar=False)
  assert len(result["metrics"]) == 2 and 0 <= result["metrics"][-1]["test_accuracy"] <= 1
  with pytest.raises(ValueError, match="use its own noisy labels: --noise clothing1m:noisy"):
    prepare_data(config.replace(noise="symmetric:0.4"))
  from jaxnoisy.describe import describe  # jaxnoisy data describe: over the known truths
  info = describe(datasets.load_dataset("clothing1m", data_dir=str(tmp_path / "prepared")),
                  "clothing1m:noisy", jax.random.key(0))
  assert info["true_labels_known"] == known.mean()
  assert info["noise_rate"] == (noisy[known] != clean[known]).mean()


def test_init_params_start_training_from_saved_weights_with_a_fresh_head(tmp_path):
  """--init-params: every weight from the file but a head of another class count."""
  from jaxnoisy import models
  source = models.make_model("cnn", 7, (28, 28, 1), seed=5)  # "pre-trained", 7 classes
  models.save_params({"params": source.params, "state": source.state}, tmp_path / "w.npz")
  t = Trainer(TOY.replace(init_params=str(tmp_path / "w.npz")), toy_data())
  fresh = models.make_model("cnn", 10, (28, 28, 1), seed=TOY.seed)
  start = jax.tree.map(lambda a: np.asarray(a)[0], t.initial_state.params)
  for name in start:
    want = (fresh if name == "classifier" else source).params[name]
    for a, b in zip(jax.tree.leaves(start[name]), jax.tree.leaves(want)):
      np.testing.assert_array_equal(a, b, err_msg=name)
  with pytest.raises(ValueError, match="lacks"):
    models.save_params({"params": {}, "state": {}}, tmp_path / "empty.npz")
    Trainer(TOY.replace(init_params=str(tmp_path / "empty.npz")), toy_data())
