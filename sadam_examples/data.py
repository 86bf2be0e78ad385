"""Real-data loaders returning ``(x_train, y_train, x_test, y_test)`` numpy arrays.

Inputs are ``float32`` (images NHWC in ``[0, 1]``, or standardised), labels
``int32``. Nothing is downloaded: MNIST-1D is generated locally, digits ship
with scikit-learn, CIFAR-10 is read from a local JPEG ImageFolder (a directory
or a tar archive of one), and :func:`load_tfds` is for users who are online.
Generated or decoded arrays are cached as ``.npz`` in :func:`cache_dir`.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import multiprocessing
import os
import random
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

CIFAR10_CLASSES = (
    'airplane', 'automobile', 'bird', 'cat', 'deer',
    'dog', 'frog', 'horse', 'ship', 'truck',
)  # fmt: skip
_KEYS = ('x_train', 'y_train', 'x_test', 'y_test')
_SPLITS = ('train', 'test')
_IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp')
_DECODE_CHUNK = 2000  # Images per decoding task.
# The offline copy, relative to the repository root (the package's parent).
_DEFAULT_CIFAR10 = Path('..', 'shared', 'data', 'cifar10-jpeg', 'cifar10-jpg.tar.xz')


def cache_dir() -> Path:
  """The cache directory: ``$SADAM_CACHE``, else ``~/.cache/sadam_optax``."""
  return Path(os.environ.get('SADAM_CACHE', '~/.cache/sadam_optax')).expanduser()


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
  """Writes ``arrays`` to ``path`` atomically (readers never see a partial file)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f'{path.name}.{os.getpid()}.tmp')
  with open(tmp, 'wb') as f:
    np.savez(f, **arrays)
  os.replace(tmp, path)


def _load_npz(path: Path) -> Arrays:
  with np.load(path) as f:
    return tuple(f[k] for k in _KEYS)


def _subsample(
  x: np.ndarray, y: np.ndarray, limit: int | None, *, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """A fixed random subset of ``limit`` examples, in their original order."""
  if limit is None or limit >= len(y):
    return x, y
  idx = np.sort(np.random.default_rng(seed).permutation(len(y))[:limit])
  return x[idx], y[idx]


def _channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Exact per-channel mean and standard deviation of uint8 images (via value
  histograms: no float copy, no float32 accumulation error)."""
  values = np.arange(256, dtype=np.float64)
  counts = np.stack([np.bincount(x[..., c].ravel(), minlength=256) for c in range(x.shape[-1])])
  n = counts.sum(axis=1)
  mean = counts @ values / n
  return mean, np.sqrt(counts @ values**2 / n - mean**2)


def _to_float(
  data: Arrays, *, limit_train: int | None, limit_test: int | None, normalize: bool
) -> Arrays:
  """Subsamples uint8 images and maps them to float32 in ``[0, 1]`` or, with
  ``normalize``, standardises each channel with the (returned) training set's
  statistics."""
  x_train, y_train = _subsample(data[0], data[1], limit_train, seed=0)
  x_test, y_test = _subsample(data[2], data[3], limit_test, seed=1)
  mean, std = _channel_stats(x_train) if normalize else (0.0, 255.0)

  def to_float(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    x -= np.asarray(mean, np.float32)  # In place: a float copy of CIFAR-10 is 600 MB.
    x /= np.asarray(std, np.float32)
    return x

  return to_float(x_train), y_train.astype(np.int32), to_float(x_test), y_test.astype(np.int32)


def load_mnist1d(seed: int = 42, *, num_samples: int = 5000, cache: bool = True) -> Arrays:
  """MNIST-1D, generated locally by the ``mnist1d`` package (no download).

  With the defaults this is the standard dataset: 4000 training and 1000 test
  standardised sequences of length 40, 10 classes.

  References:
    Greydanus & Kobak, 2020. Scaling Down Deep Learning with MNIST-1D.
    https://arxiv.org/abs/2011.14439

  Args:
    seed: generation seed (42 is the package default).
    num_samples: total number of sequences; 80% go to training.
    cache: read/write the arrays in :func:`cache_dir`.

  Returns:
    ``(x_train, y_train, x_test, y_test)``; ``x`` has shape ``(N, 40, 1)``.
  """
  path = cache_dir() / f'mnist1d-seed{seed}-n{num_samples}.npz'
  if cache and path.exists():
    return _load_npz(path)
  import mnist1d.data  # pylint: disable=g-import-not-at-top  # Slow (matplotlib).

  args = mnist1d.data.get_dataset_args()
  args.seed, args.num_samples = seed, num_samples
  # make_dataset reseeds the global RNGs: leave the caller's streams untouched.
  np_state, py_state = np.random.get_state(), random.getstate()
  try:
    d = mnist1d.data.make_dataset(args)
  finally:
    np.random.set_state(np_state)
    random.setstate(py_state)
  x = lambda a: a.astype(np.float32)[..., None]
  y = lambda a: a.astype(np.int32)
  data = x(d['x']), y(d['y']), x(d['x_test']), y(d['y_test'])
  if cache:
    _save_npz(path, **dict(zip(_KEYS, data)))
  return data


def load_digits(*, test_fraction: float = 0.2) -> Arrays:
  """scikit-learn's bundled 8x8 digits as ``(N, 8, 8, 1)`` images in ``[0, 1]``.

  Args:
    test_fraction: share of the 1797 images held out (stratified, fixed seed:
      the split never changes).

  Returns:
    ``(x_train, y_train, x_test, y_test)``, 10 classes.
  """
  from sklearn import datasets, model_selection  # pylint: disable=g-import-not-at-top

  digits = datasets.load_digits()
  x = (digits.images / 16.0).astype(np.float32)[..., None]
  y = digits.target.astype(np.int32)
  x_train, x_test, y_train, y_test = model_selection.train_test_split(
    x, y, test_size=test_fraction, random_state=0, stratify=y
  )
  return x_train, y_train, x_test, y_test


def _split_and_class(name: str) -> tuple[str, str] | None:
  """``(split, class)`` of an image ``[...]/<split>/<class>/[...]/<file>``."""
  if not name.lower().endswith(_IMAGE_SUFFIXES):
    return None
  parts = Path(name).parts
  for i, part in enumerate(parts[:-2]):
    if part in _SPLITS:
      return part, parts[i + 1]
  return None


def _read_encoded(path: Path) -> Iterator[tuple[str, str, bytes]]:
  """Yields ``(split, class, encoded image)`` from a directory or tar archive."""
  if path.is_dir():
    for file in sorted(path.rglob('*')):
      key = _split_and_class(file.relative_to(path).as_posix())
      if key is not None and file.is_file():
        yield *key, file.read_bytes()
    return
  # Stream mode ('r|*'): one sequential pass, any compression, nothing on disk.
  with tarfile.open(path, 'r|*') as tar:
    for member in tar:
      key = _split_and_class(member.name)
      if key is not None and member.isfile():
        yield *key, tar.extractfile(member).read()


def _check_same_size(shapes: Iterator[tuple[int, ...]]) -> None:
  shapes = set(shapes)
  if len(shapes) > 1:
    raise ValueError(f'Images differ in size {sorted(shapes)}: resize them first.')


def _decode(blobs: list[bytes], mode: str) -> np.ndarray:
  """Decodes same-sized encoded images into a ``uint8`` array ``(N, H, W, C)``."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  images = []
  for blob in blobs:
    with Image.open(io.BytesIO(blob)) as image:
      images.append(np.asarray(image.convert(mode)))
  _check_same_size(image.shape for image in images)
  images = np.stack(images)
  return images if images.ndim == 4 else images[..., None]


def _executor(workers: int) -> concurrent.futures.Executor:
  """Processes for parallel decoding, else one thread (still overlaps reading).

  'fork' keeps workers cheap and never re-runs the caller's ``__main__`` (as
  'spawn' would); the children only run Pillow and numpy.
  """
  if workers > 1 and 'fork' in multiprocessing.get_all_start_methods():
    context = multiprocessing.get_context('fork')
    return concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)
  return concurrent.futures.ThreadPoolExecutor(1)


def _decode_folder(path: Path, *, mode: str, workers: int) -> dict[str, np.ndarray]:
  """Reads and decodes a whole ImageFolder into uint8 arrays and int32 labels."""
  keys, chunk, futures = [], [], []
  with _executor(workers) as pool:
    for split, cls, blob in _read_encoded(path):
      keys.append((split, cls))
      chunk.append(blob)
      if len(chunk) == _DECODE_CHUNK:
        futures.append(pool.submit(_decode, chunk, mode))
        chunk = []
    if chunk:
      futures.append(pool.submit(_decode, chunk, mode))
    images = [f.result() for f in futures]
  classes = sorted({cls for split, cls in keys if split == 'train'})
  if not classes:
    raise FileNotFoundError(f'No train/<class>/<image> files in {path}.')
  _check_same_size(chunk.shape[1:] for chunk in images)
  images = np.concatenate(images)
  splits = np.array([split for split, _ in keys])
  index = {cls: i for i, cls in enumerate(classes)}
  unknown = {cls for _, cls in keys} - index.keys()
  if unknown:
    raise ValueError(f'Test classes absent from train: {sorted(unknown)}.')
  labels = np.array([index[cls] for _, cls in keys], np.int32)
  arrays = {}
  for split in _SPLITS:
    arrays[f'x_{split}'] = images[splits == split]
    arrays[f'y_{split}'] = labels[splits == split]
  return arrays


def load_image_folder(
  path: str | os.PathLike,
  *,
  limit_train: int | None = None,
  limit_test: int | None = None,
  normalize: bool = False,
  mode: str = 'RGB',
  workers: int | None = None,
  cache: bool = True,
) -> Arrays:
  """An ImageFolder tree, as a directory or a (compressed) tar archive of one.

  Layout: ``[...]/train/<class>/[...]/<image>`` and ``[...]/test/<class>/...``;
  labels index the sorted training class names. Images must share one size.
  The first call decodes everything with Pillow (in ``workers`` processes,
  streaming from the tar) and caches the ``uint8`` arrays in :func:`cache_dir`,
  keyed by the path, its size and mtime; later calls only read the cache.

  Args:
    path: the directory or archive (``.tar``, ``.tar.gz``, ``.tar.xz``, ...).
    limit_train: keep a fixed random subset of this many training images.
    limit_test: likewise for the test images.
    normalize: standardise each channel with the returned training set's mean
      and standard deviation (otherwise pixels are in ``[0, 1]``).
    mode: Pillow mode the images are converted to (``'RGB'``, ``'L'``).
    workers: decoding processes; ``None`` uses every available core.
    cache: read/write the decoded arrays in :func:`cache_dir`.

  Returns:
    ``(x_train, y_train, x_test, y_test)``; ``x`` is ``float32`` NHWC.
  """
  path = Path(path).expanduser().resolve()
  if not path.exists():
    raise FileNotFoundError(f'No ImageFolder directory or tar archive at {path}.')
  stat = path.stat()
  key = hashlib.sha1(f'{path}|{stat.st_size}|{stat.st_mtime_ns}|{mode}'.encode()).hexdigest()
  cached = cache_dir() / f'imagefolder-{path.name.split(".")[0]}-{key[:16]}.npz'
  if cache and cached.exists():
    data = _load_npz(cached)
  else:
    if workers is None:
      workers = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    arrays = _decode_folder(path, mode=mode, workers=workers or 1)
    if cache:
      _save_npz(cached, **arrays)
    data = tuple(arrays[k] for k in _KEYS)
  return _to_float(data, limit_train=limit_train, limit_test=limit_test, normalize=normalize)


def cifar10_path() -> Path:
  """``$SADAM_CIFAR10``, else the offline copy beside the repository."""
  default = Path(__file__).resolve().parent.parent / _DEFAULT_CIFAR10
  return Path(os.environ.get('SADAM_CIFAR10', default))


def load_cifar10(path: str | os.PathLike | None = None, **kwargs) -> Arrays:
  """CIFAR-10 (50,000 train / 10,000 test 32x32 RGB images) from a JPEG ImageFolder.

  Args:
    path: ImageFolder directory or tar archive; default :func:`cifar10_path`.
    **kwargs: options of :func:`load_image_folder` (``limit_train``,
      ``limit_test``, ``normalize``, ...).

  Returns:
    ``(x_train, y_train, x_test, y_test)``; labels follow :data:`CIFAR10_CLASSES`.
  """
  path = Path(path) if path is not None else cifar10_path()
  if not path.exists():
    raise FileNotFoundError(
      f'CIFAR-10 not found at {path}. Set SADAM_CIFAR10 to a CIFAR-10 ImageFolder '
      '(train/<class>/*.jpg, test/<class>/*.jpg) directory or tar archive, or, '
      "online, use load_tfds('cifar10')."
    )
  return load_image_folder(path, **kwargs)


def _square(image: np.ndarray, size: int | None) -> np.ndarray:
  """Center-crops to a square and resizes to ``size`` (``None``: unchanged)."""
  if size is None:
    return image
  from PIL import Image  # pylint: disable=g-import-not-at-top

  h, w = image.shape[:2]
  s = min(h, w)
  top, left = (h - s) // 2, (w - s) // 2
  crop = image[top : top + s, left : left + s]
  crop = Image.fromarray(crop[..., 0] if crop.shape[-1] == 1 else crop)  # PIL: 2-D gray.
  return np.asarray(crop.resize((size, size), Image.BILINEAR)).reshape(size, size, -1)


def load_tfds(
  name: str,
  *,
  data_dir: str | None = None,
  train_split: str = 'train',
  test_split: str | None = None,
  image_size: int | None = None,
  limit_train: int | None = None,
  limit_test: int | None = None,
  normalize: bool = False,
) -> Arrays:
  """An image-classification dataset from TensorFlow Datasets (downloads it).

  E.g. ``'cifar10'``, ``'cifar100'``, ``'imagewoof/160px-v2'`` (with
  ``image_size``). TinyImageNet is not in the TFDS catalog: arrange it as an
  ImageFolder (``test/<wnid>/`` from ``val_annotations.txt``) and use
  :func:`load_image_folder`.

  Args:
    name: TFDS name, optionally ``name/config``.
    data_dir: TFDS data directory (TFDS default if ``None``).
    train_split: the training split.
    test_split: the evaluation split; ``None`` takes ``'test'``, else
      ``'validation'``.
    image_size: center-crop to a square and resize to this many pixels (needed
      when the images differ in size).
    limit_train: keep a fixed random subset of this many training images.
    limit_test: likewise for the test images.
    normalize: standardise each channel with the training set's statistics.

  Returns:
    ``(x_train, y_train, x_test, y_test)``; ``x`` is ``float32`` NHWC.
  """
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError('load_tfds needs TensorFlow Datasets: pip install tensorflow-datasets') from e
  builder = tfds.builder(name, data_dir=data_dir)
  builder.download_and_prepare()
  if test_split is None:
    test_split = 'test' if 'test' in builder.info.splits else 'validation'

  def split_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    pairs = tfds.as_numpy(builder.as_dataset(split=split, as_supervised=True))
    images, labels = zip(*((_square(x, image_size), y) for x, y in pairs))
    return np.stack(images), np.array(labels, np.int32)

  data = (*split_arrays(train_split), *split_arrays(test_split))
  return _to_float(data, limit_train=limit_train, limit_test=limit_test, normalize=normalize)


def batches(
  x: np.ndarray,
  y: np.ndarray,
  batch_size: int,
  *,
  seed: int | np.random.Generator | None = None,
  shuffle: bool = True,
  drop_last: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """One epoch of ``(x, y)`` minibatches.

  Args:
    x: inputs, first axis the examples.
    y: labels, same length.
    batch_size: examples per batch.
    seed: shuffling seed or generator (pass a generator, or a new seed per
      epoch, to get a new order each epoch); ``None`` draws fresh entropy.
    shuffle: shuffle the examples, else keep their order.
    drop_last: skip the final batch when it is smaller than ``batch_size``.

  Yields:
    ``(x_batch, y_batch)`` numpy arrays.
  """
  n = len(y)
  order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
  stop = n - n % batch_size if drop_last else n
  for start in range(0, stop, batch_size):
    idx = order[start : start + batch_size]
    yield x[idx], y[idx]
