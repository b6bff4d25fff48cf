"""The contract every registered method meets, so that a new method inherits its tests:
it initialises, takes a step that moves the parameters and keeps the state's structure,
resumes bit for bit from a Ctrl-C, logs its metrics, refuses bad hyper-parameters before
anything compiles, and its defaults are the library functions'. A toy method registered
from this file trains with nothing else touched."""

import dataclasses
import inspect
import math

import jax
import numpy as np
import optax
import pytest

import jaxnoisy
from jaxnoisy.meta import correction
from jaxnoisy.train import correction_methods, sam_methods
from jaxnoisy.train import hparams as hparams_lib
from jaxnoisy.train.config import TrainConfig
from jaxnoisy.train.hparams import hp
from jaxnoisy.train.interface import Method, Registration, plain_gradients
from jaxnoisy.train.methods import METHODS, register
from jaxnoisy.train.trainer import EVAL_SETS, Trainer, train
from test_trainer import CtrlC, toy_data, toy_with_clean

# Small enough for every method in the CI budget: an MLP, 4 noisy steps per epoch.
BASE = TrainConfig(model="mlp", epochs=2, batch_size=64, learning_rate=0.05,
                   heldout_size=0, num_devices=1, eval_batch_size=256, tensorboard=False,
                   clean_batch_size=32)


def config_of(method: str) -> TrainConfig:
  return BASE.replace(method=method)


def data_of(method: str):
  return toy_with_clean(n=256) if METHODS[method].needs_clean else toy_data(n=256)


def leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def structure(tree):
  return jax.tree.map(lambda x: (x.shape, x.dtype), tree)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_init_and_one_step(method):
  """The state is the same pytree (shapes, dtypes) before and after a step (the phase
  first, for a method that has one); the step moves the parameters; its loss is finite."""
  t = Trainer(config_of(method), data_of(method))
  state = t.initial_state
  again = Trainer(config_of(method), data_of(method)).initial_state
  for a, b in zip(leaves(state), leaves(again)):  # the initial state is reproducible
    np.testing.assert_array_equal(a, b)
  if t.phase_steps:
    state, _ = t.run_phase(state)
  before = leaves(state.params)
  state, metrics = t.step(state, next(t.batches(0, 0, 1)), 0.5,
                          warmup=t.warmup_epochs > 0)
  assert structure(state) == structure(t.initial_state)
  assert any(not np.array_equal(a, b) for a, b in zip(before, leaves(state.params)))
  assert np.isfinite(np.asarray(metrics["train_loss"])).all()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_resume_and_metrics(tmp_path, method):
  """Ctrl-C in epoch 1 and ``resume=True`` reach the uninterrupted run's parameters,
  method state and metrics; every epoch logs the evaluation, the step's metrics and
  the method's own epoch metrics as plain floats."""
  config, data = config_of(method), data_of(method)
  full = train(config, str(tmp_path / "full"), data=data, progress_bar=False)
  t = Trainer(config, data)
  cut_at = t.phase_steps + t.steps_per_epoch + 1  # the second noisy step of epoch 1
  with pytest.raises(KeyboardInterrupt):
    train(config, str(tmp_path / "cut"), data=data, progress_bar=CtrlC(cut_at))
  resumed = train(config, str(tmp_path / "cut"), data=data, progress_bar=False, resume=True)
  for a, b in zip(leaves(full["state"]), leaves(resumed["state"])):
    np.testing.assert_array_equal(a, b)
  rows = full["metrics"]
  assert [r["epoch"] for r in rows] == [0, 1] == [r["epoch"] for r in resumed["metrics"]]
  own = t.method.epoch_metrics(jax.tree.map(lambda v: v[0], t.initial_state.method_state),
                               data) if t.method.epoch_metrics else {}
  # Epoch 1's step means cover the steps after the resume only; the rest is the same.
  same = lambda r: {k: v for k, v in r.items() if k in {*EVAL_SETS, *own}}
  np.testing.assert_equal([same(r) for r in resumed["metrics"]], [same(r) for r in rows])
  for row in rows:
    assert {"train_loss", "test_accuracy", "memorization", *own} <= set(row)
    assert all(isinstance(v, (int, float)) for v in row.values())
    assert math.isfinite(row["train_loss"]) and 0 <= row["test_accuracy"] <= 1


def bad_values(field: dataclasses.Field) -> list:
  """Values the declaration forbids: a string outside its choices, numbers outside its
  interval, a fraction for an integer."""
  m = field.metadata
  if m["choices"] is not None:
    return ["no-such-choice"]
  if isinstance(field.default, bool) or not isinstance(field.default, (int, float)):
    return []
  out = []
  if m["low"] > -math.inf:
    out.append(m["low"] if m["low_open"] else m["low"] - 1)
  if m["high"] < math.inf:
    out.append(m["high"] if m["high_open"] else m["high"] + 1)
  if isinstance(field.default, int):
    out.append(field.default + 0.5)
  return out


BAD = [(method, f.name, v) for method in sorted(METHODS)
       for f in hparams_lib.declarations(METHODS[method].hparams) for v in bad_values(f)]


def holding(method: str, name: str) -> TrainConfig:
  """The method's default config, with the nested record that holds ``name`` chosen
  (e.g. SANER over GSAM for GSAM's α)."""
  config = TrainConfig(method=method)
  if name in hparams_lib.names(config.hparams):
    return config
  return next(config.replace(**{f.name: kind}) for f in dataclasses.fields(config.hparams)
              for kind, cls in (f.metadata["records"] or {}).items()
              if name in {g.name for g in dataclasses.fields(cls)})


@pytest.mark.parametrize("method,name,value", BAD)
def test_bad_hyper_parameters_are_one_line_before_compiling(method, name, value):
  with pytest.raises(ValueError, match=f"^{name} must be") as err:
    holding(method, name).replace(**{name: value}).validate()
  assert len(str(err.value).splitlines()) == 1


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_record_of_another_method_or_an_unknown_name_is_refused(method):
  other = next(r.hparams for m, r in METHODS.items() if r.hparams is not
               METHODS[method].hparams)
  with pytest.raises(ValueError, match="^hparams must be a"):
    TrainConfig(method=method, hparams=other()).validate()
  with pytest.raises(ValueError, match="^no_such is not a hyper-parameter"):
    TrainConfig(method=method).replace(no_such=1.0)


# Every default with a library counterpart: (record, field) -> (function, parameter).
LIBRARY_DEFAULTS = {
    (sam_methods.SAMHparams, "rho"): (jaxnoisy.sam, "rho"),
    (sam_methods.ASAMHparams, "rho"): (jaxnoisy.asam, "rho"),
    (sam_methods.ASAMHparams, "eta"): (jaxnoisy.asam, "eta"),
    (sam_methods.GSAMHparams, "rho"): (jaxnoisy.gsam, "rho"),
    (sam_methods.GSAMHparams, "alpha"): (jaxnoisy.gsam, "alpha"),
    (sam_methods.FSAMHparams, "rho"): (jaxnoisy.fsam, "rho"),
    (sam_methods.FSAMHparams, "sigma"): (jaxnoisy.fsam, "sigma"),
    (sam_methods.FSAMHparams, "lmbda"): (jaxnoisy.fsam, "lmbda"),
    (sam_methods.VaSSOHparams, "rho"): (jaxnoisy.vasso, "rho"),
    (sam_methods.VaSSOHparams, "theta"): (jaxnoisy.vasso, "theta"),
    (sam_methods.SANERHparams, "down_weight"): (jaxnoisy.saner, "down_weight"),
    (sam_methods.NCSAMHparams, "rho"): (jaxnoisy.ncsam, "rho"),
    (sam_methods.NCSAMHparams, "kappa"): (jaxnoisy.ncsam, "kappa"),
    (correction_methods.BOMEMLCHparams, "inner_steps"): (correction.bome_mlc_step,
                                                         "inner_steps"),
    (correction_methods.BOMEMLCHparams, "u"): (correction.bome_mlc_step, "u"),
    (correction_methods.EBOMLCHparams, "mixture_rho"): (correction.ebomlc_step, "rho"),
    (correction_methods.EBOMLCHparams, "xi"): (correction.ebomlc_step, "xi"),
    (correction_methods.EBOMLCHparams, "delta"): (correction.ebomlc_step, "delta"),
    (correction_methods.EBOMLCHparams, "sign"): (correction.ebomlc_step, "sign"),
    (correction_methods.EBOMLCHparams, "mixture"): (correction.ebomlc_step, "mixture"),
    (correction_methods.EBOMLCHparams, "delta_update"): (correction.ebomlc_step,
                                                         "delta_update"),
}


@pytest.mark.parametrize("key", list(LIBRARY_DEFAULTS), ids=lambda k: f"{k[0].__name__}.{k[1]}")
def test_record_defaults_are_the_library_functions(key):
  """One source for every default: the CLI's and the library's agree."""
  record, name = key
  fn, param = LIBRARY_DEFAULTS[key]
  default = inspect.signature(fn).parameters[param].default
  assert getattr(record(), name) == default, (record.__name__, name, default)


def test_saners_default_base_has_the_library_saners_radius():
  from jaxnoisy.saner import SANER_RHO
  assert sam_methods.SANERHparams().base == sam_methods.SAMHparams(rho=SANER_RHO)


@dataclasses.dataclass(frozen=True)
class ToyHparams:
  """A toy method: SGD on the gradient times a factor"""

  factor: float = hp(1.0, "multiplies the gradient", low=0.0, low_open=True,
                     sweepable=True)


def build_toy(r: ToyHparams, ctx) -> Method:
  return Method(optax.scale(r.factor), plain_gradients)


@pytest.fixture
def toy_method():
  register("toy", Registration(ToyHparams, build_toy, "a toy: SGD on factor × gradient"))
  try:
    yield
  finally:
    del METHODS["toy"]


def test_a_registered_toy_method_trains_with_nothing_else_touched(tmp_path, toy_method):
  """Its record is the config's, its flag the CLI's, its values sweepable; at factor 1
  it is SGD exactly, at 0.5 (no weight decay) SGD at half the learning rate."""
  from jaxnoisy import cli
  args = cli.build_parser().parse_args(["train", "--method", "toy", "--factor", "0.5",
                                        "--out", "x"])
  config = cli.config_from_args(args)
  assert config.hparams == ToyHparams(factor=0.5) and "factor" in config.sweepable()
  data, plain = toy_data(n=256), BASE.replace(weight_decay=0.0)
  runs = {name: train(c, str(tmp_path / name), data=data, progress_bar=False)
          for name, c in [("toy", plain.replace(method="toy")),
                          ("sgd", plain.replace(method="sgd")),
                          ("half", plain.replace(method="toy", factor=0.5)),
                          ("slow", plain.replace(method="sgd", learning_rate=0.025))]}
  params = {name: leaves(r["state"].params) for name, r in runs.items()}
  for a, b in zip(params["toy"], params["sgd"]):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(params["half"], params["slow"]):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert runs["half"]["summary"]["config"]["hparams"] == {"factor": 0.5}


def test_a_record_sharing_a_run_field_name_is_refused():
  @dataclasses.dataclass(frozen=True)
  class Clash:
    momentum: float = hp(0.5, "clashes with the run's momentum")

  with pytest.raises(ValueError, match=r"\['momentum'\] are run fields"):
    register("clash", Registration(Clash, build_toy, "clash"))
  assert "clash" not in METHODS
