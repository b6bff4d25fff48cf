"""Prepared datasets: images in ArrayRecord files, labels beside them ("jaxnoisy-arrayrecord-1").

A prepared dataset is a directory::

  info.json                                 format, name, num_classes, image encoding, splits
  SPLIT.array_record-00000-of-0000K, ...    one record per example: the image only
  SPLIT.keys                                the image key (relative path) of each record
  labels.npz                                SPLIT.noisy, SPLIT.clean: int32, -1 where unknown

Record ``i`` of a split (its shards concatenated in the order ``info.json`` lists
them) is example ``i`` of its labels and keys. With encoding ``"file"`` a record is
the image file's bytes as stored (JPEG/PNG, not re-encoded); with ``"raw"`` it is the
uint8 H×W×C pixels (C order) of ``info["image"]["shape"]``. Noisy and clean labels
are kept apart, never merged: a benchmark's clean labels are evaluation data.

Writers build the directory beside ``out`` and rename it into place at the end, so a
failed prepare leaves nothing behind; bad input raises before anything is written.
Shards are written with ``group_size:1`` so that reading one record decodes only that
record (what grain's ``ArrayRecordDataSource`` expects for random access).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import secrets
import shutil
from typing import Callable, Mapping, Sequence

import numpy as np

__all__ = [
    "CLOTHING1M_SPLITS",
    "FORMAT",
    "Prepared",
    "is_prepared",
    "open_prepared",
    "prepare_clothing1m",
    "prepare_list",
    "read_label_list",
    "shard_bounds",
    "write_arrays",
]

FORMAT = "jaxnoisy-arrayrecord-1"
"""The ``format`` string of ``info.json``."""

WRITER_OPTIONS = {"file": "group_size:1,uncompressed", "raw": "group_size:1"}
"""ArrayRecordWriter options per encoding: one record per chunk; JPEG/PNG bytes are
stored as they are (already compressed), raw pixels with the default zstd."""

CLOTHING1M_SPLITS = {
    "noisy_train": ("noisy_train_key_list.txt", "noisy"),
    "clean_train": ("clean_train_key_list.txt", "clean"),
    "clean_val": ("clean_val_key_list.txt", "clean"),
    "clean_test": ("clean_test_key_list.txt", "clean"),
}
"""Clothing1M's splits: key-list file and the label that each key must have."""

CLOTHING1M_LABEL_FILES = {"noisy": "noisy_label_kv.txt", "clean": "clean_label_kv.txt"}
CLOTHING1M_NUM_CLASSES = 14

_SPLIT_NAME = re.compile(r"[A-Za-z0-9_-]+")


# --------------------------------------------------------------------------
# Small pure helpers.
# --------------------------------------------------------------------------


def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
  """Contiguous, balanced ``[start, end)`` ranges covering ``range(n)``.

  At most ``n`` shards (none empty), at least one (empty when ``n == 0``); sizes
  differ by at most one.
  """
  k = max(1, min(shards, n))
  cuts = [i * n // k for i in range(k + 1)]
  return list(zip(cuts[:-1], cuts[1:]))


def shard_name(split: str, index: int, count: int) -> str:
  return f"{split}.array_record-{index:05d}-of-{count:05d}"


def _check_positive_int(name: str, value, *, allow_none: bool = False) -> None:
  if value is None and allow_none:
    return
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    allowed = "None or an integer >= 1" if allow_none else "an integer >= 1"
    raise ValueError(f"{name} must be {allowed}, got {value!r}")


def _check_name(name) -> None:
  if not isinstance(name, str) or not name:
    raise ValueError(f"name must be a non-empty string, got {name!r}")


def _check_split_names(names, what: str = "splits") -> None:
  if not names:
    raise ValueError(f"{what} must name at least one split, got none")
  for s in names:
    if not isinstance(s, str) or not _SPLIT_NAME.fullmatch(s):
      raise ValueError(f"{what}: split names must match [A-Za-z0-9_-]+, got {s!r}")


def _check_key(key: str, where: str) -> None:
  """Keys are relative paths inside the root (no absolute path, no '..')."""
  if os.path.isabs(key) or ".." in key.replace("\\", "/").split("/"):
    raise ValueError(f"{where}: {key!r} must be a path relative to the root, inside it")


def _parse_label(text: str, where: str) -> int:
  try:
    label = int(text)
  except ValueError:
    raise ValueError(f"{where}: label must be an integer, got {text!r}") from None
  if label < 0:
    raise ValueError(f"{where}: label must be >= 0, got {label}")
  return label


def _read_lines(path: str) -> list[tuple[int, str]]:
  """``(line number, stripped text)`` of the non-blank lines of ``path``."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such file")
  with open(path, encoding="utf-8") as f:
    return [(i, line.strip()) for i, line in enumerate(f, 1) if line.strip()]


def read_label_list(path: str) -> tuple[list[str], list[int], list[int]]:
  """``(keys, labels, line numbers)`` of a ``relative/path LABEL`` file.

  The label is the last field (a path may contain spaces). A key listed twice with
  different labels is an error naming both lines.
  """
  keys, labels, lines, seen = [], [], [], {}
  for no, text in _read_lines(path):
    where = f"{path}:{no}"
    parts = text.rsplit(None, 1)
    if len(parts) != 2:
      raise ValueError(f"{where}: expected 'relative/path LABEL', got {text!r}")
    key, label = parts[0], _parse_label(parts[1], where)
    _check_key(key, where)
    if key in seen and labels[seen[key]] != label:
      raise ValueError(f"{where}: {key} has label {label}, but line "
                       f"{lines[seen[key]]} gives {labels[seen[key]]}")
    seen.setdefault(key, len(keys))
    keys.append(key)
    labels.append(label)
    lines.append(no)
  return keys, labels, lines


def _label_map(path: str, num_classes: int) -> dict[str, int]:
  """``{key: label}`` of a label list whose labels must be below ``num_classes``."""
  keys, labels, lines = read_label_list(path)
  for label, no in zip(labels, lines):
    if label >= num_classes:
      raise ValueError(f"{path}:{no}: label must be in [0, {num_classes}), got {label}")
  return dict(zip(keys, labels))


def _lookup(keys: Sequence[str], table: Mapping[str, int]) -> np.ndarray:
  return np.array([table.get(k, -1) for k in keys], dtype=np.int32).reshape(len(keys))


def _check_labels(name: str, labels: np.ndarray, num_classes: int) -> None:
  bad = (labels < -1) | (labels >= num_classes)
  if bad.any():
    i = int(np.argmax(bad))
    raise ValueError(f"{name}: labels must be in [0, {num_classes}) or -1 (unknown), "
                     f"got {int(labels[i])} at index {i}")


# --------------------------------------------------------------------------
# Images.
# --------------------------------------------------------------------------


def load_image(path: str, image_size: int) -> np.ndarray:
  """The image at ``path`` as RGB, bilinearly resized to ``image_size``², uint8 H×W×3."""
  from PIL import Image
  try:
    with Image.open(path) as img:
      rgb = img.convert("RGB")
  except (OSError, SyntaxError) as e:  # PIL's errors for unreadable / corrupt images
    raise ValueError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from None
  return np.asarray(rgb.resize((image_size, image_size), Image.BILINEAR), dtype=np.uint8)


def _file_bytes(path: str) -> bytes:
  with open(path, "rb") as f:
    return f.read()


def _image_records(paths: Sequence[str], image_size: int | None) -> Callable[[int], bytes]:
  if image_size is None:
    return lambda i: _file_bytes(paths[i])
  return lambda i: np.ascontiguousarray(load_image(paths[i], image_size)).tobytes()


def _image_info(image_size: int | None) -> dict:
  if image_size is None:
    return {"encoding": "file", "shape": None}
  return {"encoding": "raw", "shape": [image_size, image_size, 3]}


# --------------------------------------------------------------------------
# Writing.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _SplitData:
  """What a writer needs of one split: keys, labels and a record per example."""

  keys: Sequence[str]
  noisy: np.ndarray
  clean: np.ndarray
  record: Callable[[int], bytes]


def is_prepared(path) -> bool:
  """Whether ``path`` is a directory prepared in this format (its ``info.json`` says so)."""
  try:
    with open(os.path.join(path, "info.json")) as f:
      return json.load(f).get("format") == FORMAT
  except (OSError, ValueError, AttributeError):
    return False


def _check_out(out, overwrite: bool) -> str:
  """``out`` as a path; refuses an existing one unless ``overwrite`` and it is a
  prepared dataset (or an empty directory), never anything else."""
  out = os.fspath(out)
  if not out:
    raise ValueError("out must be a directory path, got ''")
  if os.path.lexists(out):
    if not overwrite:
      raise FileExistsError(f"out: {out} already exists (overwrite=True / --overwrite "
                            "replaces it)")
    if os.path.islink(out) or not os.path.isdir(out) or (
        os.listdir(out) and not is_prepared(out)):
      raise ValueError(f"out: {out} exists and is not a prepared dataset ({FORMAT}); "
                       "refusing to replace it")
  return out


def _write_shards(directory: str, split: str, n: int, shards: int,
                  record: Callable[[int], bytes], options: str) -> list[str]:
  from array_record.python.array_record_module import ArrayRecordWriter
  bounds = shard_bounds(n, shards)
  files = [shard_name(split, i, len(bounds)) for i in range(len(bounds))]
  for name, (start, end) in zip(files, bounds):
    path = os.path.join(directory, name)
    writer = ArrayRecordWriter(path, options)
    if not writer.ok():  # the constructor reports a failed open only through ok()
      raise OSError(f"{path}: cannot open for writing")
    try:
      for i in range(start, end):
        writer.write(record(i))
    finally:
      writer.close()
  return files


def _replace_dir(tmp: str, out: str) -> None:
  """Move ``tmp`` to ``out``, replacing a previous ``out`` (a directory)."""
  old = None
  if os.path.lexists(out):
    old = tmp + "-old"
    os.rename(out, old)
  try:
    os.replace(tmp, out)
  except BaseException:
    if old is not None:
      os.rename(old, out)
    raise
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)


def _write_prepared(out: str, *, name: str, num_classes: int, image: dict,
                    splits: Mapping[str, _SplitData], shards: int) -> dict:
  """Write the whole directory into a temporary one beside ``out``, then rename it."""
  out = os.path.abspath(out)
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  tmp = os.path.join(parent, f".{os.path.basename(out)}.tmp-{os.getpid()}-"
                             f"{secrets.token_hex(4)}")
  os.mkdir(tmp)  # not mkdtemp: the result keeps the umask's permissions
  try:
    info = {"format": FORMAT, "name": name, "num_classes": int(num_classes),
            "image": image, "splits": {}}
    labels = {}
    for split, data in splits.items():
      n = len(data.keys)
      files = _write_shards(tmp, split, n, shards, data.record,
                            WRITER_OPTIONS[image["encoding"]])
      info["splits"][split] = {"num_examples": n, "files": files}
      labels[f"{split}.noisy"] = data.noisy.astype(np.int32)
      labels[f"{split}.clean"] = data.clean.astype(np.int32)
      with open(os.path.join(tmp, f"{split}.keys"), "w", encoding="utf-8") as f:
        f.writelines(k + "\n" for k in data.keys)
    np.savez(os.path.join(tmp, "labels.npz"), **labels)
    with open(os.path.join(tmp, "info.json"), "w") as f:
      json.dump(info, f, indent=2)
      f.write("\n")
    _replace_dir(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return info


# --------------------------------------------------------------------------
# Public writers.
# --------------------------------------------------------------------------


def write_arrays(out, *, name: str, num_classes: int, splits: Mapping[str, Mapping],
                 shards: int = 1, overwrite: bool = False) -> dict:
  """Write in-memory splits as encoding ``"raw"``; returns ``info``.

  ``splits = {split: dict(images=uint8 (N, H, W, C), noisy=ints or None,
  clean=ints or None, keys=list of str or None)}``: every split has the same
  H×W×C; a missing label array is all -1 (at least one of noisy/clean per split);
  missing keys are ``"0"``, ``"1"``, ...
  """
  _check_name(name)
  _check_positive_int("num_classes", num_classes)
  _check_positive_int("shards", shards)
  _check_split_names(list(splits))
  out = _check_out(out, overwrite)
  shape, data = None, {}
  for split, spec in splits.items():
    unknown = set(spec) - {"images", "noisy", "clean", "keys"}
    if unknown:
      raise ValueError(f"splits[{split!r}]: unknown entries {sorted(unknown)}; allowed: "
                       "images, noisy, clean, keys")
    images = spec.get("images")
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
      got = (f"{images.dtype} array of shape {images.shape}"
             if isinstance(images, np.ndarray) else type(images).__name__)
      raise ValueError(f"splits[{split!r}]['images'] must be a uint8 array (N, H, W, C), "
                       f"got {got}")
    if shape is None:
      shape = list(images.shape[1:])
    elif list(images.shape[1:]) != shape:
      raise ValueError(f"splits[{split!r}]['images'] must have the image shape of the "
                       f"other splits, {tuple(shape)}, got {images.shape[1:]}")
    n = len(images)
    if spec.get("noisy") is None and spec.get("clean") is None:
      raise ValueError(f"splits[{split!r}] must give noisy or clean labels (or both)")
    labels = {}
    for kind in ("noisy", "clean"):
      given = spec.get(kind)
      arr = np.full(n, -1, np.int32) if given is None else np.asarray(given)
      if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"splits[{split!r}][{kind!r}] must be {n} integers (one per "
                         f"image), got {arr.dtype} array of shape {arr.shape}")
      _check_labels(f"splits[{split!r}][{kind!r}]", arr, num_classes)
      labels[kind] = arr
    keys = spec.get("keys")
    keys = [str(i) for i in range(n)] if keys is None else list(keys)
    if len(keys) != n or not all(isinstance(k, str) and "\n" not in k and k
                                 for k in keys):
      raise ValueError(f"splits[{split!r}]['keys'] must be {n} non-empty one-line "
                       f"strings, got {len(keys)} keys")
    data[split] = _SplitData(keys, labels["noisy"], labels["clean"],
                             lambda i, images=images: images[i].tobytes())
  return _write_prepared(out, name=name, num_classes=num_classes,
                         image={"encoding": "raw", "shape": shape}, splits=data,
                         shards=shards)


def _image_paths(root: str, keys: Sequence[str], lines: Sequence[int],
                 list_file: str) -> list[str]:
  """The image file of each key, checked to exist (error: list file and line)."""
  paths = [os.path.join(root, k) for k in keys]
  for path, no in zip(paths, lines):
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{list_file}:{no}: image file {path} not found")
  return paths


def prepare_clothing1m(root, out, *, image_size: int | None = None, shards: int = 16,
                       overwrite: bool = False) -> dict:
  """Prepare Clothing1M from its published layout under ``root``; returns ``info``.

  Reads ``noisy_label_kv.txt`` / ``clean_label_kv.txt`` (``images/... LABEL``) and
  the four key lists; writes ``noisy_train``, ``clean_train``, ``clean_val`` and
  ``clean_test`` in key-list order, each with both label arrays (-1 where a key is
  absent from that kv file). Every key of ``noisy_train`` must have a noisy label
  and every key of a ``clean_*`` split a clean one. ``image_size=None`` keeps the
  JPEG bytes (encoding ``"file"``); an int stores S×S×3 raw pixels.
  """
  _check_positive_int("image_size", image_size, allow_none=True)
  _check_positive_int("shards", shards)
  root = os.fspath(root)
  if not os.path.isdir(root):
    raise FileNotFoundError(f"root: {root} is not a directory")
  files = [*CLOTHING1M_LABEL_FILES.values(), *(f for f, _ in CLOTHING1M_SPLITS.values())]
  for f in files:
    if not os.path.isfile(os.path.join(root, f)):
      raise FileNotFoundError(f"{os.path.join(root, f)}: no such file (root must hold "
                              f"Clothing1M's {', '.join(files)} and images/)")
  out = _check_out(out, overwrite)
  tables = {kind: _label_map(os.path.join(root, f), CLOTHING1M_NUM_CLASSES)
            for kind, f in CLOTHING1M_LABEL_FILES.items()}
  data = {}
  for split, (list_name, needed) in CLOTHING1M_SPLITS.items():
    list_file = os.path.join(root, list_name)
    numbered = _read_lines(list_file)
    for no, key in numbered:
      _check_key(key, f"{list_file}:{no}")
      if key not in tables[needed]:
        raise ValueError(f"{list_file}:{no}: {key} has no {needed} label in "
                         f"{CLOTHING1M_LABEL_FILES[needed]}")
    keys = [k for _, k in numbered]
    paths = _image_paths(root, keys, [no for no, _ in numbered], list_file)
    data[split] = _SplitData(keys, _lookup(keys, tables["noisy"]),
                             _lookup(keys, tables["clean"]),
                             _image_records(paths, image_size))
  return _write_prepared(out, name="clothing1m", num_classes=CLOTHING1M_NUM_CLASSES,
                         image=_image_info(image_size), splits=data, shards=shards)


def prepare_list(out, *, root, splits: Mapping[str, str], name: str,
                 num_classes: int | None = None, image_size: int | None = None,
                 shards: int = 1, overwrite: bool = False,
                 clean_lists: Mapping[str, str] | None = None) -> dict:
  """Prepare images listed in ``relative/path LABEL`` files; returns ``info``.

  ``splits = {split: list file}``: the order of a split is its file's, its labels are
  the noisy labels. ``clean_lists = {split: list file}`` gives clean labels for some
  keys of a split (-1 for the others); a split named only there is written in that
  file's order with no noisy labels (e.g. a clean test set). ``num_classes``
  defaults to the largest label + 1. Images are under ``root``.
  """
  clean_lists = dict(clean_lists or {})
  _check_split_names([*splits, *clean_lists])
  _check_positive_int("num_classes", num_classes, allow_none=True)
  _check_positive_int("image_size", image_size, allow_none=True)
  _check_positive_int("shards", shards)
  _check_name(name)
  root = os.fspath(root)
  if not os.path.isdir(root):
    raise FileNotFoundError(f"root: {root} is not a directory")
  for f in [*splits.values(), *clean_lists.values()]:
    if not os.path.isfile(f):
      raise FileNotFoundError(f"{f}: no such file")
  out = _check_out(out, overwrite)
  parsed = {}
  for split in dict.fromkeys([*splits, *clean_lists]):
    noisy_file, clean_file = splits.get(split), clean_lists.get(split)
    keys, noisy, lines = read_label_list(noisy_file) if noisy_file else ([], [], [])
    clean_keys, clean, clean_lines = (read_label_list(clean_file) if clean_file
                                      else ([], [], []))
    list_file = noisy_file or clean_file
    if not noisy_file:
      keys, lines = clean_keys, clean_lines
    elif clean_file:
      known = set(keys)
      for key, no in zip(clean_keys, clean_lines):
        if key not in known:
          raise ValueError(f"{clean_file}:{no}: {key} is not in split {split!r} "
                           f"({noisy_file})")
    if not keys:
      raise ValueError(f"{list_file}: no examples (expected 'relative/path LABEL' lines)")
    noisy_arr = (np.asarray(noisy, np.int32) if noisy_file
                 else np.full(len(keys), -1, np.int32))
    clean_arr = _lookup(keys, dict(zip(clean_keys, clean)))
    parsed[split] = (keys, lines, list_file, noisy_arr, clean_arr)
  largest = max(int(max(a.max(), b.max())) for _, _, _, a, b in parsed.values())
  if num_classes is None:
    num_classes = largest + 1
  elif largest >= num_classes:
    raise ValueError(f"num_classes is {num_classes}, but the lists have label {largest} "
                     f"(labels must be in [0, num_classes))")
  data = {}
  for split, (keys, lines, list_file, noisy_arr, clean_arr) in parsed.items():
    paths = _image_paths(root, keys, lines, list_file)
    data[split] = _SplitData(keys, noisy_arr, clean_arr, _image_records(paths, image_size))
  return _write_prepared(out, name=name, num_classes=num_classes,
                         image=_image_info(image_size), splits=data, shards=shards)


# --------------------------------------------------------------------------
# Reading.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Prepared:
  """An opened prepared dataset: ``info`` (``info.json``) and per-split accessors.

  Picklable (a path and a dict), so ``decode`` can run in grain's worker processes.
  """

  path: str
  info: dict

  @property
  def splits(self) -> list[str]:
    return list(self.info["splits"])

  def _split(self, split: str) -> dict:
    if split not in self.info["splits"]:
      raise ValueError(f"split must be one of {self.splits}, got {split!r}")
    return self.info["splits"][split]

  def files(self, split: str) -> list[str]:
    """The split's shard files, in record order."""
    return [os.path.join(self.path, f) for f in self._split(split)["files"]]

  def labels(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(noisy, clean)`` int32 arrays, -1 where that label is unknown."""
    n = self._split(split)["num_examples"]
    path = os.path.join(self.path, "labels.npz")
    with np.load(path) as z:
      out = []
      for kind in ("noisy", "clean"):
        key = f"{split}.{kind}"
        if key not in z.files or z[key].shape != (n,):
          raise ValueError(f"{path}: {key} must be an array of {n} labels")
        out.append(z[key].astype(np.int32))
    return out[0], out[1]

  def keys(self, split: str) -> list[str]:
    """The image key (relative path) of each example, in record order."""
    n = self._split(split)["num_examples"]
    path = os.path.join(self.path, f"{split}.keys")
    with open(path, encoding="utf-8") as f:
      keys = f.read().splitlines()
    if len(keys) != n:
      raise ValueError(f"{path}: expected {n} keys, found {len(keys)}")
    return keys

  def source(self, split: str):
    """A ``grain.sources.ArrayRecordDataSource`` of the split's records (bytes)."""
    from grain.sources import ArrayRecordDataSource
    n = self._split(split)["num_examples"]
    source = ArrayRecordDataSource(self.files(split))
    if len(source) != n:
      raise ValueError(f"{self.path}: split {split!r} has {len(source)} records, "
                       f"info.json says {n}")
    return source

  def decode(self, record: bytes) -> np.ndarray:
    """A record's image as uint8 H×W×C (raw: a read-only view of the bytes)."""
    image = self.info["image"]
    if image["encoding"] == "raw":
      shape = tuple(image["shape"])
      if len(record) != int(np.prod(shape)):
        raise ValueError(f"record has {len(record)} bytes, expected {shape} uint8 pixels")
      return np.frombuffer(record, np.uint8).reshape(shape)
    from PIL import Image
    with Image.open(io.BytesIO(record)) as img:
      return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _check_info(info, path: str) -> None:
  if not isinstance(info, dict) or info.get("format") != FORMAT:
    got = info.get("format") if isinstance(info, dict) else info
    raise ValueError(f"{path}: format must be {FORMAT!r}, got {got!r}")
  image = info.get("image")
  encoding = image.get("encoding") if isinstance(image, dict) else None
  if encoding not in ("file", "raw"):
    raise ValueError(f"{path}: image.encoding must be 'file' or 'raw', got {encoding!r}")
  shape = image.get("shape")
  if encoding == "raw" and not (isinstance(shape, list) and len(shape) == 3
                                and all(isinstance(d, int) and d > 0 for d in shape)):
    raise ValueError(f"{path}: image.shape must be [h, w, c] for encoding 'raw', "
                     f"got {shape!r}")
  if not isinstance(info.get("num_classes"), int) or info["num_classes"] < 1:
    raise ValueError(f"{path}: num_classes must be an integer >= 1, got "
                     f"{info.get('num_classes')!r}")
  splits = info.get("splits")
  if not isinstance(splits, dict) or not splits:
    raise ValueError(f"{path}: splits must map split names to their files, got {splits!r}")
  for split, entry in splits.items():
    if not (isinstance(entry, dict) and isinstance(entry.get("num_examples"), int)
            and isinstance(entry.get("files"), list) and entry["files"]
            and all(isinstance(f, str) and os.path.basename(f) == f for f in entry["files"])):
      raise ValueError(f"{path}: splits[{split!r}] must be {{'num_examples': int, "
                       f"'files': [shard file names]}}, got {entry!r}")


def open_prepared(path) -> Prepared:
  """Open a prepared dataset directory, checking its format and that its files exist."""
  path = os.fspath(path)
  info_path = os.path.join(path, "info.json")
  if not os.path.isfile(info_path):
    raise FileNotFoundError(f"{info_path}: no such file (is {path} a prepared dataset?)")
  try:
    with open(info_path) as f:
      info = json.load(f)
  except ValueError as e:
    raise ValueError(f"{info_path}: not valid JSON ({e})") from None
  _check_info(info, info_path)
  needed = ["labels.npz"]
  for split, entry in info["splits"].items():
    needed += [*entry["files"], f"{split}.keys"]
  for f in needed:
    if not os.path.isfile(os.path.join(path, f)):
      raise FileNotFoundError(f"{os.path.join(path, f)}: no such file (listed in "
                              f"{info_path})")
  return Prepared(path, info)
