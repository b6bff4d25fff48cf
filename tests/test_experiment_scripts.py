"""Smoke tests of experiment scripts: they run and print what they promise (no timings)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST = "/usr/share/datasets/fashion-mnist"


def test_bench_prints_ratios_with_the_saner_variant():
  out = subprocess.run(
      [sys.executable, "experiments/bench_steps.py", "--methods", "sam,saner", "--rounds",
       "1", "--steps", "1", "--devices", "1"],
      cwd=ROOT, capture_output=True, text=True, check=True, timeout=600)
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert set(result["ms_per_step"]) == {"sgd", "sam", "saner", "saner_untracked"}
  assert all(v > 0 for v in result["ms_per_step"].values())
  assert set(result["ratios"]) == {"saner_to_sam", "saner_untracked_to_sam"}


@pytest.mark.skipif(not os.path.isdir(FMNIST), reason="Debian dataset-fashion-mnist missing")
def test_step_trace_prints_weights_of_l2rw():
  out = subprocess.run(
      [sys.executable, "experiments/step_trace.py", "--epochs", "1", "--every", "1000",
       "--loud", "1e9"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=600)
  lines = out.stdout.strip().splitlines()
  assert lines[0].split() == ["epoch", "step", "train_loss", "|params|", "positive_weights",
                              "max_weight"]
  epoch, step, loss, norm, positive, largest = lines[1].split()  # step 0 only
  assert (epoch, step) == ("0", "0") and float(loss) > 0 and float(norm) > 0
  count, batch = positive.split("/")
  assert batch == "128" and 0 < int(count) <= 128 and float(largest) >= 1.0
  assert len(lines) == 2
