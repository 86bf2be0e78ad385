"""Every public name has an API page, and the docs' sources are consistent.

Parses ``docs/`` (no Sphinx build): each name of ``sadam_optax.__all__`` and
every public function and class defined in ``sadam_optax.quant_aware`` and
``sadam_optax.flax_utils`` must be the target of an ``autodoc`` directive
(``.. autofunction::``, ``.. autoclass::``, ...) on a page under
``docs/api/``. The build itself (``sphinx-build -W``) runs in ``.ci/run``.
"""

import importlib
import inspect
import pathlib
import posixpath
import re

import pytest

import sadam_optax

DOCS = pathlib.Path(__file__).resolve().parent.parent / 'docs'
DIRECTIVE = re.compile(
  r'^\s*\.\. auto(?:function|class|data|attribute|exception)::\s+([\w.]+)', re.MULTILINE
)


def documented() -> set[str]:
  """Fully qualified names that the API pages document with autodoc."""
  names = set()
  for page in (DOCS / 'api').rglob('*.md'):
    names.update(DIRECTIVE.findall(page.read_text()))
  return names


def public_names(module_name: str) -> list[str]:
  """Public functions and classes defined in ``module_name`` (and its lazy ones)."""
  module = importlib.import_module(module_name)
  names = [
    name
    for name, obj in vars(module).items()
    if not name.startswith('_')
    and (inspect.isfunction(obj) or inspect.isclass(obj))
    and getattr(obj, '__module__', None) == module_name
  ]
  if module_name == 'sadam_optax.flax_utils':
    names.append('TrainState')  # Built on first access (module __getattr__).
  return sorted(set(names))


def test_every_name_of_all_has_an_api_entry():
  missing = [n for n in sadam_optax.__all__ if f'sadam_optax.{n}' not in documented()]
  assert not missing, f'add to docs/api/core.md: {missing}'


@pytest.mark.parametrize('module_name', ['sadam_optax.quant_aware', 'sadam_optax.flax_utils'])
def test_every_public_function_has_an_api_entry(module_name):
  names = public_names(module_name)
  assert names
  missing = [n for n in names if f'{module_name}.{n}' not in documented()]
  page = module_name.rsplit('.', 1)[-1]
  assert not missing, f'add to docs/api/{page}.md: {missing}'


def test_api_entries_exist():
  # The other direction: no page documents a name that is gone.
  for name in documented():
    module_name, attr = name.rsplit('.', 1)
    assert hasattr(importlib.import_module(module_name), attr), name


def test_every_page_is_in_a_toctree():
  pages = {
    p.relative_to(DOCS).with_suffix('').as_posix()
    for p in DOCS.rglob('*.md')
    if '_build' not in p.parts
  }
  linked = {'index'}
  for page in DOCS.rglob('*.md'):
    for block in re.findall(r'```\{toctree\}(.*?)```', page.read_text(), re.S):
      base = page.parent.relative_to(DOCS)
      for line in block.splitlines():
        line = line.strip()
        if line and not line.startswith(':'):
          linked.add(posixpath.normpath((base / line).as_posix()))
  assert pages <= linked, f'pages in no toctree: {sorted(pages - linked)}'


def test_notebooks_are_listed():
  index = (DOCS / 'index.md').read_text()
  conf = (DOCS / 'conf.py').read_text()
  for notebook in sorted((DOCS.parent / 'notebooks').glob('*.ipynb')):
    assert f'notebooks/{notebook.stem}' in index, notebook.name
    assert f"'{notebook.stem}'" in conf, notebook.name
