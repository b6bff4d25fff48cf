"""Batch norm at the CNN's cost (issue 28): SGD, SAM, SANER and three NCSAM arms on the
Fashion-MNIST table's protocol with ``cnn_bn`` (the table's CNN with batch norm after
each convolution) instead of the CNN.

NCSAM's arms: as the paper says (κ 0.1, SGD warm-up), with a SAM warm-up, and with its
compensation sized to ρ (``compensation="rho"``, a variant beyond the paper). Trains
``experiments/configs/fashion_mnist.py:ARM`` for every arm, noise setting and seed not
finished yet (each run resumes from its own checkpoint), then writes
``experiments/results/CNN_BN.md``: test accuracy and memorization per arm, NCSAM's
last-epoch ‖g‖, ‖g*‖, s‖c‖/ρ and cos(ε, ε_SAM), and one plot of the curves per noise
setting.

Usage:
  python experiments/cnn_bn.py [--arms bn_sgd,...] [--noise symmetric:0.4,...] \\
      [--seeds 0,1,2] [--runs experiments/results/runs] [--report-only]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bn_resnet  # noqa: E402  (NCSAM's norm columns, the arms' look)
import fashion_mnist_table as table  # noqa: E402  (its run layout and summaries)

ARMS = ["bn_sgd", "bn_sam", "bn_saner", "bn_ncsam", "bn_ncsam_samwarmup", "bn_ncsam_rho"]


def report(root, arms, noises, seeds, out_path):
  table.arm_report(
      root, arms, noises, seeds, out_path, script="cnn_bn.py",
      title="SAM, SANER and NCSAM with batch norm at the CNN's cost (cnn_bn)",
      about="The table's CNN with batch norm after each convolution; the CNN's rows are in "
            "RESULTS.md. NCSAM's last-epoch norms: s‖c‖/ρ > 1 leaves ε mostly along the "
            "compensation c; cos(ε, ε_SAM) < 0 means the ascent is undone.",
      columns=bn_resnet.NORM_COLUMNS, cells=lambda arm, runs, means: bn_resnet.norm_cells(runs),
      prefix="cnn_bn", style=bn_resnet.arm_style)


def main() -> int:
  return table.arm_main(
      __doc__, arms=ARMS, default_arms=ARMS, noises=table.NOISE,
      results="experiments/results/CNN_BN.md",
      report_fn=lambda root, _, noises, seeds, out: report(root, ARMS, noises, seeds, out))


if __name__ == "__main__":
  sys.exit(main())
