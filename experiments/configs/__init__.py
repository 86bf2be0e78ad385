"""Experiments as configuration code, in the style of big_vision.

Each module of this package configures one experiment script: a frozen
dataclass ``Config`` of the script's options, ``VARIANTS`` (name -> config)
and ``get_config(arg=None)``, which returns the variant ``arg`` names (its
default variant for None). Every module has a ``'smoke'`` variant: seconds to
minutes on a CPU, what CI runs (big_vision's ``runlocal``).

A script takes ``--config NAME[:VARIANT]``, where ``NAME`` is a module of this
package (``qat``) or the path of a Python file with a ``get_config``
(``experiments/configs/qat.py``, or a file of your own that starts from a
variant and replaces fields with :func:`dataclasses.replace`). ``--preset
VARIANT`` is an alias of ``--config <the script's module>:VARIANT``; options
given on the command line override the config's fields of the same name.

Example::

  python -m experiments.qat --config qat:quick --seeds 5 --out-dir runs
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib
import importlib.util
import pkgutil
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent


def modules() -> tuple[str, ...]:
  """The config modules of this package, by name."""
  return tuple(m.name for m in pkgutil.iter_modules([str(_HERE)]))


def variant(variants: Mapping[str, Any], arg: str | None, *, default: str) -> Any:
  """A fresh copy of ``variants[arg or default]``.

  Args:
    variants: name -> config.
    arg: the variant asked for; None for ``default``.
    default: the variant of ``arg=None``.

  Returns:
    A deep copy, so that changing it leaves ``variants`` as it was.

  Raises:
    ValueError: for an unknown variant (the message lists the known ones).
  """
  name = arg or default
  if name not in variants:
    raise ValueError(f'Unknown config variant {name!r}; choose from {tuple(variants)}.')
  return copy.deepcopy(variants[name])


def _module(name: str) -> types.ModuleType:
  """The config module ``name``: a module of this package or a ``.py`` path."""
  if not name.endswith('.py'):
    if name not in modules():
      raise ValueError(f'Unknown config {name!r}; choose from {modules()} or a .py file.')
    return importlib.import_module(f'{__name__}.{name}')
  path = Path(name).resolve()
  if path.parent == _HERE:  # One module object (hence one Config class) per file.
    return _module(path.stem)
  spec = importlib.util.spec_from_file_location(f'{__name__}._file_{path.stem}', path)
  if spec is None or not path.is_file():
    raise ValueError(f'No config file {name!r}.')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load(spec: str) -> Any:
  """The config ``NAME[:VARIANT]`` names (see the module docstring).

  Args:
    spec: ``'qat'``, ``'qat:quick'`` or ``'experiments/configs/qat.py:quick'``.

  Returns:
    ``get_config(VARIANT)`` of the module (``get_config(None)`` without one).
  """
  name, _, arg = spec.partition(':')
  return _module(name).get_config(arg or None)


def add_arguments(parser: argparse.ArgumentParser, *, name: str) -> None:
  """Adds ``--config`` and its alias ``--preset`` (one or the other).

  Args:
    parser: the script's parser.
    name: the script's config module in this package.
  """
  group = parser.add_mutually_exclusive_group()
  group.add_argument(
    '--config',
    metavar='NAME[:VARIANT]',
    help=f'config module (or .py file) and variant (default {name}; see experiments/configs)',
  )
  group.add_argument(
    '--preset',
    choices=sorted(_module(name).VARIANTS),
    help=f'alias of --config {name}:PRESET',
  )


def resolve(args: argparse.Namespace, *, name: str) -> Any:
  """The config of ``args`` with the fields given on the command line replaced.

  Args:
    args: parsed with :func:`add_arguments`; every other attribute named as a
      field of the config and not None overrides that field.
    name: the script's config module in this package.

  Returns:
    A ``Config`` of that module.

  Raises:
    ValueError: when ``--config`` names a config of another script.
  """
  if args.config:
    config = load(args.config)
  else:
    config = _module(name).get_config(args.preset)
  expected = _module(name).Config
  if not isinstance(config, expected):
    raise ValueError(
      f'--config {args.config} gives a {type(config).__qualname__}, not a config of {name}.'
    )
  overrides = {
    f.name: getattr(args, f.name)
    for f in dataclasses.fields(config)
    if getattr(args, f.name, None) is not None
  }
  return dataclasses.replace(config, **overrides)
