"""Seed 002's three phases of meta-reweighting, observed on Fashion-MNIST.

Zhang et al. (arXiv 2510.12209) prove that meta-reweighting under label noise runs
through (i) alignment, (ii) filtering until the clean-subset loss plateaus and (iii) a
post-filtering phase where the coupling vanishes and the filtering becomes
perturbation-sensitive. This script trains ``meta_reweight`` on real Fashion-MNIST
(symmetric and instance-dependent 40% noise, 3 seeds) and every ``--probe-every`` steps
runs the diagnostics of :mod:`jaxnoisy.meta.phases` on the current state:

- the weights of the whole training set (mean weight of clean and corrupted examples,
  share of each at zero);
- on ``--probe-batches`` fresh noisy batches, each with a clean batch and a resampled
  one: the coupling a_i = ⟨∇l_i, ∇L_clean⟩ and the exact meta-direction −∂L_val/∂w
  (separation, magnitude, AUC), and the share of meta-gradient signs that flip under a
  seeded parameter perturbation of relative size ``--param-scale`` or the resampled
  clean batch;
- FBR's scores d on the same states and batches (against the whole clean subset, at
  α₀ = 1/(C−1) and α₀ = 0), through the same summary and the same perturbations (the
  clean-side resample is a bootstrap of the clean subset);
- the loss of the whole clean subset.

Each run writes ``config.json``, ``metrics.jsonl`` (one row per probe),
``summary.json`` and ``commit.txt`` under ``--runs`` (small files, committed; no
checkpoints: an unfinished run starts again). The report, ``META_PHASES.md`` and one
plot per noise setting, is rebuilt from those records alone by ``--report-only``.
How the phase boundaries are located is written on the page (:func:`boundaries`).

Usage:
  python experiments/meta_phases.py [--noise symmetric:0.4,instance:0.4] [--seeds 0,1,2]
      [--train-size 2000] [--epochs 50] [--runs experiments/results/runs/meta_phases]
      [--report-only]
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fashion_mnist_table as table  # noqa: E402  (load, git_commit, record_commit, run_commits)

NOISE = ["symmetric:0.4", "instance:0.4"]
RUNS = "experiments/results/runs/meta_phases"
RESULTS = "experiments/results/META_PHASES.md"
# The size of every run (the same for all, stated on the page): CPU is scarce here.
DEFAULTS = {"train_size": 2000, "epochs": 50, "clean_size": 1000, "heldout_size": 1000,
            "learning_rate": 0.05}
PROBES = {"probe_every": 8, "probe_batches": 2, "param_scale": 0.02}
# Fractions of the largest zero share of corrupted weights that open and close the
# filtering phase, and of the clean loss's total fall that marks its plateau.
FILTER_OPEN, FILTER_CLOSE, LOSS_PLATEAU = 0.1, 0.9, 0.9


def run_dir(root, noise, seed):
  return os.path.join(root, noise.replace(":", "_"), f"seed{seed}")


# --- training and probing ------------------------------------------------------------
def run_config(noise, seed, sizes):
  from jaxnoisy.train.config import TrainConfig
  return TrainConfig(method="meta_reweight", noise=noise, seed=seed, epochs=sizes["epochs"],
                     train_size=sizes["train_size"], clean_size=sizes["clean_size"],
                     heldout_size=sizes["heldout_size"], schedule="constant",
                     learning_rate=sizes["learning_rate"], num_devices=1,
                     tensorboard=False).validate()


def make_probe(trainer, config, num_classes, param_scale):
  """The jitted probe of one state: every diagnostic, averaged over the probe batches."""
  import jax
  import jax.numpy as jnp
  import optax

  from jaxnoisy.meta import fbr, phases

  def probe(params, model_state, xs, ys, corrupted, ws, clean_xs, clean_ys, alt_xs, alt_ys,
            all_clean_x, all_clean_y, boot, key):
    apply = lambda p, x: trainer.apply(p, model_state, x, train=False)
    loss_fn = lambda p, b: optax.softmax_cross_entropy_with_integer_labels(
        apply(p, b[0])[0], b[1])
    # One perturbation per probe: the meta-gradient and FBR see the same θ'.
    moved = phases.perturb_params(params, key, param_scale)
    clean_logits, clean_f = apply(params, all_clean_x)[:2]
    clean_f_moved = apply(moved, all_clean_x)[1]

    def one(batch):
      x, y, c, w, cx, cy, ax, ay = batch
      out = phases.phase_diagnostics(loss_fn, params, w, (x, y), c, (cx, cy), (ax, ay), key,
                                     inner_lr=config.learning_rate, param_scale=param_scale)
      f, f_moved = apply(params, x)[1], apply(moved, x)[1]
      for tag, alpha0 in (("fbr", 1.0 / (num_classes - 1)), ("fbr0", 0.0)):
        d = fbr.fbr_scores(f, y, clean_f, all_clean_y, num_classes, alpha0)
        d_moved = fbr.fbr_scores(f_moved, y, clean_f_moved, all_clean_y, num_classes, alpha0)
        d_boot = fbr.fbr_scores(f, y, clean_f[boot], all_clean_y[boot], num_classes, alpha0)
        out.update({f"{tag}_{k}": v for k, v in phases.score_summary(d, c).items()})
        out[f"{tag}_flip_params"] = phases.sign_flip_share(d, d_moved)
        out[f"{tag}_flip_clean"] = phases.sign_flip_share(d, d_boot)
      return out

    per_batch = jax.lax.map(one, (xs, ys, corrupted, ws, clean_xs, clean_ys, alt_xs, alt_ys))
    out = jax.tree.map(lambda v: jnp.nanmean(v, axis=0), per_batch)
    out["clean_subset_loss"] = jnp.mean(
        optax.softmax_cross_entropy_with_integer_labels(clean_logits, all_clean_y))
    return out

  return jax.jit(probe)


def train_run(config, out_dir, probes, dataset=None) -> dict:
  """Trains one run with a probe every ``probe_every`` steps; writes its records."""
  import jax
  import numpy as np

  from jaxnoisy.meta import check_fbr_clean_set, phases
  from jaxnoisy.train.step import replica
  from jaxnoisy.train.trainer import Trainer, prepare_data, write_atomic

  start_wall, start_cpu = time.time(), time.process_time()
  data = prepare_data(config, dataset)
  trainer = Trainer(config, data)
  n_classes = data.num_classes
  check_fbr_clean_set(data.clean_labels, n_classes)
  probe = make_probe(trainer, config, n_classes, probes["param_scale"])
  weight_stats = jax.jit(phases.weight_phase_stats)
  os.makedirs(out_dir, exist_ok=True)
  write_atomic(os.path.join(out_dir, "config.json"), json.dumps(
      {"train_config": config.to_dict(), "probes": probes}, indent=1,
      default=str) + "\n")

  mean, std = np.asarray(data.mean, np.float32), np.asarray(data.std, np.float32)
  norm = lambda im: (im.astype(np.float32) / 255.0 - mean) / std
  all_clean_x, all_clean_y = norm(data.clean_images), data.clean_labels
  rng = np.random.default_rng(config.seed + 100)   # the probes' own batches
  key = jax.random.key(config.seed + 100)          # and perturbations
  nb, bs = probes["probe_batches"], config.batch_size
  cb = min(config.clean_batch_size, len(all_clean_y) // 2)
  spe, total = trainer.steps_per_epoch, trainer.total_steps
  rows, step_metrics, state, previous = [], {}, trainer.initial_state, None
  while True:
    one = replica(state, 0)
    step = int(one.step)
    # How far the parameters moved since the last probe, relative to their norm (the
    # scale to read --param-scale against).
    flat = np.concatenate([np.ravel(v) for v in jax.tree.leaves(one.params)])
    moved = (float(np.linalg.norm(flat - previous) / np.linalg.norm(flat))
             if previous is not None else float("nan"))
    previous = flat
    weights = np.asarray(one.method_state["weights"])
    idx = np.stack([rng.choice(len(data.train_labels), bs, replace=False) for _ in range(nb)])
    # The clean batch and its resample: disjoint draws from the clean subset.
    cidx = np.stack([rng.choice(len(all_clean_y), 2 * cb, replace=False) for _ in range(nb)])
    cidx, aidx = cidx[:, :cb], cidx[:, cb:]
    boot = rng.integers(0, len(all_clean_y), len(all_clean_y))
    out = probe(one.params, one.model_state, norm(data.train_images[idx]),
                data.train_labels[idx], data.train_corrupted[idx], weights[idx],
                all_clean_x[cidx], all_clean_y[cidx], all_clean_x[aidx], all_clean_y[aidx],
                all_clean_x, all_clean_y, boot, jax.random.fold_in(key, step))
    stats = weight_stats(weights, data.train_corrupted)
    row = {"step": step, "epoch": step / spe, "param_norm": float(np.linalg.norm(flat)),
           "param_move": moved,
           **{k: float(v) for k, v in stats.items()}, **{k: float(v) for k, v in out.items()},
           **{f"step_{k}": v for k, v in step_metrics.items()}}
    rows.append(row)
    print(json.dumps({k: row[k] for k in ("step", "clean_subset_loss", "zero_share_noisy",
                                           "coupling_auc", "flip_params")}), flush=True)
    if step >= total:
      break
    epoch, begin = divmod(step, spe)
    state, means = trainer.run_epoch(state, epoch, begin,
                                     min(spe, begin + probes["probe_every"]))
    step_metrics = means[0]

  final = trainer.evaluate(state)[0]
  summary = {"noise": config.noise, "seed": config.seed, "steps": total,
             "steps_per_epoch": spe, "probes": len(rows), **final,
             "realised_noise_rate_train": data.noise_summary["realised_rate_train"],
             "wall_seconds": round(time.time() - start_wall, 1),
             "cpu_seconds": round(time.process_time() - start_cpu, 1),
             "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores"}
  write_atomic(os.path.join(out_dir, "metrics.jsonl"),
               "".join(json.dumps(r) + "\n" for r in rows))
  table.record_commit(out_dir)
  write_atomic(os.path.join(out_dir, "summary.json"), json.dumps(summary, indent=1) + "\n")
  return summary


# --- analysis ------------------------------------------------------------------------
def load_run(path):
  """``(summary, probe rows, config)`` of a finished run, or None."""
  found = table.load(path)
  if found is None:
    return None
  with open(os.path.join(path, "config.json")) as f:
    return (*found, json.load(f))


def _mean(values):
  values = [v for v in values if v is not None and not math.isnan(v)]
  return statistics.fmean(values) if values else float("nan")


def _window(rows, key, lo, hi):
  """Mean of ``key`` over the probes with lo ≤ epoch < hi."""
  return _mean([r[key] for r in rows if lo <= r["epoch"] < hi])


# The quantities compared across the phases' windows.
WINDOW_KEYS = ("coupling_auc", "coupling_clean_positive", "coupling_noisy_negative",
               "coupling_magnitude", "meta_auc", "meta_magnitude", "flip_params",
               "flip_clean", "fbr0_auc", "fbr0_flip_params", "fbr0_flip_clean",
               "clean_grad_norm")


def boundaries(rows) -> dict:
  """Where one run's data put the phase boundaries, and each phase's averages.

  z(t) = share of corrupted examples whose weight is 0, L(t) = loss of the whole clean
  subset, t in epochs:

  - filtering opens at the first probe with z ≥ 0.1·max z and closes at the first with
    z ≥ 0.9·max z (``filter_start``, ``filter_end``); alignment is the time before
    ``filter_start``, post-filtering the time from ``filter_end`` on;
  - the clean loss has plateaued at the first probe with L ≤ L(0) − 0.9·(L(0) − min L)
    (``loss_plateau``);
  - ``z_slope_last``: z's rise per epoch over the last quarter of the run (a filtering
    that has stopped has slope ≈ 0; a negative one means corrupted examples come back);
    ``z_end``: z at the last probe.

  Returns also ``clean_loss_at_filter_end`` = L(filter_end) and, for each phase
  (``align``, ``filter``, ``post``) and each quantity of :data:`WINDOW_KEYS`, its mean
  over the probes of that phase (``<phase>_<key>``, NaN for a phase without probes),
  plus ``post_probes``, the number of probes in the post-filtering phase.
  """
  ep = [r["epoch"] for r in rows]
  z = [r["zero_share_noisy"] for r in rows]
  loss = [r["clean_subset_loss"] for r in rows]
  z_max = max(z)
  first = lambda pred: next((e for e, v in zip(ep, z) if pred(v)), float("nan"))
  start = first(lambda v: v >= FILTER_OPEN * z_max) if z_max > 0 else float("nan")
  end = first(lambda v: v >= FILTER_CLOSE * z_max) if z_max > 0 else float("nan")
  target = loss[0] - LOSS_PLATEAU * (loss[0] - min(loss))
  plateau = next(e for e, v in zip(ep, loss) if v <= target)
  last = [(e, v) for e, v in zip(ep, z) if e >= ep[-1] * 0.75]
  slope = ((last[-1][1] - last[0][1]) / (last[-1][0] - last[0][0])
           if len(last) > 1 and last[-1][0] > last[0][0] else float("nan"))
  out = {"z_max": z_max, "z_end": z[-1], "filter_start": start, "filter_end": end, "loss_plateau": plateau,
         "clean_loss_start": loss[0], "clean_loss_min": min(loss), "clean_loss_end": loss[-1],
         "clean_loss_at_filter_end": (loss[ep.index(end)] if not math.isnan(end)
                                      else float("nan")),
         "z_slope_last": slope,
         "post_probes": sum(1 for e in ep if not math.isnan(end) and e >= end)}
  lo, hi = (start, end) if not math.isnan(end) else (math.inf, math.inf)
  for phase, (a, b) in (("align", (-math.inf, lo)), ("filter", (lo, hi)),
                        ("post", (hi, math.inf))):
    for key in WINDOW_KEYS:
      out[f"{phase}_{key}"] = _window(rows, key, a, b)
  return out


def verdict(b) -> dict:
  """The paper's statements, each True/False for one run's :func:`boundaries`.

  - ``alignment``: before filtering the coupling ranks clean above corrupted examples
    (AUC > 0.5) with most clean examples pushed up and most corrupted ones down;
  - ``order``: alignment, then filtering, then a post-filtering phase of ≥ 2 probes
    in which z has stopped rising (last-quarter slope < 0.01 per epoch; it may fall);
  - ``plateau_with_filter``: the filtering closes within one epoch of the clean loss's
    plateau;
  - ``coupling_vanishes``: the coupling's magnitude after filtering is below half of
    its magnitude during alignment;
  - ``sensitivity_rises``: the meta-gradient's sign-flip shares (parameter and clean
    batch) are both higher after filtering than during it.
  """
  return {
      "alignment": (b["align_coupling_auc"] > 0.5 and b["align_coupling_clean_positive"] > 0.5
                    and b["align_coupling_noisy_negative"] > 0.5),
      "order": (b["filter_start"] < b["filter_end"] and b["post_probes"] >= 2
                and b["z_slope_last"] < 0.01),
      "plateau_with_filter": abs(b["filter_end"] - b["loss_plateau"]) <= 1.0,
      "coupling_vanishes": b["post_coupling_magnitude"] < 0.5 * b["align_coupling_magnitude"],
      "sensitivity_rises": (b["post_flip_params"] > b["filter_flip_params"]
                            and b["post_flip_clean"] > b["filter_flip_clean"]),
  }


# --- the report ----------------------------------------------------------------------
STATEMENTS = {
    "alignment": "alignment first (the coupling separates clean from corrupted examples "
                 "by sign before any weight reaches zero)",
    "order": "three phases in order, the filtering stopped before the end",
    "plateau_with_filter": "the filtering stops where the clean loss plateaus",
    "coupling_vanishes": "the coupling vanishes after the filtering",
    "sensitivity_rises": "the filtering becomes perturbation-sensitive after it",
}


def plain_statements(bs, vs) -> list:
  """The page's plain answers for one noise setting, from each run's :func:`boundaries`
  (``bs``) and :func:`verdict` (``vs``): means over the runs."""
  m = lambda key: _mean([b[key] for b in bs])
  n = len(vs)
  held = lambda key: sum(v[key] for v in vs)
  slope = m("z_slope_last")
  out = [
      f"**Order.** {held('order')}/{n} runs show alignment, filtering and a post-filtering "
      f"phase in that order. Filtering opens at epoch {_fmt(m('filter_start'), 1)} and "
      f"reaches 90% of its extent at epoch {_fmt(m('filter_end'), 1)}, when "
      f"{_fmt(100 * FILTER_CLOSE * m('z_max'), 1)}% of the corrupted examples have weight "
      f"0 (at most {_fmt(100 * m('z_max'), 1)}%, at the end {_fmt(100 * m('z_end'), 1)}%); "
      f"over the last quarter of training z "
      f"{'still rises' if slope >= 0.002 else 'falls' if slope <= -0.002 else 'changes'} by "
      f"{_fmt(100 * abs(slope), 2)} points per epoch.",
      f"**Where the filtering stops.** At a clean-subset loss of "
      f"{_fmt(m('clean_loss_at_filter_end'), 3)} (it starts at "
      f"{_fmt(m('clean_loss_start'), 3)} and is never lower than "
      f"{_fmt(m('clean_loss_min'), 3)}, at the end {_fmt(m('clean_loss_end'), 3)}); the "
      f"clean loss has made 90% of its fall by epoch {_fmt(m('loss_plateau'), 1)} "
      f"({held('plateau_with_filter')}/{n} runs within one epoch of the filtering's end). "
      f"‖∇L_clean‖ is {_fmt(m('align_clean_grad_norm'), 2)} in alignment and "
      f"{_fmt(m('post_clean_grad_norm'), 2)} after filtering.",
      f"**Coupling.** Its RMS is {_fmt(m('align_coupling_magnitude'), 3)} in alignment, "
      f"{_fmt(m('filter_coupling_magnitude'), 3)} in filtering and "
      f"{_fmt(m('post_coupling_magnitude'), 3)} after it (below half its alignment size in "
      f"{held('coupling_vanishes')}/{n} runs); its AUC "
      f"{_fmt(m('align_coupling_auc'), 3)} → {_fmt(m('filter_coupling_auc'), 3)} → "
      f"{_fmt(m('post_coupling_auc'), 3)}, the exact meta-direction's "
      f"{_fmt(m('align_meta_auc'), 3)} → {_fmt(m('filter_meta_auc'), 3)} → "
      f"{_fmt(m('post_meta_auc'), 3)}.",
      f"**Sensitivity.** The share of meta-gradient signs that flip goes from "
      f"{_fmt(m('filter_flip_params'), 3)} during filtering to "
      f"{_fmt(m('post_flip_params'), 3)} after it under the parameter perturbation, and "
      f"from {_fmt(m('filter_flip_clean'), 3)} to {_fmt(m('post_flip_clean'), 3)} under a "
      f"resampled clean batch (both rise in {held('sensitivity_rises')}/{n} runs).",
      f"**FBR on the same states** (α₀ = 0): AUC {_fmt(m('filter_fbr0_auc'), 3)} during "
      f"and {_fmt(m('post_fbr0_auc'), 3)} after filtering; its signs flip for "
      f"{_fmt(m('post_fbr0_flip_params'), 3)} (parameters) and "
      f"{_fmt(m('post_fbr0_flip_clean'), 3)} (clean bootstrap) of the examples after "
      "filtering.",
  ]
  fails = [text for key, text in STATEMENTS.items() if 2 * held(key) < n]
  holds = [text for key, text in STATEMENTS.items() if 2 * held(key) >= n]
  out.append("**Where the paper's account holds on this data** (in most runs): "
             + ("; ".join(holds) if holds else "nowhere tested") + ". "
             "**Where it does not:** " + ("; ".join(fails) if fails else "nowhere tested")
             + ".")
  return [x for line in out for x in (line, "")]


def _fmt(v, digits=2):
  return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _mean_std(values, digits=2):
  values = [v for v in values if not math.isnan(v)]
  if not values:
    return "—"
  if len(values) == 1:
    return _fmt(values[0], digits)
  return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def plot(noise, runs, path):
  """The quantities over training (mean over seeds, band: min to max) and the phase
  boundaries (dotted: each seed's filtering start and end; dashed: clean-loss plateau)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np

  n = min(len(rows) for _, rows, _ in runs)
  ep = np.asarray([r["epoch"] for r in runs[0][1][:n]])
  series = lambda key: np.asarray([[r.get(key, np.nan) for r in rows[:n]]
                                   for _, rows, _ in runs])
  fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))

  def draw(ax, key, label, scale=None, **style):
    s = series(key)
    if scale is not None:
      s = s / s[:, :1]
    line, = ax.plot(ep, np.nanmean(s, 0), label=label, **style)
    ax.fill_between(ep, np.nanmin(s, 0), np.nanmax(s, 0), alpha=0.15, color=line.get_color())

  a = axes.flat
  draw(a[0], "mean_weight_clean", "mean weight, clean")
  draw(a[0], "mean_weight_noisy", "mean weight, corrupted")
  draw(a[0], "zero_share_noisy", "share at 0, corrupted")
  draw(a[0], "zero_share_clean", "share at 0, clean")
  a[0].set(title="weights (whole training set)")
  draw(a[1], "clean_subset_loss", "loss of the clean subset")
  draw(a[1], "clean_grad_norm", "‖∇L_clean‖ (clean batch)")
  a[1].set(title="clean subset")
  draw(a[2], "coupling_auc", "coupling a_i")
  draw(a[2], "meta_auc", "exact −∂L_val/∂w")
  draw(a[2], "fbr_auc", "FBR d, α₀=1/(C−1)", linestyle="--")
  draw(a[2], "fbr0_auc", "FBR d, α₀=0", linestyle="--")
  a[2].set(title="AUC: clean above corrupted")
  draw(a[3], "coupling_clean_positive", "clean with a_i > 0")
  draw(a[3], "coupling_noisy_negative", "corrupted with a_i < 0")
  draw(a[3], "fbr0_clean_positive", "clean with d > 0 (FBR α₀=0)", linestyle="--")
  draw(a[3], "fbr0_noisy_negative", "corrupted with d < 0 (FBR α₀=0)", linestyle="--")
  a[3].set(title="alignment: signs of the coupling")
  draw(a[4], "coupling_magnitude", "coupling a", scale=True)
  draw(a[4], "meta_magnitude", "exact −∂L_val/∂w", scale=True)
  draw(a[4], "fbr0_magnitude", "FBR d, α₀=0", scale=True, linestyle="--")
  a[4].set(title="RMS magnitude / its value at step 0", yscale="log")
  draw(a[5], "flip_params", "meta, θ perturbed")
  draw(a[5], "flip_clean", "meta, clean batch resampled")
  draw(a[5], "fbr0_flip_params", "FBR α₀=0, θ perturbed", linestyle="--")
  draw(a[5], "fbr0_flip_clean", "FBR α₀=0, clean bootstrap", linestyle="--")
  a[5].set(title="sensitivity: share of signs that flip")
  bounds = [boundaries(rows) for _, rows, _ in runs]
  for ax in a:
    for b in bounds:
      for key, style in (("filter_start", ":"), ("filter_end", ":"), ("loss_plateau", "--")):
        if not math.isnan(b[key]):
          ax.axvline(b[key], color="grey", linestyle=style, alpha=0.5, linewidth=0.8)
    ax.set(xlabel="epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle(f"meta_reweight on Fashion-MNIST, {noise}, {len(runs)} seeds "
               "(grey: dotted = filtering start/end, dashed = clean-loss plateau, per seed)")
  fig.tight_layout()
  fig.savefig(path + ".tmp.png", dpi=90)
  os.replace(path + ".tmp.png", path)


def report(root, noises, seeds, out_path) -> str:
  """Writes the page and its plots from the run records under ``root``."""
  from jaxnoisy.train.trainer import write_atomic
  directory = os.path.dirname(out_path) or "."
  os.makedirs(directory, exist_ok=True)
  found = {n: [r for r in (load_run(run_dir(root, n, s)) for s in seeds) if r] for n in noises}
  commits = sorted({c for n in noises for s in seeds
                    for c in table.run_commits(run_dir(root, n, s))})
  saved = next((cfg for runs in found.values() for _, _, cfg in runs), None)
  c, p = ((saved["train_config"], saved["probes"]) if saved
          else ({**DEFAULTS, "batch_size": 128, "clean_batch_size": 100,
                 "hparams": {"weight_lr": 100.0}, "momentum": 0.9, "weight_decay": 5e-4,
                 "model": "cnn"}, PROBES))
  # The method's record is nested since issue 33; records trained before it are flat.
  weight_lr = c["hparams"]["weight_lr"] if "hparams" in c else c["weight_lr"]
  cpu = sum(s["cpu_seconds"] for runs in found.values() for s, _, _ in runs)
  lines = [
      "# Seed 002's three phases of meta-reweighting, observed on Fashion-MNIST", "",
      f"Produced by `python experiments/meta_phases.py` (report at commit "
      f"{table.git_commit()}, `--report-only` rebuilds it from `{root}`; runs trained at "
      f"commit(s) {', '.join(commits) or '—'}; {platform.machine()}, {os.cpu_count()} CPU "
      f"cores, one host device per run, {cpu / 60:.1f} CPU minutes for all runs).", "",
      f"Setting, the same for every run (sized to the shared 2-core machine): "
      f"`meta_reweight` on a random {c['train_size']:,}-example subset of the noisy "
      f"training set, {c['clean_size']:,} clean examples, model `{c['model']}`, batch "
      f"{c['batch_size']}, clean batch {c['clean_batch_size']}, {c['epochs']} epochs at a "
      f"constant learning rate {c['learning_rate']} (no decay: a shrinking step would stop "
      f"the weights for its own reason), weight step α = {weight_lr:g} (the trainer's "
      f"default), momentum {c['momentum']}, weight decay {c['weight_decay']:g}. After every "
      f"{p['probe_every']} steps (and at each epoch's end): the weights of the whole "
      f"training set, and on {p['probe_batches']} fresh batches the diagnostics of "
      "`jaxnoisy.meta.phases` (coupling a_i = ⟨∇l_i, ∇L_clean⟩, the exact "
      "meta-direction −∂L_val/∂w, sign flips under a parameter perturbation of relative "
      f"size {p['param_scale']} and under a resampled clean batch) and FBR's scores d "
      "on the same states (the clean-side resample of FBR is a bootstrap of the clean "
      "subset). Each weight is updated only when its example is in a batch, once per "
      "epoch.", "",
      "**How the boundaries are located** (per run, from its probes; z = share of "
      "corrupted examples whose weight is 0, L = loss of the whole clean subset): "
      f"filtering opens at the first probe with z ≥ {FILTER_OPEN}·max z and closes at the "
      f"first with z ≥ {FILTER_CLOSE}·max z; alignment is before it, post-filtering after. "
      f"The clean loss has plateaued at the first probe where it has made "
      f"{LOSS_PLATEAU:.0%} of its total fall L(0) − min L. Phase averages are over the "
      "probes in each phase.", ""]
  for noise in noises:
    runs = found[noise]
    lines += [f"## Noise `{noise}`", ""]
    if not runs:
      lines += ["No finished runs.", ""]
      continue
    prefix = f"meta_phases_{noise.replace(':', '_')}"
    plot(noise, runs, os.path.join(directory, prefix + ".png"))
    bs = [boundaries(rows) for _, rows, _ in runs]
    vs = [verdict(b) for b in bs]
    col = lambda key, d=2: _mean_std([b[key] for b in bs], d)
    yes = lambda key: f"{sum(v[key] for v in vs)}/{len(vs)}"
    lines += [f"![{noise}]({prefix}.png)", "",
              f"Seeds {', '.join(str(s['seed']) for s, _, _ in runs)}; test accuracy at the "
              f"end {_mean_std([100 * s['test_accuracy'] for s, _, _ in runs])}%, "
              f"memorization {_mean_std([100 * s['memorization'] for s, _, _ in runs], 1)}%; "
              f"realised noise in the subset "
              f"{_mean_std([100 * s['realised_noise_rate_train'] for s, _, _ in runs], 1)}%.",
              "", "| boundary (epochs) / level | mean ± std over seeds |", "|---|---|",
              f"| filtering opens (z ≥ {FILTER_OPEN}·max z) | {col('filter_start')} |",
              f"| filtering closes (z ≥ {FILTER_CLOSE}·max z) | {col('filter_end')} |",
              f"| clean loss plateaus | {col('loss_plateau')} |",
              f"| max z (corrupted at 0) / z at the end | {col('z_max', 3)} / "
              f"{col('z_end', 3)} |",
              f"| z's rise per epoch, last quarter | {col('z_slope_last', 3)} |",
              f"| clean loss: start / min | {col('clean_loss_start', 3)} / "
              f"{col('clean_loss_min', 3)} |",
              f"| clean loss where filtering closes | {col('clean_loss_at_filter_end', 3)} |",
              "", "| quantity | alignment | filtering | post-filtering |", "|---|---|---|---|"]
    names = {"coupling_auc": "coupling AUC", "coupling_clean_positive": "clean with a_i > 0",
             "coupling_noisy_negative": "corrupted with a_i < 0",
             "coupling_magnitude": "coupling RMS", "meta_auc": "exact −∂L_val/∂w AUC",
             "meta_magnitude": "exact −∂L_val/∂w RMS",
             "flip_params": "meta sign flips, θ perturbed",
             "flip_clean": "meta sign flips, clean batch resampled",
             "fbr0_auc": "FBR d (α₀=0) AUC", "fbr0_flip_params": "FBR sign flips, θ perturbed",
             "fbr0_flip_clean": "FBR sign flips, clean bootstrap",
             "clean_grad_norm": "‖∇L_clean‖"}
    digits = {"coupling_magnitude": 4, "meta_magnitude": 6, "clean_grad_norm": 3}
    for key in WINDOW_KEYS:
      d = digits.get(key, 3)
      lines.append(f"| {names[key]} | " + " | ".join(
          col(f"{p}_{key}", d) for p in ("align", "filter", "post")) + " |")
    lines += ["", "The paper's statements, runs where each holds "
              "(`experiments/meta_phases.py:verdict` gives the tests):", "",
              f"- alignment (coupling AUC > 0.5, most clean a_i > 0 and most corrupted "
              f"a_i < 0 before filtering): {yes('alignment')}",
              f"- the three phases in the paper's order, z no longer rising at the end: "
              f"{yes('order')}",
              f"- filtering closes within one epoch of the clean-loss plateau: "
              f"{yes('plateau_with_filter')}",
              f"- the coupling after filtering is below half its alignment size: "
              f"{yes('coupling_vanishes')}",
              f"- the meta-gradient's sign flips rise after filtering (both "
              f"perturbations): {yes('sensitivity_rises')}", ""]
    lines += plain_statements(bs, vs)
  text = "\n".join(lines) + "\n"
  write_atomic(out_path, text)
  return text


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--noise", default=",".join(NOISE))
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--runs", default=RUNS)
  parser.add_argument("--results", default=RESULTS)
  parser.add_argument("--report-only", action="store_true")
  for name, value in {**DEFAULTS, **PROBES}.items():
    parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
  args = parser.parse_args(argv)
  noises = args.noise.split(",")
  bad = [n for n in noises if n not in NOISE]
  if bad:
    parser.error(f"--noise must be among {NOISE}, got {bad}")
  try:
    seeds = [int(s) for s in args.seeds.split(",")]
  except ValueError:
    parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
  sizes = {name: getattr(args, name) for name in DEFAULTS}
  probes = {name: getattr(args, name) for name in PROBES}
  for name, value in (*sizes.items(), *probes.items()):
    if name != "param_scale" and not value > 0:
      parser.error(f"--{name.replace('_', '-')} must be > 0, got {value}")
  if not probes["param_scale"] >= 0:
    parser.error(f"--param-scale must be >= 0, got {probes['param_scale']}")
  if not args.report_only:
    from jaxnoisy.train.devices import use_cpu_cores
    use_cpu_cores(1)
    for seed in seeds:      # seed by seed: a cut-short job still covers both settings
      for noise in noises:
        out = run_dir(args.runs, noise, seed)
        if load_run(out) is None:
          config = run_config(noise, seed, sizes)  # validated before anything compiles
          print(f"training {out}", flush=True)
          train_run(config, out, probes)
  report(args.runs, noises, seeds, args.results)
  print(f"wrote {args.results}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
