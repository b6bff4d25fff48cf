"""How large NCSAM's compensation is next to ρ: ‖g‖ and ‖g*‖ on one Fashion-MNIST batch.

Prints ‖g‖, ‖g*‖ and κ·‖g*‖ (the compensation's size once s(t) has saturated at κ) at
the initial parameters and at the end of a finished NCSAM run of the results table
(``python experiments/fashion_mnist_table.py --methods ncsam ...`` first). When
κ·‖g*‖ exceeds ρ, the projection onto the ρ-ball leaves ε pointing mostly along g*.

Usage: python experiments/ncsam_scale.py [--run experiments/results/runs/symmetric_0.4/ncsam/seed0]
"""

import argparse
import json
import sys


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--run", default="experiments/results/runs/symmetric_0.4/ncsam/seed0")
  parser.add_argument("--config", default="experiments/configs/fashion_mnist.py:ncsam")
  args = parser.parse_args()

  from jaxnoisy.train.devices import use_cpu_cores
  use_cpu_cores(1)
  import jax

  import jaxnoisy
  from jaxnoisy.train import checkpoints, step as step_lib
  from jaxnoisy.train.config import load_config
  from jaxnoisy.train.trainer import Trainer, prepare_data

  config = load_config(args.config).replace(num_devices=1)
  data = prepare_data(config)
  trainer = Trainer(config, data)
  final, _ = checkpoints.restore(checkpoints.manager(f"{args.run}/checkpoints"),
                                 trainer.initial_state)
  x = step_lib.normalize(data.train_images[:128], data.mean, data.std)
  y = data.train_labels[:128]
  for name, state in (("initial", trainer.initial_state), ("final", final)):
    params = step_lib.replica(state, 0).params
    logits_fn = lambda p: trainer.apply(p, {}, x, train=True)[0]
    _, g, g_star, _ = jaxnoisy.ncsam_gradients(logits_fn, params, y, jax.random.key(0),
                                               config.hparams.flip_rate)
    g_norm = float(jaxnoisy.global_norm(g))
    s_norm = float(jaxnoisy.global_norm(g_star))
    print(json.dumps({"params": name, "grad_norm": round(g_norm, 4),
                      "noise_grad_norm": round(s_norm, 4),
                      "kappa_times_noise_grad_norm": round(config.hparams.kappa * s_norm, 4),
                      "rho": config.hparams.rho}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
