"""The sharpness-aware seed claims with a batch-norm ResNet (issues 16, 28 §2): SGD, SAM,
SANER and NCSAM's arms (``BN_ARMS`` of the config: as the paper says, with a SAM
warm-up, with its compensation sized to ρ) on the Fashion-MNIST table's protocol with
ResNet-20 at half width (68k parameters) instead of the CNN, on 5,000 of the 15,000
training examples (the same for every arm; the CPU budget).

Trains ``experiments/configs/fashion_mnist.py:ARM`` (``resnet_sgd``, ``resnet_sam``, ...)
for every arm, noise setting and seed not finished yet (each run resumes from its own
checkpoint), then writes ``experiments/results/BN_RESNET.md``: test accuracy and
memorization per arm, NCSAM's last-epoch ‖g‖, ‖g*‖, s‖c‖/ρ and cos(ε, ε_SAM) (how far
its perturbation turns from SAM's), and one plot of the curves per noise setting. Run
``--arms resnet_sgd`` first: the protocol's learning rate and weight decay are right
only if SGD memorises the noise (see the memorization curve).

Usage:
  python experiments/bn_resnet.py [--arms resnet_sgd,...] \\
      [--noise symmetric:0.4,instance:0.4] [--seeds 0,1,2] \\
      [--runs experiments/results/runs] \\
      [--report-only]
"""

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fashion_mnist_table as table  # noqa: E402  (its run layout and summaries)

ARMS = ["resnet_sgd", "resnet_sam", "resnet_saner", "resnet_ncsam", "resnet_ncsam_samwarmup",
        "resnet_ncsam_rho"]
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
      about="ResNet-20 at half width on 5,000 training examples; the CNN's rows are in "
            "RESULTS.md, cnn_bn's in CNN_BN.md. NCSAM's last-epoch norms: s‖c‖/ρ > 1 "
            "leaves ε mostly along the compensation c; cos(ε, ε_SAM) < 0 means the "
            "ascent is undone.",
      columns=NORM_COLUMNS, cells=lambda arm, runs, means: norm_cells(runs),
      prefix="bn_resnet", style=arm_style)


def arm_style(arm) -> dict:
  """One colour per method (SGD, SAM, SANER, NCSAM); NCSAM's arms told apart by the line
  (``bn_<arm>`` and ``resnet_<arm>`` alike)."""
  arm = arm.split("_", 1)[1]
  lines = {"ncsam_samwarmup": "--", "ncsam_rho": ":"}
  return {"color": f"C{['sgd', 'sam', 'saner', 'ncsam'].index(arm.split('_')[0])}",
          "linestyle": lines.get(arm, "-")}


def main() -> int:
  # The report always lists every arm, so that a partial protocol shows what is missing.
  return table.arm_main(
      __doc__, arms=ARMS, default_arms=ARMS, noises=NOISE,
      results="experiments/results/BN_RESNET.md",
      report_fn=lambda root, _, noises, seeds, out: report(root, ARMS, noises, seeds, out))


if __name__ == "__main__":
  sys.exit(main())
