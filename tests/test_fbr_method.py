"""The trainer's FBR: its noisy step against NumPy, its schedule, its per-epoch phase
(clean passes, then eval-mode features) and an exact resume from inside that phase."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnoisy.train.config import TrainConfig
from jaxnoisy.train.interface import ModelSpec, StepInputs
from jaxnoisy.train.methods import METHODS, build
from jaxnoisy.train.preemption import Stopped
from jaxnoisy.train.reweight_methods import FBRHparams, fbr_schedule
from jaxnoisy.train.step import to_host
from jaxnoisy.train.trainer import Trainer, train
from test_fbr import np_persistent, np_scores, np_weights
from test_long_runs import At, assert_same_run, sigterm
from test_trainer import TOY, toy_with_clean

RNG = np.random.default_rng(0)
X = RNG.normal(size=(8, 4)).astype(np.float32)
Y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
PHI_V = RNG.normal(size=(12, 5)).astype(np.float32)
Y_V = np.arange(12) % 3
PARAMS = {"w1": jnp.asarray(RNG.normal(size=(4, 5)), jnp.float32),
          "w2": jnp.asarray(RNG.normal(size=(5, 3)), jnp.float32)}


def apply(p, x):
  h = jnp.tanh(x @ p["w1"])
  return h @ p["w2"], h, {}


def run_step(config, step, stored):
  spec = ModelSpec(num_train=8, num_classes=3, feature_dim=5, steps_per_epoch=1,
                   num_clean=12)
  state = {"weights": jnp.asarray(stored, jnp.float32), "clean_features": jnp.asarray(PHI_V),
           "clean_labels": jnp.asarray(Y_V, jnp.int32), "alpha0": jnp.float32(0)}
  out = build(config, spec).gradients(StepInputs(
      apply=apply, params=PARAMS, method_state=state, x=jnp.asarray(X), y=jnp.asarray(Y),
      index=jnp.arange(8), clean_x=X[:0], clean_y=Y[:0], key=jax.random.key(0),
      step=jnp.int32(step), learning_rate=jnp.float32(0.1),
      apply_eval=lambda p, x: apply(p, x)[:2], momentum_buffer=None))
  return out


def np_ce_grad(w):
  """∇ (1/B) Σ w_i CE_i of the two-layer model, by central finite differences."""
  def loss(p):
    h = np.tanh(X.astype(np.float64) @ p["w1"])
    z = h @ p["w2"]
    z = z - z.max(1, keepdims=True)
    ce = -(z[np.arange(8), Y] - np.log(np.exp(z).sum(1)))
    return np.mean(w * ce)
  p = {k: np.asarray(v, np.float64) for k, v in PARAMS.items()}
  grads = {}
  for k in p:
    g = np.zeros_like(p[k])
    for idx in np.ndindex(p[k].shape):
      a, b = {**p, k: p[k].copy()}, {**p, k: p[k].copy()}
      a[k][idx] += 1e-6
      b[k][idx] -= 1e-6
      g[idx] = (loss(a) - loss(b)) / 2e-6
    grads[k] = g
  return grads


@pytest.mark.parametrize("epoch,recompute", [(12, True), (50, True), (12, False)])
def test_noisy_step_weights_and_gradient_equal_numpy(epoch, recompute):
  """After the warm-up: d from the eval-mode features (α₀ = 1/(C−1) before 40/150 of
  training, 0 after), w by the recomputed or persistent rule, the step on mean(w·CE)."""
  config = TrainConfig(method="fbr", epochs=150, hparams=FBRHparams(recompute=recompute))
  stored = np.full(8, 0.5, np.float32)
  out = run_step(config, epoch, stored)
  phi = np.tanh(X.astype(np.float64) @ np.asarray(PARAMS["w1"], np.float64))
  alpha0 = 0.5 if epoch < 40 else 0.0
  d = np_scores(phi, Y, PHI_V.astype(np.float64), Y_V, 3, alpha0)
  w = np_weights(d) if recompute else np_persistent(stored, d, 0.01)
  np.testing.assert_allclose(out.method_state["weights"], w, atol=1e-5)
  assert float(out.method_state["alpha0"]) == pytest.approx(alpha0)
  ref = np_ce_grad(w)
  for k in ref:
    np.testing.assert_allclose(out.grads[k], ref[k], atol=1e-4)


def test_warmup_and_off_epochs_use_the_stored_weights():
  """Epochs 0–10 of 150 (the code's epoch > 10) train on the stored weights 1/2; with
  reweight_every = 5 an epoch not divisible by 5 reuses the stored weights too."""
  stored = np.linspace(0, 1, 8).astype(np.float32)
  for config, epoch in [(TrainConfig(method="fbr", epochs=150), 10),
                        (TrainConfig(method="fbr", epochs=150,
                                     hparams=FBRHparams(reweight_every=5)), 13)]:
    out = run_step(config, epoch, stored)
    np.testing.assert_array_equal(out.method_state["weights"], stored)
  assert [bool(fbr_schedule(FBRHparams(), 150, e)[0]) for e in (10, 11)] == [False, True]


def test_fbr_trains_logs_and_runs_its_phase(tmp_path):
  cfg = TOY.replace(method="fbr", epochs=2, clean_epochs=2, warmup_fraction=0.5,
                    alpha_fraction=0.5)
  data = toy_with_clean()
  result = train(cfg, str(tmp_path / "run"), data=data, progress_bar=False)
  rows = result["metrics"]
  for key in ("weight_auc", "weight_precision", "weight_recall", "mean_weight_clean",
              "mean_weight_noisy", "zero_weight_share", "alpha0", "phase_train_loss"):
    assert np.isfinite(rows[1][key]), key
  assert rows[0]["zero_weight_share"] == 0 and rows[0]["mean_weight_clean"] == 0.5
  assert rows[1]["alpha0"] == 0.0
  # The finish stored the clean subset's eval-mode features at the last epoch's start.
  state = result["state"]
  assert np.asarray(state.method_state["clean_labels"]).tolist() == \
      data.clean_labels.tolist()
  assert np.abs(np.asarray(state.method_state["clean_features"])).sum() > 0


def test_phase_steps_do_not_advance_the_learning_rate_schedule():
  """Cosine over the 12 noisy steps; epoch 0's phase takes 20 clean steps (more than
  the whole schedule). The first noisy step must still use lr(0): with SGD's momentum
  the update is −lr(0)·trace after the step (the old optimizer-owned schedule counted
  the phase steps too and had decayed to 0 here)."""
  cfg = TOY.replace(method="fbr", epochs=2, clean_epochs=20, schedule="cosine",
                    weight_decay=0.0)
  trainer = Trainer(cfg, toy_with_clean())
  assert trainer.phase_steps == 20 > trainer.total_steps == 12
  state, _ = trainer.run_phase(trainer.initial_state)
  before = [np.asarray(x, np.float64) for x in jax.tree.leaves(to_host(state.params))]
  state, _ = trainer.step(state, next(trainer.batches(0, 0, 1)), 0.5)
  after = [np.asarray(x, np.float64) for x in jax.tree.leaves(to_host(state.params))]
  trace = [np.asarray(x, np.float64) for x in jax.tree.leaves(
      optax.tree_utils.tree_get(to_host(state.opt_state), "trace"))]
  assert max(np.abs(a - b).max() for a, b in zip(after, before)) > 0
  for a, b, t in zip(after, before, trace):  # float32 params round a − b to their ulp
    expected = -cfg.learning_rate * t
    assert np.all(np.abs(a - b - expected) <= 1e-5 * np.abs(expected) + 2**-23 * np.abs(a))


def test_resume_inside_the_phase_is_bit_identical(tmp_path):
  """SIGTERM in epoch 1's clean passes; the state records the phase step reached, and
  the resumed run's metrics (the phase's loss included) are the uninterrupted ones."""
  cfg = TOY.replace(method="fbr", epochs=2, clean_epochs=2, warmup_fraction=0.0)
  data = toy_with_clean()
  full = train(cfg, str(tmp_path / "full"), data=data, progress_bar=False)
  # Epoch 0: 2 passes × 1 batch (64 clean, batch 64) + 6 noisy steps; then 1 phase step.
  with pytest.raises(Stopped) as stopped:
    train(cfg, str(tmp_path / "cut"), data=data, progress_bar=At(9, sigterm))
  assert stopped.value.checkpoint == 9  # saved inside the phase
  resumed = train(cfg, str(tmp_path / "cut"), data=data, progress_bar=False, resume=True)
  assert_same_run(full, resumed)
  np.testing.assert_array_equal(full["state"].method_state["weights"],
                                resumed["state"].method_state["weights"])


def test_a_class_missing_from_the_clean_subset_is_one_line(tmp_path):
  data = toy_with_clean()
  keep = data.clean_labels != 3
  data = data._replace(clean_images=data.clean_images[keep], clean_labels=data.clean_labels[keep])
  with pytest.raises(ValueError, match="3"):
    train(TOY.replace(method="fbr", epochs=1), str(tmp_path / "x"), data=data, progress_bar=False)


def test_clean_passes_batch_as_the_authors_loader(monkeypatch, tmp_path):
  """``pass_batch_size`` 16 over 40 clean examples: every pass is a fresh
  permutation cut into 16 + 16 + 8 (the code's ``DataLoader(batch_size=128,
  shuffle=True, drop_last=False)``, recomputed here), and the two batch shapes are two
  programs compiled once each over two epochs."""
  m, b, passes, epochs = 40, 16, 2, 2
  base = METHODS["fbr"]

  rows = passes * 3 * epochs

  def spy(record, ctx):
    method = base.build(record, ctx)

    def gradients(inp):
      out = method.phase.gradients(inp)
      st = out.method_state
      row = jnp.full((b,), -1, jnp.int32).at[:inp.index.shape[0]].set(inp.index)
      return out._replace(method_state={**st, "seen": st["seen"].at[st["n"]].set(row),
                                        "n": st["n"] + 1})

    init = lambda key: {**method.init_state(key), "n": jnp.int32(0),
                        "seen": jnp.full((rows, b), -1, jnp.int32)}
    return method._replace(init_state=init,
                           phase=method.phase._replace(gradients=gradients))

  monkeypatch.setitem(METHODS, "fbr", base._replace(build=spy))
  data = toy_with_clean(clean=m)
  cfg = TOY.replace(method="fbr", epochs=epochs, clean_epochs=passes, pass_batch_size=b)
  trainer = Trainer(cfg, data)
  assert trainer.phase_steps == passes * 3
  state = train(cfg, str(tmp_path / "run"), data=data, progress_bar=False)["state"]
  seen = np.asarray(state.method_state["seen"]).reshape(-1, 3, b)
  for batches in seen:  # one pass: 16, 16, then the 8 left
    assert [int((r >= 0).sum()) for r in batches] == [16, 16, 8]
    order = np.concatenate([r[r >= 0] for r in batches])
    np.testing.assert_array_equal(np.sort(order), np.arange(m))
  assert len({tuple(p.reshape(-1)) for p in seen}) == len(seen)  # reshuffled each pass


def test_clean_passes_compile_two_programs_once():
  cfg = TOY.replace(method="fbr", epochs=2, clean_epochs=2, pass_batch_size=24)
  trainer = Trainer(cfg, toy_with_clean(clean=64))  # 24 + 24 + 16
  state = trainer.initial_state
  for epoch in range(2):
    state, _ = trainer.run_phase(state)
    state = state._replace(step=state.step + trainer.steps_per_epoch,
                           phase_step=state.phase_step * 0)
  cells = trainer.programs.phase.__closure__
  programs = {id(c.cell_contents): c.cell_contents for c in cells
              if hasattr(c.cell_contents, "_cache_size")}
  assert len(programs) == 2
  assert all(p._cache_size() == 1 for p in programs.values())
