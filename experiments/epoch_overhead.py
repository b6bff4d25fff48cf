"""What an epoch costs beyond its training steps, on the main job's protocol.

Trains SGD on real Fashion-MNIST (15,000 noisy examples, 5,000 held out, batch 128,
``--epochs`` epochs, all devices) and prints the run's wall time over (steps × the run's
own median ms/step) — 1.0 would be training steps and nothing else — and where the rest
goes: the first epoch's extra (compilation), evaluation of the test, held-out and
memorization sets, and everything else (checkpoints, metrics, start-up inside ``train``).
It also prints what one evaluated example costs against one trained example, and the
ratio the run would have without evaluation.

Usage: python experiments/epoch_overhead.py [--epochs 6] [--eval-batch-size N] [--out DIR]
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import time

TEST_SIZE = 10000  # Fashion-MNIST's test set


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--epochs", type=int, default=6)
  parser.add_argument("--train-size", type=int, default=15000)
  parser.add_argument("--eval-batch-size", type=int, default=None,
                      help="examples per evaluation chunk (default: the trainer's)")
  parser.add_argument("--out", default="runs/overhead")
  args = parser.parse_args()
  from jaxnoisy.train.devices import use_cpu_cores
  use_cpu_cores()  # as the CLI: one host device per core
  from jaxnoisy.train.config import TrainConfig
  from jaxnoisy.train.trainer import train
  config = TrainConfig(method="sgd", noise="symmetric:0.4", epochs=args.epochs,
                       train_size=args.train_size, heldout_size=5000, batch_size=128)
  if args.eval_batch_size:
    config = config.replace(eval_batch_size=args.eval_batch_size)
  shutil.rmtree(args.out, ignore_errors=True)
  t0 = time.perf_counter()
  result = train(config, args.out, progress_bar=False)
  outer = time.perf_counter() - t0
  s, rows = result["summary"], result["metrics"]
  steps = config.epochs * (args.train_size // config.batch_size)
  step_ms = s["ms_per_step"]
  train_s = steps * step_ms / 1e3
  wall = s["wall_seconds"]
  epochs = [r["epoch_seconds"] for r in rows]
  evals = [r["eval_seconds"] for r in rows]
  compile_s = epochs[0] - statistics.median(epochs[1:]) if len(epochs) > 1 else 0.0
  other = wall - sum(epochs) - sum(evals)
  corrupted = round(s["noise"]["realised_rate_train"] * args.train_size)
  evaluated = TEST_SIZE + config.heldout_size + corrupted
  per_example = (statistics.median(evals) / evaluated) / \
      (statistics.median(epochs) / args.train_size)
  print(json.dumps({
      "epochs": config.epochs, "steps": steps, "ms_per_step": round(step_ms, 2),
      "wall_seconds": round(wall, 1), "ratio": round(wall / train_s, 3),
      "compile_seconds": round(compile_s, 1),
      "eval_seconds_per_epoch": round(statistics.median(evals), 2),
      "train_seconds_per_epoch": round(statistics.median(epochs), 2),
      "other_seconds": round(other, 1),
      "examples_evaluated_per_epoch": evaluated,
      "eval_example_over_train_example": round(per_example, 3),
      "ratio_without_evaluation": round((wall - sum(evals)) / train_s, 3),
      "outside_train_seconds": round(outer - wall, 1),
      "num_devices": s["num_devices"], "machine": s["machine"]}, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
