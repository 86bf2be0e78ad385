"""docs/scale_out.py across two processes (jax.distributed, gloo, CPU).

Two processes with 4 simulated devices each form one 8-device mesh, as two
hosts would; both must report the same losses and rho as one process on one
device, and write one checkpoint together. Slow (three interpreters); the
same example runs in the default suite on one process with 8 devices
(``tests/multidevice/sharding_checks.py``).
"""

import json
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = pathlib.Path(__file__).parents[1] / 'docs' / 'scale_out.py'


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_device(tmp_path):
  common = [sys.executable, str(SCRIPT), '--steps', '5']
  coordinator = f'localhost:{free_port()}'
  logs = [tmp_path / f'host{i}.log' for i in range(2)]
  procs = []
  for i, log in enumerate(logs):  # Files, not pipes: neither can block.
    with open(log, 'w') as f:
      procs.append(
        subprocess.Popen(
          common
          + [
            '--num-processes',
            '2',
            '--process-id',
            str(i),
            '--local-devices',
            '4',
            '--coordinator',
            coordinator,
            '--ckpt',
            str(tmp_path / 'ckpt'),
            '--out',
            str(tmp_path / f'host{i}.json'),
          ],
          stdout=f,
          stderr=subprocess.STDOUT,
        )
      )
  try:
    for proc, log in zip(procs, logs):
      assert proc.wait(timeout=600) == 0, log.read_text()[-4000:]
  finally:  # One host failing leaves the other waiting for it.
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  subprocess.run(
    common + ['--local-devices', '1', '--out', str(tmp_path / 'single.json')],
    check=True,
    capture_output=True,
    timeout=600,
  )

  hosts = [json.loads((tmp_path / f'host{i}.json').read_text()) for i in range(2)]
  single = json.loads((tmp_path / 'single.json').read_text())
  assert [h['devices'] for h in hosts] == [8, 8] and single['devices'] == 1
  assert hosts[0] == dict(hosts[1], process=0)  # Hosts agree bit for bit.
  np.testing.assert_allclose(hosts[0]['losses'], single['losses'], rtol=1e-5)
  np.testing.assert_allclose(hosts[0]['rhos'], single['rhos'], rtol=1e-4, atol=1e-7)
  for name, value in single['params'].items():
    np.testing.assert_allclose(hosts[0]['params'][name], value, rtol=1e-5, atol=1e-6)
  assert (tmp_path / 'ckpt' / '5').is_dir()
