"""A two-process run (jax.distributed over localhost, CPU collectives) reaches the
parameters of the same run in one process, also when each process streams its part of
every batch from ArrayRecord files."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from test_trainer import FMNIST

pytestmark = pytest.mark.skipif(not os.path.exists(FMNIST),
                                reason="needs the Debian package dataset-fashion-mnist")

ARGS = ["train", "--method", "sam", "--train-size", "512", "--heldout-size", "256",
        "--epochs", "2", "--batch-size", "64", "--num-devices", "2", "--no-progress",
        "--log-every", "3"]  # TensorBoard logs the loss on process 0 every 3 steps


def cli(out, *extra):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["JAX_PLATFORMS"] = "cpu"
  return subprocess.Popen([sys.executable, "-m", "jaxnoisy.cli", *ARGS, "--out", str(out),
                           *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def final_checkpoint(run):
  manager = ocp.CheckpointManager(os.path.abspath(run / "checkpoints"))
  state = manager.restore(manager.latest_step(), args=ocp.args.Composite(
      state=ocp.args.StandardRestore()))["state"]
  return jax.tree.leaves(state)


def prepared_fashion_mnist(out):
  """Fashion-MNIST's IDX files written as a prepared ArrayRecord dataset."""
  from jaxnoisy.data import arrayrecord, datasets
  d = datasets.load_fashion_mnist(try_prepare=False)
  arrayrecord.write_arrays(out, name="fashion_mnist", num_classes=10, shards=4, splits={
      "train": dict(images=d.train_images, clean=d.train_labels),
      "test": dict(images=d.test_images, clean=d.test_labels)})
  return ["--data-dir", str(out), "--input-path", "stream"]


@pytest.mark.parametrize("input_path", ["device", "stream"])
def test_two_processes_reach_the_single_process_parameters(tmp_path, input_path):
  """The stream variant: each process reads only its half of every batch."""
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  extra = prepared_fashion_mnist(tmp_path / "prepared") if input_path == "stream" else []
  procs = [cli(tmp_path / "multi", "--coordinator", f"localhost:{port}", "--num-processes",
               "2", "--process-id", str(i), *extra) for i in range(2)]
  single = cli(tmp_path / "single")
  for p in procs + [single]:
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out
  multi, one = final_checkpoint(tmp_path / "multi"), final_checkpoint(tmp_path / "single")
  assert len(multi) == len(one) > 5
  for a, b in zip(multi, one):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  with open(tmp_path / "multi" / "summary.json") as f:
    summary = json.load(f)
  assert summary["num_processes"] == 2 and summary["num_devices"] == 2
  assert any(name.startswith("events.out.tfevents") for name in
             os.listdir(tmp_path / "multi" / "tb"))
  with open(tmp_path / "single" / "summary.json") as f:
    assert json.load(f)["test_accuracy"] == summary["test_accuracy"]


def test_bad_process_id_is_refused_before_joining():
  from jaxnoisy.train.devices import join_processes
  with pytest.raises(ValueError, match=r"process_id must be in \[0, 2\), got 2"):
    join_processes("localhost:1", 2, 2)
