"""The accelerator check: jaxnoisy's numerics, step speed and epoch cost on one GPU or TPU.

One prepared command for a short lease on an accelerator (about 8 minutes on one H200);
every section is timed against ``--budget-s`` and skipped, with the reason recorded,
when too little time is left. Results are written after every measurement to
``OUT/accelerator.json`` and ``OUT/ACCELERATOR.md`` (a crash keeps what was measured):

* **correctness**: the core numerical test files (transforms, perturbations, meta steps,
  noise) under pytest on the default backend, at JAX's default float32 matmul precision;
  the tests that fail there are run again with ``JAX_DEFAULT_MATMUL_PRECISION=highest``.
  Tests that need 8 devices (``shard_map``/``per_device``) are deselected on a machine
  with fewer;
* **steps**: ms/step of every method's training step, the trainer's own jitted step
  (on-device batch gather and augmentation included), on PreAct ResNet-18 with random
  CIFAR-shaped data (32×32×3, batch 128), compiled ahead of time (in parallel threads)
  and timed in interleaved rounds (median round; warm-up excluded; synchronised with
  ``block_until_ready``); the same for SGD and SAM at batch 512 and in bfloat16
  compute; each compiled step's device memory (``memory_analysis``: arguments +
  outputs + temporaries − aliased);
* **reference steps**: SGD and SAM on the same network and batch in PyTorch (eager and
  ``torch.compile``; a subprocess, skipped where torch is missing) and SAM as
  ``optax.contrib.sam`` in a plain jitted loop;
* **epoch cost**: the main job's protocol (``experiments/main_job.py``: Fashion-MNIST,
  instance 40%, 8,000 training examples, 18 epochs) per method: the run's wall time
  against steps × the isolated ms/step of its CNN step;
* **stream**: ``experiments/bench_stream.py`` at 32×32: the streaming input path's
  share of a step (needs grain and array_record).

``--tiny`` runs every section at toy sizes (the CNN, batch 8, one round) so that the
script cannot fail on the accelerator for a reason a CPU could have shown.

Usage: python experiments/accelerator_check.py [--tiny] [--budget-s 420] [--out DIR]
         [--commit HASH] [--data-dir DIR]
       python experiments/accelerator_check.py --report-only [--out DIR]
"""

import argparse
import concurrent.futures
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

# Two processes (pytest beside the benchmarks) share the accelerator: allocate on demand.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORE_TESTS = ("test_sam", "test_gsam", "test_sam_variants", "test_saner", "test_ncsam",
              "test_meta_reweight", "test_meta_correction", "test_fbr", "test_noise",
              "test_tree", "test_models", "test_mixed_precision")
MULTI_DEVICE = "shard_map or per_device"  # their test names: they need 8 devices
MAIN_JOB = ("sgd", "sam", "saner", "ncsam", "fbr", "mlc", "ebomlc")
SIZES = {
    "full": dict(model="preact_resnet18", shape=(32, 32, 3), batch=128, big_batch=512,
                 steps=20, rounds=5, epochs=18, train_size=8000, heldout_size=2000,
                 fbr_clean_epochs=10, stream=["--steps", "60", "--rounds", "3"],
                 epoch_methods=MAIN_JOB, tests=CORE_TESTS, methods=None),
    "tiny": dict(model="cnn", shape=(32, 32, 3), batch=8, big_batch=16, steps=2, rounds=1,
                 epochs=1, train_size=256, heldout_size=64, fbr_clean_epochs=1,
                 stream=["--steps", "4", "--rounds", "1"], epoch_methods=("sgd",),
                 tests=("test_tree",), methods=("sgd", "sam", "mlc")),
}


class Report:
  """The results so far: written to JSON and Markdown after every change."""

  def __init__(self, out: str, data: dict):
    self.out, self.data = out, data

  def put(self, section: str, value) -> None:
    self.data[section] = value
    self.write()

  def skip(self, section: str, why: str) -> None:
    self.data.setdefault("skipped", {})[section] = why
    print(f"accelerator_check: {section} skipped: {why}", flush=True)
    self.write()

  def write(self) -> None:
    os.makedirs(self.out, exist_ok=True)
    for name, text in (("accelerator.json", json.dumps(self.data, indent=1)),
                       ("ACCELERATOR.md", markdown(self.data))):
      tmp = os.path.join(self.out, name + ".tmp")
      with open(tmp, "w") as f:
        f.write(text + "\n")
      os.replace(tmp, os.path.join(self.out, name))


class Budget:
  def __init__(self, seconds: float):
    self.end = time.monotonic() + seconds

  def left(self) -> float:
    return self.end - time.monotonic()


# --- correctness -----------------------------------------------------------------------
def pytest_command(files, junit: str, deselect: bool, nodeids=None) -> list[str]:
  cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"]
  if importlib.util.find_spec("xdist") and (os.cpu_count() or 1) >= 8:
    cmd += ["-n", "6"]  # pytest-xdist: six workers share the accelerator
  if nodeids:
    return cmd + list(nodeids)
  cmd += [os.path.join(ROOT, "tests", f + ".py") for f in files]
  return cmd + (["-k", f"not ({MULTI_DEVICE})"] if deselect else [])


def read_junit(path: str) -> dict:
  """``{"passed", "failed": {nodeid: first line}, "skipped", "seconds"}`` of a JUnit file."""
  import xml.etree.ElementTree as ET
  failed, passed, skipped, seconds = {}, 0, 0, 0.0
  for case in ET.parse(path).getroot().iter("testcase"):
    seconds += float(case.get("time", 0))
    module = case.get("classname", "").replace(".", "/")
    nodeid = f"{module}.py::{case.get('name')}"
    bad = case.find("failure")
    if bad is None:
      bad = case.find("error")
    if bad is not None:
      failed[nodeid] = (bad.get("message") or "").splitlines()[0][:300] if bad.get(
          "message") else "error"
    elif case.find("skipped") is not None:
      skipped += 1
    else:
      passed += 1
  return {"passed": passed, "failed": failed, "skipped": skipped,
          "seconds": round(seconds, 1)}


def start_tests(files, junit: str, deselect: bool, env=None, nodeids=None):
  return subprocess.Popen(pytest_command(files, junit, deselect, nodeids), cwd=ROOT,
                          env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def finish_tests(proc, junit: str, timeout: float) -> dict:
  try:
    out, _ = proc.communicate(timeout=max(timeout, 1))
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.communicate()
    return {"error": f"pytest did not finish within {timeout:.0f} s"}
  if not os.path.exists(junit):
    return {"error": "pytest wrote no report: " + out.strip().splitlines()[-1][:300]}
  return read_junit(junit)


# --- the trainer's steps -----------------------------------------------------------------
class CompiledStep:
  """One method's trainer step, lowered and compiled ahead of time."""

  def __init__(self, method: str, model: str, shape, batch: int, dtype: str):
    import numpy as np

    from bench_steps import random_data, step_config
    from jaxnoisy.train.trainer import Trainer
    self.name = self.label(method, model, shape, batch, dtype)
    config = step_config(method, model=model, batch_size=batch, compute_dtype=dtype,
                         tensorboard=False, augment=shape[-1] == 3)
    c = shape[-1]
    data = random_data(shape, 4 * batch, 256, mean=(0.5,) * c, std=(0.25,) * c)
    self.trainer = t = Trainer(config, data)
    self.state = t.initial_state
    self.batch = next(iter(t.batches(0, 0, 1)))
    self.args = lambda state: (state, t.train_data, *self.batch, t.step_key,
                               np.float32(0.5), t.hyper)
    self.lowered = t.programs.train.lower(*self.args(self.state))
    self.compiled = None

  @staticmethod
  def label(method: str, model: str, shape, batch: int, dtype: str) -> str:
    return f"{method}/b{batch}/{dtype}/{model}"

  def compile(self) -> "CompiledStep":
    self.compiled = self.lowered.compile()
    return self

  def memory_mib(self):
    m = self.compiled.memory_analysis()
    if m is None:
      return None
    total = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
             - m.alias_size_in_bytes)
    return round(total / 2**20, 1)

  def run(self, steps: int) -> float:
    import jax
    t0 = time.perf_counter()
    for _ in range(steps):
      self.state, _ = self.compiled(*self.args(self.state))
    jax.block_until_ready(self.state)
    return (time.perf_counter() - t0) / steps * 1e3


def time_steps(steps: dict, n: int, rounds: int) -> dict:
  """Median ms/step of each step over interleaved rounds (after one warm-up round)."""
  for s in steps.values():
    s.run(2)
  times = {k: [] for k in steps}
  for _ in range(rounds):
    for k, s in steps.items():
      times[k].append(s.run(n))
  return {k: round(statistics.median(v), 3) for k, v in times.items()}


def build_steps(variants, budget: "Budget", reserve: float, threads: int = 8):
  """Lowers the variants in order (tracing holds the GIL) while more than ``reserve``
  seconds of the budget are left, each compiled in a thread pool as soon as it is
  lowered (XLA compiles without the GIL). Returns (steps, names not built)."""
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    futures, left_out = [], []
    for v in variants:
      if budget.left() < reserve:
        left_out.append(CompiledStep.label(*v))
        continue
      futures.append(pool.submit(CompiledStep.compile, CompiledStep(*v)))
    return {s.name: s for s in (f.result() for f in futures)}, left_out


# --- optax.contrib.sam ---------------------------------------------------------------------
def optax_sam_ms(model: str, shape, batch: int, n: int, rounds: int) -> dict:
  """SGD-with-momentum SAM from ``optax.contrib.sam`` (opaque mode: one call, two
  gradients) in a plain jitted step on one fixed batch, against plain SGD the same way."""
  import jax
  import jax.numpy as jnp
  import optax
  import optax.contrib

  from jaxnoisy.models import make_model
  net = make_model(model, 10, shape)
  x = jax.random.normal(jax.random.key(0), (batch, *shape))
  y = jax.random.randint(jax.random.key(1), (batch,), 0, 10)

  def loss(params, state):
    logits, _, new_state = net.apply(params, state, x, train=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new_state

  outer = optax.sgd(0.05, momentum=0.9)
  txs = {"optax_sgd": outer,
         "optax_contrib_sam": optax.contrib.sam(
             outer, optax.chain(optax.contrib.normalize(), optax.sgd(0.1)),
             opaque_mode=True)}
  out = {}
  for name, tx in txs.items():
    def step(params, state, opt):
      (_, state), g = jax.value_and_grad(loss, has_aux=True)(params, state)
      grad_fn = lambda p, _: jax.grad(lambda q: loss(q, state)[0])(p)
      updates, opt = tx.update(g, opt, params, grad_fn=grad_fn) \
          if name != "optax_sgd" else tx.update(g, opt, params)
      return optax.apply_updates(params, updates), state, opt

    step = jax.jit(step, donate_argnums=(0, 1, 2))
    carry = jax.tree.map(jnp.array, (net.params, net.state))
    carry = (*carry, tx.init(carry[0]))
    for _ in range(3):
      carry = step(*carry)
    jax.block_until_ready(carry)
    times = []
    for _ in range(rounds):
      t0 = time.perf_counter()
      for _ in range(n):
        carry = step(*carry)
      jax.block_until_ready(carry)
      times.append((time.perf_counter() - t0) / n * 1e3)
    out[name] = round(statistics.median(times), 3)
  return out


# --- PyTorch ---------------------------------------------------------------------------------
def torch_main(args) -> int:
  """``--torch-json``: SGD and SAM steps of a PyTorch PreAct ResNet-18 (or the tiny
  CNN-sized stand-in), eager and compiled, float32 and bfloat16 autocast; prints JSON."""
  import torch
  import torch.nn as nn
  import torch.nn.functional as F

  size = SIZES["tiny" if args.tiny else "full"]
  dev = "cuda" if torch.cuda.is_available() else "cpu"

  class Block(nn.Module):
    def __init__(self, cin, cout, stride):
      super().__init__()
      self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
      self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
      self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
      self.short = nn.Conv2d(cin, cout, 1, stride, bias=False) \
          if stride != 1 or cin != cout else None

    def forward(self, x):
      out = F.relu(self.bn1(x))
      short = self.short(out) if self.short is not None else x
      return self.conv2(F.relu(self.bn2(self.conv1(out)))) + short

  class PreActResNet(nn.Module):  # jaxnoisy.models.PreActResNet's layout
    def __init__(self, widths):
      super().__init__()
      self.stem = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
      layers, cin = [], widths[0]
      for i, w in enumerate(widths):
        for b in range(2):
          layers.append(Block(cin, w, (1 if i == 0 else 2) if b == 0 else 1))
          cin = w
      self.layers, self.bn = nn.Sequential(*layers), nn.BatchNorm2d(cin)
      self.fc = nn.Linear(cin, 10)

    def forward(self, x):
      x = F.relu(self.bn(self.layers(self.stem(x))))
      return self.fc(x.mean((2, 3)))

  widths = (64, 128, 256, 512) if not args.tiny else (4, 8)
  out = {"torch": torch.__version__, "device": dev,
         "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
         "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}

  def bench(batch, compiled, bf16):
    torch.manual_seed(0)
    model = PreActResNet(widths).to(dev).to(memory_format=torch.channels_last)
    fwd = torch.compile(model) if compiled else model
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, 3, 32, 32, device=dev).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=dev)

    def loss():
      with torch.autocast(dev, torch.bfloat16, enabled=bf16):
        return F.cross_entropy(fwd(x).float(), y)

    def sgd():
      opt.zero_grad(set_to_none=True)
      loss().backward()
      opt.step()

    def sam(rho=0.1):
      opt.zero_grad(set_to_none=True)
      loss().backward()
      params = [p for p in model.parameters() if p.grad is not None]
      with torch.no_grad():
        norm = torch.norm(torch.stack([p.grad.norm() for p in params]))
        eps = [p.grad * (rho / (norm + 1e-12)) for p in params]
        for p, e in zip(params, eps):
          p.add_(e)
      opt.zero_grad(set_to_none=True)
      loss().backward()
      with torch.no_grad():
        for p, e in zip(params, eps):
          p.sub_(e)
      opt.step()

    res = {}
    for name, fn in (("sgd", sgd), ("sam", sam)):
      for _ in range(3):
        fn()
      sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
      sync()
      times = []
      for _ in range(size["rounds"]):
        t0 = time.perf_counter()
        for _ in range(size["steps"]):
          fn()
        sync()
        times.append((time.perf_counter() - t0) / size["steps"] * 1e3)
      res[name] = round(statistics.median(times), 3)
    return res

  for key, (batch, compiled, bf16) in {
      "eager_b{b}_float32": (size["batch"], False, False),
      "eager_b{b}_bfloat16": (size["batch"], False, True),
      "eager_b{B}_float32": (size["big_batch"], False, False),
      "compiled_b{b}_float32": (size["batch"], True, False),
      "compiled_b{b}_bfloat16": (size["batch"], True, True)}.items():
    if compiled and not args.torch_compile:
      continue
    out[key.format(b=size["batch"], B=size["big_batch"])] = bench(batch, compiled, bf16)
    print(json.dumps(out), flush=True)  # the last line is the result so far
  return 0


def torch_steps(tiny: bool, compile_: bool, timeout: float) -> dict:
  try:
    import torch  # noqa: F401
  except ImportError:
    return {"error": "torch is not installed"}
  cmd = [sys.executable, os.path.abspath(__file__), "--torch-json",
         "--torch-compile" if compile_ else "--no-torch-compile"] + (["--tiny"] if tiny
                                                                     else [])
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout, 1))
    lines, err = proc.stdout.strip().splitlines(), proc.stderr
  except subprocess.TimeoutExpired as e:
    lines = (e.stdout or b"").decode().strip().splitlines()
    err = f"timed out after {timeout:.0f} s"
  result = json.loads(lines[-1]) if lines else {}
  if not lines or (err and "timed out" in err):
    result["error"] = (err.strip().splitlines() or ["no output"])[-1][:300]
  return result


# --- the main job's epoch cost -----------------------------------------------------------
def epoch_cost(method: str, size: dict, data_dir, ms_per_step: float) -> dict:
  from jaxnoisy.train.config import load_config
  from jaxnoisy.train.trainer import train
  config = load_config(os.path.join(ROOT, "experiments/configs/fashion_mnist.py") + ":" +
                       method).replace(
      noise="instance:0.4", epochs=size["epochs"], train_size=size["train_size"],
      heldout_size=size["heldout_size"], seed=0, tensorboard=False, data_dir=data_dir,
      **({"clean_epochs": size["fbr_clean_epochs"]} if method == "fbr" else {}))
  with tempfile.TemporaryDirectory() as out:
    t0 = time.perf_counter()
    result = train(config, out, progress_bar=False)
    wall = time.perf_counter() - t0
  s, rows = result["summary"], result["metrics"]
  epoch_s = [r["epoch_seconds"] for r in rows]
  eval_s = [r["eval_seconds"] for r in rows]
  steps = config.epochs * (config.train_size // config.batch_size)
  return {"wall_s": round(wall, 2), "noisy_steps": steps,
          "isolated_ms_per_step": ms_per_step,
          "wall_over_steps_x_ms": round(wall / (steps * ms_per_step / 1e3), 2),
          "epoch_s_median": round(statistics.median(epoch_s), 3),
          "epoch_s_first": round(epoch_s[0], 3), "eval_s_median":
          round(statistics.median(eval_s), 3),
          "test_accuracy": s.get("test_accuracy"),
          "memorization": round(s["memorization"], 4) if s.get("memorization") is not None
                          else None}


# --- the report ------------------------------------------------------------------------------
def markdown(d: dict) -> str:
  m = d.get("machine", {})
  lines = ["# jaxnoisy on an accelerator", "",
           "Written by `python experiments/accelerator_check.py` "
           f"({'--tiny, ' if d.get('tiny') else ''}commit `{m.get('commit', '?')}`); "
           "regenerate this page from `accelerator.json` with `--report-only`.", "",
           f"- machine: {m.get('device', '?')} ({m.get('platform', '?')}), "
           f"{m.get('host', '?')}", f"- versions: {m.get('versions', {})}",
           f"- started: {m.get('started', '?')}", ""]
  c = d.get("correctness")
  if c:
    lines += ["## Correctness", "", "The core numerical tests "
              f"({', '.join(c.get('files', []))}) on the default backend.", ""]
    for label, key in (("default float32 matmul precision", "default"),
                       ("failures rerun at `JAX_DEFAULT_MATMUL_PRECISION=highest`",
                        "highest")):
      r = c.get(key)
      if not r:
        continue
      if "error" in r:
        lines.append(f"- {label}: {r['error']}")
        continue
      lines.append(f"- {label}: {r['passed']} passed, {len(r['failed'])} failed, "
                   f"{r['skipped']} skipped ({r['seconds']} s)")
      lines += [f"  - `{k}`: {v}" for k, v in r["failed"].items()]
    if c.get("deselected"):
      lines.append(f"- deselected (need 8 devices): tests matching `{MULTI_DEVICE}`")
    lines.append("")
  s = d.get("steps")
  if s:
    sgd = {(k.split("/")[1], k.split("/")[2], k.split("/")[3]): v["ms"]
           for k, v in s.items() if k.startswith("sgd/")}
    lines += ["## Training steps", "", "ms/step of the trainer's jitted step "
              "(median of interleaved rounds), its ratio to SGD's at the same batch, "
              "dtype and model, and the compiled step's device memory.", "",
              "| method | batch | compute | model | ms/step | × SGD | memory MiB |",
              "|---|---|---|---|---|---|---|"]
    for k, v in s.items():
      method, b, dt, model = k.split("/")
      ref = sgd.get((b, dt, model))
      ratio = f"{v['ms'] / ref:.2f}" if ref else "–"
      lines.append(f"| {method} | {b[1:]} | {dt} | {model} | {v['ms']:.2f} | {ratio} | "
                   f"{v['memory_mib']} |")
    lines.append("")
  r = d.get("reference")
  if r:
    lines += ["## Against other implementations", "",
              "Same network layout and batch; PyTorch in channels-last with its default "
              "TF32 settings (below); `optax.contrib.sam` and plain optax SGD in a "
              "minimal jitted step on one fixed batch (no batch gather).", "",
              "```", json.dumps(r, indent=1), "```", ""]
  e = d.get("epoch")
  if e:
    lines += ["## Epoch cost: the main job's protocol", "",
              "Each method's whole run (compilation, data, evaluation and checkpoints "
              "included) against its noisy steps × the isolated step time.", "",
              "| method | wall s | noisy steps | ms/step | wall / (steps × ms) | "
              "epoch s (median) | eval s | test acc | memorization |",
              "|---|---|---|---|---|---|---|---|---|"]
    for k, v in e.items():
      lines.append(f"| {k} | {v['wall_s']} | {v['noisy_steps']} | "
                   f"{v['isolated_ms_per_step']} | {v['wall_over_steps_x_ms']} | "
                   f"{v['epoch_s_median']} | {v['eval_s_median']} | "
                   f"{v['test_accuracy']} | {v['memorization']} |")
    lines.append("")
  st = d.get("stream")
  if st:
    lines += ["## Streaming input path", "", "```", json.dumps(st, indent=1), "```", ""]
  if d.get("skipped"):
    lines += ["## Skipped", ""] + [f"- {k}: {v}" for k, v in d["skipped"].items()] + [""]
  return "\n".join(lines)


def machine(commit: str) -> dict:
  import importlib.metadata as md

  import jax
  versions = {}
  for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "torch"):
    try:
      versions[name] = md.version(name)
    except md.PackageNotFoundError:
      pass
  dev = jax.devices()[0]
  return {"commit": commit, "platform": dev.platform, "device": dev.device_kind,
          "device_count": jax.device_count(),
          "host": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                  f"{platform.python_version()}", "versions": versions,
          "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tiny", action="store_true", help="toy sizes (a CPU test)")
  parser.add_argument("--budget-s", type=float, default=420.0,
                      help="wall-clock seconds for everything; sections that no longer "
                           "fit are skipped")
  parser.add_argument("--out", default=os.path.join(ROOT, "experiments", "results"))
  parser.add_argument("--commit", default=None, help="the commit being checked (default: "
                      "git rev-parse HEAD)")
  parser.add_argument("--data-dir", default=None, help="Fashion-MNIST's IDX files "
                      "(default: the usual places)")
  parser.add_argument("--torch-compile", action=argparse.BooleanOptionalAction,
                      default=True, help="also time torch.compile'd steps")
  parser.add_argument("--report-only", action="store_true",
                      help="rewrite ACCELERATOR.md from OUT/accelerator.json")
  parser.add_argument("--torch-json", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.budget_s <= 0:
    parser.error(f"--budget-s must be positive, got {args.budget_s}")
  if args.torch_json:
    return torch_main(args)
  if args.report_only:
    Report(args.out, json.load(open(os.path.join(args.out, "accelerator.json")))).write()
    return 0
  budget = Budget(args.budget_s)
  size = SIZES["tiny" if args.tiny else "full"]
  commit = args.commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                         capture_output=True, text=True).stdout.strip()
  import jax

  from jaxnoisy.train.methods import METHODS
  report = Report(args.out, {"tiny": args.tiny})
  report.put("machine", machine(commit or "unknown"))
  tmp = tempfile.mkdtemp()
  deselect = jax.device_count() < 8
  tests = start_tests(size["tests"], os.path.join(tmp, "default.xml"), deselect)

  # Every method at the reference size, then SGD and SAM at the large batch and in
  # bfloat16; the main job's CNN steps (for its epoch cost) last.
  b, B, model, shape = size["batch"], size["big_batch"], size["model"], size["shape"]
  variants = [(m, model, shape, b, "float32") for m in size["methods"] or METHODS]
  variants += [(m, model, shape, bb, dt) for m in ("sgd", "sam")
               for bb, dt in ((B, "float32"), (b, "bfloat16"), (B, "bfloat16"))]
  variants += [(m, "cnn", (28, 28, 1), 128, "float32") for m in size["epoch_methods"]]
  print(f"accelerator_check: compiling {len(variants)} steps", flush=True)
  t0 = time.perf_counter()
  steps, left_out = build_steps(variants, budget, reserve=0.45 * args.budget_s)
  compile_s = time.perf_counter() - t0
  if left_out:
    report.skip("steps " + ", ".join(left_out), "not lowered: the compile phase's share "
                "of the budget was spent")
  report.put("correctness", {"default": finish_tests(
      tests, os.path.join(tmp, "default.xml"), budget.left() - 120),
      "files": list(size["tests"]), "deselected": deselect})
  ms = time_steps(steps, size["steps"], size["rounds"])
  report.put("steps", {k: {"ms": ms[k], "memory_mib": s.memory_mib()}
                       for k, s in steps.items()})
  report.data["machine"]["compile_all_steps_s"] = round(compile_s, 1)

  failed = list(report.data["correctness"]["default"].get("failed", {}))
  if failed and budget.left() > 90:
    junit = os.path.join(tmp, "highest.xml")
    proc = start_tests(size["tests"], junit, deselect,
                       env={"JAX_DEFAULT_MATMUL_PRECISION": "highest"}, nodeids=failed)
    report.data["correctness"]["highest"] = finish_tests(proc, junit, budget.left() - 60)
    report.write()

  reference = {}
  if budget.left() > 60:
    reference["optax"] = optax_sam_ms(model, shape, b, size["steps"], size["rounds"])
    report.put("reference", reference)
  if budget.left() > 90:
    reference["pytorch"] = torch_steps(args.tiny, args.torch_compile, budget.left() - 60)
    report.put("reference", reference)
  else:
    report.skip("pytorch", f"{budget.left():.0f} s left")

  epoch = {}
  for method in size["epoch_methods"]:
    if budget.left() < 40:
      report.skip(f"epoch cost {method}", f"{budget.left():.0f} s left")
      continue
    cnn = CompiledStep.label(method, "cnn", None, 128, "float32")
    if cnn not in ms:
      report.skip(f"epoch cost {method}", "its CNN step was not built")
      continue
    epoch[method] = epoch_cost(method, size, args.data_dir, ms[cnn])
    report.put("epoch", epoch)

  if budget.left() > 45:
    out = os.path.join(tmp, "stream.json")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "experiments",
                                                        "bench_stream.py"),
                           "--sizes", "32", *size["stream"], "--out", out],
                          capture_output=True, text=True, timeout=budget.left())
    report.put("stream", json.load(open(out)) if proc.returncode == 0 else
               {"error": (proc.stderr.strip().splitlines() or ["?"])[-1][:300]})
  else:
    report.skip("stream", f"{budget.left():.0f} s left")
  print(f"accelerator_check: done, {budget.left():.0f} s of the budget left; "
        f"{os.path.join(args.out, 'ACCELERATOR.md')}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
