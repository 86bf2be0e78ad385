"""Sphinx configuration of the sadam-optax documentation.

Build (warnings are errors)::

  pip install -e '.[docs]'
  sphinx-build -W --keep-going -b html docs docs/_build/html

The notebooks of ``notebooks/`` are copied into ``docs/notebooks/`` (ignored by
git) with a title cell in front and rendered by myst-nb without being
executed; CI executes them in ``tests/test_notebooks.py``.
"""

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sadam_optax  # noqa: E402  (after the path is set)

project = 'sadam-optax'
author = 'sadam-optax developers'
copyright = '2026, sadam-optax developers'  # pylint: disable=redefined-builtin
release = sadam_optax.__version__
version = release

extensions = [
  'myst_nb',
  'sphinx.ext.autodoc',
  'sphinx.ext.autosummary',
  'sphinx.ext.napoleon',
  'sphinx.ext.viewcode',
  'sphinx.ext.extlinks',
  'sphinx.ext.intersphinx',
]

# Google-style docstrings (Args/Returns/Example/References), as optax writes them.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# Signatures without annotations: optax's type aliases (ScalarOrSchedule, ...)
# would be expanded in full; the docstrings describe the types.
autodoc_typehints = 'none'
autodoc_member_order = 'bysource'
autodoc_default_options = {'members': False, 'show-inheritance': False}
autosummary_generate = False

# The notebooks are rendered as committed; CI runs them elsewhere.
nb_execution_mode = 'off'
myst_enable_extensions = ['colon_fence', 'dollarmath']
myst_heading_anchors = 3
source_suffix = {'.md': 'myst-nb', '.ipynb': 'myst-nb'}

# One place for the repository's address: {source}`path/in/repo`.
REPOSITORY = 'https://github.com/sadam-optax/sadam-optax'
extlinks = {'source': (REPOSITORY + '/blob/main/%s', '%s')}
# Offline builds: no inventories are fetched (intersphinx_mapping stays empty).
intersphinx_mapping = {}

exclude_patterns = [
  '_build',
  'jupyter_execute',
  '.gitignore',
  '**/.ipynb_checkpoints',
]

html_theme = 'sphinx_book_theme'
html_title = 'sadam-optax'
html_theme_options = {
  'repository_url': REPOSITORY,
  'use_repository_button': True,
  'show_toc_level': 2,
}
html_static_path = []

NOTEBOOKS = {
  '01_quickstart': 'Quickstart: S-Adam in an optax chain',
  '02_qat_mnist1d': 'Quantization-aware training on MNIST-1D',
  '03_diagnostics': 'Diagnostics: rho, damping, non-finite probes',
}


def _copy_notebooks() -> None:
  """Copies the notebooks into docs/notebooks/ with a title cell in front."""
  out = pathlib.Path(__file__).resolve().parent / 'notebooks'
  out.mkdir(exist_ok=True)
  for name, title in NOTEBOOKS.items():
    notebook = json.loads((ROOT / 'notebooks' / f'{name}.ipynb').read_text())
    # Colab cells use IPython syntax (%pip, !git): highlight them as IPython.
    notebook['metadata'].setdefault('language_info', {})['pygments_lexer'] = 'ipython3'
    notebook['cells'].insert(
      0, {'cell_type': 'markdown', 'metadata': {}, 'id': 'docs-title', 'source': [f'# {title}\n']}
    )
    text = json.dumps(notebook, indent=1)
    target = out / f'{name}.ipynb'
    if not target.exists() or target.read_text() != text:
      target.write_text(text)  # Rewritten only when changed: incremental builds.


_copy_notebooks()
