"""Network architectures (Flax NNX) and a pure functional interface to them.

Models (all take NHWC float input that is already normalised):

* :class:`CNN` -- a small convolutional net for 28x28 grey-scale images
  (Fashion-MNIST / MNIST): ``conv3x3(16) - ReLU - maxpool2 - conv3x3(32) - ReLU -
  maxpool2 - flatten(5*5*32) - dense(128) - ReLU - dense(num_classes)``, with
  VALID convolutions so that the feature maps shrink 28 -> 26 -> 13 -> 11 -> 5.
  108,618 parameters for 28x28x1 input and 10 classes; the penultimate
  features are the 128-d hidden layer.  The widths are chosen for CPU speed
  (wider convolutions are several times slower to differentiate with XLA:CPU).
* :class:`CNNBN` (``cnn_bn``) -- the same with batch norm after each bias-free
  convolution (108,666 parameters): a batch-norm network at the CNN's cost.
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
* :class:`PreActResNet32` -- the same family for CIFAR at depth 32 (NCSAM's
  PreResNet-32): a 3x3 stem convolution with 16 channels, three stages of five
  pre-activation blocks (16/32/64 channels, strides 1/2/2; 1x1 projection
  shortcuts on the pre-activated input at the two width changes), BN-ReLU,
  pooling, linear; 64-d features.
* :class:`ResNet18`, :class:`ResNet34` -- the post-activation ResNets of He,
  Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition" (CVPR
  2016, arXiv:1512.03385) in kuangliu's CIFAR form, which FBR's code
  (yiz134/Feature_based_reweight, ``ResNet_s``) uses and NCSAM's paper names
  (ResNet-18, not pre-activation): a 3x3 stem
  convolution (64 channels, stride 1) + BN-ReLU and no max-pool, stages of
  [2, 2, 2, 2] / [3, 4, 6, 3] post-activation basic blocks (64/128/256/512
  channels, strides 1/2/2/2; ``ReLU(BN(conv(ReLU(BN(conv(x))))) +
  shortcut(x))``) whose shortcut is a 1x1 strided convolution + BN where the
  shape changes ("option B"), global average pooling, linear; 512-d features.
* :class:`CifarResNet` -- He et al.'s CIFAR ResNets (CVPR 2016, sec. 4.2) of
  depth ``6n + 2`` and widths (default 16/32/64), as used by the MW-Net and MLC
  reference code: a 3x3 convolution + BN-ReLU, three stages of ``n``
  post-activation basic blocks (strides 1/2/2), global average pooling and a
  linear classifier.  Where the shape changes the shortcut is the
  parameter-free "option A" of the paper, exactly as in MW-Net's
  ``LambdaLayer``: keep every second row and column, then zero-pad the
  channels evenly on both sides (16 -> 8+16+8 = 32).  Entries:
  :class:`ResNet32` (``n = 5``; 464,154 parameters for 10 classes, 470,004
  for 100), :class:`ResNet20` (``n = 3``) and :class:`ResNet20Narrow`
  (``n = 3``, 8/16/32 channels); the features are the pooled last-stage vector.
* :class:`ResNet50` -- He et al.'s ResNet-50 (CVPR 2016) in its ImageNet form,
  as torchvision builds it (v1.5: a bottleneck block's stride is on its 3x3
  convolution): a 7x7 stride-2 convolution (64 channels) + BN-ReLU, 3x3
  stride-2 max-pool, stages of [3, 4, 6, 3] :class:`Bottleneck` blocks
  (``1x1 - 3x3 - 1x1`` convolutions of widths 64/128/256/512 and expansion 4,
  i.e. 256/512/1024/2048 outputs; strides 1/2/2/2; BN after each convolution,
  ReLU after the first two and after the residual sum; 1x1 strided
  convolution + BN shortcut where the shape changes), global average pooling,
  linear; 2048-d features.  For 224x224x3 input and 14 classes (Clothing1M)
  it has 23,536,718 parameters -- torchvision's 25,557,032 for 1,000 classes
  less ``2049 * (1000 - 14)`` of the classifier (BatchNorm's running
  statistics are state, not parameters).

The ResNets' convolutions are bias-free and He-normal initialised; their
classifiers keep Flax's default (LeCun normal).  They end in global average
pooling, so any input size works.  Parameters (``make_model``, 10 classes):

=================  ===========  ===========  =============
name               28x28x1      32x32x3      feature width
=================  ===========  ===========  =============
preact_resnet18    11,171,018   11,172,170   512
preact_resnet32       466,426      466,714    64
resnet18           11,172,810   11,173,962   512
resnet34           21,280,970   21,282,122   512
resnet32              463,866      464,154    64
resnet20              269,434      269,722    64
resnet20_narrow        67,906       68,050    32
resnet50           23,522,250   23,528,522  2048
=================  ===========  ===========  =============

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

:func:`save_params` writes such a pytree to an ``.npz`` file whose keys are
the leaves' paths joined by ``/`` (``layer1_0/conv1/kernel``), and
:func:`load_init_params` reads one back into a model's pytree (initial
weights, e.g. pre-trained ones): every key must match, and every shape except
the classifier's, which keeps its fresh initialisation when the class count
differs.  Params and state are separate files.
"""
from __future__ import annotations

import math
import os
import tempfile
import zipfile
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = [
    "CNN",
    "CNNBN",
    "MLP",
    "PreActResNet",
    "PreActResNet18",
    "PreActResNet32",
    "PreActBlock",
    "ResNet",
    "ResNet18",
    "ResNet34",
    "CifarResNet",
    "ResNet32",
    "ResNet20",
    "ResNet20Narrow",
    "BasicBlock",
    "ResNet50",
    "Bottleneck",
    "Functional",
    "functional",
    "count_params",
    "save_params",
    "load_init_params",
    "COMPUTE_DTYPES",
    "MODELS",
    "make_model",
    "set_compute_dtype",
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
      batch_norm: bool = False,
      rngs: nnx.Rngs,
  ):
    c1, c2 = channels
    self.conv1 = nnx.Conv(in_channels, c1, (3, 3), padding="VALID", use_bias=not batch_norm,
                          kernel_init=_torch_init, rngs=rngs)
    self.conv2 = nnx.Conv(c1, c2, (3, 3), padding="VALID", use_bias=not batch_norm,
                          kernel_init=_torch_init, rngs=rngs)
    # Batch norm after each convolution (CNNBN); identity otherwise.
    self.bn1, self.bn2 = (_bn(c1, rngs), _bn(c2, rngs)) if batch_norm else (None, None)
    h, w = input_hw
    h, w = (h - 2) // 2, (w - 2) // 2      # conv1 (VALID) + pool
    h, w = (h - 2) // 2, (w - 2) // 2      # conv2 (VALID) + pool
    if h < 1 or w < 1:
      raise ValueError(f"CNN: input {input_hw} is too small")
    self.fc = nnx.Linear(h * w * c2, hidden, kernel_init=_torch_init, rngs=rngs)
    self.classifier = nnx.Linear(hidden, num_classes, kernel_init=_torch_init, rngs=rngs)

  def features(self, x: jax.Array) -> jax.Array:
    for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2)):
      x = conv(x)
      x = _max_pool2(nnx.relu(x if bn is None else bn(x)))
    x = x.reshape(x.shape[0], -1)
    return nnx.relu(self.fc(x))


class CNNBN(CNN):
  """:class:`CNN` with batch norm after each (bias-free) convolution.

  ``conv3x3(16) - BN - ReLU - maxpool2 - conv3x3(32) - BN - ReLU - maxpool2 - dense(128)
  - ReLU - dense(num_classes)``: the table's network with its convolutions made
  scale-invariant, as in the batch-norm networks of the sharpness-aware papers, at the
  CNN's cost (108,666 parameters).
  """

  def __init__(self, num_classes: int = 10, in_channels: int = 1, **kwargs):
    super().__init__(num_classes, in_channels, batch_norm=True, **kwargs)


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


def _add_stages(module: nnx.Module, block: Callable[..., nnx.Module], cin: int,
                blocks: tuple[int, ...], widths: tuple[int, ...],
                strides: tuple[int, ...], rngs: nnx.Rngs, **kw) -> int:
  """Set ``module.layer{s}_{b}`` (stage ``s`` from 1, block ``b`` from 0) and
  ``module.block_names``; the first block of a stage has the stage's stride.

  A block's output has ``width * block.expansion`` channels (``expansion``
  defaults to 1; 4 for :class:`Bottleneck`).  Returns the output width.
  """
  if not len(blocks) == len(widths) == len(strides):
    raise ValueError(f"blocks {blocks}, widths {widths} and strides {strides} differ in length")
  expansion = getattr(block, "expansion", 1)
  names = []
  for s, (nb, width, stride) in enumerate(zip(blocks, widths, strides), start=1):
    for b in range(nb):
      name = f"layer{s}_{b}"
      setattr(module, name, block(cin, width, stride if b == 0 else 1, rngs=rngs, **kw))
      names.append(name)
      cin = width * expansion
  module.block_names = tuple(names)
  return cin


class PreActResNet(_Classifier):
  """Pre-activation ResNet (He et al., ECCV 2016, arXiv:1603.05027) of basic blocks.

  ``conv3x3(widths[0])`` stem (no BN: every block starts with BN-ReLU), the
  stages of :class:`PreActBlock` s, a final BN-ReLU, global average pooling and
  a linear classifier.  The features are the pooled ``widths[-1]``-d vector.
  Subclasses fix ``blocks``/``widths``/``strides``; the constructor can override them.
  """

  blocks: tuple[int, ...] = (2, 2, 2, 2)
  widths: tuple[int, ...] = (64, 128, 256, 512)
  strides: tuple[int, ...] = (1, 2, 2, 2)

  def __init__(self, num_classes: int = 10, in_channels: int = 3, *,
               blocks: tuple[int, ...] | None = None,
               widths: tuple[int, ...] | None = None,
               strides: tuple[int, ...] | None = None, rngs: nnx.Rngs):
    blocks = tuple(self.blocks if blocks is None else blocks)
    widths = tuple(self.widths if widths is None else widths)
    strides = tuple(self.strides if strides is None else strides)
    self.blocks, self.widths, self.strides = blocks, widths, strides
    self.stem = _conv(in_channels, widths[0], 3, 1, rngs)
    cin = _add_stages(self, PreActBlock, widths[0], blocks, widths, strides, rngs)
    self.bn_final = _bn(cin, rngs)
    self.classifier = nnx.Linear(cin, num_classes, rngs=rngs)

  def features(self, x: jax.Array) -> jax.Array:
    x = self.stem(x)
    for name in self.block_names:
      x = getattr(self, name)(x)
    x = nnx.relu(self.bn_final(x))
    return jnp.mean(x, axis=(1, 2))


class PreActResNet18(PreActResNet):
  """Pre-activation ResNet-18 for 32x32 input (He et al., ECCV 2016); 11,172,170 parameters.

  Stages of 2 blocks, 64/128/256/512 channels, strides 1/2/2/2 (kuangliu's
  ``PreActResNet18``).
  """


class PreActResNet32(PreActResNet):
  """Pre-activation ResNet-32 for CIFAR (He et al., ECCV 2016; NCSAM's PreResNet-32).

  ``conv3x3(16)``, three stages of five :class:`PreActBlock` s (16/32/64
  channels, strides 1/2/2), BN-ReLU, global average pooling, linear; 1x1
  projection shortcuts (on the pre-activated input, as in He et al.'s Torch
  code) at the two width changes.  466,714 parameters for 10 classes; 64-d features.
  """

  blocks = (5, 5, 5)
  widths = (16, 32, 64)
  strides = (1, 2, 2)


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

  When the stride or the width changes, the shortcut is, for ``shortcut="A"``
  (default), the parameter-free option A of :func:`_shortcut_a` (subsample,
  zero-pad channels), and for ``shortcut="B"`` a strided 1x1 convolution + BN
  (``shortcut_conv``, ``shortcut_bn``; kuangliu's / FBR's ``BasicBlock_s``);
  otherwise the identity.
  """

  def __init__(self, cin: int, cout: int, stride: int, *, shortcut: str = "A",
               rngs: nnx.Rngs):
    if shortcut not in ("A", "B"):
      raise ValueError(f"BasicBlock: shortcut must be 'A' or 'B', got {shortcut!r}")
    self.has_shortcut = stride != 1 or cin != cout
    if shortcut == "A" and cout < cin:
      raise ValueError(f"BasicBlock: option-A shortcut cannot shrink {cin} -> {cout} channels")
    self.conv1 = _conv(cin, cout, 3, stride, rngs)
    self.bn1 = _bn(cout, rngs)
    self.conv2 = _conv(cout, cout, 3, 1, rngs)
    self.bn2 = _bn(cout, rngs)
    self.cout = cout
    self.stride = stride
    self.shortcut_kind = shortcut
    if self.has_shortcut and shortcut == "B":
      self.shortcut_conv = _conv(cin, cout, 1, stride, rngs)
      self.shortcut_bn = _bn(cout, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    out = nnx.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    if not self.has_shortcut:
      shortcut = x
    elif self.shortcut_kind == "A":
      shortcut = _shortcut_a(x, self.cout, self.stride)
    else:
      shortcut = self.shortcut_bn(self.shortcut_conv(x))
    return nnx.relu(out + shortcut)


class ResNet(_Classifier):
  """Post-activation ResNet (He et al., CVPR 2016, arXiv:1512.03385) for small images.

  ``conv3x3(widths[0], stride 1) - BN - ReLU`` (no max-pool), the stages of
  :class:`BasicBlock` s with ``shortcut`` ("A" or "B"), global average pooling
  and a linear classifier; the features are the pooled ``widths[-1]``-d
  vector.  The defaults are kuangliu's CIFAR ``ResNet`` (FBR's ``ResNet_s``):
  64/128/256/512 channels, strides 1/2/2/2, option-B shortcuts; subclasses fix
  ``blocks`` (and the rest), the constructor can override them.  The pooling is
  global where ``ResNet_s`` uses ``avg_pool2d(out, 4)`` -- the same for 32x32
  (and 28x28) input, whose last map is 4x4.  Initialisation as the other ResNets
  here (He-normal convolutions, LeCun-normal classifier), where ``ResNet_s``
  keeps PyTorch's defaults.
  """

  blocks: tuple[int, ...] = (2, 2, 2, 2)
  widths: tuple[int, ...] = (64, 128, 256, 512)
  strides: tuple[int, ...] = (1, 2, 2, 2)
  shortcut: str = "B"

  def __init__(self, num_classes: int = 10, in_channels: int = 3, *,
               blocks: tuple[int, ...] | None = None,
               widths: tuple[int, ...] | None = None,
               strides: tuple[int, ...] | None = None,
               shortcut: str | None = None, rngs: nnx.Rngs):
    blocks = tuple(self.blocks if blocks is None else blocks)
    widths = tuple(self.widths if widths is None else widths)
    strides = tuple(self.strides if strides is None else strides)
    shortcut = self.shortcut if shortcut is None else shortcut
    self.blocks, self.widths, self.strides, self.shortcut = blocks, widths, strides, shortcut
    self.stem = _conv(in_channels, widths[0], 3, 1, rngs)
    self.bn_stem = _bn(widths[0], rngs)
    cin = _add_stages(self, BasicBlock, widths[0], blocks, widths, strides, rngs,
                      shortcut=shortcut)
    self.classifier = nnx.Linear(cin, num_classes, rngs=rngs)

  def features(self, x: jax.Array) -> jax.Array:
    x = nnx.relu(self.bn_stem(self.stem(x)))
    for name in self.block_names:
      x = getattr(self, name)(x)
    return jnp.mean(x, axis=(1, 2))


class ResNet18(ResNet):
  """CIFAR ResNet-18 (kuangliu; FBR's ``ResNet_s([2, 2, 2, 2])``); 11,173,962 parameters
  for 32x32x3 input and 10 classes."""

  blocks = (2, 2, 2, 2)


class ResNet34(ResNet):
  """CIFAR ResNet-34 (kuangliu; FBR's ``ResNet_s([3, 4, 6, 3])``); 21,282,122 parameters
  for 32x32x3 input and 10 classes."""

  blocks = (3, 4, 6, 3)


class CifarResNet(ResNet):
  """The CIFAR ResNets of He et al. (CVPR 2016, sec. 4.2): depth ``6n + 2``, option A.

  ``conv3x3(widths[0]) - BN - ReLU``, three stages of ``n`` post-activation
  :class:`BasicBlock` s (``widths``, default 16/32/64; strides 1/2/2) with
  option-A shortcuts, global average pooling, linear; as in the MW-Net/MLC
  code except that the classifier keeps the Flax default initialisation
  (LeCun normal) like the other models here, where that code uses He normal
  for it too; the convolutions are He normal in both.
  """

  depth: int = 32
  widths = (16, 32, 64)
  strides = (1, 2, 2)
  shortcut = "A"

  def __init__(self, num_classes: int = 10, in_channels: int = 3, *,
               depth: int | None = None, widths: tuple[int, int, int] | None = None,
               rngs: nnx.Rngs):
    depth = self.depth if depth is None else int(depth)
    if depth < 8 or (depth - 2) % 6:
      raise ValueError(f"CifarResNet: depth must be 6n + 2 with n >= 1, got {depth}")
    widths = tuple(self.widths if widths is None else widths)
    if len(widths) != 3:
      raise ValueError(f"CifarResNet: widths must have 3 entries, got {widths}")
    super().__init__(num_classes, in_channels, blocks=((depth - 2) // 6,) * 3,
                     widths=widths, rngs=rngs)
    self.depth = depth


class ResNet32(CifarResNet):
  """CIFAR ResNet-32 (MW-Net, MLC): 16/32/64 channels; 464,154 parameters."""

  depth = 32


class ResNet20(CifarResNet):
  """CIFAR ResNet-20: 16/32/64 channels; 269,722 parameters."""

  depth = 20


class ResNet20Narrow(CifarResNet):
  """ResNet-20 at half width, 8/16/32 channels (cheap on CPU); 68,050 parameters."""

  depth = 20
  widths = (8, 16, 32)


class Bottleneck(nnx.Module):
  """Post-activation bottleneck block (He et al., CVPR 2016; torchvision's v1.5).

  ``ReLU(BN(conv1x1(ReLU(BN(conv3x3(ReLU(BN(conv1x1(x)))))))) + shortcut(x))``
  with widths ``width, width, width * 4``; the stride is on the 3x3
  convolution.  When the stride or the width changes, the shortcut is a
  strided 1x1 convolution + BN (``shortcut_conv``, ``shortcut_bn``), otherwise
  the identity.
  """

  expansion = 4

  def __init__(self, cin: int, width: int, stride: int, *, rngs: nnx.Rngs):
    cout = width * self.expansion
    self.conv1 = _conv(cin, width, 1, 1, rngs)
    self.bn1 = _bn(width, rngs)
    self.conv2 = _conv(width, width, 3, stride, rngs)
    self.bn2 = _bn(width, rngs)
    self.conv3 = _conv(width, cout, 1, 1, rngs)
    self.bn3 = _bn(cout, rngs)
    self.has_shortcut = stride != 1 or cin != cout
    if self.has_shortcut:
      self.shortcut_conv = _conv(cin, cout, 1, stride, rngs)
      self.shortcut_bn = _bn(cout, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    out = nnx.relu(self.bn1(self.conv1(x)))
    out = nnx.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    shortcut = self.shortcut_bn(self.shortcut_conv(x)) if self.has_shortcut else x
    return nnx.relu(out + shortcut)


class ResNet50(_Classifier):
  """ResNet-50 in its ImageNet form (He et al., CVPR 2016; torchvision's ``resnet50``).

  ``conv7x7(64, stride 2, padding 3) - BN - ReLU - maxpool3x3(stride 2,
  padding 1)``, stages of [3, 4, 6, 3] :class:`Bottleneck` s (widths
  64/128/256/512, outputs 256/512/1024/2048, strides 1/2/2/2), global average
  pooling and a linear classifier; 2048-d features.  23,536,718 parameters for
  14 classes (Clothing1M), at any input size.  Initialisation as the other
  ResNets here (He-normal fan-in convolutions, LeCun-normal classifier), where
  torchvision uses He normal fan-out and PyTorch's default for the classifier.
  ``blocks`` can be overridden (e.g. ``(3, 4, 23, 3)`` for ResNet-101).
  """

  blocks: tuple[int, ...] = (3, 4, 6, 3)
  widths: tuple[int, ...] = (64, 128, 256, 512)
  strides: tuple[int, ...] = (1, 2, 2, 2)

  def __init__(self, num_classes: int = 10, in_channels: int = 3, *,
               blocks: tuple[int, ...] | None = None, rngs: nnx.Rngs):
    blocks = tuple(self.blocks if blocks is None else blocks)
    self.blocks = blocks
    self.stem = _conv(in_channels, 64, 7, 2, rngs)
    self.bn_stem = _bn(64, rngs)
    cin = _add_stages(self, Bottleneck, 64, blocks, self.widths, self.strides, rngs)
    self.classifier = nnx.Linear(cin, num_classes, rngs=rngs)

  def features(self, x: jax.Array) -> jax.Array:
    x = nnx.relu(self.bn_stem(self.stem(x)))
    x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
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
    # Loss and softmax in float32 whatever the compute dtype (float64 stays float64).
    logits, feats = (jnp.asarray(v, jnp.promote_types(v.dtype, jnp.float32))
                     for v in m.forward(x))
    if not train:
      return logits, feats, state
    _, new_state = nnx.split(m, nnx.Param, ...)[1:]
    return logits, feats, _to_dict(new_state)

  return Functional(apply, params, rest)


def count_params(params: PyTree) -> int:
  """Total number of scalars in a parameter pytree."""
  return int(sum(math.prod(jnp.shape(p)) for p in jax.tree.leaves(params)))


# ---------------------------------------------------------------------------
# Parameter files
# ---------------------------------------------------------------------------

def _key_str(entry: Any) -> str:
  for attr in ("key", "name", "idx"):  # DictKey / FlattenedIndexKey, GetAttrKey, SequenceKey
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def _flatten_named(tree: PyTree, what: str) -> tuple[dict[str, Any], Any]:
  """``({"a/b/c": leaf}, treedef)``: every leaf under its path's keys joined by ``/``."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
  named: dict[str, Any] = {}
  for path, leaf in leaves:
    key = "/".join(_key_str(e) for e in path)
    if key in named:
      raise ValueError(f"{what}: two leaves share the name {key!r} (a key contains '/')")
    named[key] = leaf
  return named, treedef


def _first(keys, n: int = 5) -> str:
  keys = sorted(keys)
  return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def save_params(params: PyTree, path: str | os.PathLike) -> None:
  """Write a pytree of arrays to ``path`` as an ``.npz`` file, atomically.

  Each leaf is stored under its path's keys joined by ``/`` (for the nested
  dicts of :func:`functional`, e.g. ``layer1_0/conv1/kernel``), the format
  :func:`load_init_params` reads.  Dtypes NumPy cannot store (bfloat16) are
  written as float32.  The file is written beside ``path`` and moved into
  place with ``os.replace``.
  """
  named, _ = _flatten_named(params, "save_params")
  path = os.fspath(path)
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz",
                             dir=os.path.dirname(os.path.abspath(path)))
  try:
    with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w") as zf:
      for key, leaf in named.items():
        arr = np.asarray(jax.device_get(leaf))
        if arr.dtype.kind not in "biufc":
          arr = arr.astype(np.float32)
        with zf.open(key + ".npy", "w", force_zip64=True) as f:
          np.lib.format.write_array(f, arr, allow_pickle=False)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def load_init_params(params: PyTree, path: str | os.PathLike, *,
                     keep_mismatched: tuple[str, ...] = ("classifier",)) -> PyTree:
  """``params`` with every array replaced by the one of the same name in ``path``.

  ``path`` is an ``.npz`` file as :func:`save_params` writes it: one array per
  leaf, named by its path's keys joined by ``/``.  Each array is converted to
  its leaf's dtype; the result has ``params``' structure.  Works on any
  pytree of arrays: call it once for the params and once for the state
  (BatchNorm statistics) of :func:`functional`, with a file each.

  Raises ``ValueError`` (naming the first few keys) when a leaf of ``params``
  is missing from the file, when the file has a key ``params`` lacks, or when
  an array's shape differs from its leaf's.  The exception: the leaves under
  a prefix in ``keep_mismatched`` (default ``("classifier",)``, the head,
  whose class count changes between pre-training and the target task) keep
  their values in ``params`` -- the fresh initialisation -- when *every* one
  of them mismatches the file; if only some of them do, it is an error.
  """
  named, treedef = _flatten_named(params, "load_init_params")
  path = os.fspath(path)
  with np.load(path, allow_pickle=False) as npz:
    loaded = {k: npz[k] for k in npz.files}
  missing = named.keys() - loaded.keys()
  unknown = loaded.keys() - named.keys()
  if missing:
    raise ValueError(f"load_init_params: {path} lacks {len(missing)} key(s) of the "
                     f"model: {_first(missing)}")
  if unknown:
    raise ValueError(f"load_init_params: {path} has {len(unknown)} key(s) the model "
                     f"lacks: {_first(unknown)}")
  bad = {k for k, leaf in named.items() if tuple(loaded[k].shape) != tuple(jnp.shape(leaf))}
  keep = set()
  for prefix in keep_mismatched:
    group = {k for k in named if k == prefix or k.startswith(prefix + "/")}
    if group and group <= bad:
      keep |= group
  bad -= keep
  if bad:
    shown = sorted(bad)[:5]
    detail = "; ".join(f"{k}: file {tuple(loaded[k].shape)}, model {tuple(jnp.shape(named[k]))}"
                       for k in shown)
    more = f" (and {len(bad) - len(shown)} more)" if len(bad) > len(shown) else ""
    raise ValueError(f"load_init_params: shape mismatch in {path}: {detail}{more}")
  out = [named[k] if k in keep else jnp.asarray(loaded[k], dtype=jnp.result_type(named[k]))
         for k in named]
  return jax.tree_util.tree_unflatten(treedef, out)


MODELS: dict[str, type[nnx.Module]] = {
    "cnn": CNN,
    "cnn_bn": CNNBN,
    "mlp": MLP,
    "preact_resnet18": PreActResNet18,
    "preact_resnet32": PreActResNet32,
    "resnet18": ResNet18,
    "resnet34": ResNet34,
    "resnet32": ResNet32,
    "resnet20": ResNet20,
    "resnet20_narrow": ResNet20Narrow,
    "resnet50": ResNet50,
}


COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def set_compute_dtype(model: nnx.Module, dtype: Any) -> nnx.Module:
  """Run every convolution, dense and batch-norm layer of ``model`` in ``dtype``.

  Flax's mixed-precision convention: a layer's ``param_dtype`` (float32 here) is what
  it stores and what gradients and optimizer state are computed in; its ``dtype`` is
  what it computes in (inputs and parameters are cast to it). Batch norm still reduces
  its statistics in float32 (Flax's default), and :func:`functional`'s ``apply``
  returns float32 logits and features, so the loss and softmax stay float32.
  """
  for _, module in nnx.iter_modules(model):
    if isinstance(module, (nnx.Conv, nnx.Linear, nnx.BatchNorm)):
      module.dtype = dtype
  return model


def make_model(
    name: str,
    num_classes: int,
    input_shape: tuple[int, int, int],
    seed: int = 0,
    compute_dtype: str = "float32",
) -> Functional:
  """Build model ``name`` for inputs of shape ``input_shape = (H, W, C)``.

  Returns :func:`functional` of the initialised model (initialised from
  ``nnx.Rngs(seed)``); its parameters are float32 and its layers compute in
  ``compute_dtype`` (:data:`COMPUTE_DTYPES`; see :func:`set_compute_dtype`).
  Raises ``ValueError`` for unknown names.
  """
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; valid names: {sorted(MODELS)}")
  if compute_dtype not in COMPUTE_DTYPES:
    raise ValueError(f"compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, "
                     f"got {compute_dtype!r}")
  if len(input_shape) != 3:
    raise ValueError(f"input_shape must be (H, W, C), got {input_shape}")
  h, w, c = (int(d) for d in input_shape)
  rngs = nnx.Rngs(seed)
  if name in ("cnn", "cnn_bn"):
    model = MODELS[name](num_classes, c, input_hw=(h, w), rngs=rngs)
  elif name == "mlp":
    model = MLP(num_classes, h * w * c, rngs=rngs)
  else:
    model = MODELS[name](num_classes, c, rngs=rngs)
  if compute_dtype != "float32":
    set_compute_dtype(model, COMPUTE_DTYPES[compute_dtype])
  return functional(model)
