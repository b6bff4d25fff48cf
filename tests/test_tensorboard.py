"""TensorBoard event files: every logged scalar reads back with the value of
metrics.jsonl, the training loss every ``log_every`` steps, one writer per replica."""

import glob
import json
import os
import struct

import pytest
from tensorboardX.proto import event_pb2

from jaxnoisy.train.trainer import train
from test_trainer import TOY, CtrlC, toy_data


def read_events(directory) -> dict:
  """``{tag: {step: value}}`` from the TFRecord event files of ``directory``, parsed by
  hand (length, its CRC, the Event proto, its CRC), honouring purge marks."""
  out = {}
  for path in sorted(glob.glob(os.path.join(directory, "events.out.tfevents.*"))):
    with open(path, "rb") as f:
      data = f.read()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4
      if event.HasField("session_log") and event.session_log.status == 1:  # START
        for steps in out.values():  # TensorBoard drops what came at or after it
          for s in [s for s in steps if s >= event.step]:
            del steps[s]
      for v in event.summary.value:
        out.setdefault(v.tag, {})[event.step] = v.simple_value
  return out


def test_event_files_hold_the_logged_scalars(tmp_path):
  cfg = TOY.replace(method="sgd", log_every=3)
  result = train(cfg, str(tmp_path / "run"), data=toy_data(), progress_bar=False)
  events = read_events(tmp_path / "run" / "tb")
  with open(tmp_path / "run" / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  assert len(rows) == 2
  for row in rows:
    for key in ("test_accuracy", "memorization", "train_loss", "epoch_seconds"):
      assert events[f"epoch/{key}"][row["step"]] == pytest.approx(row[key], rel=1e-6)
  # 8 steps per epoch: the loss at steps 3, 6, 9, 12, 15.
  assert sorted(events["step/train_loss"]) == [3, 6, 9, 12, 15]
  assert result["summary"]["test_accuracy"] == rows[-1]["test_accuracy"]


def test_resume_replaces_the_redone_steps_and_replicas_get_a_writer_each(tmp_path):
  cfg = TOY.replace(method="sgd", log_every=1, seeds=2)
  with pytest.raises(KeyboardInterrupt):
    train(cfg, str(tmp_path / "run"), data=[toy_data(), toy_data(seed=1)],
          progress_bar=CtrlC(12))
  train(cfg, str(tmp_path / "run"), data=[toy_data(), toy_data(seed=1)], progress_bar=False,
        resume=True)
  for label in ("seed0", "seed1"):
    events = read_events(tmp_path / "run" / "tb" / label)
    assert sorted(events["step/train_loss"]) == list(range(1, 17))
    with open(tmp_path / "run" / label / "metrics.jsonl") as f:
      rows = [json.loads(line) for line in f]
    assert {s: events["epoch/test_accuracy"][s] for s in (8, 16)} == \
        pytest.approx({r["step"]: r["test_accuracy"] for r in rows})


def test_tensorboard_can_be_turned_off(tmp_path):
  train(TOY.replace(method="sgd", epochs=1, tensorboard=False), str(tmp_path / "run"),
        data=toy_data(), progress_bar=False)
  assert not (tmp_path / "run" / "tb").exists()
