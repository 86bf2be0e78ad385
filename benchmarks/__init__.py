"""Benchmarks of the cost of S-Adam (step time, memory, quality of cheap rho).

Run them as modules from the repository root, e.g.
``python -m benchmarks.step_time --model mlp``. Not imported by ``sadam_optax``.
"""
