"""Network architectures (Flax NNX) and a pure functional interface to them.

Models (all take NHWC float input that is already normalised):

* :class:`CNN` -- a small convolutional net for 28x28 grey-scale images
  (Fashion-MNIST / MNIST): ``conv3x3(16) - ReLU - maxpool2 - conv3x3(32) - ReLU -
  maxpool2 - flatten(5*5*32) - dense(128) - ReLU - dense(num_classes)``, with
  VALID convolutions so that the feature maps shrink 28 -> 26 -> 13 -> 11 -> 5.
  108,618 parameters for 28x28x1 input and 10 classes; the penultimate
  features are the 128-d hidden layer.  The widths are chosen for CPU speed
  (wider convolutions are several times slower to differentiate with XLA:CPU).
* :class:`MLP` -- flattens its input, then ``dense - ReLU`` hidden layers
  (default ``(256, 256)``) and a linear classifier; the features are the last
  hidden activation.
* :class:`PreActResNet18` -- the pre-activation ResNet-18 of He, Zhang, Ren and
  Sun, "Identity Mappings in Deep Residual Networks" (ECCV 2016,
  arXiv:1603.05027), in its usual CIFAR form: a 3x3 stem convolution with 64
  channels, four stages of two pre-activation basic blocks (64/128/256/512
  channels, strides 1/2/2/2; BN-ReLU before each convolution, 1x1 projection
  shortcut where the shape changes), a final BN-ReLU, global average pooling
  and a linear classifier.  About 11.2M parameters; the features are the
  512-d pooled vector.  BatchNorm uses momentum 0.9 and epsilon 1e-5.
* :class:`ResNet32` -- the CIFAR ResNet-32 of He, Zhang, Ren and Sun, "Deep
  Residual Learning for Image Recognition" (CVPR 2016, arXiv:1512.03385, sec.
  4.2), as used by the MW-Net and MLC reference code: a 3x3 convolution with 16
  channels + BN-ReLU, three stages of five post-activation basic blocks
  (16/32/64 channels, strides 1/2/2; ``ReLU(BN(conv(ReLU(BN(conv(x))))) +
  shortcut(x))``), global average pooling and a linear classifier.  Where the
  shape changes the shortcut is the parameter-free "option A" of the paper,
  exactly as in MW-Net's ``LambdaLayer``: keep every second row and column,
  then zero-pad the channels evenly on both sides (16 -> 8+16+8 = 32).
  464,154 parameters for 10 classes (470,004 for 100); the features are the
  64-d pooled vector.  BatchNorm as above.

Every model has ``__call__(x) -> logits`` and ``features(x) -> penultimate
features``; ``__call__`` is ``classifier(features(x))``.

The rest of the library works on plain pytrees through :func:`functional`,
which returns ``Functional(apply, params, state)``:

* ``params`` -- the trainable ``nnx.Param`` values as a nested ``dict`` of
  arrays (string keys only, so it survives orbax checkpointing unchanged);
* ``state`` -- every other variable (BatchNorm running statistics) in the same
  format; ``{}`` for models without BatchNorm;
* ``apply(params, state, x, *, train) -> (logits, features, new_state)`` -- a
  pure, jit-able function, differentiable w.r.t. ``params``.  ``train`` must be
  a static Python bool: with ``train=True`` BatchNorm normalises with the batch
  statistics and ``new_state`` holds the updated running averages; with
  ``train=False`` it uses the running averages and ``state`` is returned as is.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = [
    "CNN",
    "MLP",
    "PreActResNet18",
    "PreActBlock",
    "ResNet32",
    "BasicBlock",
    "Functional",
    "functional",
    "count_params",
    "MODELS",
    "make_model",
]

PyTree = Any

# He (fan-in) initialisation for the ResNet convolutions (followed by batch norm);
# its classifier keeps the Flax default (LeCun normal).
_he_init = nnx.initializers.variance_scaling(2.0, "fan_in", "normal")
# The small CNN/MLP use PyTorch's default scale (uniform, variance 1/(3·fan_in)): with He
# initialisation and no batch norm, SAM at lr 0.05 (momentum 0.9) diverged in its first
# epoch on Fashion-MNIST, while the reference measurements were taken with this scale.
_torch_init = nnx.initializers.variance_scaling(1.0 / 3, "fan_in", "uniform")

_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5


class _Classifier(nnx.Module):
  """Base class: subclasses define ``features`` and a ``classifier`` layer."""

  classifier: nnx.Linear

  def features(self, x: jax.Array) -> jax.Array:
    raise NotImplementedError

  def forward(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One forward pass returning ``(logits, features)``."""
    feats = self.features(x)
    return self.classifier(feats), feats

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.classifier(self.features(x))


def _max_pool2(x: jax.Array) -> jax.Array:
  """2x2 max pooling with stride 2 (VALID: odd trailing rows/columns dropped).

  Same result as ``nnx.max_pool(x, (2, 2), strides=(2, 2))`` but written as a
  reshape + max, whose gradient is several times cheaper on CPU than the
  ``select_and_scatter`` that ``reduce_window`` differentiates into.
  """
  n, h, w, c = x.shape
  h2, w2 = h // 2, w // 2
  x = x[:, : 2 * h2, : 2 * w2, :]
  return x.reshape(n, h2, 2, w2, 2, c).max(axis=(2, 4))


class CNN(_Classifier):
  """Small CNN for 28x28 grey-scale images (108,618 parameters by default).

  ``conv3x3(16, VALID) - ReLU - maxpool2 - conv3x3(32, VALID) - ReLU - maxpool2
  - flatten(5*5*32) - dense(128) - ReLU - dense(num_classes)``.  The
  input height and width are fixed by ``input_hw`` (the size of the flattened
  map depends on them).
  """

  def __init__(
      self,
      num_classes: int = 10,
      in_channels: int = 1,
      *,
      input_hw: tuple[int, int] = (28, 28),
      channels: tuple[int, int] = (16, 32),
      hidden: int = 128,
      rngs: nnx.Rngs,
  ):
    c1, c2 = channels
    self.conv1 = nnx.Conv(in_channels, c1, (3, 3), padding="VALID",
                          kernel_init=_torch_init, rngs=rngs)
    self.conv2 = nnx.Conv(c1, c2, (3, 3), padding="VALID",
                          kernel_init=_torch_init, rngs=rngs)
    h, w = input_hw
    h, w = (h - 2) // 2, (w - 2) // 2      # conv1 (VALID) + pool
    h, w = (h - 2) // 2, (w - 2) // 2      # conv2 (VALID) + pool
    if h < 1 or w < 1:
      raise ValueError(f"CNN: input {input_hw} is too small")
    self.fc = nnx.Linear(h * w * c2, hidden, kernel_init=_torch_init, rngs=rngs)
    self.classifier = nnx.Linear(hidden, num_classes, kernel_init=_torch_init, rngs=rngs)

  def features(self, x: jax.Array) -> jax.Array:
    x = _max_pool2(nnx.relu(self.conv1(x)))
    x = _max_pool2(nnx.relu(self.conv2(x)))
    x = x.reshape(x.shape[0], -1)
    return nnx.relu(self.fc(x))


class MLP(_Classifier):
  """Multi-layer perceptron on the flattened input."""

  def __init__(
      self,
      num_classes: int = 10,
      in_features: int = 784,
      hidden: tuple[int, ...] = (256, 256),
      *,
      rngs: nnx.Rngs,
  ):
    hidden = tuple(hidden)
    if not hidden:
      raise ValueError("MLP needs at least one hidden layer")
    self.num_hidden = len(hidden)
    # Named attributes rather than a list: list indices would become integer
    # keys in the parameter dict, which orbax turns into strings.
    d = in_features
    for i, h in enumerate(hidden):
      setattr(self, f"dense{i}", nnx.Linear(d, h, kernel_init=_torch_init, rngs=rngs))
      d = h
    self.classifier = nnx.Linear(d, num_classes, kernel_init=_torch_init, rngs=rngs)

  def features(self, x: jax.Array) -> jax.Array:
    x = x.reshape(x.shape[0], -1)
    for i in range(self.num_hidden):
      x = nnx.relu(getattr(self, f"dense{i}")(x))
    return x


def _bn(num_features: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
  return nnx.BatchNorm(num_features, momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON,
                       rngs=rngs)


def _conv(cin: int, cout: int, kernel: int, stride: int, rngs: nnx.Rngs) -> nnx.Conv:
  return nnx.Conv(cin, cout, (kernel, kernel), strides=(stride, stride),
                  padding=((kernel // 2, kernel // 2),) * 2, use_bias=False,
                  kernel_init=_he_init, rngs=rngs)


class PreActBlock(nnx.Module):
  """Pre-activation basic block: ``x + conv(BN-ReLU(conv(BN-ReLU(x))))``.

  When the stride or the width changes, the shortcut is a 1x1 (strided)
  convolution applied to the pre-activated input.
  """

  def __init__(self, cin: int, cout: int, stride: int, *, rngs: nnx.Rngs):
    self.bn1 = _bn(cin, rngs)
    self.conv1 = _conv(cin, cout, 3, stride, rngs)
    self.bn2 = _bn(cout, rngs)
    self.conv2 = _conv(cout, cout, 3, 1, rngs)
    self.has_shortcut = stride != 1 or cin != cout
    if self.has_shortcut:
      self.shortcut = _conv(cin, cout, 1, stride, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    out = nnx.relu(self.bn1(x))
    shortcut = self.shortcut(out) if self.has_shortcut else x
    out = self.conv1(out)
    out = self.conv2(nnx.relu(self.bn2(out)))
    return out + shortcut


class PreActResNet18(_Classifier):
  """Pre-activation ResNet-18 for 32x32 input (He et al., ECCV 2016)."""

  widths = (64, 128, 256, 512)
  strides = (1, 2, 2, 2)
  blocks_per_stage = 2

  def __init__(self, num_classes: int = 10, in_channels: int = 3, *, rngs: nnx.Rngs):
    self.stem = _conv(in_channels, 64, 3, 1, rngs)
    cin = 64
    names = []
    for s, (width, stride) in enumerate(zip(self.widths, self.strides), start=1):
      for b in range(self.blocks_per_stage):
        name = f"layer{s}_{b}"
        setattr(self, name, PreActBlock(cin, width, stride if b == 0 else 1,
                                        rngs=rngs))
        names.append(name)
        cin = width
    self.block_names = tuple(names)
    self.bn_final = _bn(cin, rngs)
    self.classifier = nnx.Linear(cin, num_classes, rngs=rngs)

  def features(self, x: jax.Array) -> jax.Array:
    x = self.stem(x)
    for name in self.block_names:
      x = getattr(self, name)(x)
    x = nnx.relu(self.bn_final(x))
    return jnp.mean(x, axis=(1, 2))


def _shortcut_a(x: jax.Array, cout: int, stride: int) -> jax.Array:
  """Parameter-free "option A" shortcut (He et al. 2016; MW-Net's ``LambdaLayer``).

  Keeps every ``stride``-th row and column (the positions a stride-``stride``
  3x3 convolution with padding 1 is centred on), then zero-pads the channels
  from ``cin`` to ``cout``, half before and half after -- for the doubling in
  ResNet-32 that is PyTorch's ``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4,
  planes // 4))``.
  """
  x = x[:, ::stride, ::stride, :]
  extra = cout - x.shape[-1]
  lo = extra // 2
  return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (lo, extra - lo)))


class BasicBlock(nnx.Module):
  """Post-activation basic block: ``ReLU(BN(conv(ReLU(BN(conv(x))))) + shortcut(x))``.

  When the stride or the width changes, the shortcut is the parameter-free
  option A of :func:`_shortcut_a` (subsample, zero-pad channels); otherwise
  the identity.
  """

  def __init__(self, cin: int, cout: int, stride: int, *, rngs: nnx.Rngs):
    if cout < cin:
      raise ValueError(f"BasicBlock: option-A shortcut cannot shrink {cin} -> {cout} channels")
    self.conv1 = _conv(cin, cout, 3, stride, rngs)
    self.bn1 = _bn(cout, rngs)
    self.conv2 = _conv(cout, cout, 3, 1, rngs)
    self.bn2 = _bn(cout, rngs)
    self.cout = cout
    self.stride = stride
    self.has_shortcut = stride != 1 or cin != cout

  def __call__(self, x: jax.Array) -> jax.Array:
    out = nnx.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    shortcut = _shortcut_a(x, self.cout, self.stride) if self.has_shortcut else x
    return nnx.relu(out + shortcut)


class ResNet32(_Classifier):
  """CIFAR ResNet-32 (He et al., CVPR 2016) with option-A shortcuts; 464,154 parameters.

  As in the MW-Net/MLC code, except that the classifier keeps the Flax default
  initialisation (LeCun normal) like the other models here, where that code
  uses He normal for it too; the convolutions are He normal in both.
  """

  widths = (16, 32, 64)
  strides = (1, 2, 2)
  blocks_per_stage = 5

  def __init__(self, num_classes: int = 10, in_channels: int = 3, *, rngs: nnx.Rngs):
    self.stem = _conv(in_channels, 16, 3, 1, rngs)
    self.bn_stem = _bn(16, rngs)
    cin = 16
    names = []
    for s, (width, stride) in enumerate(zip(self.widths, self.strides), start=1):
      for b in range(self.blocks_per_stage):
        name = f"layer{s}_{b}"
        setattr(self, name, BasicBlock(cin, width, stride if b == 0 else 1,
                                       rngs=rngs))
        names.append(name)
        cin = width
    self.block_names = tuple(names)
    self.classifier = nnx.Linear(cin, num_classes, rngs=rngs)

  def features(self, x: jax.Array) -> jax.Array:
    x = nnx.relu(self.bn_stem(self.stem(x)))
    for name in self.block_names:
      x = getattr(self, name)(x)
    return jnp.mean(x, axis=(1, 2))


# ---------------------------------------------------------------------------
# Functional interface
# ---------------------------------------------------------------------------

class Functional(NamedTuple):
  """A model as a pure function plus its initial variables.

  ``apply(params, state, x, *, train) -> (logits, features, new_state)``.
  """

  apply: Callable[..., tuple[jax.Array, jax.Array, PyTree]]
  params: PyTree
  state: PyTree


def _to_dict(state: Any) -> dict:
  return nnx.to_pure_dict(state)


def functional(model: nnx.Module) -> Functional:
  """Split an NNX model into ``Functional(apply, params, state)``.

  ``params`` holds the ``nnx.Param`` values and ``state`` all other variables,
  both as nested dicts of arrays.  The model's graph structure is captured
  once; ``apply`` rebuilds a fresh module from it on every call, so the
  original ``model`` object is never mutated.  ``model`` must have a
  ``forward(x) -> (logits, features)`` method (all models here do).
  """
  if not callable(getattr(model, "forward", None)):
    raise TypeError(f"functional: {type(model).__name__} has no forward(x) -> (logits, features)")
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params, rest = _to_dict(params), _to_dict(rest)

  def apply(params: PyTree, state: PyTree, x: jax.Array, *, train: bool):
    if not isinstance(train, bool):
      raise TypeError(f"apply: `train` must be a Python bool, got {type(train)}")
    m = nnx.merge(graphdef, params, state)
    if train:
      m.train()
    else:
      m.eval()
    logits, feats = m.forward(x)
    if not train:
      return logits, feats, state
    _, new_state = nnx.split(m, nnx.Param, ...)[1:]
    return logits, feats, _to_dict(new_state)

  return Functional(apply, params, rest)


def count_params(params: PyTree) -> int:
  """Total number of scalars in a parameter pytree."""
  return int(sum(math.prod(jnp.shape(p)) for p in jax.tree.leaves(params)))


MODELS: dict[str, type[nnx.Module]] = {
    "cnn": CNN,
    "mlp": MLP,
    "preact_resnet18": PreActResNet18,
    "resnet32": ResNet32,
}


def make_model(
    name: str,
    num_classes: int,
    input_shape: tuple[int, int, int],
    seed: int = 0,
) -> Functional:
  """Build model ``name`` for inputs of shape ``input_shape = (H, W, C)``.

  Returns :func:`functional` of the initialised model (initialised from
  ``nnx.Rngs(seed)``).  Raises ``ValueError`` for unknown names.
  """
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; valid names: {sorted(MODELS)}")
  if len(input_shape) != 3:
    raise ValueError(f"input_shape must be (H, W, C), got {input_shape}")
  h, w, c = (int(d) for d in input_shape)
  rngs = nnx.Rngs(seed)
  if name == "cnn":
    model = CNN(num_classes, c, input_hw=(h, w), rngs=rngs)
  elif name == "mlp":
    model = MLP(num_classes, h * w * c, rngs=rngs)
  else:
    model = MODELS[name](num_classes, c, rngs=rngs)
  return functional(model)
