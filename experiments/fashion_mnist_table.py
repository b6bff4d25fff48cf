"""The Fashion-MNIST results table: every method under every noise setting, several seeds.

Runs ``jaxnoisy train --config experiments/configs/fashion_mnist.py:ARM --noise SPEC
--seed S`` for each combination not finished yet (each run resumes from its own
checkpoint if it was interrupted), then writes ``experiments/results/RESULTS.md`` from
whatever summaries exist, with mean ± std over the seeds that finished, and plots of test
accuracy and memorization per epoch for each noise setting. A row with no runs under
``--runs`` is carried over from the report it replaces, marked †. The whole table takes many hours on
2 CPU cores: run it in parts with ``--noise``/``--methods``/``--seeds`` and rerun to
fill in; ``--report-only`` rewrites it without training.

Results are data: every run's small records (``summary.json``, ``metrics.jsonl``,
``commit.txt``) live under ``experiments/results/runs/<noise>/<arm>/seed<S>/`` and are
committed (checkpoints and event files are ignored). The arm scripts (``ascents.py``,
``cnn_bn.py``, ``bn_resnet.py``) share that store: arm names are unique, so a parent
arm of ``ascents.py`` (``saner``, ``fbr``, ``mlc``) is this table's own run.

Usage:
  python experiments/fashion_mnist_table.py [--noise symmetric:0.4,...] \\
      [--methods sgd,sam,...] [--seeds 0,1,2] \\
      [--runs experiments/results/runs] [--report-only]
"""

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys

from jaxnoisy.cli import EXIT_DIVERGED

NOISE = ["none", "symmetric:0.4", "symmetric:0.6", "asymmetric:0.4", "instance:0.4"]
METHODS = ["sgd", "sam", "asam", "saner", "ncsam", "l2rw", "meta_reweight",
           "fbr", "mwnet", "mlc", "bome_mlc", "ebomlc", "ebomlc_reference"]
CONFIG = "experiments/configs/fashion_mnist.py"
RUNS = "experiments/results/runs"  # every script's run store (see above)


def run_dir(root, noise, method, seed):
  return os.path.join(root, noise.replace(":", "_"), method, f"seed{seed}")


def load(path):
  try:
    with open(os.path.join(path, "summary.json")) as f:
      summary = json.load(f)
    with open(os.path.join(path, "metrics.jsonl")) as f:
      rows = [json.loads(line) for line in f if line.strip()]
    return summary, rows
  except FileNotFoundError:
    return None


def mean_std(values, scale=100.0, digits=2):
  values = [v for v in values if v == v]  # memorization is NaN without corrupted labels
  if not values:
    return "—"
  m = statistics.mean(values) * scale
  s = statistics.stdev(values) * scale if len(values) > 1 else 0.0
  return f"{m:.{digits}f} ± {s:.{digits}f}"


def split_diverged(found):
  """(finished, diverged) of ``found`` ((summary, rows) pairs): a diverged run's
  summary.json has ``status: diverged`` and no accuracies."""
  diverged = [r for r in found if r[0].get("status") == "diverged"]
  return [r for r in found if r[0].get("status") != "diverged"], diverged


def seed_runs(root, noise, arm, seeds):
  """(finished, diverged) of ``arm``'s runs under ``root`` that have a summary."""
  return split_diverged([r for r in (load(run_dir(root, noise, arm, s)) for s in seeds) if r])


def count_cell(finished, diverged) -> str:
  """The n column: the runs that finished, and those that diverged with their epoch
  (1-based): ``2 of 3 finished, 1 diverged at epoch 10``."""
  if not diverged:
    return str(len(finished))
  epochs = ", ".join(str(s["diverged"]["epoch"] + 1) for s, _ in diverged)
  return (f"{len(finished)} of {len(finished) + len(diverged)} finished, {len(diverged)} "
          f"diverged at epoch {epochs}")


def summary_cells(summaries) -> str:
  """``last | chosen | memorization`` table cells, mean ± std over the runs' summaries."""
  return " | ".join([mean_std([s["test_accuracy"] for s in summaries]),
                     mean_std([s["best_test_accuracy"] for s in summaries]),
                     mean_std([s["memorization"] for s in summaries], digits=1)])


def git_commit():
  try:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def run_commits(path) -> list:
  """The commits that trained (part of) a run: one line each in its commit.txt."""
  try:
    with open(os.path.join(path, "commit.txt")) as f:
      return [line.strip() for line in f if line.strip()]
  except FileNotFoundError:
    return []


def record_commit(path) -> None:
  """Adds this commit to the run's commit.txt (a resumed run may span several)."""
  commit = git_commit()
  if commit not in run_commits(path):
    with open(os.path.join(path, "commit.txt"), "a") as f:
      f.write(commit + "\n")


def previous_rows(path) -> dict:
  """``{(noise, method): row}`` of the report at ``path`` (empty when there is none)."""
  rows, noise = {}, None
  try:
    with open(path) as f:
      for line in f:
        if line.startswith("## Noise: `"):
          noise = line.split("`")[1]
        elif noise and line.startswith("| ") and not line.startswith("| method"):
          method = line.split("|")[1].strip().rstrip("†")
          rows[(noise, method)] = line.rstrip("\n").replace(f"| {method}† |", f"| {method} |")
  except FileNotFoundError:
    pass
  return rows


def train_missing(root, noises, args, seeds) -> None:
  """Trains ``CONFIG:ARG`` for every noise setting, config ARG (a method, or another arm
  of the config) and seed whose run has no summary yet; an interrupted run resumes."""
  exe = os.path.join(os.path.dirname(sys.executable), "jaxnoisy")
  for noise in noises:
    for arg in args:
      for seed in seeds:
        out = run_dir(root, noise, arg, seed)
        if load(out):
          continue
        cmd = [exe, "train", "--config", f"{CONFIG}:{arg}", "--noise", noise,
               "--seed", str(seed), "--out", out, "--resume", "--no-progress"]
        print("$ " + shlex.join(cmd), flush=True)
        os.makedirs(out, exist_ok=True)
        record_commit(out)
        status = subprocess.run(cmd).returncode
        if status not in (0, EXIT_DIVERGED):  # a diverged run is a result: go on
          raise subprocess.CalledProcessError(status, cmd)


def report(root, seeds, out_path):
  """RESULTS.md over every noise setting and method from the runs under ``root``. A row
  whose runs are not there is carried unchanged from the report being replaced (marked
  †), so that the table can be brought up to date method by method; a carried row with
  more seeds than the runs there stays below their row until they catch up."""
  from jaxnoisy.train.trainer import write_atomic
  os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
  carried_from = previous_rows(out_path)
  lines = ["# Fashion-MNIST results", "",
           f"Produced by `python experiments/fashion_mnist_table.py --runs {root}` "
           f"(report at commit {git_commit()}; runs trained at commit(s) "
           "{commits}" f"; {platform.machine()}, {os.cpu_count()} CPU cores). "
           f"Settings: `{CONFIG}`. Test accuracy in %, mean ± std over the seeds that "
           "finished (n; a run that diverged is counted apart). \"Chosen\" is the epoch "
           "with the best accuracy on the noisy held-out split; memorization is the share "
           "of corrupted training examples predicted with their noisy label at the last "
           "epoch. The runs took {hours} h of "
           "training in all (the sum of their wall times).{carried}", ""]
  curves, commits, wall, carried = {}, set(), 0.0, 0
  for noise in NOISE:
    lines += [f"## Noise: `{noise}`", "",
              "| method | n | test acc. (last) | test acc. (chosen) | memorization | s/epoch |",
              "|---|---|---|---|---|---|"]
    for method in METHODS:
      finished, diverged = seed_runs(root, noise, method, seeds)
      row = carried_from.get((noise, method))
      carry = row is not None and not row.startswith(f"| {method} | 0 |")
      if not finished and not diverged:
        lines.append(row.replace(f"| {method} |", f"| {method}† |", 1) if carry
                     else f"| {method} | 0 | — | — | — | — |")
        carried += carry
        continue
      wall += sum(s["wall_seconds"] for s, _ in finished + diverged)
      for s in seeds:
        commits.update(run_commits(run_dir(root, noise, method, s)))
      secs = [statistics.mean(r["epoch_seconds"] for r in rows) for _, rows in finished]
      lines.append(
          f"| {method} | {count_cell(finished, diverged)} "
          f"| {summary_cells([s for s, _ in finished])} "
          f"| {f'{statistics.mean(secs):.1f}' if secs else '—'} |")
      if finished:
        curves.setdefault(noise, {})[method] = [rows for _, rows in finished]
      if carry and int(row.split("|")[2].split()[0]) > len(finished) + len(diverged):
        lines.append(row.replace(f"| {method} |", f"| {method}† |", 1))
        carried += 1
    lines.append("")
  note = (f" Rows marked † ({carried}) are carried unchanged from the report this one "
          "replaced (their runs are not under this --runs; `git log -p` of this file "
          "shows the commits that trained them), and their curves are not in the plots."
          if carried else "")
  lines[2] = lines[2].replace("{commits}", ", ".join(sorted(commits)) or "none").replace(
      "{hours}", f"{wall / 3600:.1f}").replace("{carried}", note)
  plots = plot_curves(curves, os.path.dirname(out_path) or ".")
  lines += [f"![{os.path.basename(p)}]({os.path.relpath(p, os.path.dirname(out_path) or '.')})"
            for p in plots]
  write_atomic(out_path, "\n".join(lines) + "\n")


def line_style(method) -> dict:
  """One look per method, none shared: the 13 methods outnumber a colour cycle, so the
  sharpness-aware family (and SGD) is drawn solid and the clean-subset family dashed."""
  i = METHODS.index(method)
  meta = i >= METHODS.index("l2rw")
  return {"color": f"C{i - METHODS.index('l2rw') if meta else i}",
          "linestyle": "--" if meta else "-"}


def plot_curves(curves, directory, prefix="results", style=None):
  """One figure per noise setting of ``curves[noise][name]`` (each a list of runs'
  rows): mean test accuracy and memorization per epoch, saved as
  ``<prefix>_<noise>.png``; ``style(name)`` gives a line's look (default
  :func:`line_style`). Returns the paths."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  style = style or line_style
  paths = []
  for noise, per_name in curves.items():
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, runs in per_name.items():
      n = min(len(rows) for rows in runs)
      for ax, key in zip(axes, ("test_accuracy", "memorization")):
        ax.plot(range(1, n + 1),
                [statistics.mean(rows[e][key] for rows in runs) * 100 for e in range(n)],
                label=name, **style(name))
    for ax, what in zip(axes, ("test accuracy", "memorization")):
      ax.set(xlabel="epoch", ylabel=f"{what} (%)", title=f"{noise}: {what}")
      ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(directory, f"{prefix}_{noise.replace(':', '_')}.png")
    fig.savefig(path + ".tmp.png", dpi=100)
    plt.close(fig)
    os.replace(path + ".tmp.png", path)
    paths.append(path)
  return paths


def arm_report(root, arms, noises, seeds, out_path, *, script, title, about, columns, cells,
               prefix, style, verdict=None):
  """The report of other config arms (saner_bases.py, bn_resnet.py) under ``root``: per
  noise setting one row per arm, ``| arm | n | last | chosen | memorization |`` then
  ``cells(arm, runs, means)`` under the extra ``columns`` (``runs``: the arm's metrics
  rows per seed; ``means``: mean last accuracy of the arms before it), then the lines
  of ``verdict({noise: means})`` (conclusions computed from the means), and a plot."""
  from jaxnoisy.train.trainer import write_atomic
  directory = os.path.dirname(out_path) or "."
  os.makedirs(directory, exist_ok=True)
  lines = [f"# {title}", "",
           f"Produced by `python experiments/{script} --runs {root} --arms "
           f"{','.join(arms)}` (report at commit {git_commit()}; runs trained at commit(s) "
           "{commits}; " f"{platform.machine()}, {os.cpu_count()} CPU cores). Settings: "
           f"`{CONFIG}:ARM`. Test accuracy in %, mean ± std over the seeds that finished "
           f"(n); memorization at the last epoch. {about}", ""]
  commits, curves, all_means = set(), {}, {}
  blank = " | ".join(["—"] * (3 + len(columns)))
  for noise in noises:
    lines += [f"## Noise: `{noise}`", "",
              "| arm | n | test acc. (last) | test acc. (chosen) | memorization | "
              + " | ".join(columns) + " |", "|---" * (5 + len(columns)) + "|"]
    means = all_means[noise] = {}
    for arm in arms:
      finished, diverged = seed_runs(root, noise, arm, seeds)
      for s in seeds:
        commits.update(run_commits(run_dir(root, noise, arm, s)))
      if not finished:
        lines.append(f"| {arm} | {count_cell(finished, diverged)} | {blank} |")
        continue
      sums, runs = [s for s, _ in finished], [rows for _, rows in finished]
      means[arm] = statistics.mean(s["test_accuracy"] for s in sums) * 100
      lines.append(f"| {arm} | {count_cell(finished, diverged)} | {summary_cells(sums)} | "
                   f"{cells(arm, runs, means)} |")
      curves.setdefault(noise, {})[arm] = runs
    lines.append("")
  lines[2] = lines[2].replace("{commits}", ", ".join(sorted(commits)) or "none")
  if verdict:
    lines += [*verdict(all_means), ""]
  for path in plot_curves(curves, directory, prefix, style):
    lines.append(f"![{os.path.basename(path)}]({os.path.relpath(path, directory)})")
  write_atomic(out_path, "\n".join(lines) + "\n")


def arm_main(doc, *, arms, default_arms, noises, results, report_fn) -> int:
  """The command line of an arm script: train what is missing, then ``report_fn(runs
  root, arms, noises, seeds, results path)`` (its report covers all of ``arms``)."""
  parser = argparse.ArgumentParser(description=doc.splitlines()[0])
  parser.add_argument("--arms", default=",".join(default_arms))
  parser.add_argument("--noise", default=",".join(noises))
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--runs", default=RUNS)
  parser.add_argument("--results", default=results)
  parser.add_argument("--report-only", action="store_true")
  args = parser.parse_args()
  chosen, noise = args.arms.split(","), args.noise.split(",")
  bad = [a for a in chosen if a not in arms] + [n for n in noise if n not in NOISE]
  if bad:
    parser.error(f"--arms/--noise must be among {arms} / {NOISE}, got {bad}")
  seeds = [int(s) for s in args.seeds.split(",")]
  if not args.report_only:
    train_missing(args.runs, noise, chosen, seeds)
  report_fn(args.runs, chosen, noise, seeds, args.results)
  print(f"wrote {args.results}")
  return 0


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--noise", default=",".join(NOISE))
  parser.add_argument("--methods", default=",".join(METHODS))
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--runs", default=RUNS)
  parser.add_argument("--results", default="experiments/results/RESULTS.md")
  parser.add_argument("--report-only", action="store_true")
  args = parser.parse_args()
  noises, methods = args.noise.split(","), args.methods.split(",")
  seeds = [int(s) for s in args.seeds.split(",")]
  bad = [m for m in methods if m not in METHODS] + [n for n in noises if n not in NOISE]
  if bad:
    parser.error(f"--methods/--noise must be among {METHODS} / {NOISE}, got {bad}")
  if not args.report_only:
    train_missing(args.runs, noises, methods, seeds)
  report(args.runs, seeds, args.results)
  print(f"wrote {args.results}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
