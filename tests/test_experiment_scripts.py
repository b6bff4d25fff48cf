"""Smoke tests of experiment scripts: they run and print what they promise (no timings)."""

import importlib
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST = "/usr/share/datasets/fashion-mnist"


def test_bench_prints_ratios_with_the_saner_variant():
  out = subprocess.run(
      [sys.executable, "experiments/bench_steps.py", "--methods", "sam,saner", "--rounds",
       "1", "--steps", "1", "--devices", "1"],
      cwd=ROOT, capture_output=True, text=True, check=True, timeout=600)
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert set(result["ms_per_step"]) == {"sgd", "sam", "saner", "saner_untracked"}
  assert all(v > 0 for v in result["ms_per_step"].values())
  assert set(result["ratios"]) == {"saner_to_sam", "saner_untracked_to_sam"}


@pytest.mark.skipif(not os.path.isdir(FMNIST), reason="Debian dataset-fashion-mnist missing")
def test_step_trace_prints_weights_of_l2rw():
  out = subprocess.run(
      [sys.executable, "experiments/step_trace.py", "--epochs", "1", "--every", "1000",
       "--loud", "1e9"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=600)
  lines = out.stdout.strip().splitlines()
  assert lines[0].split() == ["epoch", "step", "train_loss", "|params|", "positive_weights",
                              "max_weight"]
  epoch, step, loss, norm, positive, largest = lines[1].split()  # step 0 only
  assert (epoch, step) == ("0", "0") and float(loss) > 0 and float(norm) > 0
  count, batch = positive.split("/")
  assert batch == "128" and 0 < int(count) <= 128 and float(largest) >= 1.0
  assert len(lines) == 2


@pytest.mark.skipif(not os.path.isdir(FMNIST), reason="Debian dataset-fashion-mnist missing")
def test_step_trace_prints_the_beta_of_ebomlc():
  """EBOMLC's β leaves the step's metrics for the method state: the trace reads it there."""
  out = subprocess.run(
      [sys.executable, "experiments/step_trace.py", "--config",
       "experiments/configs/fashion_mnist.py:ebomlc", "--epochs", "1", "--every", "50",
       "--loud", "1e9"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=600)
  lines = out.stdout.strip().splitlines()[1:]
  assert [line.split()[1] for line in lines] == ["0", "50", "100"]
  for line in lines:
    fields = dict(f.split("=") for f in line.split()[6:])
    assert set(fields) == {"beta", "upper_loss"}
    assert float(fields["beta"]) >= 0 and float(fields["upper_loss"]) > 0


def experiment(name: str):
  """The module of ``experiments/<name>.py`` (the scripts are not a package)."""
  sys.path.insert(0, os.path.join(ROOT, "experiments"))
  try:
    return importlib.import_module(name)
  finally:
    sys.path.pop(0)


def test_table_report_from_fake_runs(tmp_path, monkeypatch):
  """fashion_mnist_table's report: mean ± std over the seeds found, every commit that
  trained a run (a resumed run records each once), — for memorization without noise, the
  replaced report's rows carried where no runs are found or fewer than theirs."""
  table = experiment("fashion_mnist_table")
  root = tmp_path / "runs"
  for noise, memo in (("none", float("nan")), ("symmetric:0.4", 0.1)):
    for seed, acc in ((0, 0.80), (1, 0.84)):
      run = table.run_dir(str(root), noise, "sam", seed)
      os.makedirs(run)
      with open(os.path.join(run, "summary.json"), "w") as f:
        json.dump({"test_accuracy": acc, "best_test_accuracy": acc + 0.01,
                   "memorization": memo, "wall_seconds": 900.0 * (seed + 1)}, f)
      with open(os.path.join(run, "metrics.jsonl"), "w") as f:
        for epoch in range(2):
          f.write(json.dumps({"test_accuracy": acc, "memorization": memo,
                              "epoch_seconds": 2.0}) + "\n")
      for commit in ("aaaaaaa", "aaaaaaa", f"bbbbbb{seed}"):
        monkeypatch.setattr(table, "git_commit", lambda c=commit: c)
        table.record_commit(run)
      assert table.run_commits(run) == ["aaaaaaa", f"bbbbbb{seed}"]
  out = tmp_path / "results" / "RESULTS.md"
  monkeypatch.setattr(table, "git_commit", lambda: "ccccccc")
  os.makedirs(out.parent)
  out.write_text("# old\n\n## Noise: `none`\n\n| method | n | a | b | c | d |\n"
                 "| sgd | 3 | 88.50 ± 0.20 | 88.60 ± 0.10 | — | 1.2 |\n"
                 "| mlc† | 3 | 87.00 ± 0.10 | 87.10 ± 0.10 | — | 3.3 |\n"
                 "| sam | 3 | 1.00 ± 0.00 | 1.00 ± 0.00 | — | 9.9 |\n\n"
                 "## Noise: `symmetric:0.4`\n\n| method | n | a | b | c | d |\n"
                 "| sam | 2 | 1.00 ± 0.00 | 1.00 ± 0.00 | 1.0 ± 0.0 | 7.7 |\n")
  table.report(str(root), [0, 1, 2], str(out))
  text = out.read_text()
  assert "runs trained at commit(s) aaaaaaa, bbbbbb0, bbbbbb1" in text
  assert "took 1.5 h of training in all" in text  # 2 settings × (900 + 1800) s
  assert "| sam | 2 | 82.00 ± 2.83 | 83.00 ± 2.83 | — | 2.0 |" in text  # none
  assert "| sam | 2 | 82.00 ± 2.83 | 83.00 ± 2.83 | 10.0 ± 0.0 | 2.0 |" in text
  # Rows without runs are carried from the replaced report (marked †, once), others empty.
  assert "| sgd† | 3 | 88.50 ± 0.20 | 88.60 ± 0.10 | — | 1.2 |" in text
  assert "| mlc† | 3 | 87.00 ± 0.10 | 87.10 ± 0.10 | — | 3.3 |" in text
  assert "| sgd | 0 | — | — | — | — |" in text  # symmetric:0.4 had no sgd row
  # A carried row with more seeds than the runs found stays below theirs, once; one
  # with no more seeds is replaced.
  assert text.count("| sam† | 3 | 1.00 ± 0.00 | 1.00 ± 0.00 | — | 9.9 |") == 1
  table.report(str(root), [0, 1, 2], str(out))  # and so again from this report
  assert out.read_text() == text
  assert "7.7" not in text and "Rows marked † (3)" in text
  assert (tmp_path / "results" / "results_symmetric_0.4.png").is_file()


def test_table_plot_draws_every_method_with_its_own_line():
  """13 methods outnumber matplotlib's 10-colour cycle: no two may look the same."""
  table = experiment("fashion_mnist_table")
  looks = [tuple(sorted(table.line_style(m).items())) for m in table.METHODS]
  assert len(set(looks)) == len(table.METHODS) == 13


def fake_run(run, acc, memorization, rows):
  """A finished run: its summary (last = chosen accuracy) and per-epoch metrics rows."""
  os.makedirs(run)
  with open(os.path.join(run, "summary.json"), "w") as f:
    json.dump({"test_accuracy": acc, "best_test_accuracy": acc,
               "memorization": memorization, "wall_seconds": 60.0}, f)
  with open(os.path.join(run, "metrics.jsonl"), "w") as f:
    f.writelines(json.dumps(row) + "\n" for row in rows)


def test_saner_bases_report_gives_saners_gain_over_its_base(tmp_path):
  table = experiment("fashion_mnist_table")
  saner_bases = experiment("saner_bases")
  root = tmp_path / "runs"
  for arm, accs in (("fsam", (0.80, 0.82)), ("saner_fsam", (0.83, 0.85))):
    for seed, acc in enumerate(accs):
      fake_run(table.run_dir(str(root), "asymmetric:0.4", arm, seed), acc, 0.2,
               [{"test_accuracy": acc, "memorization": 0.2}])
  out = tmp_path / "results" / "SANER_BASES.md"
  saner_bases.report(str(root), ["fsam", "saner_fsam", "vasso"], ["asymmetric:0.4"],
                     [0, 1, 2], str(out))
  text = out.read_text()
  assert "| fsam | 2 | 81.00 ± 1.41 | 81.00 ± 1.41 | 20.0 ± 0.0 | — |" in text
  assert "| saner_fsam | 2 | 84.00 ± 1.41 | 84.00 ± 1.41 | 20.0 ± 0.0 | +3.00 |" in text
  assert "| vasso | 0 | — | — | — | — |" in text
  assert (tmp_path / "results" / "saner_bases_asymmetric_0.4.png").is_file()


def test_ascents_report_gives_each_combinations_gain_over_both_parents(tmp_path):
  table = experiment("fashion_mnist_table")
  ascents = experiment("ascents")
  root = tmp_path / "runs"
  for noise, accs in (("symmetric:0.4", (0.81, 0.86, 0.85)), ("instance:0.4", (0.86, 0.80, 0.79))):
    for arm, acc in zip(("mlc", "saner", "mlc_over_saner"), accs):
      fake_run(table.run_dir(str(root), noise, arm, 0), acc, 0.03,
               [{"test_accuracy": acc, "memorization": 0.03}])
  out = tmp_path / "results" / "ASCENTS.md"
  ascents.report(str(root), ["mlc_over_saner", "mlc", "saner", "fbr_over_saner"],
                 ["symmetric:0.4", "instance:0.4"], [0], str(out))
  text = out.read_text()
  assert "| mlc_over_saner | 1 | 85.00 ± 0.00 | 85.00 ± 0.00 | 3.0 ± 0.0 | +4.00 | -1.00 |" \
      in text
  assert "| mlc | 1 | 81.00 ± 0.00 | 81.00 ± 0.00 | 3.0 ± 0.0 | — | — |" in text
  assert "| fbr_over_saner | 0 |" in text
  assert "Goal ≥ 87.0% last-epoch at symmetric 40%: not reached (best arm saner, 86.00%)" in text
  assert "`symmetric:0.4` mlc_over_saner: 85.00% — between its parents (mlc 81.00%, " \
         "saner 86.00%)" in text
  assert "`instance:0.4` mlc_over_saner: 79.00% — below both parents (combining hurts)" in text
  assert (tmp_path / "results" / "ascents_symmetric_0.4.png").is_file()


def test_bench_times_every_step_on_a_second_model_beside_it():
  out = subprocess.run(
      [sys.executable, "experiments/bench_steps.py", "--methods", "sgd", "--also-model",
       "cnn_bn", "--rounds", "1", "--steps", "1", "--devices", "1"],
      cwd=ROOT, capture_output=True, text=True, check=True, timeout=600)
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert set(result["ms_per_step"]) == {"sgd", "sgd_on_cnn_bn"}
  assert set(result["ratios"]) == {"sgd_on_cnn_bn_to_sgd"}


def test_bench_stream_writes_its_numbers_as_json(tmp_path):
  import math
  out = tmp_path / "bench_stream.json"
  subprocess.run(
      [sys.executable, "experiments/bench_stream.py", "--steps", "3", "--rounds", "1",
       "--sizes", "32", "--threads", "2", "--num-devices", "1", "--out", str(out)],
      cwd=ROOT, capture_output=True, text=True, check=True, timeout=600)
  result = json.loads(out.read_text())
  assert {"commit", "machine", "cpus", "devices", "command", "pipeline", "step"} <= set(result)
  assert set(result["pipeline"]) == {"32"}
  numbers = [*result["pipeline"]["32"].values(), result["step"]["device_ms"],
             result["step"]["stream_ms"]]
  assert all(math.isfinite(v) and v > 0 for v in numbers)
  assert math.isfinite(result["step"]["stream_share"]) and result["step"]["goal"] == 0.05
  assert isinstance(result["step"]["goal_met"], bool)
  assert "--sizes 32" in result["command"]


def test_bn_resnet_report_gives_ncsam_norms_and_its_arms_are_the_configs(tmp_path):
  import importlib.util
  table = experiment("fashion_mnist_table")
  bn_resnet = experiment("bn_resnet")
  spec = importlib.util.spec_from_file_location("fm_config", "experiments/configs/fashion_mnist.py")
  config = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(config)
  assert bn_resnet.ARMS == [f"resnet_{a}" for a in config.BN_ARMS]
  assert {(config.get_config(a).model, config.get_config(a).train_size)
          for a in bn_resnet.ARMS} == {("resnet20_narrow", 5000)}
  root = tmp_path / "runs"
  norms = {"ncsam_grad_norm": 2.0, "ncsam_noise_grad_norm": 4.0,
           "ncsam_compensation_over_rho": 1.5}
  for arm, extra in (("resnet_sam", {}), ("resnet_ncsam", norms)):
    for seed, acc in enumerate((0.80, 0.82)):
      fake_run(table.run_dir(str(root), "instance:0.4", arm, seed), acc, 0.3,
               [{"test_accuracy": acc, "memorization": 0.3,
                 **{k: v * scale for k, v in extra.items()}}
                for scale in (10.0, 1.0 + seed)])  # the last epoch's norms are reported
  out = tmp_path / "results" / "BN_RESNET.md"
  bn_resnet.report(str(root), bn_resnet.ARMS, ["instance:0.4"], [0, 1, 2], str(out))
  text = out.read_text()
  assert "| resnet_sam | 2 | 81.00 ± 1.41 | 81.00 ± 1.41 | 30.0 ± 0.0 | — | — | — | — |" in text
  # Runs from before cos(ε, ε_SAM) was logged show — in its column.
  assert "| resnet_ncsam | 2 | 81.00 ± 1.41 | 81.00 ± 1.41 | 30.0 ± 0.0 | 3 | 6 | 2.25 | — |" \
      in text
  assert "| resnet_sgd | 0 |" in text
  assert (tmp_path / "results" / "bn_resnet_instance_0.4.png").is_file()


def test_cnn_bn_report_gives_the_cosine_and_its_arms_are_the_configs(tmp_path):
  import importlib.util
  table = experiment("fashion_mnist_table")
  cnn_bn = experiment("cnn_bn")
  spec = importlib.util.spec_from_file_location("fm_config", "experiments/configs/fashion_mnist.py")
  config = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(config)
  assert cnn_bn.ARMS == [f"bn_{a}" for a in config.BN_ARMS]
  arms = {a: config.get_config(a) for a in cnn_bn.ARMS}
  assert {c.model for c in arms.values()} == {"cnn_bn"}
  assert arms["bn_ncsam_samwarmup"].hparams.warmup == "sam"
  assert arms["bn_ncsam_rho"].hparams.compensation == "rho"
  assert arms["bn_ncsam"].hparams.compensation == "paper" and arms["bn_ncsam"].hparams.kappa == 0.1
  root = tmp_path / "runs"
  norms = {"ncsam_grad_norm": 2.0, "ncsam_noise_grad_norm": 4.0,
           "ncsam_compensation_over_rho": 1.5, "ncsam_cos_eps_sam": -0.25}
  for seed, acc in enumerate((0.80, 0.82)):
    fake_run(table.run_dir(str(root), "symmetric:0.4", "bn_ncsam_rho", seed), acc, 0.3,
             [{"test_accuracy": acc, "memorization": 0.3, **norms}])
  # The CNN's own runs beside them: SAM ahead of SANER on the CNN, behind it with BN.
  for arm, seeds_accs in (("sam", (0.86, 0.88)), ("saner", (0.85,)), ("bn_sam", (0.84,)),
                          ("bn_saner", (0.85, 0.86)), ("ncsam", (0.86,)), ("bn_ncsam", (0.80,))):
    for seed, acc in enumerate(seeds_accs):
      fake_run(table.run_dir(str(root), "symmetric:0.4", arm, seed), acc, 0.1,
               [{"test_accuracy": acc, "memorization": 0.1, **norms}])
  # Without label noise, SANER and SAM level on the CNN: neither sign.
  for arm, acc in (("sam", 0.85), ("saner", 0.85), ("bn_sam", 0.85), ("bn_saner", 0.84)):
    fake_run(table.run_dir(str(root), "none", arm, 0), acc, float("nan"), [])
  out = tmp_path / "results" / "CNN_BN.md"
  cnn_bn.report(str(root), cnn_bn.ARMS, ["symmetric:0.4", "none"], [0, 1], str(out))
  text = out.read_text()
  assert "| bn_ncsam_rho | 2 | 81.00 ± 1.41 | 81.00 ± 1.41 | 30.0 ± 0.0 | 2 | 4 | 1.5 | -0.25 |" \
      in text
  # bn - CNN per method (n each), and SANER - SAM: -2.00 on the CNN (beyond SAM's std
  # 1.41), +1.50 with BN (beyond bn_saner's 0.71); NCSAM - SAM -1.00 (within 1.41), -4.00.
  assert ("| `symmetric:0.4` | — | 87.00 (2) → 84.00 (1), -3.00 | 85.00 (1) → 85.50 (2), +0.50 "
          "| 86.00 (1) → 80.00 (1), -6.00 | -2.00 behind → +1.50 ahead "
          "| -1.00 level → -4.00 behind |") in text
  assert ("| `none` | — | 85.00 (1) → 85.00 (1), +0.00 | 85.00 (1) → 84.00 (1), -1.00 | — "
          "| +0.00 level → -1.00 behind | — |") in text
  assert "| bn_sgd | 0 |" in text and (tmp_path / "results" / "cnn_bn_symmetric_0.4.png").is_file()


def _phase_rows(z, loss, **series):
  """Probe rows one epoch apart with the given zero shares, clean losses and series."""
  keys = experiment("meta_phases").WINDOW_KEYS
  return [{"epoch": float(e), "zero_share_noisy": zv, "clean_subset_loss": lv,
           **{k: series.get(k, [0.5] * len(z))[e] for k in keys}}
          for e, (zv, lv) in enumerate(zip(z, loss))]


def test_meta_phases_boundaries_and_verdict_on_known_curves():
  meta_phases = experiment("meta_phases")
  z = [0, 0, 0.05, 0.3, 0.6, 0.85, 0.9, 0.9, 0.9]
  loss = [2.3, 1.5, 1.0, 0.7, 0.5, 0.4, 0.35, 0.35, 0.35]
  rows = _phase_rows(
      z, loss, coupling_auc=[0.8, 0.8, 0.8, 0.9, 0.9, 0.6, 0.6, 0.6, 0.6],
      coupling_clean_positive=[0.7] * 9, coupling_noisy_negative=[0.6] * 9,
      coupling_magnitude=[4, 4, 4, 3, 3, 1, 1, 1, 1],
      flip_params=[0.1, 0.1, 0.1, 0.02, 0.04, 0.2, 0.2, 0.3, 0.3],
      flip_clean=[0.4, 0.4, 0.4, 0.1, 0.1, 0.3, 0.3, 0.3, 0.3])
  b = meta_phases.boundaries(rows)
  # max z 0.9: opens at z ≥ 0.09 (epoch 3), closes at z ≥ 0.81 (epoch 5); the loss has
  # fallen by 90% of 2.3 − 0.35 at L ≤ 0.545 (epoch 4).
  assert (b["filter_start"], b["filter_end"], b["loss_plateau"]) == (3.0, 5.0, 4.0)
  assert b["clean_loss_at_filter_end"] == 0.4 and b["z_slope_last"] == 0.0
  assert b["z_max"] == b["z_end"] == 0.9
  assert b["post_probes"] == 4
  assert b["align_coupling_auc"] == pytest.approx(0.8)
  assert b["filter_coupling_auc"] == pytest.approx(0.9)
  assert b["post_coupling_magnitude"] == pytest.approx(1.0)
  assert b["filter_flip_params"] == pytest.approx(0.03)
  assert b["post_flip_clean"] == pytest.approx(0.3)
  assert meta_phases.verdict(b) == {"alignment": True, "order": True,
                                    "plateau_with_filter": True, "coupling_vanishes": True,
                                    "sensitivity_rises": True}
  # Still filtering at the end, no post phase, coupling unchanged, flips falling.
  late = meta_phases.boundaries(_phase_rows(
      [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], loss, coupling_magnitude=[2] * 9,
      flip_params=[0.3] * 5 + [0.1] * 4))
  v = meta_phases.verdict(late)
  assert late["filter_end"] == 8.0 and late["z_slope_last"] == pytest.approx(0.1)
  assert not v["order"] and not v["coupling_vanishes"] and not v["sensitivity_rises"]
  # No weight ever reaches zero: no filtering, boundaries NaN, nothing holds but alignment.
  none = meta_phases.boundaries(_phase_rows([0.0] * 9, loss))
  assert math.isnan(none["filter_start"]) and math.isnan(none["filter_end"])
  assert not meta_phases.verdict(none)["order"]


def test_meta_phases_trains_probes_and_reports_on_fake_data(tmp_path):
  """The script end to end on a tiny random dataset (MLP): its records, then the page
  and the plot from them alone."""
  from jaxnoisy.data import datasets
  from jaxnoisy.train.config import TrainConfig
  meta_phases = experiment("meta_phases")
  rng = np.random.default_rng(0)
  n = 200
  ds = datasets.Dataset(
      name="fashion_mnist", train_images=rng.integers(0, 255, (n, 28, 28, 1), dtype=np.uint8),
      train_labels=np.arange(n, dtype=np.int32) % 10,
      test_images=rng.integers(0, 255, (20, 28, 28, 1), dtype=np.uint8),
      test_labels=np.arange(20, dtype=np.int32) % 10, num_classes=10,
      class_names=tuple(map(str, range(10))), mean=(0.3,), std=(0.3,))
  probes = {"probe_every": 2, "probe_batches": 2, "param_scale": 0.02}
  config = TrainConfig(method="meta_reweight", model="mlp", noise="symmetric:0.4",
                       epochs=2, train_size=64, clean_size=40, heldout_size=20,
                       batch_size=16, clean_batch_size=10, schedule="constant",
                       num_devices=1, tensorboard=False).validate()
  root = tmp_path / "runs"
  out = meta_phases.run_dir(str(root), "symmetric:0.4", 0)
  summary = meta_phases.train_run(config, out, probes, dataset=ds)
  assert sorted(os.listdir(out)) == ["commit.txt", "config.json", "metrics.jsonl",
                                     "summary.json"]
  _, rows, saved = meta_phases.load_run(out)
  assert summary["steps"] == 8 and [r["step"] for r in rows] == [0, 2, 4, 6, 8]
  assert saved["probes"] == probes and saved["train_config"]["model"] == "mlp"
  first = rows[0]
  assert first["mean_weight_clean"] == first["mean_weight_noisy"] == 1.0
  assert first["zero_share_noisy"] == 0.0 and math.isnan(first["param_move"])
  for key in ("clean_subset_loss", "coupling_auc", "meta_magnitude", "flip_params",
              "flip_clean", "fbr_auc", "fbr0_flip_params", "param_move"):
    assert all(math.isfinite(r[key]) for r in rows[1:]), key
  assert all(0 <= r["flip_clean"] <= 1 for r in rows)
  results = tmp_path / "results" / "META_PHASES.md"
  assert meta_phases.main(["--report-only", "--runs", str(root), "--results", str(results),
                           "--noise", "symmetric:0.4,instance:0.4", "--seeds", "0"]) == 0
  text = results.read_text()
  assert "## Noise `symmetric:0.4`" in text and "64-example subset" in text
  assert "| filtering opens" in text and "runs where each holds" in text
  assert "## Noise `instance:0.4`\n\nNo finished runs." in text
  assert (tmp_path / "results" / "meta_phases_symmetric_0.4.png").is_file()


def test_meta_phases_rejects_bad_flags_before_training(capsys):
  meta_phases = experiment("meta_phases")
  for argv, needle in ((["--noise", "asymmetric:0.4"], "--noise must be among"),
                       (["--epochs", "0"], "--epochs must be > 0"),
                       (["--param-scale", "-0.1"], "--param-scale must be >= 0"),
                       (["--seeds", "a"], "--seeds must be")):
    with pytest.raises(SystemExit):
      meta_phases.main(argv)
    assert needle in capsys.readouterr().err


@pytest.mark.skipif(not os.path.isdir(FMNIST), reason="Debian dataset-fashion-mnist missing")
def test_accelerator_check_tiny_writes_every_section(tmp_path):
  """The GPU check's own code paths at toy sizes on CPU (torch's where it is installed)."""
  subprocess.run(
      [sys.executable, "experiments/accelerator_check.py", "--tiny", "--out", str(tmp_path),
       "--no-torch-compile", "--budget-s", "900", "--data-dir", FMNIST],
      cwd=ROOT, capture_output=True, text=True, check=True, timeout=900)
  result = json.loads((tmp_path / "accelerator.json").read_text())
  assert result["tiny"] and "skipped" not in result
  assert result["correctness"]["default"]["passed"] > 0
  assert not result["correctness"]["default"]["failed"]
  assert {"sgd/b8/float32/cnn", "sam/b8/bfloat16/cnn", "mlc/b8/float32/cnn"} <= set(
      result["steps"])
  assert all(v["ms"] > 0 and v["memory_mib"] > 0 for v in result["steps"].values())
  assert set(result["reference"]["optax"]) == {"optax_sgd", "optax_contrib_sam"}
  assert result["epoch"]["sgd"]["noisy_steps"] == 2
  assert result["stream"]["step"]["stream_ms"] > 0
  page = (tmp_path / "ACCELERATOR.md").read_text()
  assert "| mlc | 8 | float32 | cnn |" in page and "## Epoch cost" in page
  # The page regenerates from the JSON alone.
  (tmp_path / "ACCELERATOR.md").unlink()
  subprocess.run([sys.executable, "experiments/accelerator_check.py", "--report-only",
                  "--out", str(tmp_path)], cwd=ROOT, check=True, timeout=120)
  assert (tmp_path / "ACCELERATOR.md").read_text() == page
