"""Tests for sadam_examples.data."""

import random
import sys
import tarfile
import types

import numpy as np
import pytest
from PIL import Image

from sadam_examples import data

# Distinct colours survive JPEG compression: they identify each image's class.
COLOURS = {'cat': (220, 30, 30), 'dog': (30, 30, 220), 'emu': (30, 220, 30)}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
  monkeypatch.setenv('SADAM_CACHE', str(tmp_path / 'cache'))


def _make_folder(root, *, per_class=(3, 2), size=(6, 5)):
  """train/<class>/i.jpg and test/<class>/i.jpg, uniform images in class colours."""
  for split, count in zip(('train', 'test'), per_class):
    for cls, colour in COLOURS.items():
      (root / split / cls).mkdir(parents=True)
      for i in range(count):
        Image.new('RGB', size, colour).save(root / split / cls / f'{i:04d}.jpg')
  return root


def _assert_arrays(arrays, n_train, n_test, shape):
  x_train, y_train, x_test, y_test = arrays
  assert x_train.shape == (n_train, *shape) and x_test.shape == (n_test, *shape)
  assert y_train.shape == (n_train,) and y_test.shape == (n_test,)
  assert x_train.dtype == x_test.dtype == np.float32
  assert y_train.dtype == y_test.dtype == np.int32


def _assert_colour_labels(x, y):
  """Label i holds the i-th class (sorted) colour."""
  colours = np.array([COLOURS[c] for c in sorted(COLOURS)]) / 255
  np.testing.assert_allclose(x.mean(axis=(1, 2)), colours[y], atol=0.05)


def test_mnist1d(monkeypatch):
  np.random.seed(123)
  random.seed(123)
  expected_np, expected_py = np.random.rand(), random.random()
  np.random.seed(123)
  random.seed(123)
  arrays = data.load_mnist1d()
  # Generation reseeds the global RNGs; the loader restores them.
  assert (np.random.rand(), random.random()) == (expected_np, expected_py)
  _assert_arrays(arrays, 4000, 1000, (40, 1))
  assert set(np.unique(arrays[1])) == set(range(10)) == set(np.unique(arrays[3]))
  assert abs(float(arrays[0].mean())) < 0.1  # Standardised by mnist1d.

  # The second load reads the cache.
  import mnist1d.data  # pylint: disable=g-import-not-at-top

  monkeypatch.setattr(mnist1d.data, 'make_dataset', lambda *a: pytest.fail('regenerated'))
  for a, b in zip(data.load_mnist1d(), arrays):
    np.testing.assert_array_equal(a, b)


def test_digits():
  arrays = data.load_digits()
  _assert_arrays(arrays, 1437, 360, (8, 8, 1))
  assert 0.0 <= arrays[0].min() and arrays[0].max() <= 1.0
  assert set(np.unique(arrays[3])) == set(range(10))
  np.testing.assert_array_equal(data.load_digits()[3], arrays[3])  # A fixed split.


@pytest.mark.parametrize('archive', [None, 'w', 'w:xz'])
def test_image_folder(tmp_path, monkeypatch, archive):
  root = _make_folder(tmp_path / 'tree' / 'cifar-like')
  path = root
  if archive is not None:  # A tar holding the tree under a top-level folder.
    path = tmp_path / ('images.tar.xz' if 'xz' in archive else 'images.tar')
    with tarfile.open(path, archive) as tar:
      tar.add(root, arcname='cifar-like')
  arrays = data.load_image_folder(path, workers=1)
  _assert_arrays(arrays, 9, 6, (5, 6, 3))
  x_train, y_train, x_test, y_test = arrays
  assert 0.0 <= x_train.min() and x_train.max() <= 1.0
  np.testing.assert_array_equal(np.bincount(y_train), [3, 3, 3])
  _assert_colour_labels(x_train, y_train)
  _assert_colour_labels(x_test, y_test)

  # The second load reads the cache: nothing is decoded.
  monkeypatch.setattr(data, '_decode', lambda *a: pytest.fail('decoded again'))
  for a, b in zip(data.load_image_folder(path), arrays):
    np.testing.assert_array_equal(a, b)


@pytest.mark.filterwarnings('ignore:os.fork')  # JAX warns on any fork once it runs.
def test_image_folder_process_pool(tmp_path, monkeypatch):
  monkeypatch.setattr(data, '_DECODE_CHUNK', 2)  # Several tasks.
  arrays = data.load_image_folder(_make_folder(tmp_path), workers=2, cache=False)
  _assert_arrays(arrays, 9, 6, (5, 6, 3))
  _assert_colour_labels(arrays[0], arrays[1])
  _assert_colour_labels(arrays[2], arrays[3])


def test_image_folder_options(tmp_path):
  path = _make_folder(tmp_path, per_class=(4, 3))
  x_train, y_train, x_test, y_test = data.load_image_folder(
    path, limit_train=5, limit_test=2, normalize=True, workers=1
  )
  assert len(y_train) == len(x_train) == 5 and len(x_test) == len(y_test) == 2
  np.testing.assert_allclose(x_train.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(x_train.std(axis=(0, 1, 2)), 1.0, atol=1e-4)
  assert data.load_image_folder(path, mode='L', workers=1)[0].shape == (12, 5, 6, 1)


def test_image_folder_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='No ImageFolder'):
    data.load_image_folder(tmp_path / 'missing')
  (tmp_path / 'empty').mkdir()
  with pytest.raises(FileNotFoundError, match='train/<class>'):
    data.load_image_folder(tmp_path / 'empty')
  root = _make_folder(tmp_path / 'mixed')
  Image.new('RGB', (7, 7)).save(root / 'train' / 'cat' / 'big.jpg')
  with pytest.raises(ValueError, match='differ in size'):
    data.load_image_folder(root, workers=1)


def test_cifar10_missing(tmp_path, monkeypatch):
  monkeypatch.setenv('SADAM_CIFAR10', str(tmp_path / 'nowhere.tar.xz'))
  assert data.cifar10_path() == tmp_path / 'nowhere.tar.xz'
  with pytest.raises(FileNotFoundError, match='SADAM_CIFAR10'):
    data.load_cifar10()


def test_cifar10_default_path(monkeypatch):
  monkeypatch.delenv('SADAM_CIFAR10', raising=False)
  path = data.cifar10_path().resolve()
  assert path.parts[-4:] == ('shared', 'data', 'cifar10-jpeg', 'cifar10-jpg.tar.xz')


@pytest.mark.slow  # The first run decodes 60,000 JPEGs (~25 s).
@pytest.mark.skipif(
  not data.cifar10_path().exists(), reason=f'CIFAR-10 copy absent at {data.cifar10_path()}'
)
def test_cifar10(monkeypatch):
  monkeypatch.delenv('SADAM_CACHE')  # Share the decoded arrays with real runs.
  arrays = data.load_cifar10(limit_train=2000, limit_test=500)
  _assert_arrays(arrays, 2000, 500, (32, 32, 3))
  assert set(np.unique(arrays[1])) == set(range(10))
  assert 0.0 <= arrays[0].min() and arrays[0].max() <= 1.0
  # The published per-channel means of the decoded training set.
  np.testing.assert_allclose(arrays[0].mean(axis=(0, 1, 2)), [0.4913, 0.4821, 0.4465], atol=0.02)


def _fake_tfds(splits):
  """A stand-in for tensorflow_datasets with images of varying sizes."""
  rng = np.random.default_rng(0)

  def as_dataset(split, as_supervised):
    assert as_supervised
    n = {'train': 6, 'validation': 4}[split]
    return [(rng.integers(0, 256, (8 + i, 10, 3), np.uint8), np.int64(i % 3)) for i in range(n)]

  builder = types.SimpleNamespace(
    info=types.SimpleNamespace(splits=dict.fromkeys(splits)),
    download_and_prepare=lambda: None,
    as_dataset=as_dataset,
  )
  return types.SimpleNamespace(builder=lambda name, data_dir: builder, as_numpy=iter)


def test_tfds_missing(monkeypatch):
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', None)  # Import fails.
  with pytest.raises(ImportError, match='pip install tensorflow-datasets'):
    data.load_tfds('cifar10')


def test_tfds(monkeypatch):
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', _fake_tfds(['train', 'validation']))
  arrays = data.load_tfds('imagewoof/160px-v2', image_size=4, limit_train=5)
  _assert_arrays(arrays, 5, 4, (4, 4, 3))
  np.testing.assert_array_equal(arrays[3], [0, 1, 2, 0])


@pytest.mark.parametrize('drop_last', [True, False])
def test_batches(drop_last):
  x, y = np.arange(10)[:, None] * np.ones((1, 3)), np.arange(10)
  out = list(data.batches(x, y, 4, seed=0, drop_last=drop_last))
  assert [len(b) for _, b in out] == ([4, 4] if drop_last else [4, 4, 2])
  for xb, yb in out:
    np.testing.assert_array_equal(xb[:, 0], yb)  # Pairs stay aligned.
  seen = np.concatenate([b for _, b in out])
  assert len(set(seen)) == len(seen) and not np.array_equal(seen, np.arange(len(seen)))
  again = np.concatenate([b for _, b in data.batches(x, y, 4, seed=0, drop_last=drop_last)])
  np.testing.assert_array_equal(seen, again)
  in_order = [b for _, b in data.batches(x, y, 5, shuffle=False)]
  np.testing.assert_array_equal(np.concatenate(in_order), y)
