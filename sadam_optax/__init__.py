"""sadam_optax: S-Adam, the singularity-aware Adam, as optax transformations.

Public names only. The core imports jax and optax; the Flax helpers in
:mod:`sadam_optax.flax_utils` import flax when first used.

References:
  Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized Geometric
  Probing: Towards Stable Non-smooth Optimization
  <https://arxiv.org/abs/2605.29547>`_, ICML 2026.
"""

from sadam_optax.alias import paper_sadamw
from sadam_optax.alias import sadam
from sadam_optax.alias import sadamw
from sadam_optax.lgi import estimate_lgi
from sadam_optax.probe_transform import LGIProbe
from sadam_optax.probe_transform import lgi_probe
from sadam_optax.probe_transform import LGIProbeState
from sadam_optax.probing import every_k
from sadam_optax.transform import auto_damping_recovery
from sadam_optax.transform import auto_store_uphill
from sadam_optax.transform import Brake
from sadam_optax.transform import damping_scale
from sadam_optax.transform import DampingScale
from sadam_optax.transform import DampingScaleState
from sadam_optax.transform import singularity_aware
from sadam_optax.transform import SingularityAwareState

__version__ = '0.8.0'

# Submodules that import more than jax and optax load on first use, so that
# `sadam_optax.flax_utils.nnx_value_fn` works after `import sadam_optax`.
_LAZY_SUBMODULES = ('flax_utils', 'problems', 'quant_aware')


def __getattr__(name):
  if name in _LAZY_SUBMODULES:
    import importlib

    return importlib.import_module(f'{__name__}.{name}')
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = (
  'Brake',
  'DampingScale',
  'DampingScaleState',
  'LGIProbe',
  'LGIProbeState',
  'SingularityAwareState',
  'auto_damping_recovery',
  'auto_store_uphill',
  'damping_scale',
  'estimate_lgi',
  'every_k',
  'lgi_probe',
  'paper_sadamw',
  'sadam',
  'sadamw',
  'singularity_aware',
)
