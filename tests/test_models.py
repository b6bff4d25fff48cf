"""Tests for jaxnoisy.models: shapes, the functional interface, BatchNorm modes, grads.

Compilation dominates the run time on CPU, so the ResNets are built abstractly
(``nnx.eval_shape``) and filled with cheap NumPy values (a real ResNet-32
initialisation takes ~9 s on CPU), every forward pass is jitted, and each jitted
function is reused across checks.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxnoisy import models as M

SHAPES = {"cnn": ((28, 28, 1), 128), "mlp": ((28, 28, 1), 256)}


def _x(shape, n, seed=0):
  return jax.random.normal(jax.random.key(seed), (n, *shape), jnp.float32)


def _xent(logits, y):
  lp = jax.nn.log_softmax(logits)
  return -jnp.mean(jnp.take_along_axis(lp, y[:, None], axis=1))


def _check_pure_dict(tree):
  assert isinstance(tree, dict)
  for k, v in tree.items():
    assert isinstance(k, str), k  # no integer keys: orbax would stringify them
    if isinstance(v, dict):
      _check_pure_dict(v)
    else:
      assert isinstance(v, (jax.Array, jax.ShapeDtypeStruct)), type(v)


def _filled(abstract_model, seed=0):
  """A concrete copy of an abstract model: He-normal kernels, BN scale/var 1, the rest 0."""
  rng = np.random.default_rng(seed)
  graphdef, params, rest = nnx.split(abstract_model, nnx.Param, ...)

  def fill(path, leaf):
    name = path[-1].key
    if len(leaf.shape) >= 2:
      fan_in = math.prod(leaf.shape[:-1])
      return jnp.asarray(rng.normal(0, math.sqrt(2 / fan_in), leaf.shape), jnp.float32)
    return jnp.full(leaf.shape, 1.0 if name in ("scale", "var") else 0.0, jnp.float32)

  params = jax.tree_util.tree_map_with_path(fill, nnx.to_pure_dict(params))
  rest = jax.tree_util.tree_map_with_path(fill, nnx.to_pure_dict(rest))
  return nnx.merge(graphdef, params, rest)


class TinyBNNet(M._Classifier):
  """Stem conv + one PreActBlock with a projection shortcut + BN-ReLU + pool + linear."""

  def __init__(self, *, rngs):
    self.stem = nnx.Conv(3, 4, (3, 3), use_bias=False, rngs=rngs)
    self.block = M.PreActBlock(4, 8, 2, rngs=rngs)
    self.bn_final = M._bn(8, rngs)
    self.classifier = nnx.Linear(8, 3, rngs=rngs)

  def features(self, x):
    x = self.block(self.stem(x))
    return jnp.mean(nnx.relu(self.bn_final(x)), axis=(1, 2))


# --------------------------------------------------------------------------- small models

@pytest.fixture(scope="module", params=["cnn", "mlp"])
def small(request):
  """(name, input shape, feature dim, module, Functional, jitted apply).

  The CNN is initialised for real; the MLP is filled with NumPy values (its
  initialisation is covered by ``test_seed_determinism``) to save compilations.
  """
  name = request.param
  shape, feat_dim = SHAPES[name]
  if name == "cnn":
    model = M.CNN(10, 1, rngs=nnx.Rngs(0))
  else:
    model = _filled(nnx.eval_shape(lambda: M.MLP(10, 784, rngs=nnx.Rngs(0))))
  f = M.functional(model)
  return name, shape, feat_dim, model, f, jax.jit(f.apply, static_argnames="train")


def test_small_model_shapes_and_state(small):
  name, shape, feat_dim, _, f, apply = small
  _check_pure_dict(f.params)
  assert f.state == {}
  x = _x(shape, 3)
  out = {}
  for train in (True, False):
    logits, feats, new_state = apply(f.params, f.state, x, train=train)
    assert logits.shape == (3, 10) and feats.shape == (3, feat_dim)
    assert logits.dtype == jnp.float32
    assert new_state == {}
    out[train] = logits
  # no BatchNorm: both modes agree
  np.testing.assert_allclose(out[True], out[False], rtol=1e-6, atol=1e-6)


def test_small_features_feed_classifier(small):
  _, shape, _, _, f, apply = small
  logits, feats, _ = apply(f.params, f.state, _x(shape, 5), train=False)
  head = f.params["classifier"]
  np.testing.assert_allclose(logits, feats @ head["kernel"] + head["bias"],
                             rtol=1e-5, atol=1e-5)


def test_small_grads_finite_and_structured(small):
  _, shape, _, _, f, _ = small
  x, y = _x(shape, 8), jnp.arange(8) % 10
  loss = lambda p: _xent(f.apply(p, f.state, x, train=True)[0], y)
  grads = jax.jit(jax.grad(loss))(f.params)
  assert jax.tree.structure(grads) == jax.tree.structure(f.params)
  for g, p in zip(jax.tree.leaves(grads), jax.tree.leaves(f.params)):
    assert g.shape == p.shape and np.isfinite(np.asarray(g)).all()
  assert all(np.abs(np.asarray(g)).sum() > 0 for g in jax.tree.leaves(grads))


def test_small_apply_matches_module(small):
  # the Functional vs calling the NNX module itself (eagerly)
  _, shape, _, model, f, apply = small
  x = _x(shape, 4, seed=2)
  logits, feats, _ = apply(f.params, f.state, x, train=False)
  np.testing.assert_allclose(logits, model(x), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(feats, model.features(x), rtol=1e-5, atol=1e-5)


def test_cnn_param_count():
  shapes = jax.eval_shape(lambda: M.make_model("cnn", 10, (28, 28, 1), seed=0).params)
  n = M.count_params(shapes)
  assert 80_000 <= n <= 130_000
  assert n == 108_618  # the number documented in the module docstring
  # in_channels comes from input_shape
  shapes3 = jax.eval_shape(lambda: M.make_model("cnn", 10, (28, 28, 3), seed=0).params)
  assert shapes3["conv1"]["kernel"].shape == (3, 3, 3, 16)


def test_mlp_in_features_from_input_shape():
  shapes = jax.eval_shape(lambda: M.make_model("mlp", 5, (8, 8, 3), seed=1).params)
  assert shapes["dense0"]["kernel"].shape == (192, 256)
  assert shapes["classifier"]["kernel"].shape == (256, 5)
  assert M.count_params(shapes) == 192 * 256 + 256 + 256 * 256 + 256 + 256 * 5 + 5


def test_train_flag_must_be_static_bool():
  f = M.functional(_filled(nnx.eval_shape(lambda: M.MLP(10, 12, (4,), rngs=nnx.Rngs(0)))))
  with pytest.raises(TypeError):
    f.apply(f.params, f.state, jnp.ones((1, 12)), train=jnp.array(True))


def test_make_model_unknown_name():
  with pytest.raises(ValueError, match="preact_resnet18"):
    M.make_model("resnet152", 10, (32, 32, 3), seed=0)
  assert set(M.MODELS) == {"cnn", "cnn_bn", "mlp", "preact_resnet18", "preact_resnet32", "resnet18",
                           "resnet34", "resnet32", "resnet20", "resnet20_narrow", "resnet50"}


def test_seed_determinism():
  make = lambda s: M.functional(M.MLP(10, 12, (4,), rngs=nnx.Rngs(s))).params
  a, b, c = make(5), make(5), make(6)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert not np.array_equal(a["dense0"]["kernel"], c["dense0"]["kernel"])


# --------------------------------------------------------------------------- BatchNorm

def test_bn_apply_matches_stateful_module():
  model = _filled(nnx.eval_shape(lambda: TinyBNNet(rngs=nnx.Rngs(0))))
  f = M.functional(model)
  _check_pure_dict(f.state)
  assert set(f.state["block"]) == {"bn1", "bn2"}
  x = _x((8, 8, 3), 4, seed=1) * 2.0 + 0.5
  apply = jax.jit(f.apply, static_argnames="train")
  call = nnx.jit(lambda m, x: m(x))  # stateful: updates m's BatchStats in train mode
  # train mode: same logits and the same running-average update as the stateful module
  logits, _, new_state = apply(f.params, f.state, x, train=True)
  model.train()
  np.testing.assert_allclose(logits, call(model, x), rtol=1e-5, atol=1e-5)
  ref_state = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               new_state, ref_state)
  # momentum 0.9: bn1's input is the (stateless) stem's output and its old mean is 0
  np.testing.assert_allclose(new_state["block"]["bn1"]["mean"],
                             0.1 * np.mean(np.asarray(jax.jit(model.stem)(x)), axis=(0, 1, 2)),
                             rtol=1e-4, atol=1e-6)
  # eval mode with the updated statistics
  model.eval()
  logits_e, _, s = apply(f.params, new_state, x, train=False)
  np.testing.assert_allclose(logits_e, call(model, x), rtol=1e-5, atol=1e-5)
  jax.tree.map(np.testing.assert_array_equal, s, new_state)
  assert not np.allclose(logits_e, logits, atol=1e-4)
  # `apply` never touched the variables it was built from
  np.testing.assert_array_equal(f.state["bn_final"]["mean"], np.zeros(8))


# --------------------------------------------------------------------------- ResNets

RESNETS = {"preact_resnet18": (M.PreActResNet18, 512), "resnet32": (M.ResNet32, 64)}


@pytest.fixture(scope="module", params=sorted(RESNETS))
def resnet(request):
  """One jitted train step (grads, batch-statistics forward) on 2 images of 32x32x3."""
  cls, feat_dim = RESNETS[request.param]
  abstract = nnx.eval_shape(lambda: cls(10, 3, rngs=nnx.Rngs(0)))
  f = M.functional(_filled(abstract))

  @jax.jit
  def train_step(params, state, x, y):
    def loss(p):
      logits, feats, new_state = f.apply(p, state, x, train=True)
      return _xent(logits, y), (logits, feats, new_state)
    return jax.grad(loss, has_aux=True)(params)

  eval_apply = jax.jit(lambda p, s, x: f.apply(p, s, x, train=False))
  x = _x((32, 32, 3), 2) * 2.0 + 1.0
  grads, (logits, feats, new_state) = train_step(f.params, f.state, x, jnp.array([0, 1]))
  return dict(f=f, eval_apply=eval_apply, x=x, grads=grads, logits=logits, feats=feats,
              new_state=new_state, feat_dim=feat_dim)


def test_resnet_structure_and_count():
  shapes = jax.eval_shape(lambda: M.make_model("preact_resnet18", 10, (32, 32, 3), 0).params)
  _check_pure_dict(shapes)
  assert M.count_params(shapes) == 11_172_170  # the standard CIFAR PreActResNet18
  assert shapes["stem"]["kernel"].shape == (3, 3, 3, 64)
  assert "shortcut" not in shapes["layer1_0"] and "shortcut" not in shapes["layer2_1"]
  assert shapes["layer2_0"]["shortcut"]["kernel"].shape == (1, 1, 64, 128)
  assert shapes["layer4_1"]["conv2"]["kernel"].shape == (3, 3, 512, 512)
  assert shapes["classifier"]["kernel"].shape == (512, 10)


def test_resnet_train_step(resnet):
  f, grads = resnet["f"], resnet["grads"]
  assert resnet["logits"].shape == (2, 10) and resnet["feats"].shape == (2, resnet["feat_dim"])
  head = f.params["classifier"]
  np.testing.assert_allclose(resnet["logits"], resnet["feats"] @ head["kernel"] + head["bias"],
                             rtol=1e-5, atol=1e-5)
  assert jax.tree.structure(grads) == jax.tree.structure(f.params)
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
  assert jax.tree.structure(resnet["new_state"]) == jax.tree.structure(f.state)
  changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                         resnet["new_state"], f.state)
  assert all(jax.tree.leaves(changed))  # every running mean/var moved


def test_resnet_eval(resnet):
  f, apply, x = resnet["f"], resnet["eval_apply"], resnet["x"]
  state = resnet["new_state"]
  logits, feats, s = apply(f.params, state, x)
  assert logits.shape == (2, 10) and feats.shape == (2, resnet["feat_dim"])
  jax.tree.map(np.testing.assert_array_equal, s, state)
  # each example's eval output is independent of the rest of the batch
  x2 = x.at[1].set(_x((32, 32, 3), 1, seed=9)[0] * 5.0)
  logits2, _, _ = apply(f.params, state, x2)
  np.testing.assert_allclose(logits[0], logits2[0], rtol=1e-5, atol=1e-5)
  # ... unlike train mode (batch statistics), whose logits differ from eval's
  assert not np.allclose(logits, resnet["logits"], atol=1e-4)


def _keys(tree):
  return set(tree).union(*(_keys(v) for v in tree.values() if isinstance(v, dict)))


def test_resnet32_structure_and_count():
  shapes, state = jax.eval_shape(lambda: M.make_model("resnet32", 10, (32, 32, 3), 0)[1:])
  _check_pure_dict(shapes)
  # He et al. report ~0.46M; with option-A (parameter-free) shortcuts it is exactly
  # 461,232 (bias-free convs) + 2,272 (BN scale/bias) + 650 (classifier) = 464,154
  n = M.count_params(shapes)
  assert 450_000 <= n <= 480_000
  assert n == 464_154  # the number documented in the module docstring
  assert "shortcut" not in _keys(shapes)  # option A has no parameters
  assert shapes["stem"]["kernel"].shape == (3, 3, 3, 16)
  assert shapes["layer1_0"]["conv1"]["kernel"].shape == (3, 3, 16, 16)
  assert shapes["layer2_0"]["conv1"]["kernel"].shape == (3, 3, 16, 32)
  assert shapes["layer3_0"]["conv1"]["kernel"].shape == (3, 3, 32, 64)
  assert shapes["layer3_4"]["conv2"]["kernel"].shape == (3, 3, 64, 64)
  assert "bias" not in shapes["layer3_4"]["conv2"]
  assert shapes["classifier"]["kernel"].shape == (64, 10)
  blocks = {k for k in shapes if k.startswith("layer")}
  assert blocks == {f"layer{s}_{b}" for s in (1, 2, 3) for b in range(5)}
  # 31 BatchNorms (stem + 2 per block), each with running mean and var
  assert len(jax.tree.leaves(state)) == 2 * 31
  assert state["layer2_0"]["bn1"]["mean"].shape == (32,)
  # in_channels and num_classes come from make_model's arguments
  shapes100 = jax.eval_shape(lambda: M.make_model("resnet32", 100, (32, 32, 3), 0).params)
  assert shapes100["classifier"]["kernel"].shape == (64, 100)
  assert M.count_params(shapes100) == 470_004  # documented too
  shapes1 = jax.eval_shape(lambda: M.make_model("resnet32", 10, (32, 32, 1), 0).params)
  assert shapes1["stem"]["kernel"].shape == (3, 3, 1, 16)


def test_option_a_shortcut():
  x = _x((4, 4, 16), 2, seed=3)
  y = M._shortcut_a(x, 32, 2)
  ref = np.zeros((2, 2, 2, 32), np.float32)
  ref[..., 8:24] = np.asarray(x)[:, ::2, ::2, :]  # F.pad(x[:, :, ::2, ::2], (..., 8, 8))
  np.testing.assert_array_equal(y, ref)
  # the block adds it to its residual branch: with conv2 zeroed and BN in eval mode at
  # its initial statistics, the residual branch is 0 and the block is ReLU(shortcut(x))
  call = nnx.jit(lambda m, x: m(x))  # much cheaper than eager convolutions on CPU
  for cin, cout, stride in ((16, 32, 2), (16, 16, 1)):
    block = _filled(nnx.eval_shape(lambda: M.BasicBlock(cin, cout, stride, rngs=nnx.Rngs(0))))
    assert block.has_shortcut == (stride != 1)
    block.conv2.kernel[...] = 0.0
    block.eval()
    x = _x((4, 4, cin), 2, seed=4)
    expect = M._shortcut_a(x, cout, stride) if stride != 1 else x
    np.testing.assert_allclose(call(block, x), nnx.relu(expect), rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError):
    M.BasicBlock(32, 16, 2, rngs=nnx.Rngs(0))


# --------------------------------------------------------------------------- ResNet family

# The architectures as written in the papers/reference code, independently of models.py:
# name -> (pre-activation?, blocks per stage, widths, shortcut where the shape changes).
# Every stage after the first starts with a stride-2 block; convolutions have no bias.
ARCH = {
    "preact_resnet18": (True, (2, 2, 2, 2), (64, 128, 256, 512), "conv1x1"),
    "preact_resnet32": (True, (5, 5, 5), (16, 32, 64), "conv1x1"),
    "resnet18": (False, (2, 2, 2, 2), (64, 128, 256, 512), "conv1x1+bn"),
    "resnet34": (False, (3, 4, 6, 3), (64, 128, 256, 512), "conv1x1+bn"),
    "resnet32": (False, (5, 5, 5), (16, 32, 64), "none"),
    "resnet20": (False, (3, 3, 3), (16, 32, 64), "none"),
    "resnet20_narrow": (False, (3, 3, 3), (8, 16, 32), "none"),
}
# the counts documented in the module docstring: (28x28x1, 32x32x3), 10 classes
DOCUMENTED = {
    "preact_resnet18": (11_171_018, 11_172_170),
    "preact_resnet32": (466_426, 466_714),
    "resnet18": (11_172_810, 11_173_962),
    "resnet34": (21_280_970, 21_282_122),
    "resnet32": (463_866, 464_154),
    "resnet20": (269_434, 269_722),
    "resnet20_narrow": (67_906, 68_050),
}
INPUTS = ((28, 28, 1), (32, 32, 3))


def _hand_count(name, in_channels, num_classes):
  """(parameters, BatchNorm layers) from ARCH: sum of k*k*cin*cout + 2*C per BN + head."""
  pre, blocks, widths, shortcut = ARCH[name]
  conv = lambda k, a, b: k * k * a * b
  c = widths[0]
  params, bns = conv(3, in_channels, c), 0
  if not pre:  # post-activation stem: conv-BN-ReLU
    params, bns = params + 2 * c, bns + 1
  for nb, w in zip(blocks, widths):
    for b in range(nb):
      params += conv(3, c, w) + conv(3, w, w)
      params += 2 * (c if pre else w) + 2 * w  # bn1 (on the block input if pre-act), bn2
      bns += 2
      if c != w:  # the first block of stages 2.. (option A has no parameters)
        if shortcut.startswith("conv1x1"):
          params += conv(1, c, w)
        if shortcut == "conv1x1+bn":
          params, bns = params + 2 * w, bns + 1
      c = w
  if pre:  # final BN-ReLU
    params, bns = params + 2 * c, bns + 1
  return params + c * num_classes + num_classes, bns


def _abstract_run(name, shape, num_classes=10, train=True):
  """make_model + apply traced abstractly: (params, state, logits, feats, new_state) shapes."""
  def run(x):
    f = M.make_model(name, num_classes, shape, seed=0)
    return (f.params, f.state) + f.apply(f.params, f.state, x, train=train)
  return jax.eval_shape(run, jax.ShapeDtypeStruct((2, *shape), jnp.float32))


def _abstract_params(name, shape, num_classes=10):
  return jax.eval_shape(lambda: M.make_model(name, num_classes, shape, seed=0).params)


@pytest.mark.parametrize("name", sorted(ARCH))
def test_resnet_family_shapes_and_counts(name):
  feat_dim = ARCH[name][2][-1]
  for shape, documented in zip(INPUTS, DOCUMENTED[name]):
    params, state, logits, feats, new_state = _abstract_run(name, shape)
    _check_pure_dict(params)
    _check_pure_dict(state)
    assert logits.shape == (2, 10) and feats.shape == (2, feat_dim)
    assert logits.dtype == jnp.float32
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    n_params, n_bn = _hand_count(name, shape[-1], 10)
    assert M.count_params(params) == n_params == documented
    assert len(jax.tree.leaves(state)) == 2 * n_bn  # running mean and var per BatchNorm
    assert params["stem"]["kernel"].shape == (3, 3, shape[-1], ARCH[name][2][0])
    assert params["classifier"]["kernel"].shape == (feat_dim, 10)
  params100 = _abstract_params(name, (32, 32, 3), num_classes=100)
  assert M.count_params(params100) == _hand_count(name, 3, 100)[0]


def test_resnet18_34_structure():
  for name, blocks in (("resnet18", (2, 2, 2, 2)), ("resnet34", (3, 4, 6, 3))):
    params = _abstract_params(name, (32, 32, 3))
    assert {k for k in params if k.startswith("layer")} == {
        f"layer{s}_{b}" for s, n in enumerate(blocks, start=1) for b in range(n)}
    assert "bn_stem" in params
    assert "shortcut_conv" not in params["layer1_0"]  # 64 -> 64, stride 1: identity
    for s, (cin, cout) in enumerate(((64, 128), (128, 256), (256, 512)), start=2):
      blk = params[f"layer{s}_0"]
      assert blk["conv1"]["kernel"].shape == (3, 3, cin, cout)
      assert blk["shortcut_conv"]["kernel"].shape == (1, 1, cin, cout)
      assert "bias" not in blk["shortcut_conv"] and set(blk["shortcut_bn"]) == {"scale", "bias"}
      assert "shortcut_conv" not in params[f"layer{s}_1"]


def test_preact_resnet32_structure():
  params = _abstract_params("preact_resnet32", (32, 32, 3))
  assert {k for k in params if k.startswith("layer")} == {
      f"layer{s}_{b}" for s in (1, 2, 3) for b in range(5)}
  assert "bn_stem" not in params and params["bn_final"]["scale"].shape == (64,)
  assert "shortcut" not in params["layer1_0"]
  assert params["layer2_0"]["shortcut"]["kernel"].shape == (1, 1, 16, 32)
  assert params["layer3_0"]["shortcut"]["kernel"].shape == (1, 1, 32, 64)
  assert params["layer2_0"]["bn1"]["scale"].shape == (16,)  # pre-activation: BN on the input


def test_cifar_resnet_depth_and_widths():
  make = lambda **kw: nnx.state(nnx.eval_shape(
      lambda: M.CifarResNet(10, 1, rngs=nnx.Rngs(0), **kw)), nnx.Param)
  shapes = lambda tree: jax.tree.map(lambda v: v.shape, nnx.to_pure_dict(tree))
  ref = lambda name: jax.tree.map(lambda v: v.shape, _abstract_params(name, (28, 28, 1)))
  assert shapes(make()) == ref("resnet32")  # the default is ResNet-32
  assert shapes(make(depth=20)) == ref("resnet20")
  assert shapes(make(depth=20, widths=(8, 16, 32))) == ref("resnet20_narrow")
  # ResNet-44 (He et al.: 0.66M), on a one-channel input
  assert M.count_params(nnx.to_pure_dict(make(depth=44))) == 658_298
  for bad in (dict(depth=21), dict(depth=2), dict(widths=(16, 32)), dict(widths=(32, 16, 8))):
    with pytest.raises(ValueError):
      make(**bad)


def test_option_b_shortcut():
  call = nnx.jit(lambda m, x: m(x))
  block = _filled(nnx.eval_shape(
      lambda: M.BasicBlock(4, 8, 2, shortcut="B", rngs=nnx.Rngs(0))))
  block.conv2.kernel[...] = 0.0
  block.eval()  # initial statistics: each BN is x / sqrt(1 + eps)
  x = _x((5, 5, 4), 2, seed=5)
  w = np.asarray(block.shortcut_conv.kernel[...])[0, 0]
  expect = np.einsum("nhwc,cd->nhwd", np.asarray(x)[:, ::2, ::2, :], w) / np.sqrt(1 + 1e-5)
  np.testing.assert_allclose(call(block, x), np.maximum(expect, 0), rtol=1e-5, atol=1e-5)
  same = nnx.eval_shape(lambda: M.BasicBlock(8, 8, 1, shortcut="B", rngs=nnx.Rngs(0)))
  assert not same.has_shortcut and not hasattr(same, "shortcut_conv")
  with pytest.raises(ValueError):
    M.BasicBlock(4, 8, 2, shortcut="C", rngs=nnx.Rngs(0))


# one real forward per mode for each new model, on one of the two input shapes
NEW = {"resnet18": (32, 32, 3), "resnet34": (32, 32, 3), "preact_resnet32": (28, 28, 1),
       "resnet20": (28, 28, 1), "resnet20_narrow": (28, 28, 1)}


@pytest.mark.parametrize("name", sorted(NEW))
def test_new_resnet_train_eval(name):
  shape = NEW[name]
  f = M.functional(_filled(nnx.eval_shape(
      lambda: M.MODELS[name](10, shape[-1], rngs=nnx.Rngs(0)))))
  fwd = jax.jit(f.apply, static_argnames="train")
  x = _x(shape, 2) * 2.0 + 1.0
  logits, feats, new_state = fwd(f.params, f.state, x, train=True)
  feat_dim = ARCH[name][2][-1]
  assert logits.shape == (2, 10) and feats.shape == (2, feat_dim)
  head = f.params["classifier"]
  np.testing.assert_allclose(logits, feats @ head["kernel"] + head["bias"], rtol=1e-5, atol=1e-5)
  assert np.isfinite(np.asarray(logits)).all()
  # train mode moves every running mean and variance ...
  assert jax.tree.structure(new_state) == jax.tree.structure(f.state)
  changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                         new_state, f.state)
  assert all(jax.tree.leaves(changed))
  # ... eval mode returns the state unchanged, and each example is independent of the batch
  logits_e, _, s = fwd(f.params, new_state, x, train=False)
  jax.tree.map(np.testing.assert_array_equal, s, new_state)
  x2 = x.at[1].set(_x(shape, 1, seed=9)[0] * 5.0)
  np.testing.assert_allclose(logits_e[0], fwd(f.params, new_state, x2, train=False)[0][0],
                             rtol=1e-5, atol=1e-5)
  assert not np.allclose(logits_e, logits, atol=1e-4)


def test_resnet_option_b_grads():
  # a two-block ResNet whose second block has the 1x1 conv + BN shortcut
  model = nnx.eval_shape(lambda: M.ResNet(3, 1, blocks=(1, 1), widths=(4, 8), strides=(1, 2),
                                          rngs=nnx.Rngs(0)))
  f = M.functional(_filled(model))
  assert set(f.params["layer2_0"]) == {"conv1", "bn1", "conv2", "bn2", "shortcut_conv",
                                       "shortcut_bn"}
  x, y = _x((6, 6, 1), 2), jnp.array([0, 2])
  loss = lambda p: _xent(f.apply(p, f.state, x, train=True)[0], y)
  grads = jax.jit(jax.grad(loss))(f.params)
  assert jax.tree.structure(grads) == jax.tree.structure(f.params)
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
  assert all(np.abs(np.asarray(g)).sum() > 0 for g in jax.tree.leaves(grads))


# --------------------------------------------------------------------------- ResNet-50

def _resnet50_count(num_classes):
  """torchvision's resnet50 has 25,557,032 parameters for 1,000 classes; swap the head."""
  return 25_557_032 - (2048 * 1000 + 1000) + 2048 * num_classes + num_classes


def test_resnet50_structure_and_count():
  for c in (10, 14):
    params, state = jax.eval_shape(lambda: M.make_model("resnet50", c, (32, 32, 3), 0)[1:])
    _check_pure_dict(params)
    assert M.count_params(params) == _resnet50_count(c)
  assert M.count_params(params) == 23_536_718  # Clothing1M, documented
  params224 = _abstract_params("resnet50", (224, 224, 3), num_classes=14)
  assert M.count_params(params224) == 23_536_718  # the count does not depend on the input
  # documented in the module docstring's table (10 classes): only the stem sees in_channels
  assert M.count_params(_abstract_params("resnet50", (28, 28, 1))) == 23_522_250
  assert M.count_params(_abstract_params("resnet50", (32, 32, 3))) == 23_528_522
  # 1 stem BN + 3 per block (16 blocks) + 4 shortcut BNs, each with running mean and var
  assert len(jax.tree.leaves(state)) == 2 * (1 + 3 * 16 + 4)
  assert params["stem"]["kernel"].shape == (7, 7, 3, 64) and "bias" not in params["stem"]
  assert {k for k in params if k.startswith("layer")} == {
      f"layer{s}_{b}" for s, n in enumerate((3, 4, 6, 3), start=1) for b in range(n)}
  for s, (cin, w) in enumerate(((64, 64), (256, 128), (512, 256), (1024, 512)), start=1):
    blk = params[f"layer{s}_0"]
    assert blk["conv1"]["kernel"].shape == (1, 1, cin, w)
    assert blk["conv2"]["kernel"].shape == (3, 3, w, w)
    assert blk["conv3"]["kernel"].shape == (1, 1, w, 4 * w)
    assert blk["bn3"]["scale"].shape == (4 * w,)
    assert blk["shortcut_conv"]["kernel"].shape == (1, 1, cin, 4 * w)  # layer1_0: 64 -> 256
    assert "shortcut_conv" not in params[f"layer{s}_1"]
  assert params["classifier"]["kernel"].shape == (2048, 14)
  # v1.5: the stride is on the 3x3 convolution
  model = nnx.eval_shape(lambda: M.ResNet50(10, 3, rngs=nnx.Rngs(0)))
  assert model.layer2_0.conv1.strides == (1, 1) and model.layer2_0.conv2.strides == (2, 2)
  assert model.layer2_0.shortcut_conv.strides == (2, 2)
  assert model.layer1_0.conv2.strides == (1, 1) and model.stem.strides == (2, 2)


def test_resnet50_forward():
  # 32x32 -> stem 16 -> max-pool 8 -> stages 8/4/2/1
  f = M.functional(_filled(nnx.eval_shape(lambda: M.ResNet50(14, 3, rngs=nnx.Rngs(0)))))
  x = _x((32, 32, 3), 2) * 2.0 + 1.0
  logits, feats, new_state = jax.jit(
      lambda p, s, x: f.apply(p, s, x, train=True))(f.params, f.state, x)
  assert logits.shape == (2, 14) and feats.shape == (2, 2048)
  head = f.params["classifier"]
  np.testing.assert_allclose(logits, feats @ head["kernel"] + head["bias"], rtol=1e-4, atol=1e-4)
  assert np.isfinite(np.asarray(logits)).all()
  assert (np.asarray(feats) >= 0).all()  # pooled after the last ReLU
  assert jax.tree.structure(new_state) == jax.tree.structure(f.state)


def test_bottleneck_block():
  call = nnx.jit(lambda m, x: m(x))
  block = _filled(nnx.eval_shape(lambda: M.Bottleneck(8, 4, 2, rngs=nnx.Rngs(0))))
  assert block.has_shortcut
  block.conv3.kernel[...] = 0.0
  block.eval()  # initial statistics: each BN is x / sqrt(1 + eps); residual branch is 0
  x = _x((5, 5, 8), 2, seed=6)
  w = np.asarray(block.shortcut_conv.kernel[...])[0, 0]
  expect = np.einsum("nhwc,cd->nhwd", np.asarray(x)[:, ::2, ::2, :], w) / np.sqrt(1 + 1e-5)
  y = call(block, x)
  assert y.shape == (2, 3, 3, 16)
  np.testing.assert_allclose(y, np.maximum(expect, 0), rtol=1e-5, atol=1e-5)
  same = _filled(nnx.eval_shape(lambda: M.Bottleneck(16, 4, 1, rngs=nnx.Rngs(0))))
  assert not same.has_shortcut and not hasattr(same, "shortcut_conv")
  same.conv3.kernel[...] = 0.0
  same.eval()
  x = _x((3, 3, 16), 2, seed=7)
  np.testing.assert_allclose(call(same, x), nnx.relu(x), rtol=1e-6, atol=1e-6)  # identity


# --------------------------------------------------------------------------- parameter files

def _narrow(num_classes, seed):
  return M.functional(_filled(nnx.eval_shape(
      lambda: M.ResNet20Narrow(num_classes, 1, rngs=nnx.Rngs(0))), seed=seed))


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_save_load_round_trip(tmp_path):
  src, dst = _narrow(10, seed=1), _narrow(10, seed=2)
  M.save_params(src.params, tmp_path / "params.npz")
  M.save_params(src.state, tmp_path / "state.npz")
  assert sorted(tmp_path.iterdir()) == [tmp_path / "params.npz", tmp_path / "state.npz"]
  with np.load(tmp_path / "params.npz") as npz:
    assert "layer1_0/conv1/kernel" in npz.files and "classifier/bias" in npz.files
    assert len(npz.files) == len(jax.tree.leaves(src.params))
  assert not np.array_equal(dst.params["stem"]["kernel"], src.params["stem"]["kernel"])
  params = M.load_init_params(dst.params, tmp_path / "params.npz")
  _assert_trees_equal(params, src.params)
  assert all(isinstance(v, jax.Array) and v.dtype == jnp.float32
             for v in jax.tree.leaves(params))
  _assert_trees_equal(M.load_init_params(dst.state, tmp_path / "state.npz"), src.state)
  # converted to the target's dtype
  half = jax.tree.map(lambda v: v.astype(jnp.bfloat16), dst.params)
  loaded = M.load_init_params(half, tmp_path / "params.npz")
  assert all(v.dtype == jnp.bfloat16 for v in jax.tree.leaves(loaded))
  # models without BatchNorm have an empty state
  M.save_params({}, tmp_path / "empty.npz")
  assert M.load_init_params({}, tmp_path / "empty.npz") == {}


def test_load_init_params_errors(tmp_path):
  f = _narrow(10, seed=1)
  path = tmp_path / "p.npz"
  params = jax.tree.map(np.asarray, f.params)
  missing = {**params, "layer2_1": {k: v for k, v in params["layer2_1"].items() if k != "bn2"}}
  M.save_params(missing, path)
  with pytest.raises(ValueError, match="layer2_1/bn2/bias"):
    M.load_init_params(f.params, path)
  M.save_params({**params, "extra": {"w": np.zeros(3)}}, path)
  with pytest.raises(ValueError, match="extra/w"):
    M.load_init_params(f.params, path)
  wrong = {**params,
           "layer3_2": {**params["layer3_2"], "conv1": {"kernel": np.zeros((3, 3, 32, 16))}}}
  M.save_params(wrong, path)
  with pytest.raises(ValueError, match=r"layer3_2/conv1/kernel: file \(3, 3, 32, 16\), "
                                       r"model \(3, 3, 32, 32\)"):
    M.load_init_params(f.params, path)
  # state is checked the same way: a params file lacks the running statistics
  M.save_params(f.params, path)
  with pytest.raises(ValueError, match="lacks 38 key.*bn_stem/mean"):
    M.load_init_params(f.state, path)
  # a head with only one of its arrays mismatched (another feature width) is an error
  head = {**params, "classifier": {**params["classifier"], "kernel": np.zeros((16, 10))}}
  M.save_params(head, path)
  with pytest.raises(ValueError, match="classifier/kernel"):
    M.load_init_params(f.params, path)
  # ... and without keep_mismatched so is a new class count
  M.save_params(_narrow(7, seed=1).params, path)
  with pytest.raises(ValueError, match="classifier/bias"):
    M.load_init_params(f.params, path, keep_mismatched=())


def test_load_init_params_new_head(tmp_path):
  src, dst = _narrow(10, seed=1), _narrow(7, seed=2)  # pre-trained on 10 classes, target 7
  M.save_params(src.params, tmp_path / "p.npz")
  params = M.load_init_params(dst.params, tmp_path / "p.npz")
  assert jax.tree.structure(params) == jax.tree.structure(dst.params)
  np.testing.assert_array_equal(params["layer3_2"]["conv2"]["kernel"],
                                src.params["layer3_2"]["conv2"]["kernel"])
  np.testing.assert_array_equal(params["stem"]["kernel"], src.params["stem"]["kernel"])
  # the head keeps its fresh values
  assert params["classifier"]["kernel"].shape == (32, 7)
  np.testing.assert_array_equal(params["classifier"]["kernel"], dst.params["classifier"]["kernel"])
  np.testing.assert_array_equal(params["classifier"]["bias"], dst.params["classifier"]["bias"])
  assert not np.array_equal(params["classifier"]["kernel"],
                            src.params["classifier"]["kernel"][:, :7])
  rest = lambda p: {k: v for k, v in p.items() if k != "classifier"}
  _assert_trees_equal(rest(params), rest(src.params))


def test_cnn_bn_forward_vs_numpy():
  """cnn_bn in training mode: conv (no bias) - batch statistics - ReLU - pool, twice."""
  m = M.make_model("cnn_bn", 10, (12, 12, 1), seed=1)
  x = np.random.default_rng(0).normal(size=(4, 12, 12, 1)).astype(np.float32)
  p = jax.tree.map(np.asarray, m.params)
  assert M.count_params(m.params) == 16 * 9 + 32 * 16 * 9 + 2 * (16 + 32) + 32 * 128 + 128 \
      + 1290 and "bias" not in p["conv1"]

  def conv(h, k):  # VALID 3x3, NHWC
    n, hh, ww, _ = h.shape
    out = np.zeros((n, hh - 2, ww - 2, k.shape[-1]))
    for i in range(3):
      for j in range(3):
        out += np.einsum("nhwc,cd->nhwd", h[:, i:i + hh - 2, j:j + ww - 2], k[i, j])
    return out

  def bn(h, q):
    mean, var = h.mean((0, 1, 2)), h.var((0, 1, 2))
    return (h - mean) / np.sqrt(var + 1e-5) * q["scale"] + q["bias"]

  def pool(h):
    n, hh, ww, c = h.shape
    return h[:, :hh // 2 * 2, :ww // 2 * 2].reshape(n, hh // 2, 2, ww // 2, 2, c).max((2, 4))

  h = pool(np.maximum(bn(conv(x, p["conv1"]["kernel"]), p["bn1"]), 0))
  h = pool(np.maximum(bn(conv(h, p["conv2"]["kernel"]), p["bn2"]), 0)).reshape(4, -1)
  h = np.maximum(h @ p["fc"]["kernel"] + p["fc"]["bias"], 0)
  ref = h @ p["classifier"]["kernel"] + p["classifier"]["bias"]
  logits, _, state = m.apply(m.params, m.state, jnp.asarray(x), train=True)
  np.testing.assert_allclose(logits, ref, rtol=1e-4, atol=1e-4)
  assert not np.allclose(state["bn1"]["mean"], m.state["bn1"]["mean"])  # running stats move
