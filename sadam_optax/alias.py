"""S-Adam and S-AdamW: Adam and AdamW with the singularity-aware brake.

References:
  Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized Geometric
  Probing: Towards Stable Non-smooth Optimization
  <https://arxiv.org/abs/2605.29547>`_, ICML 2026.
"""

from typing import Any, Callable, Optional, Union

import numpy as np
import optax

from sadam_optax import lgi
from sadam_optax import probe_transform
from sadam_optax import transform

ScalarOrSchedule = transform.ScalarOrSchedule


def _known(name: str, value: Any) -> Any:
  """A number or concrete array as NumPy, else None (a schedule, a tracer)."""
  if isinstance(value, (str, bytes)):
    # NumPy would parse '1e-3'; JAX fails on it later, far from the option.
    raise TypeError(f'{name}={value!r}: a number (or a schedule), not text.')
  return None if callable(value) else transform.known_value(value)


def _check_unit_interval(name: str, value: Any) -> None:
  known = _known(name, value)
  if known is not None and not (known.shape == () and 0 <= known < 1):
    raise ValueError(f'{name}={value}: it must lie in [0, 1).')


def _check_nonnegative(name: str, value: Any) -> None:
  # A NaN or infinite eps turns every step into NaN (optax does not check it).
  known = _known(name, value)
  if known is not None and not (known.shape == () and np.isfinite(known) and known >= 0):
    raise ValueError(f'{name}={value}: it must be a finite number >= 0.')


def _check_learning_rate(learning_rate: ScalarOrSchedule) -> None:
  """Refuses a NaN, infinite or negative learning rate (a schedule at its first step)."""
  known = _known('learning_rate', learning_rate(0) if callable(learning_rate) else learning_rate)
  if known is not None and known.size != 1:
    raise ValueError(
      f'learning_rate of shape {known.shape}: it must be a scalar (or a schedule of one); '
      'S-Adam reads the loss along one step.'
    )
  if known is not None and not (np.all(np.isfinite(known)) and np.all(known >= 0)):
    raise ValueError(
      f'learning_rate={learning_rate!r}: it must be a finite number >= 0. The probe '
      "reads the loss along the step -lr * Adam's direction; to maximise an objective, "
      'minimise its negative.'
    )


def sadam(
  learning_rate: ScalarOrSchedule = 1e-3,
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-8,
  *,
  lam: ScalarOrSchedule = 2.0,
  num_probes: Optional[int] = None,
  probe_radius: Optional[float] = None,
  estimator: lgi.Estimator = lgi.DEFAULT_ESTIMATOR,
  probe_every: int = 1,
  seed: int = 0,
  rule: transform.BrakeRule = 'exp',
  recovery: float = 0.1,
  min_damping: float = 0.03,
  release: transform.Release = 'auto',
  release_waits: bool = True,
  release_cap: transform.ReleaseCap = transform.DEFAULT_RELEASE_CAP,
  damping_decay: float = transform.DEFAULT_DAMPING_DECAY,
  damping_recovery: transform.Recovery = 'auto',
  store_uphill: transform.StoreUphill = 'auto',
  unresolved_fade: float = probe_transform.UNRESOLVED_FADE,
  chunk_size: Optional[int] = None,
  axis_name: Optional[str] = None,
  eps_root: float = 0.0,
  mu_dtype: Optional[Any] = None,
  nesterov: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""S-Adam: Adam whose step is braked by ``exp(-lam * rho)``.

  .. math::
    u_t = \hat m_t / (\sqrt{\hat v_t} + \epsilon), \quad
    d_t = e^{-\lambda \rho_t}, \\
    c_t = \mathrm{clip}(r_t \odot h_t, \pm \kappa |u_t|), \\
    \theta_{t+1} = \theta_t - \eta_t\, (d_t u_t + c_t), \quad
    h_{t+1} = h_t - c_t + (1 - d_t) u_t

  The brake holds back what it takes from a step (``h``, zero at the start)
  and returns ``r = release`` of it per step: what it holds on steps that
  chatter across a kink cancels, a direction the iterate keeps travelling
  in arrives late instead of never. Coordinate by coordinate, the store
  mostly waits (``r_t = r / 10`` there) while returning it would go uphill
  along the current gradient (``g_t h_t < 0``: ``-h`` is the store's step).
  Since 0.4:
  returned blindly, what was held as uphill pushed the iterate away again,
  and with a short second-moment memory (``b2`` 0.95) S-Adam then ended
  wider than Adam. ``release=None`` (the paper) drops ``h``: the step is
  then ``d_t u_t``. With ``damping_decay=beta > 0`` the damping averages the
  readings over probes instead, ``d_t = beta d_{t-1} + (1 - beta)
  e^{-lam rho_t}``, and ``damping_recovery`` sets another ``beta`` for the
  readings that brake less than ``d_{t-1}``. Since 0.5, with ``b2 < 0.999``
  and ``b1 < 0.99`` that one is 0.9 by default (an envelope: a harder
  reading applies at once, a softer one over about ten probes); with
  optax's ``b2`` each reading applies as it comes (see the arguments).
  Since 0.8 the store returns on each coordinate at most ``kappa =
  release_cap`` (3) times Adam's own step there: in steady travel it returns
  ``1 - d`` of that step, below the cap; where Adam comes to rest (a flat
  minimum: a straight-through quantizer's gradient vanishes on the cell of
  its minimiser) the store no longer pushes on alone.

  ``rho`` is measured along Adam's proposed step (``estimator='uphill'``: the
  share of the step along which the loss rises, from its start slope, given
  by the gradient, and its mean slope, from one forward pass at its end), so
  the brake acts where that step would overshoot a kink or go uphill. The
  ``update`` call needs the loss: ``update(grads, state, params,
  value_fn=loss_of_params, value=loss)``; inside a jitted train step close
  over the batch. ``value=`` (the loss at ``params``, which the train step
  already has) is optional and saves one forward pass.

  Example::

    >>> import jax, jax.numpy as jnp, optax, sadam_optax
    >>> loss = lambda w: jnp.sum(jnp.abs(w - 1.0)) + 0.5 * jnp.sum(w ** 2)
    >>> opt = sadam_optax.sadam(1e-1)
    >>> w = jnp.zeros(2)
    >>> state = opt.init(w)
    >>> @jax.jit
    ... def step(w, state):
    ...   value, g = jax.value_and_grad(loss)(w)
    ...   u, state = opt.update(g, state, w, value_fn=loss, value=value)
    ...   return optax.apply_updates(w, u), state
    >>> for _ in range(3):
    ...   w, state = step(w, state)

  Args:
    learning_rate: a float or an optax schedule (not None: the probe needs
      the step's length).
    b1: decay of the first moment, in [0, 1).
    b2: decay of the second moment, in [0, 1).
    eps: added to the denominator of Adam's ratio.
    lam: brake strength >= 0, a float or schedule; 0 (a Python or NumPy
      number) gives ``optax.adam`` exactly and needs no loss; a JAX array or
      a schedule always probes, and at 0 equals Adam up to float32 rounding.
      Default 2.0, the paper's value.
    num_probes: probes per measurement, a static int >= 2 (None: the
      estimator's default: 2 for ``'step'``, 8 for ``'literal'`` and
      ``'random-jvp'``; unused by ``'uphill'``, ``'secant'`` and
      ``'trajectory'``). Under
      ``optax.inject_hyperparams`` pass ``static_args=('num_probes',)``.
    probe_radius: > 0, see :func:`sadam_optax.lgi_probe`.
    estimator: ``'uphill'`` (default; one forward pass), ``'secant'`` (the
      0.1 default, same pass), ``'step'`` (``num_probes`` jvps),
      ``'literal'`` (the paper's scripts), ``'random-jvp'`` (the paper's
      text) or ``'trajectory'`` (no extra pass of the loss); see
      :func:`sadam_optax.lgi_probe`.
    probe_every: probe every this many steps, carrying rho in between; the
      steps in between cost AdamW's passes (the store acts on probed steps
      only, see :func:`sadam_optax.lgi_probe`).
    seed: seed of the probes' PRNG key (``'step'``, ``'literal'`` and
      ``'random-jvp'``; the other estimators draw nothing).
    rule: ``'exp'`` (the paper) or ``'compound'``, see
      :func:`sadam_optax.damping_scale`. Only ``'compound'`` stopped Adam's
      chattering at a kink in the first study; with the ``'uphill'``
      reading ``'exp'`` narrows Adam's band at kinks on most problem
      families of the non-smooth suite (see the documentation's findings).
    recovery: ``'compound'`` only, see :func:`sadam_optax.damping_scale`.
    min_damping: ``'compound'`` only, see :func:`sadam_optax.damping_scale`.
    release: share of the braked-off part of past steps returned per step
      (``'auto'``: 0.01 with ``rule='exp'``, None with ``'compound'``;
      None: discarded, the paper's brake). The brake then delays what it
      reads as unstable instead of cutting the learning rate; the store
      mostly waits (a tenth of the rate) on the coordinates where returning
      it would go uphill; see
      :func:`sadam_optax.damping_scale`. Costs one more array like the
      parameters in the state.
    release_waits: the store returns at a tenth of the rate on the
      coordinates where returning it would go uphill (since 0.4); False
      returns it everywhere at the full rate, as 0.3 did.
    release_cap: the store returns on each coordinate at most this multiple
      of Adam's step there (since 0.8; default 3, None: no cap, as 0.7).
      Where Adam comes to rest on a flat minimum the store pushed on alone
      and carried the iterate out of it again and again (least squares
      through a straight-through quantizer); see
      :func:`sadam_optax.damping_scale`.
    damping_decay: ``rule='exp'`` only: the damping is an average over
      probes of ``exp(-lam * rho)`` with this decay, in [0, 1); 0 (default):
      each reading as it comes. 0.7 keeps S-Adam's band below Adam's across
      smooth valleys with a short ``b2`` (0.95) where 0 widens it, and loses
      the gain in quantization-aware training at a too-high lr; see
      :func:`sadam_optax.damping_scale`.
    damping_recovery: ``rule='exp'`` only: the decay for readings that brake
      less than the last damping, in [0, 1); None: that of
      ``damping_decay``. ``damping_decay=0, damping_recovery=0.9`` takes a
      harder reading at once and lets go of it slowly (an envelope).
      ``'auto'`` (default, since 0.5): the envelope where ``b2 < 0.999``,
      ``b1 < 0.99`` and ``damping_decay`` is 0, None otherwise
      (:func:`sadam_optax.auto_damping_recovery`): with a short ``b2`` the
      envelope narrows the band where following each reading widens it;
      with optax's ``b2`` it gained nothing; see
      :func:`sadam_optax.damping_scale`.
    store_uphill: with a release, whether the store keeps the share of what
      the brake holds back that lay uphill along the step (``rho``), or only
      the downhill share ``1 - rho``. ``'auto'`` (default, since 0.7): False
      where Adam's momentum is heavy (``b1 >= 0.99``), True otherwise
      (:func:`sadam_optax.auto_store_uphill`): with ``b1`` 0.99 the momentum
      carries the iterate past a minimiser for about a hundred steps, and
      the held part of those steps, handed back later, pushed it away again
      (1.9-2.9x Adam's band on two families of the non-smooth suite); with
      ``b1`` 0.9 dropping it slows travel. See
      :func:`sadam_optax.damping_scale`.
    unresolved_fade: what a reading lost in the loss's rounding keeps of the
      last rho, in [0, 1] (since 0.6; default 0.99, 0 for 0.5's brake): near a
      float32 minimiser the loss changes along most steps by less than its
      last bits, and reading those steps as smooth released the brake there;
      see :func:`sadam_optax.lgi_probe`.
    chunk_size: probes evaluated at once (None: one at a time, the fastest
      in our benchmarks; ``num_probes`` or more: all at once, vmapped).
    axis_name: data-parallel axis over which probe values are averaged.
    eps_root: as in ``optax.adam``.
    mu_dtype: dtype of the first moment, as in ``optax.adam``.
    nesterov: as in ``optax.adam``.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  References:
    Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized
    Geometric Probing <https://arxiv.org/abs/2605.29547>`_, ICML 2026.

    Kingma, Ba, `Adam: A Method for Stochastic Optimization
    <https://arxiv.org/abs/1412.6980>`_, 2014.
  """
  return sadamw(
    learning_rate,
    b1,
    b2,
    eps,
    weight_decay=None,
    lam=lam,
    num_probes=num_probes,
    probe_radius=probe_radius,
    estimator=estimator,
    probe_every=probe_every,
    seed=seed,
    rule=rule,
    recovery=recovery,
    min_damping=min_damping,
    release=release,
    release_waits=release_waits,
    release_cap=release_cap,
    damping_decay=damping_decay,
    damping_recovery=damping_recovery,
    store_uphill=store_uphill,
    unresolved_fade=unresolved_fade,
    chunk_size=chunk_size,
    axis_name=axis_name,
    eps_root=eps_root,
    mu_dtype=mu_dtype,
    nesterov=nesterov,
  )


def sadamw(
  learning_rate: ScalarOrSchedule = 1e-3,
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-8,
  *,
  weight_decay: Optional[float] = 1e-4,
  mask: Optional[Union[Any, Callable[[optax.Params], Any]]] = None,
  lam: ScalarOrSchedule = 2.0,
  num_probes: Optional[int] = None,
  probe_radius: Optional[float] = None,
  estimator: lgi.Estimator = lgi.DEFAULT_ESTIMATOR,
  probe_every: int = 1,
  seed: int = 0,
  rule: transform.BrakeRule = 'exp',
  recovery: float = 0.1,
  min_damping: float = 0.03,
  release: transform.Release = 'auto',
  release_waits: bool = True,
  release_cap: transform.ReleaseCap = transform.DEFAULT_RELEASE_CAP,
  damping_decay: float = transform.DEFAULT_DAMPING_DECAY,
  damping_recovery: transform.Recovery = 'auto',
  store_uphill: transform.StoreUphill = 'auto',
  unresolved_fade: float = probe_transform.UNRESOLVED_FADE,
  chunk_size: Optional[int] = None,
  axis_name: Optional[str] = None,
  eps_root: float = 0.0,
  mu_dtype: Optional[Any] = None,
  nesterov: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """S-AdamW: S-Adam with decoupled weight decay, which is not braked.

  ``theta -= lr * (exp(-lam * rho) * adam_direction + release * held +
  weight_decay * theta)``, where ``held`` is what the brake took from past
  steps and has not returned yet (``release=None``: the authors' scripts).
  With ``lam=0`` this is ``optax.adamw`` exactly.

  Args:
    learning_rate: a float or an optax schedule (not None: the probe needs
      the step's length).
    b1: decay of the first moment, in [0, 1).
    b2: decay of the second moment, in [0, 1).
    eps: added to the denominator of Adam's ratio.
    weight_decay: decoupled weight decay (as in ``optax.adamw``); None or 0
      for none. Keyword-only from here on: ``optax.adamw``'s fifth and sixth
      positional arguments are ``eps_root`` and ``mu_dtype``, so a call
      written for it fails here instead of setting another option.
    mask: which parameters decay, as in ``optax.adamw``.
    lam: see :func:`sadam`.
    num_probes: see :func:`sadam`.
    probe_radius: see :func:`sadam`.
    estimator: see :func:`sadam`.
    probe_every: see :func:`sadam`.
    seed: see :func:`sadam`.
    rule: see :func:`sadam`.
    recovery: see :func:`sadam`.
    min_damping: see :func:`sadam`.
    release: see :func:`sadam`.
    release_waits: see :func:`sadam`.
    release_cap: see :func:`sadam`.
    damping_decay: see :func:`sadam`.
    damping_recovery: see :func:`sadam`.
    store_uphill: see :func:`sadam`.
    unresolved_fade: see :func:`sadam`.
    chunk_size: see :func:`sadam`.
    axis_name: see :func:`sadam`.
    eps_root: as in ``optax.adamw``.
    mu_dtype: as in ``optax.adamw``.
    nesterov: as in ``optax.adamw``.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  References:
    Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized
    Geometric Probing <https://arxiv.org/abs/2605.29547>`_, ICML 2026.

    Loshchilov, Hutter, `Decoupled Weight Decay Regularization
    <https://arxiv.org/abs/1711.05101>`_, 2019.
  """
  _check_unit_interval('b1', b1)
  _check_unit_interval('b2', b2)
  _check_nonnegative('eps', eps)
  _check_nonnegative('eps_root', eps_root)
  probe = probe_transform.lgi_probe(
    estimator=estimator,
    num_probes=num_probes,
    probe_radius=probe_radius,
    probe_every=probe_every,
    chunk_size=chunk_size,
    axis_name=axis_name,
    seed=seed,
    unresolved_fade=unresolved_fade,
  )
  brake = transform.damping_scale(
    lam,
    probe=probe,
    rule=rule,
    recovery=recovery,
    min_damping=min_damping,
    release=release,
    release_waits=release_waits,
    release_cap=release_cap,
    damping_decay=damping_decay,
    damping_recovery=transform.resolve_damping_recovery(damping_recovery, b1, b2, damping_decay),
    store_uphill=transform.resolve_store_uphill(store_uphill, b1),
  )
  return _braked_adamw(
    learning_rate,
    brake,
    weight_decay=weight_decay,
    mask=mask,
    adam=optax.scale_by_adam(
      b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype, nesterov=nesterov
    ),
  )


def _braked_adamw(
  learning_rate: ScalarOrSchedule,
  brake: transform.DampingScale,
  *,
  weight_decay: Optional[float],
  mask: Any,
  adam: optax.GradientTransformation,
) -> optax.GradientTransformationExtraArgs:
  """``adam``, braked, then decoupled weight decay and the learning rate."""
  if learning_rate is None:
    # optax reads None as "no scaling, applied later in the chain": the probe
    # would then read the loss along +Adam's direction, uphill, and brake
    # every step by exp(-lam).
    raise ValueError(
      'learning_rate=None: the probe reads the loss along the step, so it needs '
      "the learning rate that makes Adam's direction a step. Pass it (a float "
      'or an optax schedule); to scale later in a chain, use the chain form: '
      'optax.chain(optax.scale_by_adam(), sadam_optax.damping_scale(lam, '
      'step_size=lr), ..., optax.scale_by_learning_rate(lr)).'
    )
  _check_learning_rate(learning_rate)
  if weight_decay is not None:
    _check_nonnegative('weight_decay', weight_decay)
  braked_adam = transform.singularity_aware(
    adam, probe=brake.probe, brake=brake, step_size=learning_rate
  )
  decay = [] if weight_decay is None else [optax.add_decayed_weights(weight_decay, mask)]
  return optax.chain(braked_adam, *decay, optax.scale_by_learning_rate(learning_rate))


def paper_sadamw(
  learning_rate: ScalarOrSchedule = 1e-3,
  *,
  weight_decay: float = 1e-2,
  lam: float = 2.0,
  num_probes: Optional[int] = None,
  probe_radius: float = 0.01,
  lazy: bool = False,
  seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
  """The paper's preset, as its authors' scripts run it.

  The literal estimator (one-sided finite differences along 8 per-tensor
  normalised Gaussian directions, sigma 0.01), lam 2, lr 1e-3, weight decay
  1e-2 undamped. On a smooth loss its rho is about 1 almost everywhere, so
  it mostly runs AdamW at ``exp(-2) = 0.14`` of the learning rate: compare it
  with AdamW at that effective learning rate. ``lazy=True`` is the scripts'
  lazy variant: 2 probes on steps 1, 10, 20, ..., rho carried in between.
  The scripts draw a fresh dropout mask per probe: with Flax models build
  ``value_fn`` with ``fresh_dropout=True`` (:mod:`sadam_optax.flax_utils`)
  to do the same.

  Args:
    learning_rate: a float or an optax schedule (not None: the probe needs
      the step's length).
    weight_decay: decoupled weight decay, not braked.
    lam: brake strength.
    num_probes: finite-difference probes per measurement (None: 8, or 2 with
      ``lazy``).
    probe_radius: sigma of the finite differences.
    lazy: probe every 10 steps (steps 1, 10, 20, ...) with 2 probes.
    seed: seed of the probes' PRNG key.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  References:
    Xu, She, Jin, Wang, `Singularity-aware Optimization via Randomized
    Geometric Probing <https://arxiv.org/abs/2605.29547>`_, ICML 2026.
  """
  if num_probes is None:
    num_probes = 2 if lazy else 8
  probe = probe_transform.lgi_probe(
    estimator='literal',
    num_probes=num_probes,
    probe_radius=probe_radius,
    probe_every=10 if lazy else 1,
    probe_offset=9 if lazy else 0,
    seed=seed,
  )
  return _braked_adamw(
    learning_rate,
    # The paper discards what it takes, and brakes by each reading as it comes.
    transform.damping_scale(
      lam, probe=probe, release=None, damping_decay=0.0, damping_recovery=0.0
    ),
    weight_decay=weight_decay,
    mask=None,
    adam=optax.scale_by_adam(),
  )
