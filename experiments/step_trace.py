"""Step-by-step trace of a training run: loss, parameter norm and the batch's weights.

For looking at a run that diverges (e.g. L2RW on clean labels). Trains one replica
with a config of ``experiments/configs`` for a few epochs and prints, every ``--every``
steps and on every step whose training loss exceeds ``--loud``: the epoch, the step,
the training loss, the global norm of the parameters, and for the reweighting methods
the batch's recorded weights (how many are positive, the largest, in units of the
method's weights: L2RW records B·w, so 1 is the batch average), then the step's other
metrics as ``name=value`` (e.g. EBOMLC's β and upper loss). A NaN loss is always printed.

Usage: python experiments/step_trace.py [--config experiments/configs/fashion_mnist.py:l2rw]
    [--noise none] [--seed 0] [--learning-rate LR] [--epochs 2] [--every 10] [--loud 3.0]
"""

import argparse
import sys


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="experiments/configs/fashion_mnist.py:l2rw")
  parser.add_argument("--noise", default="none")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--learning-rate", type=float, default=None,
                      help="override the config's (peak) learning rate")
  parser.add_argument("--epochs", type=int, default=2, help="epochs to trace (≥ 1)")
  parser.add_argument("--every", type=int, default=10, help="print every N steps (≥ 1)")
  parser.add_argument("--loud", type=float, default=3.0,
                      help="also print every step whose training loss exceeds this")
  args = parser.parse_args()
  if args.epochs < 1 or args.every < 1:
    parser.error(f"--epochs and --every must be ≥ 1, got {args.epochs}, {args.every}")

  from jaxnoisy.train.devices import use_cpu_cores
  use_cpu_cores(None)
  import numpy as np
  import optax

  from jaxnoisy.train import step as step_lib
  from jaxnoisy.train.config import load_config
  from jaxnoisy.train.trainer import Trainer, prepare_data

  config = load_config(args.config).replace(noise=args.noise, seed=args.seed)
  if args.learning_rate is not None:
    config = config.replace(learning_rate=args.learning_rate)
  data = prepare_data(config)
  trainer = Trainer(config, [data])
  state, b = trainer.initial_state, config.batch_size
  print("epoch step train_loss |params| positive_weights max_weight")
  for epoch in range(min(args.epochs, config.epochs)):
    order = step_lib.to_host(trainer.permutation(epoch))[0]
    batches = trainer.batches(epoch, 0, trainer.steps_per_epoch)
    for i, batch in enumerate(batches):
      state, metrics = trainer.step(state, batch, (epoch + 1) / config.epochs,
                                    warmup=epoch < trainer.warmup_epochs)
      loss = float(metrics["train_loss"][0])
      if i % args.every and loss <= args.loud:
        continue
      one = step_lib.to_host(trainer.replica_state(state, 0))  # one jitted read
      norm = float(optax.global_norm(one.params))
      weights = one.method_state.get("weights") if isinstance(one.method_state, dict) else None
      if weights is None:
        extra = "- -"
      else:
        w = np.asarray(weights)[order[i * b:(i + 1) * b]]
        extra = f"{int((w > 0).sum())}/{b} {w.max():.1f}"
      others = {k: float(v[0]) for k, v in metrics.items() if k != "train_loss"}
      if isinstance(one.method_state, dict) and "beta" in one.method_state:
        others["beta"] = float(one.method_state["beta"][i])  # kept per step of the epoch
      others = " ".join(f"{k}={v:.4g}" for k, v in sorted(others.items()))
      print(f"{epoch} {i} {loss:.3f} {norm:.1f} {extra} {others}".rstrip(), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
