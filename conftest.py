"""Settings for the whole test suite (loaded before any test module imports jax).

The suite is compile-bound: most checks jit a few steps of a small problem, so
XLA's compile time, not run time, is what CI waits for. LLVM's optimization
level changes how fast the compiled CPU code runs, not what it computes, so the
tests compile at level 0 (measured: the core's common checks take 0.8x as long).
Benchmarks run as scripts, outside pytest, and keep XLA's defaults.
"""

import os

_FLAG = '--xla_backend_optimization_level=0'
if _FLAG not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} {_FLAG}'.strip()
