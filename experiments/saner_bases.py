"""SANER over each SAM-like base its authors evaluate, with and without SANER, on
Fashion-MNIST at the noise settings where SAM memorises (issue: SANER over F-SAM/VaSSO).

Trains ``experiments/configs/fashion_mnist.py:ARM`` for every arm (a base such as
``fsam``, or SANER over it: ``saner_fsam``), noise setting and seed not finished yet
(each run resumes from its own checkpoint), then writes
``experiments/results/SANER_BASES.md`` and one plot of test accuracy and memorization
per noise setting. The table's protocol and settings; SAM and SANER themselves are rows
of ``RESULTS.md``.

Usage:
  python experiments/saner_bases.py [--arms fsam,saner_fsam,vasso,saner_vasso] \\
      [--noise asymmetric:0.4,instance:0.4] [--seeds 0,1,2] [--runs runs/saner_bases] \\
      [--report-only]
"""

import argparse
import os
import platform
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fashion_mnist_table as table  # noqa: E402  (its run layout and summaries)

ARMS = ["sam", "saner", "fsam", "saner_fsam", "vasso", "saner_vasso"]
DEFAULT_ARMS = ["fsam", "saner_fsam", "vasso", "saner_vasso"]
NOISE = ["asymmetric:0.4", "instance:0.4"]


def report(root, arms, noises, seeds, out_path):
  from jaxnoisy.train.trainer import write_atomic
  directory = os.path.dirname(out_path) or "."
  os.makedirs(directory, exist_ok=True)
  lines = ["# SANER over SAM-like bases on Fashion-MNIST", "",
           f"Produced by `python experiments/saner_bases.py --runs {root} --arms "
           f"{','.join(arms)}` (report at commit {table.git_commit()}; runs trained at "
           "commit(s) {commits}; " f"{platform.machine()}, {os.cpu_count()} CPU cores). "
           f"Settings: `{table.CONFIG}` (ARG = the arm; `saner_X` is SANER over base X with "
           "X's ρ). Test accuracy in %, mean ± std over the seeds that finished (n); "
           "memorization at the last epoch; Δ is SANER's gain over its base in the mean "
           "last-epoch accuracy.", ""]
  commits, curves = set(), {}
  for noise in noises:
    lines += [f"## Noise: `{noise}`", "",
              "| arm | n | test acc. (last) | test acc. (chosen) | memorization | Δ vs base |",
              "|---|---|---|---|---|---|"]
    means = {}
    for arm in arms:
      found = [r for r in (table.load(table.run_dir(root, noise, arm, s)) for s in seeds) if r]
      for s in seeds:
        commits.update(table.run_commits(table.run_dir(root, noise, arm, s)))
      if not found:
        lines.append(f"| {arm} | 0 | — | — | — | — |")
        continue
      sums = [s for s, _ in found]
      means[arm] = statistics.mean(s["test_accuracy"] for s in sums) * 100
      base = base_of(arm)
      delta = f"{means[arm] - means[base]:+.2f}" if base != arm and base in means else "—"
      lines.append(f"| {arm} | {len(found)} | {table.summary_cells(sums)} | {delta} |")
      curves.setdefault(noise, {})[arm] = [rows for _, rows in found]
    lines.append("")
  lines[2] = lines[2].replace("{commits}", ", ".join(sorted(commits)) or "none")
  for path in table.plot_curves(curves, directory, "saner_bases", arm_style):
    lines.append(f"![{os.path.basename(path)}]({os.path.relpath(path, directory)})")
  write_atomic(out_path, "\n".join(lines) + "\n")


def base_of(arm: str) -> str:
  """The SAM-like base of an arm: ``saner_fsam`` → ``fsam``, ``saner`` → ``sam``."""
  return "sam" if arm == "saner" else arm.removeprefix("saner_")


def arm_style(arm) -> dict:
  """A colour per base, solid with SANER and dotted without."""
  return {"color": f"C{['sam', 'fsam', 'vasso'].index(base_of(arm))}",
          "linestyle": "-" if arm.startswith("saner") else ":"}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--arms", default=",".join(DEFAULT_ARMS))
  parser.add_argument("--noise", default=",".join(NOISE))
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--runs", default="runs/saner_bases")
  parser.add_argument("--results", default="experiments/results/SANER_BASES.md")
  parser.add_argument("--report-only", action="store_true")
  args = parser.parse_args()
  arms, noises = args.arms.split(","), args.noise.split(",")
  bad = [a for a in arms if a not in ARMS] + [n for n in noises if n not in table.NOISE]
  if bad:
    parser.error(f"--arms/--noise must be among {ARMS} / {table.NOISE}, got {bad}")
  seeds = [int(s) for s in args.seeds.split(",")]
  if not args.report_only:
    table.train_missing(args.runs, noises, arms, seeds)
  report(args.runs, arms, noises, seeds, args.results)
  print(f"wrote {args.results}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
