"""The main job: SGD vs SAM vs ASAM on real Fashion-MNIST with 40% symmetric label noise.

Runs three ``jaxnoisy train`` commands (printed as they start), then ``jaxnoisy compare``:
a table of the summaries and ``runs/main/compare.png``. To stay under 10 minutes on
2 CPU cores it trains on a random 20,000-example subset of the noisy training set;
pass ``--full`` for all 55,000 (the rest of the 60,000 is the held-out split).
Interrupted runs continue where they stopped when the job is started again.
"""

import argparse
import os
import shlex
import subprocess
import sys

METHODS = {"sgd": [], "sam": ["--rho", "0.1"], "asam": ["--rho", "1.0"]}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="runs/main")
  parser.add_argument("--epochs", type=int, default=12)
  parser.add_argument("--full", action="store_true", help="train on the whole noisy set")
  args = parser.parse_args()
  exe = os.path.join(os.path.dirname(sys.executable), "jaxnoisy")
  common = ["--dataset", "fashion_mnist", "--noise", "symmetric:0.4", "--epochs",
            str(args.epochs), "--learning-rate", "0.05", "--schedule", "constant", "--seed", "0"]
  if not args.full:
    common += ["--train-size", "20000"]
    print("main job: 20,000-example subset of the noisy training set (pass --full for all)")
  runs = []
  for method, extra in METHODS.items():
    out = os.path.join(args.out, method)
    cmd = [exe, "train", "--method", method, *common, *extra, "--out", out, "--resume"]
    print("$ " + shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    runs.append(out)
  cmd = [exe, "compare", *runs, "--plot", os.path.join(args.out, "compare.png")]
  print("$ " + shlex.join(cmd), flush=True)
  return subprocess.run(cmd).returncode


if __name__ == "__main__":
  sys.exit(main())
