"""``jaxnoisy.data.arrayrecord``: prepare Clothing1M / label lists / arrays as ArrayRecord.

The expected values come from the synthetic files the tests write (the label dicts
behind the kv files, the image files on disk, PIL's own decode and resize), never
from the module under test.
"""

import json
import os

import numpy as np
import pytest
from PIL import Image

from jaxnoisy import cli
from jaxnoisy.data import arrayrecord as ar

SPLITS = ("noisy_train", "clean_train", "clean_val", "clean_test")


def _key(i: int) -> str:
  return f"images/{i % 2}/{i % 3}/{1000 + i},{2000 + i}.jpg"  # nested, comma as in the data


def _write_image(path, i: int, mode: str = "RGB") -> None:
  rng = np.random.default_rng(i)
  pixels = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
  pixels[: i % 10] = 255 - pixels[: i % 10]  # distinct content per image
  img = Image.fromarray(pixels)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  (img.convert("L") if mode == "L" else img).save(path, quality=90)


def _write_lines(path, lines) -> None:
  with open(path, "w") as f:
    f.writelines(line + "\n" for line in lines)


@pytest.fixture
def clothing(tmp_path):
  """A tiny Clothing1M: 30 images; returns (root, expected) with expected[split] =
  (keys, noisy, clean) computed from the dicts written to the kv files."""
  root = tmp_path / "c1m"
  for i in range(30):
    _write_image(root / _key(i), i, mode="L" if i == 5 else "RGB")
  rng = np.random.default_rng(0)
  lists = {
      "noisy_train": [int(i) for i in rng.permutation(18)],  # not sorted: order is kept
      "clean_train": [17, 12, 13, 14, 15, 16, 18, 19, 20, 21],
      "clean_val": [22, 23, 24, 25],
      "clean_test": [29, 26, 27, 28],
  }
  noisy = {i: int(rng.integers(14)) for i in [*range(20), 26]}  # 27..29, 20, 21: none
  clean = {i: int(rng.integers(14)) for i in [3, *range(12, 30)]}  # 0..11 but 3: none
  _write_lines(root / "noisy_label_kv.txt", [f"{_key(i)} {y}" for i, y in noisy.items()])
  _write_lines(root / "clean_label_kv.txt", [f"{_key(i)} {y}" for i, y in clean.items()])
  for split, ids in lists.items():
    _write_lines(root / f"{split}_key_list.txt", [_key(i) for i in ids])
  expected = {s: ([_key(i) for i in ids], [noisy.get(i, -1) for i in ids],
                  [clean.get(i, -1) for i in ids]) for s, ids in lists.items()}
  return root, expected


def _records(prepared, split):
  source = prepared.source(split)
  return [source[i] for i in range(len(source))]


def _leftovers(parent, keep=()):
  return sorted(set(os.listdir(parent)) - set(keep))


def test_shard_bounds_are_balanced_and_contiguous():
  assert ar.shard_bounds(10, 3) == [(0, 3), (3, 6), (6, 10)]
  assert ar.shard_bounds(2, 5) == [(0, 1), (1, 2)]
  assert ar.shard_bounds(0, 4) == [(0, 0)]
  for n, k in [(7, 1), (100, 7), (5, 5)]:
    b = ar.shard_bounds(n, k)
    sizes = [e - s for s, e in b]
    assert b[0][0] == 0 and b[-1][1] == n and all(x[1] == y[0] for x, y in zip(b, b[1:]))
    assert max(sizes) - min(sizes) <= 1 and len(b) == min(k, n)


def test_clothing1m_file_encoding(clothing, tmp_path):
  root, expected = clothing
  out = tmp_path / "prep"
  ar.prepare_clothing1m(root, out, shards=1)
  info = json.loads((out / "info.json").read_text())
  assert info["format"] == "jaxnoisy-arrayrecord-1" and info["name"] == "clothing1m"
  assert info["num_classes"] == 14 and info["image"] == {"encoding": "file", "shape": None}
  assert list(info["splits"]) == list(SPLITS)
  prepared = ar.open_prepared(out)
  for split in SPLITS:
    keys, noisy, clean = expected[split]
    assert info["splits"][split]["num_examples"] == len(keys)
    assert prepared.keys(split) == keys
    assert (out / f"{split}.keys").read_text().splitlines() == keys
    got_noisy, got_clean = prepared.labels(split)
    assert got_noisy.dtype == np.int32 and got_clean.dtype == np.int32
    np.testing.assert_array_equal(got_noisy, noisy)
    np.testing.assert_array_equal(got_clean, clean)
    records = _records(prepared, split)
    assert records == [(root / k).read_bytes() for k in keys]  # bytes as stored
    for record, k in zip(records, keys):
      np.testing.assert_array_equal(prepared.decode(record),
                                    np.asarray(Image.open(root / k).convert("RGB")))
  # The mix the fixture promises: noisy_train keys with and without clean labels,
  # a clean_test key without a noisy label, one with.
  assert {-1} < set(expected["noisy_train"][2]) and -1 in expected["clean_test"][1]
  assert set(expected["clean_test"][1]) != {-1}


def test_clothing1m_raw_resized(clothing, tmp_path):
  root, expected = clothing
  out = tmp_path / "prep"
  info = ar.prepare_clothing1m(root, out, image_size=8, shards=2)
  assert info["image"] == {"encoding": "raw", "shape": [8, 8, 3]}
  prepared = ar.open_prepared(out)
  keys = expected["noisy_train"][0]
  assert _key(5) in keys  # the grey JPEG
  for record, k in zip(_records(prepared, "noisy_train"), keys):
    image = prepared.decode(record)
    assert image.shape == (8, 8, 3) and image.dtype == np.uint8
    want = Image.open(root / k).convert("RGB").resize((8, 8), Image.BILINEAR)
    np.testing.assert_array_equal(image, np.asarray(want))


def test_shards_keep_records_and_order(clothing, tmp_path):
  from array_record.python.array_record_module import ArrayRecordReader
  root, _ = clothing
  one, three = tmp_path / "one", tmp_path / "three"
  ar.prepare_clothing1m(root, one, shards=1)
  ar.prepare_clothing1m(root, three, shards=3)
  p1, p3 = ar.open_prepared(one), ar.open_prepared(three)
  assert p3.info["splits"]["noisy_train"]["files"] == [
      f"noisy_train.array_record-0000{i}-of-00003" for i in range(3)]
  for split in SPLITS:
    assert len(p1.info["splits"][split]["files"]) == 1
    assert _records(p3, split) == _records(p1, split)
    counts = []
    for path in p3.files(split):
      reader = ArrayRecordReader(path)
      counts.append(reader.num_records())
      assert "group_size:1," in reader.writer_options_string()
      reader.close()
    assert sum(counts) == p3.info["splits"][split]["num_examples"]
    assert max(counts) - min(counts) <= 1


def test_grain_pipeline_reads_decoded_images(clothing, tmp_path):
  import grain
  root, expected = clothing
  ar.prepare_clothing1m(root, tmp_path / "prep", image_size=8, shards=2)
  prepared = ar.open_prepared(tmp_path / "prep")
  ds = grain.MapDataset.source(prepared.source("clean_test")).map(prepared.decode)
  keys = expected["clean_test"][0]
  for i in (3, 0):
    want = Image.open(root / keys[i]).convert("RGB").resize((8, 8), Image.BILINEAR)
    np.testing.assert_array_equal(ds[i], np.asarray(want))


def test_write_arrays_round_trip(tmp_path):
  rng = np.random.default_rng(1)
  train = rng.integers(0, 256, (13, 5, 7, 1), dtype=np.uint8)
  test = rng.integers(0, 256, (4, 5, 7, 1), dtype=np.uint8)
  noisy = rng.integers(0, 3, 13)
  clean = rng.integers(0, 3, 4)
  info = ar.write_arrays(tmp_path / "arr", name="toy", num_classes=3, shards=2, splits={
      "train": dict(images=train, noisy=noisy, keys=[f"t{i}" for i in range(13)]),
      "test": dict(images=test, clean=clean)})
  assert info["image"] == {"encoding": "raw", "shape": [5, 7, 1]}
  prepared = ar.open_prepared(tmp_path / "arr")
  for split, images in (("train", train), ("test", test)):
    got = np.stack([prepared.decode(r) for r in _records(prepared, split)])
    np.testing.assert_array_equal(got, images)
    assert len(prepared.info["splits"][split]["files"]) == 2
  n, c = prepared.labels("train")
  np.testing.assert_array_equal(n, noisy)
  np.testing.assert_array_equal(c, np.full(13, -1))
  n, c = prepared.labels("test")
  np.testing.assert_array_equal(n, np.full(4, -1))
  np.testing.assert_array_equal(c, clean)
  assert prepared.keys("train")[12] == "t12" and prepared.keys("test") == ["0", "1", "2", "3"]


@pytest.mark.parametrize("spec, match", [
    (dict(images=np.zeros((2, 4, 4, 1), np.uint8)), "noisy or clean"),
    (dict(images=np.zeros((2, 4, 4), np.uint8), noisy=[0, 1]), r"\(N, H, W, C\)"),
    (dict(images=np.zeros((2, 4, 4, 1), np.float32), noisy=[0, 1]), "uint8"),
    (dict(images=np.zeros((2, 4, 4, 1), np.uint8), noisy=[0, 3]), r"\[0, 3\)"),
    (dict(images=np.zeros((2, 4, 4, 1), np.uint8), noisy=[0]), "'noisy'.* 2 integers"),
    (dict(images=np.zeros((2, 5, 4, 1), np.uint8), noisy=[0, 1]), "shape of the other"),
])
def test_write_arrays_rejects_bad_splits(tmp_path, spec, match):
  ok = dict(images=np.zeros((2, 4, 4, 1), np.uint8), noisy=[0, 1])
  with pytest.raises(ValueError, match=match):
    ar.write_arrays(tmp_path / "arr", name="toy", num_classes=3,
                    splits={"a": ok, "b": spec})
  assert _leftovers(tmp_path) == []


def test_prepare_list(tmp_path):
  root = tmp_path / "imgs"
  keys = [f"x/{i}.png" for i in range(7)]
  for i, k in enumerate(keys):
    (root / "x").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 9, 3), 30 * i, np.uint8)).save(root / k)
  order = [4, 0, 6, 2, 1]
  noisy = {4: 2, 0: 0, 6: 5, 2: 1, 1: 1}
  _write_lines(tmp_path / "train.txt", [f"{keys[i]} {noisy[i]}" for i in order])
  _write_lines(tmp_path / "train_clean.txt", [f"{keys[6]} 3", f"{keys[0]} 0"])
  _write_lines(tmp_path / "test.txt", [f"{keys[5]} 4", f"{keys[3]} 1"])
  info = ar.prepare_list(
      tmp_path / "prep", root=root, name="toy", shards=2,
      splits={"train": str(tmp_path / "train.txt")},
      clean_lists={"train": str(tmp_path / "train_clean.txt"),
                   "test": str(tmp_path / "test.txt")})
  assert info["num_classes"] == 6 and info["name"] == "toy"  # max label 5, + 1
  prepared = ar.open_prepared(tmp_path / "prep")
  assert prepared.keys("train") == [keys[i] for i in order]
  n, c = prepared.labels("train")
  np.testing.assert_array_equal(n, [noisy[i] for i in order])
  np.testing.assert_array_equal(c, [-1, 0, 3, -1, -1])
  assert prepared.keys("test") == [keys[5], keys[3]]
  n, c = prepared.labels("test")
  np.testing.assert_array_equal(n, [-1, -1])
  np.testing.assert_array_equal(c, [4, 1])
  assert _records(prepared, "train") == [(root / keys[i]).read_bytes() for i in order]
  with pytest.raises(ValueError, match=r"num_classes is 5, but .* label 5"):
    ar.prepare_list(tmp_path / "p2", root=root, name="toy", num_classes=5,
                    splits={"train": str(tmp_path / "train.txt")})
  with pytest.raises(ValueError, match=r"test\.txt:1: x/5\.png is not in split 'train'"):
    ar.prepare_list(tmp_path / "p3", root=root, name="toy",
                    splits={"train": str(tmp_path / "train.txt")},
                    clean_lists={"train": str(tmp_path / "test.txt")})
  assert _leftovers(tmp_path, keep=["imgs", "prep", "train.txt", "train_clean.txt",
                                    "test.txt"]) == []


def test_missing_image_names_list_file_and_line(clothing, tmp_path):
  root, expected = clothing
  missing = expected["clean_val"][0][2]
  os.remove(root / missing)
  with pytest.raises(FileNotFoundError, match=r"clean_val_key_list\.txt:3: image file "
                     rf".*{missing}.* not found"):
    ar.prepare_clothing1m(root, tmp_path / "prep")
  assert _leftovers(tmp_path, keep=["c1m"]) == []


def test_key_without_its_label_names_list_file_and_line(clothing, tmp_path):
  root, expected = clothing
  no_clean = expected["noisy_train"][0][expected["noisy_train"][2].index(-1)]
  with open(root / "clean_test_key_list.txt", "a") as f:
    f.write(no_clean + "\n")  # line 5: a clean split's key without a clean label
  with pytest.raises(ValueError, match=r"clean_test_key_list\.txt:5: .* no clean label"):
    ar.prepare_clothing1m(root, tmp_path / "prep", image_size=8)
  assert _leftovers(tmp_path, keep=["c1m"]) == []


def test_noisy_train_key_without_noisy_label(clothing, tmp_path):
  root, expected = clothing
  no_noisy = expected["clean_test"][0][expected["clean_test"][1].index(-1)]
  lines = (root / "noisy_train_key_list.txt").read_text().splitlines()
  _write_lines(root / "noisy_train_key_list.txt", lines[:2] + [no_noisy] + lines[2:])
  with pytest.raises(ValueError, match=rf"noisy_train_key_list\.txt:3: {no_noisy} has no "
                     "noisy label in noisy_label_kv.txt"):
    ar.prepare_clothing1m(root, tmp_path / "prep")


def test_failure_while_writing_leaves_nothing(clothing, tmp_path):
  root, expected = clothing
  (root / expected["clean_test"][0][1]).write_bytes(b"not a jpeg")  # found, undecodable
  with pytest.raises(ValueError, match="cannot decode image"):
    ar.prepare_clothing1m(root, tmp_path / "prep", image_size=8)
  assert _leftovers(tmp_path, keep=["c1m"]) == []


def test_existing_output_needs_overwrite(clothing, tmp_path):
  root, _ = clothing
  out = tmp_path / "prep"
  ar.prepare_clothing1m(root, out)
  before = (out / "info.json").read_text()
  with pytest.raises(FileExistsError, match=r"out: .*prep already exists"):
    ar.prepare_clothing1m(root, out, image_size=8)
  assert (out / "info.json").read_text() == before
  ar.prepare_clothing1m(root, out, image_size=8, overwrite=True)
  assert ar.open_prepared(out).info["image"]["encoding"] == "raw"
  assert _leftovers(tmp_path, keep=["c1m", "prep"]) == []
  other = tmp_path / "mine"
  other.mkdir()
  (other / "notes.txt").write_text("keep me")
  with pytest.raises(ValueError, match="not a prepared dataset"):
    ar.prepare_clothing1m(root, other, overwrite=True)
  assert (other / "notes.txt").read_text() == "keep me"


def test_open_prepared_checks_format_and_files(clothing, tmp_path):
  root, _ = clothing
  out = tmp_path / "prep"
  ar.prepare_clothing1m(root, out, shards=2)
  info = json.loads((out / "info.json").read_text())
  (out / "info.json").write_text(json.dumps({**info, "format": "tfds"}))
  with pytest.raises(ValueError, match=r"info\.json: format must be "
                     r"'jaxnoisy-arrayrecord-1', got 'tfds'"):
    ar.open_prepared(out)
  (out / "info.json").write_text(json.dumps({**info, "image": {"encoding": "raw"}}))
  with pytest.raises(ValueError, match=r"image\.shape must be \[h, w, c\]"):
    ar.open_prepared(out)
  (out / "info.json").write_text(json.dumps(info))
  os.remove(out / "clean_val.array_record-00001-of-00002")
  with pytest.raises(FileNotFoundError, match=r"clean_val\.array_record-00001-of-00002"):
    ar.open_prepared(out)
  with pytest.raises(FileNotFoundError, match="info.json"):
    ar.open_prepared(tmp_path)


def test_cli_prepare_clothing1m_and_list(clothing, tmp_path, capsys):
  root, expected = clothing
  out = tmp_path / "cli"
  assert cli.main(["prepare", "clothing1m", str(root), "--out", str(out),
                   "--image-size", "8", "--shards", "2"]) == 0
  lines = capsys.readouterr().out.splitlines()
  for split in SPLITS:
    assert f"{split}: {len(expected[split][0])} examples, 2 shards" in lines
  assert ar.open_prepared(out).info["image"]["shape"] == [8, 8, 3]
  _write_lines(tmp_path / "l.txt", [f"{k} {y}" for k, y, _ in
                                    zip(*expected["noisy_train"])])
  assert cli.main(["prepare", "list", "--root", str(root), "--name", "mine",
                   "--split", f"train={tmp_path / 'l.txt'}", "--num-classes", "14",
                   "--out", str(tmp_path / "list")]) == 0
  assert "train: 18 examples, 1 shards" in capsys.readouterr().out
  np.testing.assert_array_equal(ar.open_prepared(tmp_path / "list").labels("train")[0],
                                expected["noisy_train"][1])
  with pytest.raises(SystemExit) as exc:
    cli.main(["prepare", "clothing1m", str(root), "--out", str(out)])
  assert exc.value.code == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "already exists" in err
