"""Divergence: a training loss or parameters that stopped being finite.

Checked once per epoch, without a host read per step: the epoch's mean of each step
loss (one non-finite step makes it non-finite; the trainer reads the means anyway) and
one reduction over the parameters on device, before the epoch's checkpoint is written,
so that the checkpoints on disk stay finite.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

class Diverged(RuntimeError):
  """The run stopped at a non-finite epoch; ``record`` is what summary.json holds."""

  def __init__(self, record: dict):
    super().__init__(record["message"])
    self.record = record


@jax.jit
def params_finite(params) -> jax.Array:
  """Whether every parameter of each replica is finite, shape (R,) (leading axis R)."""
  leaves = [jnp.isfinite(x).reshape(x.shape[0], -1).all(axis=1)
            for x in jax.tree.leaves(params)]
  return jnp.stack(leaves).all(axis=0)


def nonfinite(epoch_metrics: list[dict], finite_params) -> list[int]:
  """The replicas whose epoch mean of a step loss, or whose parameters, are not finite."""
  return [r for r, (m, ok) in enumerate(zip(epoch_metrics, finite_params))
          if not ok or any(k.endswith("loss") and not math.isfinite(v) for k, v in m.items())]


def record(*, method: str, epoch: int, steps: tuple[int, int], replicas: list[str],
           last_checkpoint, checkpoint_dir: str, learning_rate: float) -> dict:
  """summary.json's account of a divergence, with its one-line message. ``epoch``
  counts from 0, as in metrics.jsonl (the message counts from 1); ``steps``: the
  epoch's first and last step in the checkpoints' numbering."""
  who = f" (replica {', '.join(replicas)})" if replicas else ""
  last = (f"checkpoint {last_checkpoint} in {checkpoint_dir}" if last_checkpoint is not None
          else "none (no epoch finished before it)")
  message = (f"{method} diverged{who}: non-finite training loss or parameters in epoch "
             f"{epoch + 1} (steps {steps[0]}-{steps[1]}); last finite checkpoint: {last}; try "
             f"a lower --learning-rate (now {learning_rate:g}), or --on-nonfinite continue "
             "to train through it")
  return {"epoch": epoch, "steps": list(steps), "replicas": replicas,
          "last_finite_checkpoint": last_checkpoint, "message": message}
