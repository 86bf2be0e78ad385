"""sadam_examples: Flax QAT building blocks, models and real-data loaders.

Examples and experiments for :mod:`sadam_optax`; the optimizer package never
imports this one.
"""

from sadam_examples.data import batches
from sadam_examples.data import cache_dir
from sadam_examples.data import CIFAR10_CLASSES
from sadam_examples.data import cifar10_path
from sadam_examples.data import load_cifar10
from sadam_examples.data import load_digits
from sadam_examples.data import load_image_folder
from sadam_examples.data import load_mnist1d
from sadam_examples.data import load_tfds
from sadam_examples.models import CNN1D
from sadam_examples.models import MLP
from sadam_examples.models import QATNet
from sadam_examples.models import ResNet18
from sadam_examples.quant import FakeQuant
from sadam_examples.quant import fake_quant
from sadam_examples.quant import lsq_fake_quant
from sadam_examples.quant import lsq_init_step
from sadam_examples.quant import QuantConv
from sadam_examples.quant import QuantDense
from sadam_examples.quant import quantized_op

__all__ = (
  'CIFAR10_CLASSES',
  'CNN1D',
  'FakeQuant',
  'MLP',
  'QATNet',
  'QuantConv',
  'QuantDense',
  'ResNet18',
  'batches',
  'cache_dir',
  'cifar10_path',
  'fake_quant',
  'load_cifar10',
  'load_digits',
  'load_image_folder',
  'load_mnist1d',
  'load_tfds',
  'lsq_fake_quant',
  'lsq_init_step',
  'quantized_op',
)
