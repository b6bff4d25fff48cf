"""Times one jitted training step of every method, side by side, on the CNN (batch 128).

Each method's step is the trainer's own (the same ``make_train_step`` the CLI runs), on
random uint8 Fashion-MNIST-shaped data held on device. Compilation and a warm-up are
excluded; the methods are timed in interleaved rounds (so drifts in machine load hit
all of them alike) and the median round is reported. Prints one JSON object::

  {"ms_per_step": {"sgd": ..., "sam": ...}, "ratios_to_sgd": {"sam": ..., ...},
   "ratios": {"saner_to_sam": ..., ...}, ...}

``ratios`` holds the named pairs of ``PAIRS`` whose two methods were both run;
``VARIANTS`` (e.g. SANER without its per-step group diagnostic) run next to their method;
``--also-model M`` times every step on model M too, beside it (``ratios``:
``METHOD_on_M_to_METHOD``).

Usage: python experiments/bench_steps.py [--methods sgd,sam,asam] [--rounds 7] [--seeds 3]
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
         "ncsam_subset_to_sam": ("ncsam_subset", "sam"),
         "saner_untracked_to_sam": ("saner_untracked", "sam"),
         "ebomlc_to_mlc": ("ebomlc", "mlc"), "fbr_to_sgd": ("fbr", "sgd"),
         "fbr_phase_to_sgd": ("fbr_phase", "sgd"),
         # A method over an ascent (--ascent) against both of its parents.
         "l2rw_over_sam_to_l2rw": ("l2rw_over_sam", "l2rw"),
         "l2rw_over_sam_to_sam": ("l2rw_over_sam", "sam"),
         "fbr_over_saner_to_fbr": ("fbr_over_saner", "fbr"),
         "fbr_over_saner_to_saner": ("fbr_over_saner", "saner"),
         "mlc_over_saner_to_mlc": ("mlc_over_saner", "mlc"),
         "mlc_over_saner_to_saner": ("mlc_over_saner", "saner")}
# Timed next to their method whenever it runs: (method, config overrides).
VARIANTS = {"saner_untracked": ("saner", {"track_groups": False}),
            # NCSAM's g* from a forward pass over the flipped subset (label smoothing 0.1).
            "ncsam_subset": ("ncsam", {"noise_forward": "subset", "label_smoothing": 0.1}),
            # A method's real step over an ascent at the timed ρ (SANER's default 0.1).
            "l2rw_over_sam": ("l2rw", {"ascent": "sam", "rho": 0.1}),
            "fbr_over_saner": ("fbr", {"ascent": "saner"}),
            "mlc_over_saner": ("mlc", {"ascent": "saner"})}
# The table protocol's epoch (15,000 noisy examples, 1,000 clean, batch 128): FBR's
# noisy steps plus its clean passes, over SGD's noisy steps.
TABLE_EPOCH = {"noisy_steps": 15000 // 128, "clean": 1000}


def random_data(shape, n: int, clean: int, *, mean, std, seed: int = 0):
  """``n`` seeded random uint8 images of ``shape`` with random labels (the first
  ``clean`` also the clean subset), as the trainer's ``NoisyData``; nothing held out."""
  import numpy as np

  from jaxnoisy.train.trainer import NoisyData
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
  labels = rng.integers(0, 10, n, dtype=np.int32)
  return NoisyData(
      train_images=images, train_labels=labels, train_true=labels,
      train_corrupted=np.zeros(n, bool), heldout_images=images[:0],
      heldout_labels=labels[:0], clean_images=images[:clean], clean_labels=labels[:clean],
      test_images=images[:0], test_labels=labels[:0], num_classes=10, mean=mean, std=std,
      noise_summary={})


def step_config(method: str, **run):
  """The config of a timed step: one epoch, no held-out set, the run's ``run`` fields,
  and ρ = 0.1 and NCSAM's and SANER's warm-up fraction 0 where the method has them
  (the timed step is the method's own, not its SGD warm-up)."""
  from jaxnoisy.train import hparams as hparams_lib
  from jaxnoisy.train.config import TrainConfig
  config = TrainConfig(method=method, epochs=1, heldout_size=0, **run)
  own = {"rho": 0.1} if "rho" in hparams_lib.names(config.hparams) else {}
  if method in ("ncsam", "saner"):
    own["warmup_fraction"] = 0.0
  return config.replace(**own)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--methods", default=None, help="comma-separated (default: all)")
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--model", default="cnn")
  parser.add_argument("--also-model", default=None,
                      help="time every step on this model too (METHOD_on_MODEL), e.g. cnn_bn")
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--steps", type=int, default=60, help="steps per timed round")
  parser.add_argument("--devices", type=int, default=None,
                      help="host devices on CPU (default: one per core)")
  parser.add_argument("--clean-batch-size", type=int, default=None,
                      help="clean examples per step of the meta methods (default: the "
                           "trainer's default, 100)")
  parser.add_argument("--seeds", type=int, default=1,
                      help="also time each method with this many replicas in one step "
                           "(--seeds N of the trainer) against N separate steps")
  parser.add_argument("--vmap-replicas", action=argparse.BooleanOptionalAction, default=None,
                      help="with --seeds: a device's replicas vmapped or looped (default: "
                           "the trainer's choice for the platform)")
  args = parser.parse_args()

  from jaxnoisy.train.devices import use_cpu_cores
  use_cpu_cores(args.devices)
  import jax
  import numpy as np

  from jaxnoisy.train import step as step_lib
  from jaxnoisy.train.methods import METHODS
  from jaxnoisy.train.trainer import Trainer

  names = args.methods.split(",") if args.methods else list(METHODS)
  unknown = [n for n in names if n not in METHODS]
  if unknown:
    parser.error(f"--methods must be among {sorted(METHODS)}, got {unknown}")
  if "sgd" not in names:
    names = ["sgd"] + names
  names += [v for v, (method, _) in VARIANTS.items() if method in names]
  variants, pairs = dict(VARIANTS), dict(PAIRS)
  if args.also_model:  # every step above again on a second model, timed beside it
    for name in list(names):
      on = f"{name}_on_{args.also_model}"
      method, overrides = variants.get(name, (name, {}))
      variants[on] = (method, {**overrides, "model": args.also_model})
      pairs[f"{on}_to_{name}"] = (on, name)
      names.append(on)

  data = random_data((28, 28, 1), 4096, 256, mean=(0.286,), std=(0.353,))

  clean_batch = {"clean_batch_size": args.clean_batch_size} if args.clean_batch_size else {}
  trainers, states, batches = {}, {}, {}
  replicated = [f"{name}x{args.seeds}" for name in names] if args.seeds > 1 else []
  for name in names + replicated:
    base, _, seeds = name.partition("x")
    method, overrides = variants.get(base, (base, {}))
    config = step_config(method, model=args.model, batch_size=args.batch_size,
                         seeds=int(seeds or 1), vmap_replicas=args.vmap_replicas,
                         **clean_batch).replace(**overrides)
    trainers[name] = Trainer(config, [data] * config.seeds)
    states[name] = trainers[name].initial_state
    batches[name] = list(trainers[name].batches(0, 0, trainers[name].steps_per_epoch))
  perm, key = batches["sgd"][0][0], trainers["sgd"].step_key

  if "fbr" in names:  # FBR's per-epoch phase step (a pass batch of the clean subset)
    trainers["fbr_phase"] = trainers["fbr"]
    states["fbr_phase"] = jax.tree.map(lambda x: x.copy(), trainers["fbr"].initial_state)

  def run(name, k):
    t, state = trainers[name], states[name]
    for i in range(k):  # the trainer's own step (it syncs as training does)
      if name == "fbr_phase":
        state = t.sync(t.programs.phase(state, t.train_data, t.step_key, t.hyper, 0)[0])
        state = state._replace(phase_step=state.phase_step * 0)
      else:
        state, _ = t.step(state, batches[name][i % t.steps_per_epoch], 0.5)
    jax.block_until_ready(state)
    states[name] = state

  for name in trainers:  # compile and warm up
    run(name, 3)
  rounds = {name: [] for name in trainers}
  for _ in range(args.rounds):
    for name in trainers:
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
  extra = {}
  if "fbr" in names:
    from jaxnoisy.train.step import phase_batches
    cfg = trainers["fbr"].config
    phase = cfg.hparams.clean_epochs * phase_batches(TABLE_EPOCH["clean"],
                                                     cfg.hparams.pass_batch_size)[0]
    noisy = TABLE_EPOCH["noisy_steps"]
    extra["fbr_table_epoch_to_sgd"] = round(
        (noisy * ms["fbr"] + phase * ms["fbr_phase"]) / (noisy * ms["sgd"]), 3)
  result = {
      "ms_per_step": ms,
      **extra,
      "ratios_to_sgd": {name: round(ms[name] / ms["sgd"], 3) for name in ms
                        if name != "sgd" and name not in replicated},
      "ratios": {pair: round(ms[a] / ms[b], 3) for pair, (a, b) in pairs.items()
                 if a in ms and b in ms},
      # One step of N replicas over N separate single-seed steps (< 1: replicas are cheaper).
      "replicas_vs_separate": {
          name: round(ms[f"{name}x{args.seeds}"] / (args.seeds * ms[name]), 3)
          for name in names if args.seeds > 1},
      "input_pipeline_ms": round(gather_ms, 3),
      "input_pipeline_fraction_of_sgd_step": round(gather_ms / ms["sgd"], 4),
      "batch_size": args.batch_size,
      "clean_batch_size": trainers[names[-1]].config.clean_batch_size,
      "model": args.model,
      "devices": jax.device_count(),
      "machine": f"{platform.machine()}, {os.cpu_count()} cores, {jax.devices()[0].platform}",
  }
  print(json.dumps(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
