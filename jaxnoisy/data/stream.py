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
    self._source = None

  @property
  def source(self):
    """The split's grain ``ArrayRecordDataSource`` (opened on first use)."""
    if self._source is None:
      self._source = self.prepared.source(self.split)
    return self._source

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
    keys = self.index[np.asarray(positions, np.int64)].tolist()
    out = np.empty((len(keys), *self.shape[1:]), np.uint8)
    if not keys:  # the source's batched read refuses an empty one
      return out
    records = self.source.__getitems__(keys)
    for i, record in enumerate(records):
      out[i] = self.prepared.decode(record)
    return out

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
