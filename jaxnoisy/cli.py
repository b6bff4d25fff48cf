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


# Exit statuses of ``jaxnoisy train`` besides 0 (done) and 2 (bad input); a run stopped
# by a signal after checkpointing exits 128 + its number (130 Ctrl-C, 143 SIGTERM).
EXIT_DIVERGED = 3      # non-finite training loss or parameters (summary.json says where)
EXIT_LOCKED = 4        # another live run holds --out
EXIT_WRITE_FAILED = 5  # --out stopped accepting writes (full disk, read-only)


def _flag_type(field: dataclasses.Field):
  """How a flag's text becomes the field's value (from the declaration or default)."""
  if field.metadata.get("flag_type"):
    return field.metadata["flag_type"]
  if field.name == "sweep":
    return _sweep
  default = field.default
  if isinstance(default, bool) or default is None and "bool" in str(field.type):
    return bool
  if isinstance(default, int) or default is None and "int" in str(field.type):
    return int
  if isinstance(default, float):
    return float
  return str


def _add_flag(group, f: dataclasses.Field, help_text: str, choices=None) -> None:
  names = ["--" + f.name.replace("_", "-"), *f.metadata["aliases"]]
  kind = _flag_type(f)
  if kind is bool:
    group.add_argument(*names, action=argparse.BooleanOptionalAction, default=None,
                       help=help_text)
  else:
    group.add_argument(*names, type=kind, choices=choices, default=None,
                       metavar=None if choices else f.name.upper(), help=help_text)


def _method_flags() -> dict:
  """``{name: [(method, field, default)]}`` over every method's record (nested records
  included): a name shared by several methods is one flag, set on the chosen one's."""
  from jaxnoisy.train import hparams as hparams_lib
  from jaxnoisy.train.ascent import AscentHparams
  from jaxnoisy.train.methods import METHODS
  # An ascent's names are listed under the SAM-family methods (--ascent says so).
  via_ascent = {f.name for f in hparams_lib.declarations(AscentHparams)} - {"ascent"}
  out: dict = {}
  for method, registration in METHODS.items():
    defaults = registration.hparams()
    own = {f.name for f in dataclasses.fields(registration.hparams)}
    for f in hparams_lib.declarations(registration.hparams):
      if f.name in via_ascent - own:
        continue
      try:
        default = hparams_lib.get_value(defaults, f.name)
      except ValueError:  # a field of a nested record not chosen by default
        default = f.default
      out.setdefault(f.name, []).append((method, f, default))
  return out


def _method_help(uses: list) -> str:
  """One help line for a flag: its declaration's help, the methods it applies to and
  their defaults."""
  from jaxnoisy.train import hparams as hparams_lib
  helps = {f.metadata["help"] for _, f, _ in uses}
  text = "; ".join(sorted(helps))
  shown = lambda f, v: hparams_lib.record_name(f, v) if dataclasses.is_dataclass(v) else v
  defaults = ", ".join(f"{m} {shown(f, d)}" for m, f, d in uses)
  return f"{text} (default: {defaults})"


def _add_train_args(p: argparse.ArgumentParser) -> None:
  """The flags of ``train``: one per run field and one per name of the methods'
  records (name, type, choices and help derived from their declarations)."""
  from jaxnoisy.train.config import TrainConfig
  from jaxnoisy.train.methods import METHODS
  p.add_argument("--config", help="PATH[:ARG] of a config file (experiments/configs); "
                 "the flags below override it")
  group = p.add_argument_group("The run: data, model, optimizer, replicas and devices")
  for f in dataclasses.fields(TrainConfig):
    if f.name == "hparams":
      continue
    help_text = f.metadata["help"]
    if f.name == "method":
      help_text = "; ".join(f"{k}: {v.description}" for k, v in METHODS.items())
    elif f.default is not None:
      help_text += f" (default: {f.default})"
    _add_flag(group, f, help_text, None if f.name == "method" else f.metadata["choices"])
  group = p.add_argument_group("The methods' hyper-parameters (each applies to the "
                               "methods it names; --method picks the record)")
  for name, uses in _method_flags().items():
    choices = {f.metadata["choices"] for _, f, _ in uses}
    _add_flag(group, uses[0][1], _method_help(uses),
              choices.pop() if len(choices) == 1 else None)
  p.add_argument("--distributed", action="store_true",
                 help="join a multi-process run (jax.distributed.initialize; the cluster "
                      "is detected unless --coordinator is given)")
  p.add_argument("--coordinator", help="host:port of process 0 (multi-process run)")
  p.add_argument("--num-processes", type=int)
  p.add_argument("--process-id", type=int)
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


class _Parser(argparse.ArgumentParser):
  """A bad flag fails in one line naming it and its allowed values (not the usage)."""

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(prog="jaxnoisy", description=__doc__.splitlines()[0])
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
  prep_p = sub.add_parser("prepare", help="write images + labels as ArrayRecord files "
                          "(jaxnoisy.data.arrayrecord)")
  prep_sub = prep_p.add_subparsers(dest="prepare_command", required=True)
  c1m_p = prep_sub.add_parser("clothing1m", help="Clothing1M from its published layout")
  c1m_p.add_argument("root", help="directory with images/ and the *_kv.txt, *_key_list.txt "
                     "files")
  list_p = prep_sub.add_parser("list", help="images listed in 'relative/path LABEL' files")
  list_p.add_argument("--root", required=True, help="directory the listed paths are in")
  list_p.add_argument("--split", action="append", required=True, metavar="NAME=FILE",
                      help="a split and its list of noisy labels (repeatable)")
  list_p.add_argument("--clean", action="append", default=[], metavar="NAME=FILE",
                      help="clean labels for some keys of a split (repeatable)")
  list_p.add_argument("--name", required=True, help="the dataset's name")
  list_p.add_argument("--num-classes", type=int, help="default: the largest label + 1")
  for p, shards in ((c1m_p, 16), (list_p, 1)):
    p.add_argument("--out", required=True, help="the prepared dataset's directory")
    p.add_argument("--image-size", type=int, metavar="S",
                   help="store S×S RGB pixels (default: the image files as they are)")
    p.add_argument("--shards", type=int, default=shards, metavar="K",
                   help=f"ArrayRecord files per split (default: {shards})")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
  return parser


def config_from_args(args):
  """The config file's (or the default) config, with the flags that were given (the
  run's fields, and names of the chosen method's record)."""
  from jaxnoisy.train.config import TrainConfig, load_config
  names = {f.name for f in dataclasses.fields(TrainConfig)} | set(_method_flags())
  base = load_config(args.config) if args.config else TrainConfig()
  overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
  return base.replace(**overrides).validate()


def cmd_train(args) -> int:
  from jaxnoisy.noise import parse_noise_spec
  from jaxnoisy.train.devices import use_cpu_cores
  config = config_from_args(args)
  parse_noise_spec(config.noise)
  if os.path.exists(args.out) and not os.path.isdir(args.out):
    raise ValueError(f"--out must be a run directory, but {args.out} is a file")
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
  from jaxnoisy.train import divergence, preemption, rundir
  try:
    result = train(config, args.out, resume=args.resume, progress_bar=not args.no_progress)
  except preemption.Stopped as e:
    print(f"jaxnoisy: {e}", file=sys.stderr)
    return e.exit_status
  except divergence.Diverged as e:
    print(f"jaxnoisy: {e}", file=sys.stderr)
    return EXIT_DIVERGED
  except rundir.Locked as e:
    print(f"jaxnoisy: error: {e}", file=sys.stderr)
    return EXIT_LOCKED
  except rundir.WriteFailed as e:
    print(f"jaxnoisy: error: {e}", file=sys.stderr)
    return EXIT_WRITE_FAILED
  except KeyboardInterrupt:  # before the first step or after the last: nothing to save
    print(f"jaxnoisy: interrupted outside training; --resume continues from the newest "
          f"checkpoint in {os.path.join(args.out, 'checkpoints')}, if any", file=sys.stderr)
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
    if s.get("status") == "diverged":
      lines.append(f"| {name} | {s['method']} | {s['config']['noise']} | diverged at epoch "
                   f"{s['diverged']['epoch'] + 1} | — | — | {ms_text} |")
      continue
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
      summary = json.load(f)
    if summary.get("status") == "diverged":  # one row, whatever its replicas
      loaded.append((os.path.basename(os.path.normpath(run)), summary, []))
      continue
    labels = summary.get("replicas")  # a run of several replicas: each one
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


def _named_files(option: str, values: list[str]) -> dict[str, str]:
  """``["NAME=FILE", ...]`` as ``{NAME: FILE}``."""
  out = {}
  for text in values:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
      raise ValueError(f"{option} must be NAME=FILE, got {text!r}")
    if name in out:
      raise ValueError(f"{option}: split {name!r} is given twice")
    out[name] = path
  return out


def cmd_prepare(args) -> int:
  from jaxnoisy.data import arrayrecord
  common = dict(image_size=args.image_size, shards=args.shards, overwrite=args.overwrite)
  if args.prepare_command == "clothing1m":
    info = arrayrecord.prepare_clothing1m(args.root, args.out, **common)
  else:
    info = arrayrecord.prepare_list(
        args.out, root=args.root, splits=_named_files("--split", args.split),
        clean_lists=_named_files("--clean", args.clean), name=args.name,
        num_classes=args.num_classes, **common)
  for split, entry in info["splits"].items():
    print(f"{split}: {entry['num_examples']} examples, {len(entry['files'])} shards")
  print(f"prepared: {args.out} ({info['image']['encoding']} images, "
        f"{info['num_classes']} classes)")
  return 0


def _as_typed(message: str, args) -> str:
  """A config field or hyper-parameter named at the start of an error becomes the flag
  as typed (``train_size must be ...`` → ``--train-size must be ...``)."""
  if args.command != "train":
    return message
  from jaxnoisy.train.config import TrainConfig
  fields = {f.name for f in dataclasses.fields(TrainConfig)} | set(_method_flags())
  name = message.split(" ", 1)[0]
  if name in fields:
    return "--" + name.replace("_", "-") + message[len(name):]
  return message


def main(argv=None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    if args.command == "train":
      return cmd_train(args)
    if args.command == "data":
      return cmd_data_describe(args)
    if args.command == "prepare":
      return cmd_prepare(args)
    return cmd_compare(args)
  except (ValueError, FileExistsError, FileNotFoundError) as e:
    parser.exit(2, f"jaxnoisy: error: {_as_typed(str(e), args)}\n")


if __name__ == "__main__":
  sys.exit(main())
