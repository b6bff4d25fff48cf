"""Clean batches as the authors' loaders draw them: passes over the shuffled clean subset.

References: the batching rule recomputed in NumPy (an endless stream of passes, cut
into consecutive batches, as L2RW's ``DataSet.next_batch`` and the MLC/EBOMLC
``DataIterator`` read it), and, through the trainer, the clean examples each step
actually received, read back from their pixels.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnoisy.train import interface, methods
from jaxnoisy.train.step import clean_batch_indices
from jaxnoisy.train.trainer import train
from test_trainer import TOY, CtrlC, toy_data


@pytest.mark.parametrize("m,b", [(10, 4), (10, 10), (12, 5), (1000, 100)])
def test_clean_batches_are_consecutive_slices_of_passes(m, b):
  key = jax.random.key(3)
  steps = 3 * m // b + 2
  fn = jax.jit(lambda k: clean_batch_indices(key, k, num_clean=m, batch_size=b))
  got = np.stack([np.asarray(fn(np.int32(k))) for k in range(steps)])
  # The reference: passes drawn from fold_in(key, p), concatenated, cut every b items.
  passes = [np.asarray(jax.random.permutation(jax.random.fold_in(key, p), m))
            for p in range(steps * b // m + 2)]
  stream = np.concatenate(passes)
  np.testing.assert_array_equal(got, stream[:steps * b].reshape(steps, b))
  for p in range(steps * b // m):  # every example once per pass
    np.testing.assert_array_equal(np.sort(stream[p * m:(p + 1) * m]), np.arange(m))
  assert not np.array_equal(passes[0], passes[1])  # each pass reshuffled


def test_no_int32_overflow_far_into_training():
  key, m, b = jax.random.key(0), 1000, 100
  late = 2**31 // b + 7  # position·b exceeds int32
  got = np.asarray(clean_batch_indices(key, np.int32(late), num_clean=m, batch_size=b))
  p, o = divmod(late * b, m)
  np.testing.assert_array_equal(
      got, np.asarray(jax.random.permutation(jax.random.fold_in(key, p), m))[o:o + b])


# --- through the trainer: what the steps received --------------------------------------
M, BC, N = 64, 24, 384  # clean examples, clean batch (straddles passes), training set


def _spy(base: interface.Registration) -> interface.Registration:
  """``base`` with a gradient that records each step's clean examples (read from the
  centre pixel, which crops of ≤ 4 pixels keep) and whether any of its pixels changed."""

  def build(record, ctx):
    steps = ctx.spec.steps_per_epoch * ctx.run.epochs

    def init(key):
      return {"ids": jnp.zeros((steps, BC), jnp.int32),
              "changed": jnp.zeros((steps,), jnp.bool_)}

    def gradients(inp):
      _, _, model_state = inp.apply(inp.params, inp.x)
      pixels = jnp.round((inp.clean_x * 0.3 + 0.2) * 255)
      st = inp.method_state
      state = {"ids": st["ids"].at[inp.step].set(pixels[:, 14, 14, 0].astype(jnp.int32)),
               "changed": st["changed"].at[inp.step].set(
                   jnp.any(pixels != pixels[:, 14:15, 14:15]))}
      grads = jax.tree.map(jnp.zeros_like, inp.params)
      return interface.Gradients(jnp.zeros(()), grads, model_state, state)

    return base.build(record, ctx)._replace(gradients=gradients, init_state=init,
                                            epoch_metrics=None)

  return base._replace(build=build)


def _data():
  d = toy_data(N)
  clean = np.broadcast_to(np.arange(M, dtype=np.uint8)[:, None, None, None] + 100,
                          (M, 28, 28, 1)).copy()  # example j: every pixel 100 + j
  return d._replace(clean_images=clean, clean_labels=np.arange(M, dtype=np.int32) % 10)


def _seen(monkeypatch, tmp_path, method, augment=False, cut=None, padding_mode="constant"):
  monkeypatch.setitem(methods.METHODS, method, _spy(methods.METHODS[method]))
  cfg = TOY.replace(method=method, epochs=2, clean_batch_size=BC, augment=augment,
                    padding_mode=padding_mode)
  out, data = str(tmp_path / f"{method}{augment}"), _data()
  if cut is not None:
    with pytest.raises(KeyboardInterrupt):
      train(cfg, out, data=data, progress_bar=CtrlC(cut))
  state = train(cfg, out, data=data, progress_bar=False, resume=cut is not None)["state"]
  return (np.asarray(state.method_state["ids"]) - 100,
          np.asarray(state.method_state["changed"]))


def _passes_ok(seq):
  full = len(seq) // M
  return all(np.array_equal(np.sort(seq[p * M:(p + 1) * M]), np.arange(M))
             for p in range(full))


def test_mlc_reads_passes_that_run_on_across_epochs(monkeypatch, tmp_path):
  ids, changed = _seen(monkeypatch, tmp_path, "mlc")
  seq = ids.reshape(-1)  # 12 steps × 24 = 4.5 passes, the epoch ends mid-pass
  assert _passes_ok(seq) and not changed.any()
  per_epoch = N // TOY.batch_size * BC
  assert not _passes_ok(seq[per_epoch:])  # epoch 2 does not start a pass


def test_mwnet_restarts_its_passes_every_epoch(monkeypatch, tmp_path):
  ids, _ = _seen(monkeypatch, tmp_path, "mwnet")
  per_epoch = N // TOY.batch_size
  epochs = ids.reshape(-1, per_epoch * BC)
  assert all(_passes_ok(e) for e in epochs)
  assert not np.array_equal(epochs[0], epochs[1])


@pytest.mark.parametrize("padding_mode", ["constant", "reflect"])
def test_clean_batches_are_augmented_with_augment(monkeypatch, tmp_path, padding_mode):
  """Each clean image is one grey level: zero padding shows in the shifted crops of
  every batch; mirrored padding (--padding-mode reflect) of such an image is invisible."""
  ids, changed = _seen(monkeypatch, tmp_path, "mlc", augment=True,
                       padding_mode=padding_mode)
  assert _passes_ok(ids.reshape(-1))  # the same passes (the centre pixel survives)
  assert changed.all() if padding_mode == "constant" else not changed.any()


def test_resume_reads_the_same_clean_batches(monkeypatch, tmp_path):
  full = _seen(monkeypatch, tmp_path / "full", "mlc", augment=True)
  resumed = _seen(monkeypatch, tmp_path / "cut", "mlc", augment=True, cut=5)
  for a, b in zip(full, resumed):
    np.testing.assert_array_equal(a, b)
