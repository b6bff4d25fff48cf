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
      [--noise asymmetric:0.4,instance:0.4] [--seeds 0,1,2] \\
      [--runs experiments/results/runs] [--report-only]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fashion_mnist_table as table  # noqa: E402  (its run layout and summaries)

ARMS = ["sam", "saner", "fsam", "saner_fsam", "vasso", "saner_vasso"]
DEFAULT_ARMS = ["fsam", "saner_fsam", "vasso", "saner_vasso"]
NOISE = ["asymmetric:0.4", "instance:0.4"]


def report(root, arms, noises, seeds, out_path):
  def delta(arm, runs, means):
    base = base_of(arm)
    return f"{means[arm] - means[base]:+.2f}" if base != arm and base in means else "—"
  table.arm_report(
      root, arms, noises, seeds, out_path, script="saner_bases.py",
      title="SANER over SAM-like bases on Fashion-MNIST",
      about="`saner_X` is SANER over base X with X's ρ; Δ is SANER's gain over its base "
            "in the mean last-epoch accuracy.",
      columns=["Δ vs base"], cells=delta, prefix="saner_bases", style=arm_style)


def base_of(arm: str) -> str:
  """The SAM-like base of an arm: ``saner_fsam`` → ``fsam``, ``saner`` → ``sam``."""
  return "sam" if arm == "saner" else arm.removeprefix("saner_")


def arm_style(arm) -> dict:
  """A colour per base, solid with SANER and dotted without."""
  return {"color": f"C{['sam', 'fsam', 'vasso'].index(base_of(arm))}",
          "linestyle": "-" if arm.startswith("saner") else ":"}


def main() -> int:
  return table.arm_main(__doc__, arms=ARMS, default_arms=DEFAULT_ARMS, noises=NOISE,
                        results="experiments/results/SANER_BASES.md", report_fn=report)


if __name__ == "__main__":
  sys.exit(main())
