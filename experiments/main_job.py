"""The main job: SGD vs SAM vs ASAM on real Fashion-MNIST with 40% symmetric label noise.

Runs three ``jaxnoisy train`` commands (printed as they start), then ``jaxnoisy compare``:
a table of the summaries and ``runs/main/compare.png``. Settings: the reference recipe of
``shared/reference/OBSERVATIONS.md`` (SGD with momentum 0.9, lr 0.05, weight decay 5e-4,
cosine decay, batch 128) for 25 epochs on a random 15,000-example subset of the noisy
training set; SAM ρ = 0.1, ASAM ρ = 1.0 (the ASAM paper's CIFAR-100 value; 0.5 for
CIFAR-10). Why: our 108k-parameter CNN memorises more slowly than the reference's 421k one,
and a smaller subset memorises faster per epoch and costs less per epoch. With these
settings plain SGD peaks near 85% test accuracy around epoch 7, then memorises the noise
(about 35% of the corrupted examples predicted with their noisy label at the end, test
accuracy down to about 75%), while SAM stays near 4% memorization and 86% test accuracy.
The whole job takes about 7.5 minutes on 2 CPU cores. Each run uses one device
(``--num-devices 1``): on this CPU one XLA device is faster per step than two, and
two-device runs have hung in a cross-device all-reduce. Pass ``--full`` to train on all
55,000 noisy examples (the rest of the 60,000 is the held-out split); that takes much
longer. Interrupted runs continue where they stopped when the job is started again.
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
  parser.add_argument("--epochs", type=int, default=25)
  parser.add_argument("--full", action="store_true", help="train on the whole noisy set")
  args = parser.parse_args()
  exe = os.path.join(os.path.dirname(sys.executable), "jaxnoisy")
  common = ["--dataset", "fashion_mnist", "--noise", "symmetric:0.4", "--epochs",
            str(args.epochs), "--learning-rate", "0.05", "--schedule", "cosine",
            "--weight-decay", "5e-4", "--num-devices", "1", "--seed", "0"]
  if not args.full:
    common += ["--train-size", "15000"]
    print("main job: 15,000-example subset of the noisy training set (pass --full for all)")
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
