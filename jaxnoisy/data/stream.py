"""The streaming input path: training batches read from ArrayRecord files with grain.

A dataset prepared with ``jaxnoisy prepare`` (:mod:`jaxnoisy.data.arrayrecord`) opens as a
:class:`jaxnoisy.data.Dataset` whose images are :class:`RecordImages`: lazy
``(N, H, W, C)`` uint8 arrays that read nothing until asked. The small sets (held out,
clean, test, the memorization set) are read into memory and take the device-resident
path; a large training set is streamed: :class:`BatchStream` reads each step's batch
with grain's threaded prefetch, and the jitted step gathers the labels by the example
indices that travel with the batch (labels are small and stay on device).

The order is the device path's: the epoch permutation of the run's data key, cut into
global batches; each process reads only its slice of every global batch (the slice its
devices hold). So both paths give the same batches for the same seed, and the position
in the stream is a pure function of the step count in the checkpointed state: a resumed
run rebuilds the stream at that step and needs no iterator state of its own.
"""

from __future__ import annotations

import threading
from typing import Iterator

import numpy as np

from jaxnoisy.data import arrayrecord


class RecordImages:
  """The images of a prepared split (or a subset of it), read on demand.

  Behaves as a uint8 ``(N, H, W, C)`` array for what the loaders and the trainer ask of
  one: ``shape``, ``dtype``, ``ndim``, ``len``; indexing with an integer array, a
  boolean mask or a slice returns another :class:`RecordImages` (nothing read);
  ``np.asarray`` reads and decodes the selected examples; :meth:`read` reads given
  positions. The split must hold fixed-size images (``prepare --image-size``).

  Records are read with array_record's own reader, one per shard and per thread, kept
  open (grain's threads read batches side by side), rather than through grain's
  ``ArrayRecordDataSource.__getitems__``, which starts a thread pool on every call.
  """

  def __init__(self, prepared: arrayrecord.Prepared, split: str, index=None):
    image = prepared.info["image"]
    if image["encoding"] != "raw":
      raise ValueError(f"split {split!r} of {prepared.path} stores image files of any size; "
                       "to train on it, prepare it with --image-size S (fixed-size images)")
    self.prepared, self.split = prepared, split
    n = prepared.info["splits"][split]["num_examples"]
    self.index = np.arange(n) if index is None else np.asarray(index, np.int64)
    self.shape = (len(self.index), *image["shape"])
    self.dtype, self.ndim = np.dtype(np.uint8), 4
    self._thread = threading.local()

  def _readers(self) -> tuple[list, np.ndarray]:
    """This thread's readers of the split's shards and each shard's first record."""
    if getattr(self._thread, "readers", None) is None:
      from array_record.python.array_record_module import ArrayRecordReader
      readers = [ArrayRecordReader(f, "readahead_buffer_size:0")
                 for f in self.prepared.files(self.split)]
      counts = [r.num_records() for r in readers]
      n = self.prepared.info["splits"][self.split]["num_examples"]
      if sum(counts) != n:
        raise ValueError(f"split {self.split!r} of {self.prepared.path} has {sum(counts)} "
                         f"records, info.json says {n}")
      self._thread.readers = readers, np.cumsum([0, *counts[:-1]])
    return self._thread.readers

  def __len__(self) -> int:
    return self.shape[0]

  def __getitem__(self, key) -> "RecordImages":
    key = np.asarray(key) if not isinstance(key, slice) else key
    if isinstance(key, np.ndarray) and key.dtype == bool:
      if key.shape != (len(self),):
        raise IndexError(f"a boolean mask must have shape ({len(self)},), got {key.shape}")
    return RecordImages(self.prepared, self.split, self.index[key])

  def read(self, positions) -> np.ndarray:
    """The decoded images at ``positions`` (of this view), uint8 ``(len, H, W, C)``."""
    keys = self.index[np.asarray(positions, np.int64)]
    if not len(keys):
      return np.empty((0, *self.shape[1:]), np.uint8)
    readers, starts = self._readers()
    shard = np.searchsorted(starts, keys, side="right") - 1
    records = [b""] * len(keys)
    for s in np.unique(shard):
      where = np.flatnonzero(shard == s)
      for i, record in zip(where, readers[s].read((keys[where] - starts[s]).tolist())):
        records[i] = record
    # Raw records of one fixed shape: the batch is their bytes back to back (one copy).
    data = b"".join(records)
    if len(data) != len(keys) * int(np.prod(self.shape[1:])):
      raise ValueError(f"split {self.split!r} of {self.prepared.path}: records are not "
                       f"{self.shape[1:]} uint8 images")
    return np.frombuffer(data, np.uint8).reshape(len(keys), *self.shape[1:])  # read-only

  def __array__(self, dtype=None, copy=None):
    images = self.read(np.arange(len(self)))
    return images if dtype is None else images.astype(dtype)

  @property
  def nbytes(self) -> int:
    return int(np.prod(self.shape))


def batch_positions(order: np.ndarray, steps, batch_size: int, process_index: int = 0,
                    process_count: int = 1) -> np.ndarray:
  """This process's positions of global batches ``steps`` of an epoch whose order is
  ``order``: rows ``order[s·B + p·B/P : s·B + (p+1)·B/P]``, shape (len(steps), B/P).

  A global batch of B examples is laid out over the processes in order, each holding
  B/P consecutive examples (the data axis of the mesh, which runs over the processes'
  devices in order)."""
  if batch_size % process_count:
    raise ValueError(f"batch_size must be a multiple of the {process_count} processes, "
                     f"got {batch_size}")
  local = batch_size // process_count
  starts = np.asarray(steps, np.int64)[:, None] * batch_size + process_index * local
  return np.asarray(order)[starts + np.arange(local)]


class BatchStream:
  """Reads the training batches of ``images`` with grain: ``epoch(order, start, end)``
  yields this process's ``(images (B/P, H, W, C) uint8, example indices (B/P,))`` of
  steps ``start..end-1``, ``num_threads`` batches read ahead in parallel."""

  def __init__(self, images: RecordImages, batch_size: int, *, process_index: int = 0,
               process_count: int = 1, num_threads: int = 4, prefetch: int = 8):
    if not isinstance(images, RecordImages):
      raise ValueError("the streaming input path reads a prepared ArrayRecord dataset "
                       "(jaxnoisy prepare); these images are in memory")
    self.images, self.batch_size = images, batch_size
    self.process_index, self.process_count = process_index, process_count
    self.num_threads, self.prefetch = num_threads, prefetch

  def epoch(self, order: np.ndarray, start: int, end: int) -> Iterator[tuple]:
    import grain
    positions = batch_positions(order, np.arange(start, end), self.batch_size,
                                self.process_index, self.process_count)

    def read(k):
      return self.images.read(positions[k]), positions[k].astype(np.int32)

    stream = grain.MapDataset.range(len(positions)).map(read).to_iter_dataset(
        grain.ReadOptions(num_threads=self.num_threads, prefetch_buffer_size=self.prefetch))
    yield from stream
