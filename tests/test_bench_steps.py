"""experiments/bench_steps.py runs and prints its named ratios (a smoke test, no timings)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_prints_ratios_with_the_saner_variant():
  out = subprocess.run(
      [sys.executable, "experiments/bench_steps.py", "--methods", "sam,saner", "--rounds",
       "1", "--steps", "1", "--devices", "1"],
      cwd=ROOT, capture_output=True, text=True, check=True, timeout=600)
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert set(result["ms_per_step"]) == {"sgd", "sam", "saner", "saner_untracked"}
  assert all(v > 0 for v in result["ms_per_step"].values())
  assert set(result["ratios"]) == {"saner_to_sam", "saner_untracked_to_sam"}
