"""The trainer end to end: learning on real data, exact resume, sharding, CLI."""

import json
import os

import jax
import numpy as np
import pytest

from jaxnoisy import cli, noise
from jaxnoisy.data import datasets
from jaxnoisy.train.config import TrainConfig
from jaxnoisy.train.trainer import NoisyData, prepare_data, train
from jaxnoisy.train.sam_methods import SAMHparams

from cli_errors import one_line_error

FMNIST = os.path.join(datasets.SYSTEM_DATA_DIRS["fashion_mnist"][0], "train-images-idx3-ubyte.gz")


def toy_data(n=512, rate=0.4, seed=0) -> NoisyData:
  """A learnable 10-class problem: the class sets the bright 7×7 tile of a 28×28 image."""
  rng = np.random.default_rng(seed)

  def make(m):
    y = rng.integers(0, 10, m).astype(np.int32)
    x = rng.integers(0, 60, (m, 28, 28, 1)).astype(np.uint8)
    for i, c in enumerate(y):
      r, k = divmod(int(c), 4)
      x[i, 7 * r:7 * r + 7, 7 * k:7 * k + 7] += 150
    return x, y

  x, y = make(n)
  xt, yt = make(256)
  noisy, mask = noise.symmetric_exclusive(y, rate, jax.random.key(seed), 10)
  return NoisyData(train_images=x, train_labels=noisy, train_true=y, train_corrupted=mask,
                   heldout_images=xt[:128], heldout_labels=yt[:128], clean_images=x[:0],
                   clean_labels=y[:0], test_images=xt, test_labels=yt, num_classes=10,
                   mean=(0.2,), std=(0.3,), noise_summary={"spec": f"symmetric:{rate}"})


TOY = TrainConfig(method="sam", epochs=2, batch_size=64, learning_rate=0.02,
                  hparams=SAMHparams(rho=0.05), heldout_size=0, num_devices=2,
                  eval_batch_size=256)


def final_params(result):
  return [np.asarray(x) for x in jax.tree.leaves(result["state"].params)]


class CtrlC:
  """A progress "bar" that presses Ctrl-C after ``after`` steps."""

  def __init__(self, after):
    self.left = after

  def update(self, n):
    self.left -= n
    if self.left == 0:
      raise KeyboardInterrupt


def test_resume_is_bit_identical(tmp_path):
  data = toy_data()
  full = train(TOY, str(tmp_path / "full"), data=data, progress_bar=False)
  with pytest.raises(KeyboardInterrupt):  # Ctrl-C in the middle of epoch 1
    train(TOY, str(tmp_path / "cut"), data=data, progress_bar=CtrlC(11))
  assert (tmp_path / "cut" / "checkpoints" / "11").is_dir()  # saved at the interrupted step
  resumed = train(TOY, str(tmp_path / "cut"), data=data, progress_bar=False, resume=True)
  for a, b in zip(final_params(full), final_params(resumed)):
    np.testing.assert_array_equal(a, b)
  assert [r["test_accuracy"] for r in full["metrics"]] == \
         [r["test_accuracy"] for r in resumed["metrics"]]
  # Starting again over a finished run without --resume is refused.
  with pytest.raises(FileExistsError, match="resume"):
    train(TOY, str(tmp_path / "cut"), data=data, progress_bar=False)


def test_checkpoint_of_another_state_is_refused(tmp_path):
  """A checkpoint from before replicas (a scalar step) or with other parameter shapes is
  refused with the mismatching entry named, not restored into the wrong shapes."""
  from typing import NamedTuple

  import jax.numpy as jnp

  from jaxnoisy.train import checkpoints

  class State(NamedTuple):
    step: jax.Array
    params: dict

  mngr = checkpoints.manager(str(tmp_path / "ckpt"))
  checkpoints.save(mngr, State(jnp.int32(3), {"w": jnp.ones((2, 3))}), 1.0, 3)
  good = State(jnp.zeros((), jnp.int32), {"w": jnp.zeros((2, 3))})
  restored, meta = checkpoints.restore(mngr, good)
  np.testing.assert_array_equal(restored.params["w"], np.ones((2, 3)))
  assert int(restored.step) == 3 and meta == {"elapsed_seconds": 1.0}
  with pytest.raises(ValueError, match=r"state\.step has shape \(\), this run's \(1,\)"):
    checkpoints.restore(mngr, good._replace(step=jnp.zeros((1,), jnp.int32)))
  with pytest.raises(ValueError, match=r"params\['w'\] has shape \(2, 3\)"):
    checkpoints.restore(mngr, good._replace(params={"w": jnp.zeros((3, 3))}))
  with pytest.raises(ValueError, match="does not match this run's state"):
    checkpoints.restore(mngr, good._replace(params={"w": jnp.zeros((2, 3)),
                                                     "b": jnp.zeros((3,))}))


def _truncate_arrays(checkpoint_dir):
  """Cuts every array file of a checkpoint in half (a full disk, a copy cut short)."""
  cut = 0
  for root, _, files in os.walk(checkpoint_dir):
    for name in files:
      path = os.path.join(root, name)
      if os.sep + "d" + os.sep in path:
        with open(path, "r+b") as f:
          f.truncate(os.path.getsize(path) // 2)
        cut += 1
  assert cut


def test_resume_falls_back_from_a_damaged_checkpoint(tmp_path, capsys):
  """The newest checkpoint's array files are truncated: resume says so in one line,
  sets it aside, restarts from the previous one and ends exactly as an uninterrupted
  run."""
  cfg, data = TOY.replace(epochs=3), toy_data()
  full = train(cfg, str(tmp_path / "full"), data=data, progress_bar=False)
  with pytest.raises(KeyboardInterrupt):  # checkpoints 16 (epoch 1) and 20 (Ctrl-C)
    train(cfg, str(tmp_path / "cut"), data=data, progress_bar=CtrlC(20))
  ckpts = tmp_path / "cut" / "checkpoints"
  assert sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) == [16, 20]
  _truncate_arrays(ckpts / "20")
  capsys.readouterr()
  resumed = train(cfg, str(tmp_path / "cut"), data=data, progress_bar=False, resume=True)
  err = capsys.readouterr().err
  lines = [line for line in err.splitlines() if "damaged" in line]
  assert len(lines) == 1 and "checkpoint 20" in lines[0] and \
      "resuming from checkpoint 16" in lines[0], err
  assert "Traceback" not in err and "Event loop is closed" not in err
  assert (tmp_path / "cut" / "damaged" / "20").is_dir()
  for a, b in zip(final_params(full), final_params(resumed)):
    np.testing.assert_array_equal(a, b)
  assert [r["test_accuracy"] for r in full["metrics"]] == \
         [r["test_accuracy"] for r in resumed["metrics"]]


def test_only_damaged_checkpoints_are_refused_in_one_line(tmp_path):
  from jaxnoisy.train import checkpoints

  mngr = checkpoints.manager(str(tmp_path / "ckpt"))
  state = {"w": jax.random.normal(jax.random.key(0), (64, 64))}
  checkpoints.save(mngr, state, 1.0, 1)
  _truncate_arrays(tmp_path / "ckpt" / "1")
  with pytest.raises(ValueError, match=r"checkpoint 1 .* or is damaged \(ValueError: "):
    checkpoints.restore(checkpoints.manager(str(tmp_path / "ckpt")), state)


@pytest.mark.parametrize("method", ["sgd", "sam", "asam", "gsam", "saner"])
def test_sharded_equals_single_device(tmp_path, method):
  data = toy_data(256)
  cfg = TOY.replace(method=method, epochs=1, **({} if method == "sgd" else {"rho": 0.05}))
  one = train(cfg.replace(num_devices=1), str(tmp_path / "one"), data=data, progress_bar=False)
  eight = train(cfg.replace(num_devices=8), str(tmp_path / "eight"), data=data, progress_bar=False)
  for a, b in zip(final_params(one), final_params(eight)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_per_device_ascent_differs_from_global(tmp_path):
  data = toy_data(256)
  cfg = TOY.replace(epochs=1, num_devices=8)
  glob = train(cfg, str(tmp_path / "g"), data=data, progress_bar=False)
  local = train(cfg.replace(per_device_ascent=True), str(tmp_path / "l"), data=data,
                progress_bar=False)
  diffs = [np.abs(a - b).max() for a, b in zip(final_params(glob), final_params(local))]
  assert max(diffs) > 1e-4


def test_saner_logs_group_fractions(tmp_path):
  rows = train(TOY.replace(method="saner", epochs=1), str(tmp_path / "s"), data=toy_data(256),
               progress_bar=False)["metrics"]
  fr = [rows[0][f"saner_group_{g}"] for g in "ABC"]
  assert all(0 <= f <= 1 for f in fr) and 0 < sum(fr) <= 1
  untracked = train(TOY.replace(method="saner", epochs=1, track_groups=False),
                    str(tmp_path / "u"), data=toy_data(256), progress_bar=False)["metrics"]
  assert not any(k.startswith("saner_group") for k in untracked[0])
  # The diagnostic does not touch the update.
  assert untracked[0]["train_loss"] == rows[0]["train_loss"]
  assert untracked[0]["test_accuracy"] == rows[0]["test_accuracy"]



def test_ncsam_warmup_epoch_is_plain_sgd(tmp_path):
  """NCSAM's warm-up epoch reproduces SGD exactly; after it the two part."""
  cfg = TOY.replace(epochs=2)
  sgd = train(cfg.replace(method="sgd"), str(tmp_path / "s"), data=toy_data(256),
              progress_bar=False)["metrics"]
  nc = train(cfg.replace(method="ncsam", warmup_fraction=0.5), str(tmp_path / "n"),
             data=toy_data(256), progress_bar=False)["metrics"]
  assert nc[0]["train_loss"] == sgd[0]["train_loss"]
  assert nc[0]["test_accuracy"] == sgd[0]["test_accuracy"]
  assert nc[1]["train_loss"] != sgd[1]["train_loss"]


def test_metrics_and_summary_files(tmp_path):
  out = tmp_path / "run"
  train(TOY, str(out), data=toy_data(), progress_bar=False)
  rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
  assert [r["epoch"] for r in rows] == [0, 1]
  for key in ("epoch", "train_loss", "test_accuracy", "heldout_accuracy", "memorization"):
    assert key in rows[0]
  summary = json.load(open(out / "summary.json"))
  best = max(rows, key=lambda r: r["heldout_accuracy"])
  assert summary["best_test_accuracy"] == best["test_accuracy"]
  assert summary["test_accuracy"] == rows[-1]["test_accuracy"]
  assert summary["versions"]["jax"] == jax.__version__
  assert summary["config"]["method"] == "sam"


@pytest.mark.skipif(not os.path.exists(FMNIST), reason="Debian dataset-fashion-mnist missing")
def test_two_epochs_on_real_fashion_mnist_learn(tmp_path):
  cfg = TrainConfig(method="sgd", noise="symmetric:0.4", epochs=2, train_size=3000,
                    heldout_size=1000, batch_size=64, learning_rate=0.02, num_devices=2)
  data = prepare_data(cfg)
  assert data.train_images.shape == (3000, 28, 28, 1)
  assert abs(data.train_corrupted.mean() - 0.4) < 0.05
  result = train(cfg, str(tmp_path / "real"), data=data, progress_bar=False)
  assert result["summary"]["test_accuracy"] > 0.6  # chance is 0.1


def test_prepare_data_splits_are_disjoint_and_clean_subset_keeps_true_labels():
  cfg = TrainConfig(noise="symmetric:0.6", heldout_size=50, clean_size=40, seed=3)
  rng = np.random.default_rng(0)
  n = 500
  ds = datasets.Dataset(
      name="fashion_mnist", train_images=rng.integers(0, 255, (n, 28, 28, 1), dtype=np.uint8),
      train_labels=np.arange(n, dtype=np.int32) % 10,
      test_images=np.zeros((10, 28, 28, 1), np.uint8), test_labels=np.arange(10, dtype=np.int32),
      num_classes=10, class_names=tuple(map(str, range(10))), mean=(0.3,), std=(0.3,))
  d = prepare_data(cfg, ds)
  assert len(d.train_labels) == n - 90 and len(d.heldout_labels) == 50
  assert len(d.clean_labels) == 40
  # The clean subset's labels are the true ones: images were built so that label = index % 10.
  idx = [int(np.flatnonzero((ds.train_images == im).all(axis=(1, 2, 3)))[0])
         for im in d.clean_images]
  np.testing.assert_array_equal(d.clean_labels, np.asarray(idx) % 10)
  assert abs(d.noise_summary["realised_rate"] - 0.6) < 1e-9


@pytest.mark.parametrize("argv,needle", [
    (["--method", "sam", "--rho", "-1"], "--rho must be"),
    (["--method", "sam", "--alpha", "0.1"], "--alpha is not a hyper-parameter of SAMHparams"),
    (["--noise", "gaussian:0.2"], "noise"),
    (["--epochs", "0"], "--epochs must be"),
    (["--train-size", "0"], "--train-size must be"),
    (["--noise", "symmetric:1.5"], "rate"),
    (["--noise", "cifar10n:worse"], "needs --dataset cifar10_n"),
    (["--method", "feature_reweight"], "--method must be one of"),
    (["--gsam-alpha", "0.2"], "unrecognized arguments: --gsam-alpha"),
])
def test_cli_bad_flags_give_one_line_error(tmp_path, capsys, argv, needle):
  assert needle in one_line_error(tmp_path, capsys, argv)
  assert not (tmp_path / "x").exists()  # nothing was started


def test_cli_out_naming_a_file_is_one_line(tmp_path, capsys):
  (tmp_path / "f").write_text("")
  with pytest.raises(SystemExit):
    cli.main(["train", "--out", str(tmp_path / "f"), "--epochs", "1"])
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "--out must be a run directory" in err


def test_cli_compare_table_and_plot(tmp_path, capsys):
  runs = []
  for method in ("sgd", "sam"):
    out = tmp_path / method
    train(TOY.replace(method=method, epochs=1), str(out), data=toy_data(256), progress_bar=False)
    runs.append(str(out))
  assert cli.main(["compare", *runs]) == 0
  text = capsys.readouterr().out
  assert "| sgd |" in text and "| sam |" in text
  assert (tmp_path / "compare.png").stat().st_size > 1000


def toy_with_clean(n=384, clean=64):
  d = toy_data(n)
  return d._replace(clean_images=d.test_images[:clean], clean_labels=d.test_labels[:clean])


@pytest.mark.parametrize("method", ["l2rw", "meta_reweight", "mwnet"])
def test_reweighting_methods_log_weight_diagnostics(tmp_path, method):
  cfg = TOY.replace(method=method, epochs=1, clean_batch_size=32)
  rows = train(cfg, str(tmp_path / method), data=toy_with_clean(), progress_bar=False)["metrics"]
  for key in ("weight_auc", "weight_recall", "mean_weight_clean", "mean_weight_noisy"):
    assert np.isfinite(rows[0][key]), key
  # Precision is NaN only when no example reaches the 0.5 threshold.
  assert np.isfinite(rows[0]["weight_precision"]) or rows[0]["weight_recall"] == 0
  assert 0 <= rows[0]["mean_weight_noisy"] and rows[0]["weight_auc"] <= 1


def test_meta_method_without_clean_subset_is_refused(tmp_path):
  with pytest.raises(ValueError, match="clean_size"):
    train(TOY.replace(method="l2rw"), str(tmp_path / "x"), data=toy_data(), progress_bar=False)


def test_clean_size_out_of_range_is_refused():
  with pytest.raises(ValueError, match="clean_size"):
    prepare_data(TrainConfig(clean_size=60000), datasets.Dataset(
        name="fashion_mnist", train_images=np.zeros((100, 28, 28, 1), np.uint8),
        train_labels=np.arange(100, dtype=np.int32) % 10,
        test_images=np.zeros((10, 28, 28, 1), np.uint8),
        test_labels=np.arange(10, dtype=np.int32), num_classes=10,
        class_names=tuple("abcdefghij"), mean=(0.3,), std=(0.3,)))


@pytest.mark.parametrize("method", ["mlc", "bome_mlc", "ebomlc"])
def test_label_correction_methods_log_corrected_accuracy(tmp_path, method):
  cfg = TOY.replace(method=method, epochs=1, clean_batch_size=32)
  rows = train(cfg, str(tmp_path / method), data=toy_with_clean(), progress_bar=False)["metrics"]
  for key in ("corrected_accuracy_noisy", "corrected_accuracy_clean"):
    assert 0 <= rows[0][key] <= 1
  if method == "ebomlc":
    r = rows[0]
    assert 0 <= r["beta_q10"] <= r["beta_q50"] <= r["beta_q90"] and r["beta_mean"] >= 0


def test_gather_batch_augments_only_when_asked():
  from jaxnoisy.train import step as step_lib
  images = np.random.default_rng(0).integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
  labels = np.arange(32, dtype=np.int32)
  perm = jax.random.permutation(jax.random.key(0), 32)
  key = jax.random.key(1)
  args = dict(batch_size=8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
  plain = step_lib.gather_batch(images, labels, perm, 1, key, **args)
  aug = step_lib.gather_batch(images, labels, perm, 1, key, augment=True, **args)
  again = step_lib.gather_batch(images, labels, perm, 1, key, augment=True, **args)
  assert aug[0].shape == plain[0].shape == (8, 32, 32, 3)
  np.testing.assert_array_equal(aug[1], plain[1])          # labels untouched
  np.testing.assert_array_equal(aug[0], again[0])          # keyed: reproducible
  assert not np.allclose(aug[0], plain[0])
  np.testing.assert_array_equal(plain[0], step_lib.normalize(images[np.asarray(plain[2])],
                                                             args["mean"], args["std"]))
