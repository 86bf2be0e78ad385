"""Runs the multi-device checks on 8 simulated host devices, in a subprocess.

XLA reads ``--xla_force_host_platform_device_count`` once, when JAX's backend
starts; this pytest process may already have started it with one device, so
the files of ``tests/multidevice/`` run in a fresh interpreter:

* ``sharding_checks.py``: ``jax.jit`` with ``NamedSharding`` (tensor-parallel
  and fully sharded parameters, batch over a data axis; Auto and Explicit
  mesh axes), abstract init, sharded checkpoints.
* ``data_parallel_checks.py``: ``shard_map`` and ``pmap`` data parallelism,
  with and without ``axis_name``.
"""

import os
import pathlib
import subprocess
import sys


CHECKS = pathlib.Path(__file__).parent / 'multidevice'
REPO = pathlib.Path(__file__).parents[1]


def test_on_eight_host_devices():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8', JAX_PLATFORMS='cpu')
  files = [str(CHECKS / name) for name in ('sharding_checks.py', 'data_parallel_checks.py')]
  # One interpreter for both files: JAX's start-up is paid once.
  result = subprocess.run(
    [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-rxX', *files],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=900,
    check=False,
  )
  assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
  assert ' passed' in result.stdout and 'skipped' not in result.stdout, result.stdout[-3000:]
