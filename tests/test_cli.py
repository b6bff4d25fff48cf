"""The command line end to end on TFDS mock data (the commands GPU users run)."""

import json

import numpy as np
import pytest

from jaxnoisy import cli
from jaxnoisy.data import datasets


@pytest.fixture
def mock_cifar(monkeypatch, mock_tfds, tmp_path):
  monkeypatch.setattr(datasets, "_TFDS_CHUNK", 16)
  monkeypatch.setenv("JAXNOISY_DATA", str(tmp_path / "no-local-files"))
  with mock_tfds.testing.mock_data(num_examples=64):
    yield


def test_train_cifar10_instance_noise_end_to_end(tmp_path, mock_cifar):
  out = tmp_path / "run"
  argv = ["train", "--dataset", "cifar10", "--noise", "instance:0.4", "--model", "cnn",
          "--epochs", "2", "--batch-size", "16", "--heldout-size", "16", "--num-devices", "2",
          "--out", str(out), "--no-progress"]
  assert cli.main(argv) == 0
  summary = json.loads((out / "summary.json").read_text())
  assert summary["config"]["dataset"] == "cifar10" and summary["num_train"] == 48
  assert 0 < summary["noise"]["realised_rate"] < 1
  matrix = np.asarray(summary["noise"]["transition_matrix"])
  assert matrix.shape == (10, 10)
  rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
  assert len(rows) == 2 and all(np.isfinite(r["train_loss"]) for r in rows)


def test_data_describe_with_plot(tmp_path, mock_cifar, capsys):
  plot = tmp_path / "t.png"
  assert cli.main(["data", "describe", "cifar100", "--noise", "asymmetric:0.4",
                   "--plot", str(plot)]) == 0
  out = capsys.readouterr().out
  assert "num_train: 64" in out and "transition matrix" in out
  assert plot.stat().st_size > 1000


def test_data_describe_unknown_noise_is_one_line(capsys):
  with pytest.raises(SystemExit) as exc:
    cli.main(["data", "describe", "fashion_mnist", "--noise", "gaussian:0.1"])
  assert exc.value.code == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "symmetric" in err
