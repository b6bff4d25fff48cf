"""Batch norm at the CNN's cost (issue 28): SGD, SAM, SANER and three NCSAM arms on the
Fashion-MNIST table's protocol with ``cnn_bn`` (the table's CNN with batch norm after
each convolution) instead of the CNN.

NCSAM's arms: as the paper says (κ 0.1, SGD warm-up), with a SAM warm-up, and with its
compensation sized to ρ (``compensation="rho"``, a variant beyond the paper). Trains
``experiments/configs/fashion_mnist.py:ARM`` for every arm, noise setting and seed not
finished yet (each run resumes from its own checkpoint), then writes
``experiments/results/CNN_BN.md``: test accuracy and memorization per arm, NCSAM's
last-epoch ‖g‖, ‖g*‖, s‖c‖/ρ and cos(ε, ε_SAM), what batch norm changed against the
CNN's own runs in the same store (the table's ``sgd``, ``sam``, ``saner``, ``ncsam``),
and one plot of the curves per noise setting.

Usage:
  python experiments/cnn_bn.py [--arms bn_sgd,...] [--noise symmetric:0.4,...] \\
      [--seeds 0,1,2] [--runs experiments/results/runs] [--report-only]
"""

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bn_resnet  # noqa: E402  (NCSAM's norm columns, the arms' look)
import fashion_mnist_table as table  # noqa: E402  (its run layout and summaries)

BASES = ["sgd", "sam", "saner", "ncsam"]  # the table's CNN arms that bn_<arm> repeats
ARMS = [f"bn_{arm}" for arm in BASES + ["ncsam_samwarmup", "ncsam_rho"]]


def mean_last(root, noise, arm, seeds):
  """(mean, std, n) of the last-epoch test accuracy in % over the finished runs of
  ``arm`` (std 0 for one run), or None."""
  finished, _ = table.seed_runs(root, noise, arm, seeds)
  if not finished:
    return None
  accs = [s["test_accuracy"] * 100 for s, _ in finished]
  return statistics.mean(accs), statistics.stdev(accs) if len(accs) > 1 else 0.0, len(accs)


def standing(arm, base) -> str:
  """``arm``'s mean against ``base``'s (two ``mean_last``): ahead, behind, or level when
  the difference as printed (2 decimals) is within the larger of their stds."""
  diff = round(arm[0] - base[0], 2)
  word = "level" if abs(diff) <= max(arm[1], base[1]) else "ahead" if diff > 0 else "behind"
  return f"{diff:+.2f} {word}"


def verdict(root, seeds, means_by_noise) -> list:
  """What batch norm changed, from the records: per setting each method's last-epoch
  mean on the CNN → on ``cnn_bn`` (n each; ``means_by_noise`` gives the settings), and
  where SANER and NCSAM stand against SAM (the seed papers' verdicts) without and with
  batch norm."""
  lines = ["## What batch norm changed (from the records)", "",
           "Mean last-epoch test accuracy in % on the CNN (its own runs in this store, "
           "n) → on `cnn_bn` (n), and the difference; then SANER's and NCSAM's difference "
           "from SAM on the CNN → with batch norm, *level* where it is within one std (the "
           "larger of the two arms'); — where a run is missing (the CNN's rows carried in "
           "RESULTS.md are not records).", "",
           "| setting | " + " | ".join(BASES) + " | SANER vs SAM (CNN → BN) | "
           "NCSAM vs SAM (CNN → BN) |", "|---" * (3 + len(BASES)) + "|"]
  for noise in means_by_noise:
    cnn = {a: mean_last(root, noise, a, seeds) for a in BASES}
    bn = {a: mean_last(root, noise, f"bn_{a}", seeds) for a in BASES}
    cells = [f"{cnn[a][0]:.2f} ({cnn[a][2]}) → {bn[a][0]:.2f} ({bn[a][2]}), "
             f"{bn[a][0] - cnn[a][0]:+.2f}" if cnn[a] and bn[a] else "—" for a in BASES]
    cells += [f"{standing(cnn[a], cnn['sam'])} → {standing(bn[a], bn['sam'])}"
              if cnn[a] and cnn["sam"] and bn[a] and bn["sam"] else "—"
              for a in ("saner", "ncsam")]
    lines.append(f"| `{noise}` | " + " | ".join(cells) + " |")
  return lines


def report(root, arms, noises, seeds, out_path):
  table.arm_report(
      root, arms, noises, seeds, out_path, script="cnn_bn.py",
      title="SAM, SANER and NCSAM with batch norm at the CNN's cost (cnn_bn)",
      about="The table's CNN with batch norm after each convolution; the CNN's rows are in "
            "RESULTS.md. NCSAM's last-epoch norms: s‖c‖/ρ > 1 leaves ε mostly along the "
            "compensation c; cos(ε, ε_SAM) < 0 means the ascent is undone.",
      columns=bn_resnet.NORM_COLUMNS, cells=lambda arm, runs, means: bn_resnet.norm_cells(runs),
      prefix="cnn_bn", style=bn_resnet.arm_style,
      verdict=lambda means: verdict(root, seeds, means))


def main() -> int:
  return table.arm_main(
      __doc__, arms=ARMS, default_arms=ARMS, noises=table.NOISE,
      results="experiments/results/CNN_BN.md",
      report_fn=lambda root, _, noises, seeds, out: report(root, ARMS, noises, seeds, out))


if __name__ == "__main__":
  sys.exit(main())
