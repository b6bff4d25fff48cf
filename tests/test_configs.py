"""Configs as code: every shipped config loads and validates; flags override it."""

import pathlib

import pytest

from jaxnoisy import cli
from jaxnoisy.train.config import TrainConfig, load_config

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "configs"
ARGS = {"ncsam_cifar.py": ["cifar10", "cifar100", "cifar10_instance", "cifar100_instance"],
        "fbr_cifar.py": ["cifar10", "cifar100", "cifar10_n", "cifar100_n"],
        "saner_cifar.py": ["cifar10", "cifar100", "cifar10_n", "cifar100_n"],
        "meta_reweight_cifar_n.py": ["cifar10_n", "cifar100_n"],
        "ebomlc_cifar.py": ["cifar10", "cifar100"]}
METHOD_ARGS = ["sgd", "sam", "asam", "saner", "ncsam", "l2rw", "meta_reweight", "fbr",
               "mwnet", "mlc", "bome_mlc", "ebomlc"]


def test_every_config_file_is_covered():
  shipped = {p.name for p in CONFIGS.glob("*.py")}
  assert set(ARGS) | {"fashion_mnist.py", "clothing1m.py"} == shipped


@pytest.mark.parametrize("name,arg", [(n, a) for n, args in ARGS.items() for a in args])
def test_config_loads(name, arg):
  config = load_config(f"{CONFIGS / name}:{arg}")
  assert isinstance(config, TrainConfig) and config.dataset == arg.removesuffix("_instance")
  assert (CONFIGS / name).read_text().startswith('"""')  # states its paper and table


@pytest.mark.parametrize("method", METHOD_ARGS)
def test_fashion_mnist_config_per_method(method):
  config = load_config(f"{CONFIGS / 'fashion_mnist.py'}:{method}")
  assert config.method == method and config.dataset == "fashion_mnist"
  assert (config.clean_size > 0) == (method in {"l2rw", "meta_reweight", "fbr",
                                                "mwnet", "mlc", "bome_mlc", "ebomlc"})


@pytest.mark.parametrize("name", sorted(ARGS))
def test_paper_configs_pad_crops_as_their_authors(name):
  """Reflection in EBOMLC's code (its MW-Net loader), zeros in torchvision's
  RandomCrop(padding=4) of the SAM, SANER and FBR codes."""
  want = "reflect" if name == "ebomlc_cifar.py" else "constant"
  for arg in ARGS[name]:
    assert load_config(f"{CONFIGS / name}:{arg}").padding_mode == want


def test_fashion_mnist_ebomlc_reference_arm():
  config = load_config(f"{CONFIGS / 'fashion_mnist.py'}:ebomlc_reference")
  assert config.method == "ebomlc" and config.hparams.sign == "reference"
  assert config.clean_size == 1000
  assert load_config(f"{CONFIGS / 'fashion_mnist.py'}:ebomlc").hparams.sign == "descend"


@pytest.mark.parametrize("method", ["fbr", "sgd", "mlc"])
def test_clothing1m_config_is_the_fbr_authors_recipe(method):
  config = load_config(f"{CONFIGS / 'clothing1m.py'}:{method}")
  assert config.method == method and config.dataset == "clothing1m"
  assert (config.model, config.batch_size, config.learning_rate, config.weight_decay,
          config.epochs, config.lr_boundaries) == ("resnet50", 64, 0.01, 5e-4, 10,
                                                   (0.5, 0.7, 0.9))
  assert config.train_size // config.batch_size == 2000 and config.train_balanced
  assert config.crop_size == 224 and config.noise == "clothing1m:noisy"
  assert config.clean_size == (2000 if method != "sgd" else 0)
  if method == "fbr":  # the clean passes' own batch (train_steps)
    assert config.hparams.pass_batch_size == 128


def test_bad_arg_and_missing_file():
  with pytest.raises(ValueError, match="ARG"):
    load_config(f"{CONFIGS / 'ncsam_cifar.py'}:mnist")
  with pytest.raises(ValueError, match="config"):
    load_config("experiments/configs/nope.py")


def test_flags_override_the_config(tmp_path):
  args = cli.build_parser().parse_args(
      ["train", "--config", f"{CONFIGS / 'saner_cifar.py'}:cifar100", "--epochs", "3",
       "--noise", "asymmetric:0.4", "--out", str(tmp_path)])
  config = cli.config_from_args(args)
  assert config.epochs == 3 and config.noise == "asymmetric:0.4"
  assert config.dataset == "cifar100" and config.schedule == "step"
  assert config.hparams.base.rho == 0.1
