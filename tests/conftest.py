"""Test-wide set-up: 8 fake CPU devices (sharding tests) and a working TFDS mock."""
import jax
import pytest

from jaxnoisy.train.devices import use_cpu_cores

# Must run before any JAX computation; the backend then starts with them, so that a
# test that asks for fewer devices (the CLI does) cannot change the count for the rest.
use_cpu_cores(8)
jax.devices()


@pytest.fixture
def mock_tfds(monkeypatch):
  """``tfds`` with ``mock_data``'s batched reads fixed (yields the module)."""
  tfds = pytest.importorskip("tensorflow_datasets")
  from tensorflow_datasets.testing import mocking

  # tfds 4.9.10's mock assigns `__getitems__` as a plain attribute of a
  # MagicMock, so `self` is never bound and batched reads raise TypeError
  # (`__getitem__` works because MagicMock binds supported dunders). Patch
  # just that helper so the mocked data source supports batched reads.
  def getitems(record_keys, generator, serialized=False):
    return [generator[k] for k in record_keys]

  monkeypatch.setattr(mocking, "_getitems", getitems)
  return tfds
