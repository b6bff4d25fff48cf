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

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fashion_mnist_table as table  # noqa: E402  (its run layout and summaries)

ARMS = ["resnet_sgd", "resnet_sam_rho0.05", "resnet_sam", "resnet_saner",
        "resnet_ncsam_kappa0.03", "resnet_ncsam"]
NOISE = ["symmetric:0.4", "instance:0.4"]
NORMS = ("ncsam_grad_norm", "ncsam_noise_grad_norm", "ncsam_compensation_over_rho",
         "ncsam_cos_eps_sam")
NORM_COLUMNS = ["‖g‖", "‖g*‖", "s‖c‖/ρ", "cos(ε, ε_SAM)"]


def norm_cells(runs) -> str:
  """NCSAM's last-epoch ‖g‖ | ‖g*‖ | s‖c‖/ρ | cos(ε, ε_SAM), mean over the runs (— for
  other arms, and for a quantity runs before it was logged lack)."""
  last = [rows[-1] for rows in runs if rows and NORMS[0] in rows[-1]]
  return " | ".join(f"{statistics.mean(r[k] for r in last):.3g}"
                    if last and all(k in r for r in last) else "—" for k in NORMS)


def report(root, arms, noises, seeds, out_path):
  table.arm_report(
      root, arms, noises, seeds, out_path, script="bn_resnet.py",
      title="SAM, SANER and NCSAM with a batch-norm ResNet on Fashion-MNIST",
      about="ResNet-20 at half width; the CNN's rows are in RESULTS.md. NCSAM's gradient "
            "norms at the last epoch (s‖g*‖/ρ > 1: the projection onto the ρ-ball leaves "
            "ε mostly along g*).",
      columns=NORM_COLUMNS, cells=lambda arm, runs, means: norm_cells(runs),
      prefix="bn_resnet", style=arm_style)


def arm_style(arm) -> dict:
  """One colour per method (SGD, SAM, SANER, NCSAM), dotted for the second setting."""
  method = arm.removeprefix("resnet_").split("_")[0]
  return {"color": f"C{['sgd', 'sam', 'saner', 'ncsam'].index(method)}",
          "linestyle": ":" if arm.endswith(("rho0.05", "kappa0.03")) else "-"}


def main() -> int:
  # The report always lists every arm, so that a partial protocol shows what is missing.
  return table.arm_main(
      __doc__, arms=ARMS, default_arms=ARMS, noises=NOISE, runs="runs/bn_resnet",
      results="experiments/results/BN_RESNET.md",
      report_fn=lambda root, _, noises, seeds, out: report(root, ARMS, noises, seeds, out))


if __name__ == "__main__":
  sys.exit(main())
