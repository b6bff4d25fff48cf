"""Long runs on shared clusters: one writer per run directory, stopping on SIGTERM or
Ctrl-C at the step in flight, divergence reported, a directory that stops taking writes."""

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from jaxnoisy import cli
from jaxnoisy.train import divergence, preemption, rundir
from jaxnoisy.train.trainer import train
from test_trainer import FMNIST, TOY, final_params, toy_data

# 512 examples, batch 64: 8 noisy steps per epoch, checkpoints 8 and 16.


@pytest.fixture(scope="module")
def full():
  """TOY trained without interruption."""
  with tempfile.TemporaryDirectory() as d:
    yield train(TOY, d, data=toy_data(), progress_bar=False)


def assert_same_run(a, b):
  for x, y in zip(final_params(a), final_params(b)):
    np.testing.assert_array_equal(x, y)
  assert [{k: v for k, v in r.items() if "seconds" not in k} for r in a["metrics"]] == \
      [{k: v for k, v in r.items() if "seconds" not in k} for r in b["metrics"]]


class At:
  """A progress "bar" that calls ``action()`` once, after ``step`` steps."""

  def __init__(self, step, action):
    self.left, self.action = step, action

  def update(self, n):
    self.left -= n
    if self.left == 0:
      self.action()


def sigterm():
  os.kill(os.getpid(), signal.SIGTERM)


def listing(directory):
  """Every path under ``directory`` with its size and modification time."""
  out = {}
  for root, _, files in os.walk(directory):
    for name in files:
      st = os.stat(os.path.join(root, name))
      out[os.path.join(root, name)] = (st.st_size, st.st_mtime_ns)
  return out


# 1. One writer per --out.

@pytest.mark.parametrize("first,second", [("fresh", "resume"), ("resume", "fresh")])
def test_a_second_run_beside_a_live_one_is_refused_and_writes_nothing(
    tmp_path, capsys, full, first, second):
  """A run holds --out; a second one started into it (as --resume beside a fresh run,
  or fresh beside a resumed one) refuses in one line naming the holder, exit 4, and
  leaves every file as it was. The first run then ends as usual; resumed after a
  SIGTERM mid-epoch, it ends with the uninterrupted run's parameters and metrics."""
  out, data = str(tmp_path / "run"), toy_data()
  if first == "resume":  # a run stopped by SIGTERM at step 3, resumed below
    with pytest.raises(preemption.Stopped) as stopped:
      train(TOY, out, data=data, progress_bar=At(3, sigterm))
    assert stopped.value.exit_status == 143 and stopped.value.checkpoint == 3
    assert "stopped by SIGTERM: checkpoint 3 is in" in str(stopped.value)
  seen = {}

  def second_run():
    before = listing(out)
    argv = ["train", "--out", out, "--epochs", "1", "--no-progress"]
    seen["status"] = cli.main(argv + (["--resume"] if second == "resume" else []))
    seen["err"] = capsys.readouterr().err
    seen["unchanged"] = listing(out) == before

  result = train(TOY, out, data=data, progress_bar=At(10, second_run), resume=first == "resume")
  assert_same_run(full, result)
  assert seen["status"] == cli.EXIT_LOCKED and seen["unchanged"], seen
  lines = seen["err"].strip().splitlines()
  assert len(lines) == 1 and f"--out {out} is in use by pid {os.getpid()}" in lines[0]
  assert "Traceback" not in seen["err"]
  assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "finished"


def test_a_file_system_without_locks_warns_and_runs(tmp_path, monkeypatch, capsys):
  def no_locks(fd, op):
    raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

  monkeypatch.setattr(rundir.fcntl, "flock", no_locks)
  with rundir.hold(str(tmp_path / "run")):
    pass
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "cannot lock run.lock (No locks available)" in err


def test_ctrl_c_before_training_is_one_line(tmp_path, monkeypatch, capsys):
  """Ctrl-C while the data loads (before the first step): nothing to save, no traceback."""
  def interrupted(config):
    raise KeyboardInterrupt

  monkeypatch.setattr("jaxnoisy.train.trainer.prepare_data", interrupted)
  out = str(tmp_path / "run")
  assert cli.main(["train", "--out", out, "--epochs", "1", "--no-progress"]) == 130
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and err.startswith("jaxnoisy: interrupted outside "
                                                       "training; --resume continues")


def test_a_killed_runs_lock_does_not_block_its_resume(tmp_path, full):
  """A run stopped by Ctrl-C; then a holder of its lock is killed with -9: its pid stays
  in the file, but the kernel released the lock, so --resume starts and ends as the
  uninterrupted run."""
  out, data = str(tmp_path / "run"), toy_data()
  with pytest.raises(preemption.Stopped) as stopped:
    train(TOY, out, data=data, progress_bar=At(5, lambda: os.kill(os.getpid(), signal.SIGINT)))
  assert stopped.value.exit_status == 130 and stopped.value.checkpoint == 5
  holder = subprocess.run(
      [sys.executable, "-c", "import os, signal, sys; from jaxnoisy.train import rundir; "
       "rundir._acquire(sys.argv[1]); os.kill(os.getpid(), signal.SIGKILL)", out],
      env={**os.environ, "PYTHONPATH": os.getcwd()}, capture_output=True, text=True)
  assert holder.returncode == -signal.SIGKILL, holder.stderr
  assert json.loads((tmp_path / "run" / rundir.LOCK_NAME).read_text())["pid"] != os.getpid()
  assert_same_run(full, train(TOY, out, data=data, progress_bar=False, resume=True))


# 2. Preemption loses at most the step in flight.

def test_sigterm_at_an_epochs_last_step_completes_the_epoch_first(tmp_path, full):
  """(Mid-epoch stops: the lock tests.) After the epoch's last step the epoch's row and
  checkpoint are written as usual, then the run stops."""
  at, out, data = 8, str(tmp_path / "run"), toy_data()
  handler = signal.getsignal(signal.SIGTERM)
  with pytest.raises(preemption.Stopped) as stopped:
    train(TOY, out, data=data, progress_bar=At(at, sigterm))
  assert stopped.value.exit_status == 128 + signal.SIGTERM and stopped.value.checkpoint == at
  assert f"stopped by SIGTERM: checkpoint {at} is in" in str(stopped.value)
  assert os.listdir(tmp_path / "run" / "checkpoints") == ["8"]
  assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1
  assert signal.getsignal(signal.SIGTERM) is handler  # restored
  assert_same_run(full, train(TOY, out, data=data, progress_bar=False, resume=True))


def test_a_second_ctrl_c_interrupts_at_once():
  """The first Ctrl-C asks to stop after the step; the second raises at once."""
  with preemption.Listener(manager=None, first_step=0) as listener:
    assert not listener()
    os.kill(os.getpid(), signal.SIGINT)
    assert listener() and listener.signum == signal.SIGINT and listener.step == 2
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.skipif(not os.path.exists(FMNIST),
                    reason="needs the Debian package dataset-fashion-mnist")
def test_two_processes_agree_on_the_step_when_one_gets_sigterm(tmp_path):
  """A real SIGTERM reaches process 1 only: both stop at the step JAX's preemption
  service agreed on, save it together, say so in one line and exit 143."""
  from test_multiprocess import cli as start, final_checkpoint
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  out = tmp_path / "run"
  procs = [start(out, "--coordinator", f"localhost:{port}", "--num-processes", "2",
                 "--process-id", str(i), "--epochs", "200", "--no-tensorboard")
           for i in range(2)]
  try:
    while not (out / "checkpoints" / "8").exists() and procs[1].poll() is None:
      time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)
    logs = [p.communicate(timeout=300)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  last = [log.strip().splitlines()[-1] for log in logs]
  assert [p.returncode for p in procs] == [143, 143], logs
  assert last[0] == last[1] and last[0].startswith("jaxnoisy: stopped by SIGTERM: checkpoint ")
  assert not any("Traceback" in log or "sync point" in log for log in logs), logs
  step = int(last[0].split("checkpoint ")[1].split()[0])
  assert step > 8 and (out / "checkpoints" / str(step)).is_dir()
  assert len(final_checkpoint(out)) > 5  # the agreed step restores


# 3. Divergence is reported, not trained through.

DIVERGES = TOY.replace(method="sgd", learning_rate=200.0, schedule="constant")  # NaN in epoch 2


def test_a_nonfinite_run_stops_in_one_line_and_summary_records_it(tmp_path):
  out = tmp_path / "run"
  with pytest.raises(divergence.Diverged) as diverged:
    train(DIVERGES.replace(epochs=4), str(out), data=toy_data(), progress_bar=False)
  message = str(diverged.value)
  assert len(message.splitlines()) == 1
  assert message.startswith("sgd diverged: non-finite training loss or parameters in "
                            "epoch 2 (steps 9-16); last finite checkpoint: checkpoint 8 in ")
  assert "--learning-rate (now 200)" in message
  summary = json.loads((out / "summary.json").read_text())
  assert summary["status"] == "diverged" and "test_accuracy" not in summary
  assert summary["diverged"]["epoch"] == 1 and summary["diverged"]["steps"] == [9, 16]
  assert summary["epochs_finished"] == 1
  assert sorted(os.listdir(out / "checkpoints")) == ["8"]  # the NaN state is not saved
  assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_on_nonfinite_continue_trains_through_and_records_the_diverged_replica(tmp_path):
  """A learning-rate sweep: only the large value diverges; it is named and recorded."""
  cfg = DIVERGES.replace(sweep=("learning_rate", (0.02, 200.0)), on_nonfinite="continue")
  result = train(cfg, str(tmp_path / "run"), data=[toy_data()] * 2, progress_bar=False)
  small, large = result["replicas"]
  assert np.isfinite(small["metrics"][1]["train_loss"]) and "nonfinite" not in small["summary"]
  assert np.isnan(large["metrics"][1]["train_loss"])
  record = large["summary"]["nonfinite"]
  assert record["epoch"] == 1 and record["replicas"] == ["learning_rate200_seed0"]
  assert "sgd diverged (replica learning_rate200_seed0): " in record["message"]
  assert result["summary"]["status"] == "finished"


@pytest.mark.skipif(not os.path.exists(FMNIST),
                    reason="needs the Debian package dataset-fashion-mnist")
def test_cli_divergence_exits_3_and_compare_shows_it(tmp_path, capsys):
  out = str(tmp_path / "run")
  status = cli.main(["train", "--method", "sgd", "--train-size", "256", "--heldout-size",
                     "128", "--epochs", "2", "--batch-size", "64", "--learning-rate", "1e6",
                     "--no-progress", "--no-tensorboard", "--out", out])
  err = capsys.readouterr().err.strip()
  assert status == cli.EXIT_DIVERGED and len(err.splitlines()) == 1, err
  assert err.startswith("jaxnoisy: sgd diverged: ") and "epoch 1 (steps 1-4)" in err
  assert cli.main(["compare", out]) == 0
  assert "| run | sgd | symmetric:0.4 | diverged at epoch 1 |" in capsys.readouterr().out


def test_table_counts_a_diverged_run_apart(tmp_path, monkeypatch):
  """Two finished seeds and one diverged: the mean is over the two, the n column says
  what happened to the third, and training goes on past a run that exits 3."""
  from test_experiment_scripts import experiment, fake_run
  table = experiment("fashion_mnist_table")
  root = str(tmp_path / "runs")
  for seed, acc in ((0, 0.80), (1, 0.84)):
    fake_run(table.run_dir(root, "symmetric:0.6", "fbr", seed), acc, 0.1,
             [{"test_accuracy": acc, "memorization": 0.1, "epoch_seconds": 2.0}])
  diverged = table.run_dir(root, "symmetric:0.6", "fbr", 2)
  os.makedirs(diverged)
  with open(os.path.join(diverged, "summary.json"), "w") as f:
    json.dump({"status": "diverged", "diverged": {"epoch": 9}, "wall_seconds": 60.0}, f)
  with open(os.path.join(diverged, "metrics.jsonl"), "w") as f:
    f.write(json.dumps({"test_accuracy": 0.5, "memorization": 0.2, "epoch_seconds": 4.0}))
  out = tmp_path / "RESULTS.md"
  table.report(root, [0, 1, 2], str(out))
  assert "| fbr | 2 of 3 finished, 1 diverged at epoch 10 | 82.00 ± 2.83 | 82.00 ± 2.83 " \
         "| 10.0 ± 0.0 | 2.0 |" in out.read_text()
  calls = []
  monkeypatch.setattr(table, "git_commit", lambda: "ccccccc")
  monkeypatch.setattr(table.subprocess, "run", lambda cmd: calls.append(cmd) or
                      subprocess.CompletedProcess(cmd, cli.EXIT_DIVERGED))
  table.train_missing(root, ["none"], ["sgd"], [0, 1])
  assert len(calls) == 2  # the first run diverged: the second still ran
  monkeypatch.setattr(table.subprocess, "run",
                      lambda cmd: subprocess.CompletedProcess(cmd, 1))
  with pytest.raises(subprocess.CalledProcessError):
    table.train_missing(root, ["none"], ["sam"], [0])


@pytest.mark.parametrize("flag,value", [("--on-nonfinite", "ignore")])
def test_bad_new_flags_are_one_line(tmp_path, capsys, flag, value):
  with pytest.raises(SystemExit) as exc:
    cli.main(["train", "--out", str(tmp_path / "x"), flag, value])
  assert exc.value.code == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and flag in err and "stop" in err
  with pytest.raises(ValueError, match=r"on_nonfinite must be one of \['stop', 'continue'\]"):
    TOY.replace(on_nonfinite="ignore").validate()


# 4. A directory that stops accepting writes.

class ReadOnly:
  """``directory`` stops accepting writes: made read-only, and as root (whom file modes
  do not bind) the process's effective user becomes nobody until :meth:`undo`."""

  def __init__(self, directory):
    self.directory = directory

  def __call__(self):
    os.chmod(self.directory, 0o555)
    if os.getuid() == 0:
      os.seteuid(65534)

  def undo(self):
    if os.getuid() == 0:
      os.seteuid(0)
    os.chmod(self.directory, 0o755)


@pytest.fixture
def shared_tmp():
  """A directory that the nobody user can reach and write (see :class:`ReadOnly`)."""
  with tempfile.TemporaryDirectory(dir="/tmp") as d:
    os.chmod(d, 0o777)
    yield d


@pytest.mark.parametrize("where,what", [("run", "metrics.jsonl"),
                                        ("checkpoints", "checkpoint 16")])
def test_a_directory_that_stops_taking_writes_ends_in_one_line(shared_tmp, full, where,
                                                               what):
  """Mid-epoch 1 the run directory (or just its checkpoints) turns read-only: the
  epoch's write fails with one line naming it and the directory, checkpoint 8 stays,
  and a --resume once it is writable again ends as the uninterrupted run."""
  out, data = os.path.join(shared_tmp, "run"), toy_data()
  os.makedirs(os.path.join(out, "checkpoints"))
  os.chmod(out, 0o777)
  block = ReadOnly(out if where == "run" else os.path.join(out, "checkpoints"))
  try:
    with pytest.raises(rundir.WriteFailed) as failed:
      train(TOY, out, data=data, progress_bar=At(12, block))
  finally:
    block.undo()
  message = str(failed.value)
  assert len(message.splitlines()) == 1 and message.startswith(f"could not write {what} to ")
  assert "checkpoint 8 is intact" in message and "then rerun with --resume" in message
  assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["8"]
  assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
  if where == "checkpoints":  # metrics.jsonl holds epoch 1's row, checkpoint 16 is gone
    assert_same_run(full, train(TOY, out, data=data, progress_bar=False, resume=True))


def test_cli_out_that_cannot_be_written_is_one_line(shared_tmp, capsys):
  block = ReadOnly(shared_tmp)
  block()
  try:
    status = cli.main(["train", "--out", os.path.join(shared_tmp, "run"), "--epochs", "1"])
  finally:
    block.undo()
  err = capsys.readouterr().err.strip()
  assert status == cli.EXIT_WRITE_FAILED and len(err.splitlines()) == 1, err
  assert "cannot write to --out" in err and "Permission denied" in err


def test_tensorboard_events_on_a_full_disk_fail_in_the_calling_thread(tmp_path):
  """A file-size limit stands in for a full disk: the write raises OSError where the
  trainer catches it (tensorboardX's writer thread died there, and the next scalar then
  blocked for ever on its queue)."""
  code = """
import resource, signal, sys
from jaxnoisy.train.tensorboard import TensorBoard
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit: EFBIG instead
tb = TensorBoard(sys.argv[1], ["seed0"])
resource.setrlimit(resource.RLIMIT_FSIZE, (200, resource.RLIM_INFINITY))
try:
  for step in range(100):
    tb.scalars(0, step, {"train_loss": 1.0})
except OSError as e:
  print("OSError", e.errno)
"""
  out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                       text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.getcwd()})
  assert out.stdout.strip() == "OSError 27" and "Traceback" not in out.stderr, out
