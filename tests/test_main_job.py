"""The main job's script end to end on real Fashion-MNIST, shrunk to seconds: every
method it names exists with its table settings, and it prints the table and the plot."""

import os
import subprocess
import sys

import pytest

from jaxnoisy.data import datasets
from test_experiment_scripts import experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST = os.path.join(datasets.SYSTEM_DATA_DIRS["fashion_mnist"][0],
                      "train-images-idx3-ubyte.gz")


def test_every_method_of_the_main_job_has_a_table_config():
  sys.path.insert(0, os.path.join(ROOT, "experiments", "configs"))
  try:
    import fashion_mnist
  finally:
    sys.path.pop(0)
  job = experiment("main_job")
  assert {"sgd", "sam", "saner", "ncsam", "fbr", "mlc", "ebomlc"} <= set(job.METHODS)
  for method in job.METHODS:
    assert fashion_mnist.get_config(method).method == method


@pytest.mark.skipif(not os.path.exists(FMNIST) and not os.environ.get("JAXNOISY_DATA"),
                    reason="needs the Fashion-MNIST IDX files")
def test_main_job_runs_and_prints_the_table(tmp_path):
  out = tmp_path / "main"
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, "experiments", "main_job.py"), "--out", str(out),
       "--methods", "sgd,fbr", "--epochs", "1", "--train-size", "512",
       "--heldout-size", "128"], capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "--clean-epochs 10" in proc.stdout and "--noise instance:0.4" in proc.stdout
  table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
  assert [line.split("|")[2].strip() for line in table[1:]] == ["sgd", "fbr"]
  assert (out / "compare.png").is_file()
  assert (out / "fbr" / "tb").is_dir()
  # Started again, it trains nothing that has finished.
  again = subprocess.run(
      [sys.executable, os.path.join(ROOT, "experiments", "main_job.py"), "--out", str(out),
       "--methods", "sgd", "--epochs", "1", "--train-size", "512", "--heldout-size", "128"],
      capture_output=True, text=True, timeout=600)
  assert again.returncode == 0 and "| sgd |" in again.stdout
  bad = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "main_job.py"),
                        "--methods", "sgd,adam"], capture_output=True, text=True)
  assert bad.returncode == 2 and "--methods must be among" in bad.stderr
