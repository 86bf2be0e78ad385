"""The notebooks run top to bottom (small setting) and are committed clean.

Each notebook is executed with nbclient on the ``python3`` kernel, which
jupyter_client resolves to this interpreter (a kernelspec whose command is
``python`` runs ``sys.executable``), with ``SADAM_NOTEBOOK_SMOKE=1`` so that it
takes its small setting. A failing cell fails the test.
"""

import json
import re
import sys
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / 'notebooks'
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob('*.ipynb'))
COLAB = 'https://colab.research.google.com/github/sadam-optax/sadam-optax/blob/main/notebooks/{}'
CELL_TIMEOUT_S = 600


def _ids(paths):
  return [p.stem for p in paths]


def _code_cells(nb):
  return [c for c in nb['cells'] if c['cell_type'] == 'code']


def _source(cell):
  src = cell['source']
  return src if isinstance(src, str) else ''.join(src)


def test_there_are_notebooks():
  assert len(NOTEBOOKS) >= 3, NOTEBOOKS


@pytest.mark.parametrize('path', NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_committed_without_outputs(path):
  nb = json.loads(path.read_text())
  for i, cell in enumerate(_code_cells(nb)):
    assert cell['outputs'] == [], f'{path.name}: code cell {i} has outputs'
    assert cell['execution_count'] is None, f'{path.name}: code cell {i} has an execution count'


@pytest.mark.parametrize('path', NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_colab_badge_and_install_cell(path):
  nb = json.loads(path.read_text())
  assert COLAB.format(path.name) in _source(nb['cells'][0])
  first_code = _source(_code_cells(nb)[0])
  assert "'google.colab' in sys.modules" in first_code
  assert re.search(r'%pip install -q "sadam-optax\[examples\] @ git\+', first_code)


@pytest.mark.parametrize('path', NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_runs_top_to_bottom(path, monkeypatch):
  nbclient = pytest.importorskip('nbclient')
  nbformat = pytest.importorskip('nbformat')
  monkeypatch.setenv('SADAM_NOTEBOOK_SMOKE', '1')
  # Let the kernel use its inline backend, so that figures are rendered too.
  monkeypatch.delenv('MPLBACKEND', raising=False)
  nb = nbformat.read(path, as_version=4)
  nb.cells.append(nbformat.v4.new_code_cell('import sys; print(sys.prefix)'))
  client = nbclient.NotebookClient(
    nb,
    kernel_name='python3',
    timeout=CELL_TIMEOUT_S,
    resources={'metadata': {'path': str(NOTEBOOK_DIR)}},
  )
  client.execute()  # Raises CellExecutionError if a cell fails.
  kernel_prefix = nb.cells[-1].outputs[0]['text'].strip()
  assert kernel_prefix == sys.prefix, (
    f'the python3 kernel runs {kernel_prefix}, not this environment '
    f'{sys.prefix}: install ipykernel here.'
  )
