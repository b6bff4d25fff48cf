"""A method that changes the loss over a sharpness-aware optimizer (``--ascent``):
ρ = 0 is the method alone step for step, ρ > 0 equals the perturbed gradient of the
method's loss recomputed by hand, the phase keeps plain SGD, resume is exact, and the
combinations that are not defined are refused in one line before anything compiles."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnoisy import cli
from jaxnoisy.train import step as step_lib
from jaxnoisy.train.config import TrainConfig
from jaxnoisy.train.methods import METHODS
from jaxnoisy.train.trainer import Trainer, train
from cli_errors import one_line_error
from test_method_contract import BASE, leaves
from test_trainer import CtrlC, toy_with_clean

DATA = toy_with_clean(n=256)


def with_rho(t: Trainer, rho: float) -> Trainer:
  """The trainer's steps at ρ = ``rho`` traced, as a swept value enters them (a record
  refuses ρ = 0 and so does the library's check on a concrete ρ)."""
  t.hyper = step_lib.to_mesh({"rho": np.full(len(t.replicas), rho, np.float32)},
                             t.by_replica)
  return t


def run_epoch(t: Trainer, state, epoch: int = 0):
  """The epoch's phase (if any) and noisy steps; yields the state after each."""
  if t.phase_steps:
    for k in range(t.phase_steps):
      state, _ = t.programs.phase(state, t.train_data, t.step_key, t.hyper, k)
      yield state
    state = t.programs.phase_finish(state, t.train_data, t.hyper)
  for batch in t.batches(epoch, 0, t.steps_per_epoch):
    state, _ = t.step(state, batch, 0.5)
    yield state


# Each method that takes an ascent, each ascent at least once.
PAIRS = [("l2rw", "sam"), ("meta_reweight", "asam"), ("mwnet", "gsam"), ("fbr", "saner"),
         ("mlc", "fsam"), ("mlc", "vasso")]


@pytest.mark.parametrize("method,ascent", PAIRS)
def test_rho_zero_is_the_method_alone_step_for_step(method, ascent):
  """At ρ = 0 the ascent's gradient is ∇loss_fn(w): equal to the method's own gradient
  only if its loss_fn is the loss its step descends (weights or labels held fixed)."""
  config = BASE.replace(method=method, epochs=1, clean_size=64)
  if method == "fbr":
    config = config.replace(clean_epochs=2)
  over = config.replace(ascent=ascent)
  if ascent == "saner":
    over = over.replace(down_weight=0.5)
  alone, combined = Trainer(config, DATA), with_rho(Trainer(over, DATA), 0.0)
  n = 0
  for a, b in zip(run_epoch(alone, alone.initial_state),
                  run_epoch(combined, combined.initial_state)):
    for x, y in zip(leaves((a.params, a.method_state)), leaves((b.params, b.method_state))):
      np.testing.assert_allclose(y, x, rtol=2e-5, atol=2e-7)
    n += 1
  assert n == alone.phase_steps + alone.steps_per_epoch


def capture(monkeypatch, module, name: str, pick):
  """Records ``pick(args, kwargs, result)`` of every call of ``module.name`` inside the
  jitted step (a host callback): the step's own batches and weights or labels, however
  the trainer draws them."""
  seen, original = [], getattr(module, name)

  def wrapped(*args, **kwargs):
    result = original(*args, **kwargs)
    jax.debug.callback(lambda *v: seen.append([np.asarray(a) for a in v]),
                       *pick(args, kwargs, result))
    return result

  monkeypatch.setattr(module, name, wrapped)
  return seen


def _first_step(t: Trainer):
  """Parameters and method state of replica 0 before and after the first noisy step."""
  before = step_lib.replica(step_lib.to_host(t.initial_state), 0)  # the step donates it
  after, _ = t.step(t.initial_state, next(t.batches(0, 0, 1)), 0.5)
  jax.effects_barrier()
  return before, step_lib.replica(step_lib.to_host(after), 0)


def _sgd(w, d, lr, wd):
  """The trainer's first SGD step after the method's transform: momentum buffer 0."""
  return jax.tree.map(lambda p, g: p - lr * (g + wd * p), w, d)


def _sam_direction(loss, w, rho):
  """g and g_SAM = ∇L(w + ρ g/‖g‖), from jax.grad of the hand-written loss."""
  g = jax.grad(loss)(w)
  norm = np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2) for x in jax.tree.leaves(g)))
  eps = jax.tree.map(lambda x: rho * x / (norm + 1e-12), g)
  return g, jax.grad(loss)(jax.tree.map(jnp.add, w, eps))


def test_meta_reweight_over_sam_is_the_perturbed_weighted_loss(monkeypatch):
  """One combined step: ∇ of (1/B) Σ w_i CE_i at w + ρ g/‖g‖, w the step's weights."""
  from jaxnoisy.meta import reweight
  seen = capture(monkeypatch, reweight, "meta_reweight_step",
                 lambda args, kw, res: (*args[3], res.weights))  # (x, y), weights
  rho = 0.1
  t = Trainer(BASE.replace(method="meta_reweight", clean_size=64, ascent="sam", rho=rho),
              DATA)
  before, after = _first_step(t)
  (x, y, w), = seen
  assert 0 < w.mean() < 1  # the reweighting is not trivial

  def loss(p):  # written from the equation, not the method's code
    logits = t.apply(p, before.model_state, x, train=True)[0]
    ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1)[:, 0]
    return jnp.mean(w * ce)

  _, g_sam = _sam_direction(loss, before.params, rho)
  expected = _sgd(before.params, g_sam, t.config.learning_rate, t.config.weight_decay)
  for a, b in zip(leaves(after.params), leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-7)


def test_mlc_over_saner_is_the_perturbed_corrected_label_loss(monkeypatch):
  """One combined step: SANER's group-B down-weighting of ∇ℓ at w + ρ g/‖g‖, ℓ the soft
  cross-entropy against the LCN's labels of this step mixed size-weighted with the
  clean half's CE (MLC's hmlc_K_mix)."""
  from jaxnoisy.meta import correction
  seen = capture(monkeypatch, correction, "mlc_step",
                 lambda args, kw, res: (*args[4], *kw["clean_train_batch"], res.corrected))
  rho, a = 0.1, 0.5
  t = Trainer(BASE.replace(method="mlc", clean_size=64, ascent="saner", rho=rho,
                           down_weight=a, warmup_fraction=0.0), DATA)
  before, after = _first_step(t)
  (x, y, xc, yc, labels), = seen
  assert len(yc) == t.config.clean_batch_size // 2

  def loss(p):
    log_p = jax.nn.log_softmax(t.apply(p, before.model_state, x, train=True)[0])
    noisy = jnp.mean(-jnp.sum(labels * log_p, axis=1))
    log_c = jax.nn.log_softmax(t.apply(p, before.model_state, xc, train=True)[0])
    clean = jnp.mean(-jnp.take_along_axis(log_c, yc[:, None], 1)[:, 0])
    return (len(y) * noisy + len(yc) * clean) / (len(y) + len(yc))

  g, g_sam = _sam_direction(loss, before.params, rho)
  # SANER (a = 0.5 from the first step): group B = same sign as g, smaller magnitude.
  group_b = lambda s, r: (np.asarray(s) * np.asarray(r) > 0) & (np.abs(s) < np.abs(r))
  assert any(np.any(group_b(s, r)) for s, r in zip(leaves(g_sam), leaves(g)))
  d = jax.tree.map(lambda s, r: np.where(group_b(s, r), a * s, s), g_sam, g)
  expected = _sgd(before.params, d, t.config.learning_rate, t.config.weight_decay)
  for u, v in zip(leaves(after.params), leaves(expected)):
    np.testing.assert_allclose(u, v, rtol=2e-5, atol=2e-7)


def test_fbr_phase_keeps_plain_sgd_and_the_ascent_state():
  """FBR's clean passes are the same steps with or without the ascent, and SANER's
  count (its warm-up) does not advance in them; the noisy step then applies it."""
  config = BASE.replace(method="fbr", clean_size=64, clean_epochs=2)
  alone, combined = Trainer(config, DATA), Trainer(config.replace(ascent="saner"), DATA)
  a, _ = alone.run_phase(alone.initial_state)
  b, _ = combined.run_phase(combined.initial_state)
  for x, y in zip(leaves((a.params, a.method_state)), leaves((b.params, b.method_state))):
    np.testing.assert_array_equal(x, y)
  count = lambda s: int(np.asarray(optax.tree_utils.tree_get(s.opt_state, "count"))[0])
  assert count(b) == 0
  b, metrics = combined.step(b, next(combined.batches(0, 0, 1)), 0.5)
  assert count(b) == 1 and "saner_group_B" in metrics


def test_resume_with_an_ascent_is_exact(tmp_path):
  """FBR over SANER: Ctrl-C inside epoch 1 and --resume reach the uninterrupted run."""
  config = BASE.replace(method="fbr", clean_size=64, clean_epochs=2, ascent="saner")
  full = train(config, str(tmp_path / "full"), data=DATA, progress_bar=False)
  t = Trainer(config, DATA)
  with pytest.raises(KeyboardInterrupt):
    train(config, str(tmp_path / "cut"), data=DATA,
          progress_bar=CtrlC(2 * t.phase_steps + t.steps_per_epoch + 1))
  resumed = train(config, str(tmp_path / "cut"), data=DATA, progress_bar=False, resume=True)
  for a, b in zip(leaves(full["state"]), leaves(resumed["state"])):
    np.testing.assert_array_equal(a, b)
  assert resumed["summary"]["config"]["hparams"]["ascent"]["name"] == "saner"


@pytest.mark.parametrize("method,needle", [
    ("ebomlc", "not the gradient of one loss"), ("bome_mlc", "not the gradient of one loss"),
    ("sgd", "that ascent's method"), ("saner", "sharpness-aware optimizer itself")])
def test_undefined_combinations_are_refused_in_one_line(tmp_path, capsys, method, needle):
  with pytest.raises(ValueError, match=f"^ascent must be none for method '{method}'") as e:
    TrainConfig(method=method).replace(ascent="sam")
  assert needle in str(e.value) and len(str(e.value).splitlines()) == 1
  assert TrainConfig(method=method).replace(ascent="none") == TrainConfig(method=method)
  # The CLI: before JAX compiles anything.
  assert needle in one_line_error(tmp_path, capsys, ["--method", method, "--ascent", "sam"])
  assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("argv,needle", [
    (["--method", "mlc", "--ascent", "adam"], "--ascent"),
    (["--method", "fbr", "--ascent", "sam", "--rho", "0"], "--rho must be"),
    (["--method", "l2rw", "--rho", "0.1"], "--rho is not a hyper-parameter of L2RWHparams"),
    (["--method", "mlc", "--ascent", "sam", "--per-device-ascent"],
     "--per-device-ascent applies to the SAM-family methods"),
])
def test_bad_ascent_flags_give_one_line_error(tmp_path, capsys, argv, needle):
  assert needle in one_line_error(tmp_path, capsys, argv)


def test_every_method_that_changes_the_loss_takes_an_ascent():
  """The ascent's flags and defaults are the SAM-family records': one source."""
  takes = sorted(m for m, r in METHODS.items() if not r.no_ascent)
  assert takes == ["fbr", "l2rw", "meta_reweight", "mlc", "mwnet"]
  for m in takes:
    c = TrainConfig(method=m).replace(ascent="saner")
    assert c.hparams.ascent == TrainConfig(method="saner").hparams
    assert TrainConfig(method=m).replace(ascent="gsam", rho=0.2).hparams.ascent == \
        TrainConfig(method="gsam", hparams=None).replace(rho=0.2).hparams


def test_flags_reach_the_ascents_nested_records():
  """--ascent, then SANER's --base, then their fields, whatever the flags' order; a name
  the method's record has itself (FBR's warmup_fraction) stays the method's."""
  args = cli.build_parser().parse_args(
      ["train", "--out", "x", "--method", "fbr", "--alpha", "0.3", "--base", "gsam",
       "--ascent", "saner", "--rho", "0.2", "--warmup-fraction", "0.1"])
  record = cli.config_from_args(args).hparams
  assert record.ascent == TrainConfig(method="saner").replace(
      base="gsam", rho=0.2, alpha=0.3).hparams
  assert record.warmup_fraction == 0.1 and record.ascent.warmup_fraction == 0.25


def test_corrected_labels_loss_is_mlcs_lower_loss_with_the_labels_held():
  """At the step's w its value and gradient are mlc_step's ℓ and ∇_wℓ; elsewhere it is
  the hand-written soft cross-entropy against the same labels (plus the clean half)."""
  from jaxnoisy import meta
  kx, kc, kw = jax.random.split(jax.random.key(1), 3)
  x, y = jax.random.normal(kx, (12, 5)), jnp.arange(12) % 3
  xc, yc = jax.random.normal(kc, (6, 5)), jnp.arange(6) % 3
  w = {"w": jax.random.normal(kw, (5, 3)), "b": jnp.zeros(3)}
  logits_fn = lambda p, x: (x @ p["w"] + p["b"], x)
  lcn_apply, lcn = meta.lcn_init(3, 5)
  res = meta.mlc_step(logits_fn, w, lcn_apply, lcn, (x, y), (xc[:3], yc[:3]), inner_lr=0.1,
                      clean_train_batch=(xc[3:], yc[3:]))
  loss = lambda p: meta.corrected_labels_loss(logits_fn, p, res.corrected, (x, y),
                                              (xc[3:], yc[3:]))[0]
  np.testing.assert_allclose(loss(w), res.loss, rtol=1e-6)
  for a, b in zip(leaves(jax.grad(loss)(w)), leaves(res.grads_w)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  v = jax.tree.map(lambda p: p + 0.3, w)
  labels = np.asarray(res.corrected, np.float64)
  log_softmax = lambda z: z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) \
      - z.max(1, keepdims=True)
  z = np.asarray(x, np.float64) @ np.asarray(v["w"], np.float64) + np.asarray(v["b"])
  zc = np.asarray(xc[3:], np.float64) @ np.asarray(v["w"], np.float64) + np.asarray(v["b"])
  noisy = -(labels * log_softmax(z)).sum(1).mean()
  clean = -log_softmax(zc)[np.arange(3), np.asarray(yc[3:])].mean()
  np.testing.assert_allclose(loss(v), (12 * noisy + 3 * clean) / 15, rtol=1e-5)
