"""The command line: ``jaxnoisy train`` and ``jaxnoisy compare``.

JAX is imported only after the arguments are parsed and checked, so that on a CPU the
cores can be exposed as host devices first (data parallelism over them roughly halves
the step time on 2 cores) and bad flags fail before anything starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys


def _config_fields():
  from jaxnoisy.train.config import TrainConfig
  return {f.name: f for f in dataclasses.fields(TrainConfig)}, TrainConfig


def _add_train_args(p: argparse.ArgumentParser) -> None:
  from jaxnoisy.train.methods import METHODS
  p.add_argument("--config", help="PATH[:ARG] of a config file (experiments/configs); "
                 "the flags below override it")
  p.add_argument("--method", choices=sorted(METHODS),
                 help="; ".join(f"{k}: {m.description}" for k, m in METHODS.items()))
  p.add_argument("--dataset",
                 help="fashion_mnist, mnist, cifar10, cifar100, cifar10_n, cifar100_n")
  p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                 help="random crop + flip (default: on for CIFAR, off for MNIST-like)")
  p.add_argument("--noise",
                 help="noise spec, e.g. none, symmetric:0.4, symmetric-inclusive:0.4, "
                      "asymmetric:0.4, pairflip:0.45")
  p.add_argument("--model", help="cnn, mlp, preact_resnet18, resnet32")
  p.add_argument("--epochs", type=int)
  p.add_argument("--batch-size", type=int)
  p.add_argument("--learning-rate", "--lr", type=float)
  p.add_argument("--momentum", type=float)
  p.add_argument("--weight-decay", type=float)
  p.add_argument("--schedule", choices=["cosine", "constant", "step"])
  p.add_argument("--lr-boundaries", type=lambda v: tuple(float(x) for x in v.split(",")),
                 help="step schedule: ×0.1 at these fractions of training, e.g. 0.5,0.75")
  p.add_argument("--seed", type=int)
  p.add_argument("--seeds", type=int,
                 help="train this many replicas (seeds seed, seed+1, ...) side by side in "
                      "one jitted step; the summary reports mean ± std")
  p.add_argument("--vmap-replicas", action=argparse.BooleanOptionalAction, default=None,
                 help="a device's several replicas vmapped, or run one after another "
                      "(default: vmapped on accelerators, one after another on CPU)")
  p.add_argument("--sweep", type=_sweep,
                 help="NAME=V1,V2,...: one replica per value (× --seeds) in the same step; "
                      "NAME one of rho, kappa, down_weight, learning_rate, weight_decay, ...")
  p.add_argument("--train-size", type=int, help="train on a random subset of this size")
  p.add_argument("--heldout-size", type=int)
  p.add_argument("--clean-size", type=int, help="clean subset for the meta methods")
  p.add_argument("--clean-batch-size", type=int)
  p.add_argument("--weight-lr", type=float, help="meta_reweight's weight step size α")
  p.add_argument("--weight-step", type=float, help="feature_reweight's step β")
  p.add_argument("--meta-optimizer", choices=["adam", "amsgrad", "sgd"],
                 help="the label-correction network's optimiser")
  p.add_argument("--meta-lr", type=float)
  p.add_argument("--mlc-lookahead", type=int, help="MLC's K-step look-ahead")
  p.add_argument("--mlc-mix", action=argparse.BooleanOptionalAction, default=None,
                 help="MLC: half the clean batch joins the main loss (default, as "
                      "microsoft/MLC's hmlc_K_mix) or all of it is the meta objective")
  p.add_argument("--mixture-rho", type=float, help="EBOMLC's mixture weight ρ")
  p.add_argument("--xi", type=float, help="EBOMLC's ξ")
  p.add_argument("--delta", type=float, help="EBOMLC's δ")
  p.add_argument("--ebomlc-sign", choices=["descend", "reference"])
  p.add_argument("--rho", type=float, help="SAM-family radius")
  p.add_argument("--asam-eta", type=float)
  p.add_argument("--per-device-ascent", action="store_true", default=None,
                 help="SAM ε from each device's own gradient (m-sharpness)")
  p.add_argument("--gsam-alpha", type=float, help="GSAM's α")
  p.add_argument("--down-weight", type=float, help="SANER's multiplier on group-B entries")
  p.add_argument("--saner-warmup-fraction", type=float)
  p.add_argument("--saner-base", choices=["sam", "asam", "gsam"])
  p.add_argument("--saner-track-groups", action=argparse.BooleanOptionalAction, default=None,
                 help="log SANER's A/B/C group fractions every step (default; "
                      "--no-saner-track-groups skips the three counts)")
  p.add_argument("--kappa", type=float, help="NCSAM's compensation strength κ")
  p.add_argument("--flip-rate", type=float, help="NCSAM's simulated flip rate")
  p.add_argument("--ncsam-warmup-fraction", type=float)
  p.add_argument("--num-devices", type=int,
                 help="devices of the mesh (in a multi-process run: over all processes)")
  p.add_argument("--distributed", action="store_true",
                 help="join a multi-process run (jax.distributed.initialize; the cluster "
                      "is detected unless --coordinator is given)")
  p.add_argument("--coordinator", help="host:port of process 0 (multi-process run)")
  p.add_argument("--num-processes", type=int)
  p.add_argument("--process-id", type=int)
  p.add_argument("--data-dir", help="directory with the IDX .gz files")
  p.add_argument("--tfds-data-dir")
  p.add_argument("--out", required=True, help="run directory")
  p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
  p.add_argument("--no-progress", action="store_true")


def _sweep(text: str):
  name, _, values = text.partition("=")
  try:
    parsed = tuple(float(v) for v in values.split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(f"must be NAME=V1,V2,... with numbers, got {text!r}")
  return (name.replace("-", "_"), parsed)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="jaxnoisy", description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", required=True)
  train_p = sub.add_parser("train", help="train one method on noisy labels")
  _add_train_args(train_p)
  cmp_p = sub.add_parser("compare", help="table and plot of several runs")
  cmp_p.add_argument("runs", nargs="+", help="run directories (with summary.json)")
  cmp_p.add_argument("--plot", help="where to write the PNG (default: beside the runs)")
  data_p = sub.add_parser("data", help="datasets and label noise")
  data_sub = data_p.add_subparsers(dest="data_command", required=True)
  desc_p = data_sub.add_parser("describe", help="sizes, classes and the realised noise")
  desc_p.add_argument("dataset")
  desc_p.add_argument("--noise", default="none")
  desc_p.add_argument("--seed", type=int, default=0, help="the noise is drawn as in train")
  desc_p.add_argument("--data-dir")
  desc_p.add_argument("--tfds-data-dir")
  desc_p.add_argument("--plot", help="write a heat-map of the transition matrix here (PNG)")
  return parser


def config_from_args(args):
  """The config file's (or the default) config, with the flags that were given."""
  from jaxnoisy.train.config import load_config
  fields, TrainConfig = _config_fields()
  base = load_config(args.config) if args.config else TrainConfig()
  overrides = {k: v for k, v in vars(args).items() if k in fields and v is not None}
  return base.replace(**overrides).validate()


def cmd_train(args) -> int:
  from jaxnoisy.noise import parse_noise_spec
  from jaxnoisy.train.devices import use_cpu_cores
  config = config_from_args(args)
  parse_noise_spec(config.noise)
  if args.distributed or args.coordinator:
    from jaxnoisy.train.devices import join_processes
    n = args.num_processes or 1
    # CPU: each process exposes its share of the mesh's devices as host devices.
    use_cpu_cores(config.num_devices // n if config.num_devices else None)
    join_processes(args.coordinator, args.num_processes, args.process_id)
  else:
    use_cpu_cores(config.num_devices)
  from jaxnoisy.train.trainer import train
  if config.train_size is not None:
    print(f"note: training on a random subset of {config.train_size} noisy examples")
  try:
    result = train(config, args.out, resume=args.resume, progress=not args.no_progress)
  except KeyboardInterrupt:
    print("interrupted: checkpoint saved; continue with the same command plus --resume",
          file=sys.stderr)
    return 130
  s = result["summary"]
  keys = ("method", "test_accuracy", "best_test_accuracy", "memorization", "ms_per_step",
          "wall_seconds")
  if len(result["replicas"]) > 1:
    keys += ("replicas", "by_value") if config.sweep else ("replicas",)
  print(json.dumps({k: s[k] for k in keys}))
  return 0


def load_run(run_dir: str) -> tuple[dict, list[dict]]:
  with open(os.path.join(run_dir, "summary.json")) as f:
    summary = json.load(f)
  with open(os.path.join(run_dir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return summary, rows


def format_table(runs: list[tuple[str, dict]]) -> str:
  header = ("| run | method | noise | test acc. (last) | test acc. (held-out chosen) "
            "| memorization (last) | ms/step |")
  lines = [header, "|" + "---|" * 7]
  for name, s in runs:
    ms = s.get("ms_per_step")
    ms_text = f"{ms:.1f}" if ms is not None else "—"
    lines.append(
        f"| {name} | {s['method']} | {s['config']['noise']} | {100 * s['test_accuracy']:.2f}% "
        f"| {100 * s['best_test_accuracy']:.2f}% (epoch {s['best_epoch'] + 1}) "
        f"| {100 * s['memorization']:.1f}% | {ms_text} |")
  return "\n".join(lines)


def plot_runs(runs: list[tuple[str, list[dict]]], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
  for name, rows in runs:
    epochs = [r["epoch"] + 1 for r in rows]
    ax1.plot(epochs, [100 * r["test_accuracy"] for r in rows], marker="o", label=name)
    ax2.plot(epochs, [100 * r["memorization"] for r in rows], marker="o", label=name)
  ax1.set(xlabel="epoch", ylabel="test accuracy (%)", title="Clean test accuracy")
  ax2.set(xlabel="epoch", ylabel="memorization (%)",
          title="Corrupted examples fitted to their noisy label")
  ax1.legend()
  ax1.grid(alpha=0.3)
  ax2.grid(alpha=0.3)
  fig.tight_layout()
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=120)
  plt.close(fig)
  os.replace(tmp, path)


def cmd_compare(args) -> int:
  loaded = []
  for run in args.runs:
    if not os.path.exists(os.path.join(run, "summary.json")):
      raise ValueError(f"runs: {run} has no summary.json (is the run finished?)")
    with open(os.path.join(run, "summary.json")) as f:
      labels = json.load(f).get("replicas")  # a run of several replicas: each one
    for path in [os.path.join(run, label) for label in labels] if labels else [run]:
      loaded.append((os.path.basename(os.path.normpath(path)), *load_run(path)))
  print(format_table([(name, s) for name, s, _ in loaded]))
  plot = args.plot or os.path.join(
      os.path.commonpath([os.path.abspath(r) for r in args.runs]) if len(args.runs) > 1
      else args.runs[0], "compare.png")
  plot_runs([(name, rows) for name, _, rows in loaded], plot)
  print(f"plot: {plot}")
  return 0


def cmd_data_describe(args) -> int:
  from jaxnoisy.data import DATASET_INFO, load_dataset
  from jaxnoisy.describe import describe, plot_transition_matrix
  from jaxnoisy.noise import parse_noise_spec
  if args.dataset not in DATASET_INFO:
    raise ValueError(f"dataset must be one of {sorted(DATASET_INFO)}, got {args.dataset!r}")
  parse_noise_spec(args.noise)
  from jaxnoisy.train.trainer import noise_key
  dataset = load_dataset(args.dataset, data_dir=args.data_dir, tfds_data_dir=args.tfds_data_dir)
  info = describe(dataset, args.noise, noise_key(args.seed))
  matrix = info.pop("transition_matrix")
  for k, v in info.items():
    print(f"{k}: {v}")
  print("transition matrix (rows: true class, columns: noisy label):")
  for row in matrix:
    print("  " + " ".join(f"{x:.3f}" for x in row))
  if args.plot:
    plot_transition_matrix(matrix, dataset.class_names, args.plot,
                           title=f"{args.dataset}, {args.noise}")
    print(f"plot: {args.plot}")
  return 0


def main(argv=None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    if args.command == "train":
      return cmd_train(args)
    if args.command == "data":
      return cmd_data_describe(args)
    return cmd_compare(args)
  except (ValueError, FileExistsError, FileNotFoundError) as e:
    parser.exit(2, f"jaxnoisy: error: {e}\n")


if __name__ == "__main__":
  sys.exit(main())
