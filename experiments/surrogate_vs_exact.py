"""FBR's scores against the exact meta-gradient, on the same training states.

Trains ``meta_reweight`` (the exact method) on Fashion-MNIST with label noise and,
every ``--probe-every`` steps, takes ``--probe-batches`` fresh noisy batches and one
clean batch and computes on the *same* parameters:

- the exact per-example update direction −∂L_val/∂w (``jax.grad`` through the virtual
  step, as the method uses it), and
- FBR's scores d (``jaxnoisy.meta.fbr_scores``: the batch's eval-mode penultimate
  features against those of the whole clean subset), with α₀ = 1/(C−1) (FBR's first
  40/150 of training) and α₀ = 0 (after).

It records their Pearson correlation and sign agreement, and how well each separates
clean from corrupted examples (AUC; the corruption mask is known). Writes
``probes.jsonl`` and ``surrogate_vs_exact.png`` in ``--out``; the seed-002 paper
describes three phases (alignment, filtering, post-filtering when the clean loss
vanishes), which the curves should show.

Usage: python experiments/surrogate_vs_exact.py --out runs/surrogate [--epochs 8]
"""

import argparse
import json
import os
import sys


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="runs/surrogate")
  parser.add_argument("--epochs", type=int, default=8)
  parser.add_argument("--train-size", type=int, default=10000)
  parser.add_argument("--noise", default="symmetric:0.4")
  parser.add_argument("--clean-size", type=int, default=1000)
  parser.add_argument("--probe-every", type=int, default=26)
  parser.add_argument("--probe-batches", type=int, default=4)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  from jaxnoisy.train.devices import use_cpu_cores
  use_cpu_cores()
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  from jaxnoisy.meta import fbr, reweight
  from jaxnoisy.train.config import TrainConfig
  from jaxnoisy.train.step import replica
  from jaxnoisy.train.trainer import Trainer, prepare_data, write_atomic

  config = TrainConfig(method="meta_reweight", noise=args.noise, epochs=args.epochs,
                       train_size=args.train_size, clean_size=args.clean_size,
                       schedule="constant", seed=args.seed).validate()
  data = prepare_data(config)
  trainer = Trainer(config, data)
  n_classes = data.num_classes
  os.makedirs(args.out, exist_ok=True)

  @jax.jit
  def probe(params, model_state, x, y, corrupted, clean_x, clean_y, all_clean_x):
    apply = lambda p, inputs: trainer.apply(p, model_state, inputs, train=False)
    loss_fn = lambda p, b: optax.softmax_cross_entropy_with_integer_labels(
        apply(p, b[0])[0], b[1])
    w = jnp.ones(y.shape[0])
    exact = reweight.meta_reweight_step(loss_fn, params, w, (x, y), (clean_x, clean_y),
                                        inner_lr=config.learning_rate, weight_lr=0.0)
    out = {"auc_exact": reweight.weight_auc(-exact.meta_grad, corrupted),
           "clean_loss": exact.clean_loss}
    features, clean_features = apply(params, x)[1], apply(params, all_clean_x)[1]
    for tag, alpha0 in (("", 1.0 / (n_classes - 1)), ("_alpha0", 0.0)):
      d = fbr.fbr_scores(features, y, clean_features, clean_labels, n_classes, alpha0)
      agree = reweight.surrogate_agreement(d, exact.meta_grad)
      out.update({f"correlation{tag}": agree["correlation"],
                  f"sign_agreement{tag}": agree["sign_agreement"],
                  f"auc_fbr{tag}": reweight.weight_auc(d, corrupted)})
    return out

  rng = np.random.default_rng(args.seed + 100)
  # Host (NumPy) inputs: the probe's arrays are copied to the mesh, never between devices.
  mean, std = np.asarray(data.mean, np.float32), np.asarray(data.std, np.float32)
  norm = lambda im: (im.astype(np.float32) / 255.0 - mean) / std
  fbr.check_fbr_clean_set(data.clean_labels, n_classes)
  clean_labels, all_clean_x = data.clean_labels, norm(data.clean_images)
  rows = []
  state = trainer.initial_state
  total = trainer.total_steps
  spe = trainer.steps_per_epoch
  while True:
    one = replica(state, 0)  # the run's one replica
    step = int(one.step)
    results = []
    for _ in range(args.probe_batches):
      idx = rng.choice(len(data.train_labels), config.batch_size, replace=False)
      cidx = rng.choice(len(data.clean_labels), config.clean_batch_size, replace=False)
      results.append(probe(one.params, one.model_state, norm(data.train_images[idx]),
                           data.train_labels[idx], data.train_corrupted[idx],
                           norm(data.clean_images[cidx]), data.clean_labels[cidx],
                           all_clean_x))
    row = {"step": step, "epoch": step / spe,
           **{k: float(np.nanmean([float(r[k]) for r in results])) for k in results[0]}}
    rows.append(row)
    print(json.dumps(row), flush=True)
    if step >= total:
      break
    epoch, start = divmod(step, spe)
    state, _ = trainer.run_epoch(state, epoch, start, min(spe, start + args.probe_every))

  write_atomic(os.path.join(args.out, "probes.jsonl"),
               "".join(json.dumps(r) + "\n" for r in rows))
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  ep = [r["epoch"] for r in rows]
  fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(14, 4))
  for tag, name in (("", "α₀=1/(C−1)"), ("_alpha0", "α₀=0")):
    a1.plot(ep, [r["correlation" + tag] for r in rows], label=f"correlation, {name}")
    a1.plot(ep, [r["sign_agreement" + tag] for r in rows], "--",
            label=f"sign agreement, {name}")
    a2.plot(ep, [r["auc_fbr" + tag] for r in rows], label=f"FBR d, {name}")
  a1.set(xlabel="epoch", title="FBR's d vs exact −∂L_val/∂w")
  a2.plot(ep, [r["auc_exact"] for r in rows], label="exact −∂L_val/∂w")
  a2.set(xlabel="epoch", title="AUC clean vs corrupted")
  a3.plot(ep, [r["clean_loss"] for r in rows])
  a3.set(xlabel="epoch", title="clean loss after the virtual step")
  for a in (a1, a2, a3):
    a.grid(alpha=0.3)
  a1.legend()
  a2.legend()
  fig.tight_layout()
  path = os.path.join(args.out, "surrogate_vs_exact.png")
  fig.savefig(path + ".tmp.png", dpi=110)
  os.replace(path + ".tmp.png", path)
  print(f"wrote {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
