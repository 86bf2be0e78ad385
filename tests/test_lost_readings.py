"""experiments.lost_readings: where a float32 reading is lost, 0.5 let go and 0.6 holds."""

from experiments import lost_readings


def test_lost_readings_on_the_huber_instance_0_5_ended_wider_than_adam(tmp_path):
  # Huber instance 11 of seed 11 at lr 1e-3 over 10,000 steps (lost_readings.md).
  payload = lost_readings.main(['--instances', '11', '--out-dir', str(tmp_path)])
  row = {(r['precision'], r['method']): r for r in payload['rows']}
  # float32: most late readings are lost; read as smooth (0.5) the band ends wider than
  # Adam's, kept (0.6) narrower.
  assert row['float32', 'sadam-0.5']['lost_share'] > 0.5
  assert row['float32', 'sadam-0.5']['ratio'] > 2
  assert row['float32', 'sadam']['ratio'] < 0.5
  # float64 resolves the readings that float32 lost: even 0.5's rule ends far inside Adam's band.
  assert row['float64', 'sadam-0.5']['ratio'] < 0.01
  assert row['float64', 'adam']['lost_share'] == 0
  assert (tmp_path / 'lost_readings.md').read_text().count('| 11 |') == 6
