"""experiments.step_scale runs in a tiny setting and reads what it should."""

from experiments import step_scale


def test_step_scale_smoke_reads_a_flat_quantized_loss(tmp_path):
  payload = step_scale.main(['--smoke', '--out-dir', str(tmp_path)])
  float_rows, quant_rows = payload['results']['float'], payload['results']['4-bit']
  # Along a short step the float model's loss follows its gradient: nothing braked.
  assert float_rows[-1]['mean_rho'] < 0.05
  assert abs(float_rows[-1]['median_rise_ratio'] - 1) < 0.1
  # The quantized loss barely moves along short steps, read as overshoots.
  assert quant_rows[-1]['mean_rho'] > quant_rows[0]['mean_rho']
  assert (tmp_path / 'step_scale.md').read_text().count('| 4-bit |') == len(step_scale.ALPHAS)
