"""The sharpness-aware seed claims with a batch-norm ResNet (issue 16): SGD, SAM (ρ 0.05
and 0.1), SANER and NCSAM (κ 0.03 and 0.1) on the Fashion-MNIST table's protocol with
ResNet-20 at half width (68k parameters) instead of the CNN.

Trains ``experiments/configs/fashion_mnist.py:ARM`` (``resnet_sgd``, ``resnet_sam``, ...)
for every arm, noise setting and seed not finished yet (each run resumes from its own
checkpoint), then writes ``experiments/results/BN_RESNET.md``: test accuracy and
memorization per arm, NCSAM's last-epoch ‖g‖, ‖g*‖ and s(t)‖g*‖/ρ (how far its
perturbation turns from SAM's), and one plot of the curves per noise setting. Run
``--arms resnet_sgd`` first: the protocol's learning rate and weight decay are right
only if SGD memorises the noise (see the memorization curve).

Usage:
  python experiments/bn_resnet.py [--arms resnet_sgd,...] \\
      [--noise symmetric:0.4,instance:0.4] [--seeds 0,1,2] [--runs runs/bn_resnet] \\
      [--report-only]
"""

import argparse
import os
import platform
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fashion_mnist_table as table  # noqa: E402  (its run layout and summaries)

ARMS = ["resnet_sgd", "resnet_sam_rho0.05", "resnet_sam", "resnet_saner",
        "resnet_ncsam_kappa0.03", "resnet_ncsam"]
NOISE = ["symmetric:0.4", "instance:0.4"]
NORMS = ("ncsam_grad_norm", "ncsam_noise_grad_norm", "ncsam_compensation_over_rho")


def norm_cells(runs) -> str:
  """NCSAM's last-epoch ‖g‖ | ‖g*‖ | s‖g*‖/ρ, mean over the runs (— for other arms)."""
  last = [rows[-1] for rows in runs if rows and NORMS[0] in rows[-1]]
  if not last:
    return "— | — | —"
  return " | ".join(f"{statistics.mean(r[k] for r in last):.3g}" for k in NORMS)


def report(root, arms, noises, seeds, out_path):
  from jaxnoisy.train.trainer import write_atomic
  directory = os.path.dirname(out_path) or "."
  os.makedirs(directory, exist_ok=True)
  lines = ["# SAM, SANER and NCSAM with a batch-norm ResNet on Fashion-MNIST", "",
           f"Produced by `python experiments/bn_resnet.py --runs {root}` (report at commit "
           f"{table.git_commit()}; runs trained at commit(s) {{commits}}; "
           f"{platform.machine()}, {os.cpu_count()} CPU cores). Settings: "
           f"`{table.CONFIG}:ARM` (ResNet-20 at half width; the CNN's rows are in "
           "RESULTS.md). Test accuracy in %, mean ± std over the seeds that finished (n); "
           "memorization at the last epoch; NCSAM's gradient norms at the last epoch "
           "(s‖g*‖/ρ > 1: the projection onto the ρ-ball leaves ε mostly along g*).", ""]
  commits, curves = set(), {}
  for noise in noises:
    lines += [f"## Noise: `{noise}`", "",
              "| arm | n | test acc. (last) | test acc. (chosen) | memorization "
              "| ‖g‖ | ‖g*‖ | s‖g*‖/ρ |", "|---|---|---|---|---|---|---|---|"]
    for arm in arms:
      found = [r for r in (table.load(table.run_dir(root, noise, arm, s)) for s in seeds) if r]
      for s in seeds:
        commits.update(table.run_commits(table.run_dir(root, noise, arm, s)))
      if not found:
        lines.append(f"| {arm} | 0 | — | — | — | — | — | — |")
        continue
      runs = [rows for _, rows in found]
      lines.append(f"| {arm} | {len(found)} | {table.summary_cells([s for s, _ in found])} "
                   f"| {norm_cells(runs)} |")
      curves.setdefault(noise, {})[arm] = runs
    lines.append("")
  lines[2] = lines[2].replace("{commits}", ", ".join(sorted(commits)) or "none")
  for path in table.plot_curves(curves, directory, "bn_resnet", arm_style):
    lines.append(f"![{os.path.basename(path)}]({os.path.relpath(path, directory)})")
  write_atomic(out_path, "\n".join(lines) + "\n")


def arm_style(arm) -> dict:
  """One colour per method (SGD, SAM, SANER, NCSAM), dotted for the second setting."""
  method = arm.removeprefix("resnet_").split("_")[0]
  return {"color": f"C{['sgd', 'sam', 'saner', 'ncsam'].index(method)}",
          "linestyle": ":" if arm.endswith(("rho0.05", "kappa0.03")) else "-"}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--arms", default=",".join(ARMS))
  parser.add_argument("--noise", default=",".join(NOISE))
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--runs", default="runs/bn_resnet")
  parser.add_argument("--results", default="experiments/results/BN_RESNET.md")
  parser.add_argument("--report-only", action="store_true")
  args = parser.parse_args()
  arms, noises = args.arms.split(","), args.noise.split(",")
  bad = [a for a in arms if a not in ARMS] + [n for n in noises if n not in table.NOISE]
  if bad:
    parser.error(f"--arms/--noise must be among {ARMS} / {table.NOISE}, got {bad}")
  seeds = [int(s) for s in args.seeds.split(",")]
  if not args.report_only:
    table.train_missing(args.runs, noises, arms, seeds)
  report(args.runs, ARMS, noises, seeds, args.results)
  print(f"wrote {args.results}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
