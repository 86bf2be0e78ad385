"""CITATION.cff is valid Citation File Format (checked by cffconvert)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CITATION = Path(__file__).resolve().parent.parent / 'CITATION.cff'


def _cffconvert():
  local = Path(sys.executable).parent / 'cffconvert'
  return str(local) if local.exists() else shutil.which('cffconvert')


def test_citation_cff_is_valid():
  exe = _cffconvert()
  if exe is None:
    pytest.skip('cffconvert is not installed')
  result = subprocess.run(
    [exe, '--validate', '-i', str(CITATION)], capture_output=True, text=True, check=False
  )
  assert result.returncode == 0, result.stdout + result.stderr


def test_citation_names_the_paper():
  text = CITATION.read_text()
  assert 'preferred-citation:' in text
  assert '2605.29547' in text
