"""Many seeds and a hyper-parameter sweep in one jitted step (vmap over replicas)."""

import json
import os

import jax
import numpy as np
import pytest

from jaxnoisy import cli
from jaxnoisy.train.config import TrainConfig
from jaxnoisy.train.methods import METHODS
from jaxnoisy.train.sam_methods import SAMHparams
from jaxnoisy.train.trainer import train
from test_trainer import toy_data

CFG = TrainConfig(method="sam", epochs=1, batch_size=64, learning_rate=0.02,
                  hparams=SAMHparams(rho=0.05), heldout_size=0, eval_batch_size=256)


def leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(state.params)]


def assert_same_run(replica, single):
  """A replica reaches the single run's parameters and metrics (float32 rounding: the
  replicas' convolutions are batched, so the summation order may differ)."""
  for a, b in zip(leaves(replica["state"]), leaves(single["state"])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6)
  for ra, rb in zip(replica["metrics"], single["metrics"]):
    assert abs(ra["train_loss"] - rb["train_loss"]) < 1e-5
    assert abs(ra["test_accuracy"] - rb["test_accuracy"]) <= 1 / 256


@pytest.mark.parametrize("num_devices", [1, 2])
def test_each_seed_replica_is_the_single_run_of_its_seed(tmp_path, num_devices):
  cfg = CFG.replace(seed=3, seeds=2, num_devices=num_devices)
  data = [toy_data(seed=0), toy_data(seed=1)]  # each seed its own noise and data
  both = train(cfg, str(tmp_path / "both"), data=data, progress_bar=False)
  assert [r["label"] for r in both["replicas"]] == ["seed3", "seed4"]
  for k, rep in enumerate(both["replicas"]):
    one = train(cfg.replace(seed=3 + k, seeds=1, num_devices=1), str(tmp_path / f"one{k}"),
                data=data[k], progress_bar=False)
    assert_same_run(rep, one)
  # The two replicas are different runs.
  assert not np.allclose(leaves(both["replicas"][0]["state"])[0],
                         leaves(both["replicas"][1]["state"])[0])


def test_sweep_replica_equals_the_single_run_with_that_value(tmp_path):
  cfg = CFG.replace(method="saner", rho=0.05, sweep=("rho", (0.02, 0.2)), num_devices=2)
  data = toy_data()
  swept = train(cfg, str(tmp_path / "sweep"), data=[data, data], progress_bar=False)
  assert [r["label"] for r in swept["replicas"]] == ["rho0.02_seed0", "rho0.2_seed0"]
  for rep, rho in zip(swept["replicas"], (0.02, 0.2)):
    one = train(CFG.replace(method="saner", rho=rho, num_devices=1),
                str(tmp_path / f"rho{rho}"), data=data, progress_bar=False)
    assert_same_run(rep, one)


def test_vmapped_and_looped_replicas_agree(tmp_path):
  """Three replicas on one device group: the vmapped step (accelerators' default) and
  the loop (CPU's default) are the same computation."""
  cfg = CFG.replace(method="sam", seeds=3, num_devices=2)
  data = [toy_data(seed=s) for s in range(3)]
  runs = [train(cfg.replace(vmap_replicas=v), str(tmp_path / str(v)), data=data,
                progress_bar=False) for v in (True, False)]
  for a, b in zip(*(r["replicas"] for r in runs)):
    for x, y in zip(leaves(a["state"]), leaves(b["state"])):
      np.testing.assert_allclose(x, y, rtol=1e-4, atol=2e-6)


def test_summary_reports_mean_and_std_over_the_seeds(tmp_path, capsys):
  out = tmp_path / "run"
  cfg = CFG.replace(method="sgd", seeds=3, num_devices=2)
  result = train(cfg, str(out), data=[toy_data(seed=s) for s in range(3)], progress_bar=False)
  with open(out / "summary.json") as f:
    summary = json.load(f)
  per_seed = []
  for label in ("seed0", "seed1", "seed2"):  # each replica writes a single run's files
    with open(out / label / "summary.json") as f:
      per_seed.append(json.load(f))
    assert os.path.exists(out / label / "metrics.jsonl")
  acc = np.array([s["test_accuracy"] for s in per_seed])
  assert summary["test_accuracy"]["mean"] == pytest.approx(acc.mean())
  assert summary["test_accuracy"]["std"] == pytest.approx(acc.std(ddof=1))
  assert summary["test_accuracy"]["n"] == 3
  assert result["summary"]["test_accuracy"] == summary["test_accuracy"]
  assert cli.main(["compare", str(out), "--plot", str(tmp_path / "c.png")]) == 0
  table = capsys.readouterr().out
  assert all(f"| seed{s} | sgd |" in table for s in range(3))


def test_resume_of_replicas_is_bit_identical(tmp_path):
  from test_trainer import CtrlC
  cfg = CFG.replace(method="sgd", seeds=2, epochs=2, num_devices=2)
  data = [toy_data(seed=s) for s in range(2)]
  full = train(cfg, str(tmp_path / "full"), data=data, progress_bar=False)
  with pytest.raises(KeyboardInterrupt):
    train(cfg, str(tmp_path / "cut"), data=data, progress_bar=CtrlC(11))
  resumed = train(cfg, str(tmp_path / "cut"), data=data, progress_bar=False, resume=True)
  for a, b in zip(full["replicas"], resumed["replicas"]):
    for x, y in zip(leaves(a["state"]), leaves(b["state"])):
      np.testing.assert_array_equal(x, y)


def test_every_sweepable_hyper_parameter_is_covered():
  """The sweepable set derives from the records; each name has a method that reads it."""
  names = {n for m in METHODS for n in TrainConfig(method=m).sweepable()}
  assert set(SWEEP_METHOD) == names


# A method that reads each sweepable value, with the settings that make it act within
# two steps (F-SAM's and VaSSO's coefficients act from the second: the first is SAM's).
SWEEP_METHOD = {"rho": ("sam", {}), "learning_rate": ("sgd", {}),
                "weight_decay": ("sgd", {}),
                "kappa": ("ncsam", {"warmup_fraction": 0.0}),
                "down_weight": ("saner", {"warmup_fraction": 0.0}),
                "alpha": ("gsam", {}), "eta": ("asam", {}),
                "sigma": ("fsam", {}), "lmbda": ("fsam", {}),
                "theta": ("vasso", {}),
                "weight_lr": ("meta_reweight", {}), "mixture_rho": ("ebomlc", {}),
                "xi": ("ebomlc", {}), "delta": ("ebomlc", {})}


@pytest.mark.parametrize("name", sorted(SWEEP_METHOD))
def test_sweepable_hyper_parameter_reaches_the_step(name):
  """Two replicas that differ only in the swept value leave two steps with different
  states: the traced value is used (a method that read the config's value instead, or
  branched on it in Python, would fail here)."""
  from jaxnoisy.train.trainer import Trainer
  from test_trainer import toy_with_clean
  method, extra = SWEEP_METHOD[name]
  cfg = CFG.replace(method=method, sweep=(name, (0.1, 0.3)), num_devices=2, clean_size=64,
                    clean_batch_size=32, **extra)
  t = Trainer(cfg, [toy_with_clean()] * 2)
  state = t.initial_state
  for batch in t.batches(0, 0, 2):
    state, _ = t.step(state, batch, 0.5)
  a, b = (jax.tree.leaves(t.replica_state(state, r)[1:]) for r in range(2))
  assert any(not np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("changes, message", [
    (dict(seeds=0), "seeds must be in"),
    (dict(sweep=("flip_rate", (0.1, 0.2))), "sweep must be (name, values)"),
    (dict(sweep=("rho", ())), "sweep must be (name, values)"),
    (dict(sweep=("rho", (0.1, -1.0))), "rho must be in"),
    (dict(seeds=2, per_device_ascent=True), "per_device_ascent must be off"),
])
def test_bad_replica_settings_raise_before_compiling(changes, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    CFG.replace(**changes).validate()


def test_cli_sweep_flag_parses_and_rejects_garbage(capsys):
  args = cli.build_parser().parse_args(["train", "--method", "sam", "--sweep", "rho=0.05,0.1",
                                        "--out", "x"])
  assert cli.config_from_args(args).sweep == ("rho", (0.05, 0.1))
  args = cli.build_parser().parse_args(["train", "--seeds", "3", "--no-vmap-replicas",
                                        "--out", "x"])
  config = cli.config_from_args(args)
  assert (config.seeds, config.vmap_replicas) == (3, False)
  with pytest.raises(SystemExit):
    cli.build_parser().parse_args(["train", "--sweep", "rho=a,b", "--out", "x"])
  assert "NAME=V1,V2" in capsys.readouterr().err
