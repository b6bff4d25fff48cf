"""Times one jitted training step of every method, side by side, on the CNN (batch 128).

Each method's step is the trainer's own (the same ``make_train_step`` the CLI runs), on
random uint8 Fashion-MNIST-shaped data held on device. Compilation and a warm-up are
excluded; the methods are timed in interleaved rounds (so drifts in machine load hit
all of them alike) and the median round is reported. Prints one JSON object::

  {"ms_per_step": {"sgd": ..., "sam": ...}, "ratios_to_sgd": {"sam": ..., ...},
   "ratios": {"saner_to_sam": ..., ...}, ...}

``ratios`` holds the named pairs of ``PAIRS`` whose two methods were both run.

Usage: python experiments/bench_steps.py [--methods sgd,sam,asam] [--rounds 7]
"""

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time

# Named step-time ratios (numerator, denominator), printed for pairs whose methods ran.
PAIRS = {"saner_to_sam": ("saner", "sam"), "ncsam_to_sam": ("ncsam", "sam"),
         "ebomlc_to_mlc": ("ebomlc", "mlc")}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--methods", default=None, help="comma-separated (default: all)")
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--model", default="cnn")
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--steps", type=int, default=20, help="steps per timed round")
  parser.add_argument("--devices", type=int, default=None,
                      help="host devices on CPU (default: one per core)")
  args = parser.parse_args()

  from jaxnoisy.train.devices import use_cpu_cores
  use_cpu_cores(args.devices)
  import jax
  import numpy as np

  from jaxnoisy.train import step as step_lib
  from jaxnoisy.train.config import TrainConfig
  from jaxnoisy.train.methods import METHODS
  from jaxnoisy.train.trainer import NoisyData, Trainer

  names = args.methods.split(",") if args.methods else list(METHODS)
  unknown = [n for n in names if n not in METHODS]
  if unknown:
    parser.error(f"--methods must be among {sorted(METHODS)}, got {unknown}")
  if "sgd" not in names:
    names = ["sgd"] + names

  n = 4096
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)
  labels = rng.integers(0, 10, n, dtype=np.int32)
  data = NoisyData(
      train_images=images, train_labels=labels, train_true=labels,
      train_corrupted=np.zeros(n, bool), heldout_images=images[:0], heldout_labels=labels[:0],
      clean_images=images[:256], clean_labels=labels[:256], test_images=images[:0],
      test_labels=labels[:0], num_classes=10, mean=(0.286,), std=(0.353,), noise_summary={})

  trainers, states = {}, {}
  for name in names:
    # Warm-up fractions 0: the timed steps are the method's own, not its SGD warm-up.
    config = TrainConfig(method=name, model=args.model, batch_size=args.batch_size, rho=0.1,
                         epochs=1, heldout_size=0, ncsam_warmup_fraction=0.0,
                         saner_warmup_fraction=0.0, clean_batch_size=args.batch_size)
    trainers[name] = Trainer(config, data)
    states[name] = trainers[name].initial_state
  perm = trainers["sgd"].permutation(0)
  key = trainers["sgd"].step_key

  def run(name, k):
    t, state = trainers[name], states[name]
    for i in range(k):  # the trainer's own step (it syncs as training does)
      state, _ = t.step(state, perm, i % t.steps_per_epoch, 0.5)
    jax.block_until_ready(state)
    states[name] = state

  for name in names:  # compile and warm up
    run(name, 3)
  rounds = {name: [] for name in names}
  for _ in range(args.rounds):
    for name in names:
      t0 = time.perf_counter()
      run(name, args.steps)
      rounds[name].append((time.perf_counter() - t0) / args.steps * 1e3)
  ms = {name: round(statistics.median(v), 3) for name, v in rounds.items()}

  # The input pipeline alone (permutation slice, gather, normalisation), as in the step.
  t = trainers["sgd"]
  gather = jax.jit(jax.vmap(  # over the (one) replica, as in the step
      functools.partial(step_lib.gather_batch, batch_size=args.batch_size, mean=data.mean,
                        std=data.std), in_axes=(0, 0, 0, None, 0)))
  images_d, labels_d = t.train_data[:2]
  jax.block_until_ready(gather(images_d, labels_d, perm, np.int32(0), key))
  t0 = time.perf_counter()
  for i in range(200):
    out = gather(images_d, labels_d, perm, np.int32(i % t.steps_per_epoch), key)
  jax.block_until_ready(out)
  gather_ms = (time.perf_counter() - t0) / 200 * 1e3
  result = {
      "ms_per_step": ms,
      "ratios_to_sgd": {name: round(ms[name] / ms["sgd"], 3) for name in names if name != "sgd"},
      "ratios": {pair: round(ms[a] / ms[b], 3) for pair, (a, b) in PAIRS.items()
                 if a in ms and b in ms},
      "input_pipeline_ms": round(gather_ms, 3),
      "input_pipeline_fraction_of_sgd_step": round(gather_ms / ms["sgd"], 4),
      "batch_size": args.batch_size,
      "model": args.model,
      "devices": jax.device_count(),
      "machine": f"{platform.machine()}, {os.cpu_count()} cores, {jax.devices()[0].platform}",
  }
  print(json.dumps(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
