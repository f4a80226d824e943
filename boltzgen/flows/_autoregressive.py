r"""Autoregressive samplers for Ising spins: MADE, PixelCNN, Z2 symmetrisation, β-conditioning.

A configuration s ∈ {−1, +1}^N is generated site by site in a fixed order (row-major raster
order on an L×L lattice). The network outputs one logit ℓ_i(s_{<i}) per site, and

    q(s_i = +1 | s_{<i}) = σ(ℓ_i),   ln q(s) = Σ_i ln σ(s_i ℓ_i),

with σ the logistic function and ln σ evaluated as ``jax.nn.log_sigmoid`` (stable, no
ln(x̂ + ε) fudge). Each conditional is normalised, so Σ_s q(s) = 1 exactly (up to round-off).

``log_prob`` is one forward pass of the network on the whole configuration. Sampling is
sequential in the N sites but runs as one jitted ``lax.fori_loop`` over the sites (never a Python
loop) that computes only what the next conditional needs, from caches:

* :class:`MADE` keeps the pre-activations of every layer and adds, per sampled site, the
  contribution of that site's units (a rank-1 update of the first layer, rank-c of the others,
  blocked over 16 sites) instead of a full O(width²) pass per site.
* :class:`PixelCNN` keeps the activations of every layer at the sites already done (they are
  final: an activation at a site depends only on earlier sites) and evaluates each layer at the
  one new site from a window of its buffer: 1/N of a full forward pass per site.

:class:`SpinFlipSymmetric` makes any of them Z2-invariant, q_sym(s) = ½(q(s) + q(−s)), so that a
sampler that covers one magnetisation sector does not report ln Z low by ln 2.

With ``beta_conditioned=True`` the models are conditional densities q(s | β): β enters every
layer as a learned bias offset U_l g(β̃), g(β̃) = tanh(a β̃ + b) ∈ R^k, with
β̃ = 2(β − β_min)/(β_max − β_min) − 1 (the range only normalises the input). Their methods take
``beta`` (a scalar or one value per sample); ``model.at(beta)`` is a :class:`FixedBeta`, a plain
:class:`AbstractSampler` for the rest of the pipeline.

Written for boltzgen (no library provides masked autoregressive spin models in JAX with exact
log-probabilities and cached sampling).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from boltzgen.flows._base import AbstractSampler, check_batch
from boltzgen.flows._nn import param_dtype

LN2 = math.log(2.0)

#: Nonlinearity of the hidden layers (silu(0) = 0, so zero padding stays zero after it).
_act = jax.nn.silu


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_beta_range(beta_min, beta_max) -> tuple[float, float]:
    for name, v in (("beta_min", beta_min), ("beta_max", beta_max)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number, got {v!r}")
    if not beta_max > beta_min:
        raise ValueError(f"beta_max must exceed beta_min, got [{beta_min}, {beta_max}]")
    return float(beta_min), float(beta_max)


def _cast(tree, dtype):
    """``tree`` with every inexact array leaf cast to ``dtype`` (float64 re-evaluation)."""

    def f(a):
        return a.astype(dtype) if eqx.is_inexact_array(a) and a.dtype != dtype else a

    return jax.tree_util.tree_map(f, tree)


def _sample_spin(logit, noise):
    """S = +1 if ℓ + ε > 0 with ε ~ Logistic(0, 1), so P(s = +1) = σ(ℓ); and ln σ(s ℓ)."""
    s = jnp.where(logit + noise > 0, 1.0, -1.0).astype(logit.dtype)
    return s, jax.nn.log_sigmoid(s * logit)


class BetaEmbedding(eqx.Module):
    r"""Features g(β) = tanh(a β̃ + b) ∈ R^k of the inverse temperature, β̃ ∈ [−1, 1] on the range.

    β̃ = 2(β − β_min)/(β_max − β_min) − 1; values outside the range are allowed (extrapolation).

    Args:
        k: number of features.
        beta_min, beta_max: the range mapped onto [−1, 1].
        key: PRNG key.
    """

    weight: Float[Array, " k"]
    bias: Float[Array, " k"]
    beta_min: float = eqx.field(static=True)
    beta_max: float = eqx.field(static=True)

    def __init__(self, k: int, beta_min: float, beta_max: float, *, key: PRNGKeyArray):
        k1, k2 = jax.random.split(key)
        self.weight = 2.0 * jax.random.normal(k1, (k,))
        self.bias = jax.random.uniform(k2, (k,), minval=-1.0, maxval=1.0)
        self.beta_min, self.beta_max = _check_beta_range(beta_min, beta_max)

    def __call__(self, beta: Float[Array, " n"]) -> Float[Array, "n k"]:
        """Features of a batch of β values, shape (n, k)."""
        t = 2.0 * (beta - self.beta_min) / (self.beta_max - self.beta_min) - 1.0
        return jnp.tanh(t[:, None] * self.weight[None, :] + self.bias[None, :])


def _offset(g, u):
    """Bias offset g U^T of shape (n, out), or 0 without conditioning."""
    if g is None or u is None:
        return 0.0
    return g @ u.T


class AbstractSpinSampler(AbstractSampler):
    """An autoregressive model of ±1 spins, optionally conditioned on β.

    Unconditional models are plain :class:`AbstractSampler`; conditional ones
    (``beta_conditioned``) need ``beta`` in :meth:`log_prob` and :meth:`sample_and_log_prob`,
    and :meth:`at` fixes it.

    Samples are float32 arrays of ±1 of shape (n, *event_shape). ``log_prob`` runs the network in
    the parameters' dtype and sums the log-sigmoids in the input's float dtype (float64 inputs
    under ``jax.enable_x64`` give a float64 sum of float32 logits).
    """

    @property
    def beta_conditioned(self) -> bool:
        """True for a conditional model q(s | β)."""
        raise NotImplementedError

    def at(self, beta) -> FixedBeta:
        """The conditional model at a fixed β, as a plain :class:`AbstractSampler`."""
        return FixedBeta(self, beta)

    def _features(self, beta, n: int, dtype):
        """Checked β → features (n, k) (None for an unconditional model)."""
        if not self.beta_conditioned:
            if beta is not None:
                raise ValueError(
                    f"{type(self).__name__} is not beta-conditioned; do not pass beta "
                    f"(build it with beta_conditioned=True for q(s | beta))"
                )
            return None
        b = _beta_vector(self, beta, n, dtype)
        return self.beta_embed(b)

    # hooks -----------------------------------------------------------------------------------
    def _logits(self, s, g):
        """Logits ℓ (n, N) of s_i = +1 given s_<i, in site order, for spins s (n, N)."""
        raise NotImplementedError

    def _sample(self, n: int, key, g):
        """Samples (n, N) in the parameters' dtype and their log q, by cached sequential passes."""
        raise NotImplementedError

    # public ----------------------------------------------------------------------------------
    @property
    def n_spins(self) -> int:
        """Number of spins N."""
        return math.prod(self.event_shape)

    def conditional_logits(self, x: Float[Array, "n ..."], beta=None) -> Float[Array, "n n_spins"]:
        """Logits ℓ_i(s_<i) of q(s_i = +1 | s_<i) = σ(ℓ_i) for a batch, in site order (n, N)."""
        check_batch(self, x)
        model, s = self._prepare(x)
        return model._logits(s, model._features(beta, s.shape[0], s.dtype))

    def log_prob(self, x: Float[Array, "n ..."], beta=None) -> Float[Array, " n"]:
        """Ln q(s) = Σ_i ln σ(s_i ℓ_i(s_<i)) for a batch of ±1 configurations, in one pass.

        Args:
            x: spins of shape (n, *event_shape).
            beta: inverse temperature(s), scalar or shape (n,) (conditional models only).
        """
        check_batch(self, x)
        out = x.dtype if jnp.issubdtype(x.dtype, jnp.inexact) else param_dtype(self)
        # The network runs in the parameters' precision; only the sum of log-sigmoids is done in
        # a wider input dtype. A float64 copy of the network cost ~8× the time (PixelCNN,
        # L = 16, on this CPU) for a change in ln q of float32 round-off on the logits.
        s = jnp.asarray(x, param_dtype(self)).reshape(x.shape[0], -1)
        logits = self._logits(s, self._features(beta, s.shape[0], s.dtype)).astype(out)
        s = jnp.asarray(x, out).reshape(x.shape[0], -1)
        return jnp.sum(jax.nn.log_sigmoid(s * logits), axis=1)

    def sample_and_log_prob(
        self, n: int, *, key: PRNGKeyArray, beta=None
    ) -> tuple[Float[Array, "n ..."], Float[Array, " n"]]:
        """Draw n configurations s ~ q (float32 ±1) with their exact ln q(s).

        Args:
            n: number of samples.
            key: PRNG key.
            beta: inverse temperature(s), scalar or shape (n,) (conditional models only).
        """
        n = _check_int("n", n, 1)
        dtype = param_dtype(self)
        s, log_q = self._sample(n, key, self._features(beta, n, dtype))
        return s.astype(jnp.float32).reshape(n, *self.event_shape), log_q

    def _prepare(self, x):
        dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.inexact) else param_dtype(self)
        model = _cast(self, dtype)
        return model, jnp.asarray(x, dtype).reshape(x.shape[0], -1)


def _beta_vector(model, beta, n: int, dtype):
    if beta is None:
        raise ValueError(
            f"{type(model).__name__} is beta-conditioned: pass beta (a scalar or shape ({n},)), "
            f"or use model.at(beta)"
        )
    b = jnp.asarray(beta, dtype)
    if b.ndim == 0:
        return jnp.broadcast_to(b, (n,))
    if b.shape != (n,):
        raise ValueError(f"beta must be a scalar or of shape ({n},), got shape {b.shape}")
    return b


def _made_masks(n: int, c: int, depth: int) -> list[np.ndarray]:
    """Masks of MADE: unit k of a hidden layer belongs to site group k // c.

    Input → first hidden: group i sees spins j < i (exclusive). Hidden → hidden: group i sees
    groups j ≤ i. Last hidden → output logit i: groups j ≤ i.
    """
    grp = np.arange(n * c) // c
    site = np.arange(n)
    masks = [site[None, :] < grp[:, None]]
    masks += [grp[None, :] <= grp[:, None]] * (depth - 1)
    masks.append(grp[None, :] <= site[:, None])
    return masks


class MADE(AbstractSpinSampler):
    r"""Masked autoregressive dense network (Germain et al. 2015) over N spins in a fixed order.

    Hidden layers have c units per site (width w = cN). With masks M_l (:func:`_made_masks`),

        h_1 = φ((W_1 ⊙ M_1) s + b_1),   h_l = φ((W_l ⊙ M_l) h_{l−1} + b_l),
        ℓ = (W_o ⊙ M_o) h_D + b_o,      ln q(s) = Σ_i ln σ(s_i ℓ_i),

    where the units of site i in h_1 see the spins j < i and later layers see the units of sites
    j ≤ i, so ℓ_i depends on s_{<i} only. φ = SiLU. The output layer starts at zero (q uniform).
    A lattice configuration is flattened in row-major order.

    Sampling is a jitted ``lax.fori_loop`` over sites that keeps the pre-activations of every
    layer: after s_i is drawn the first layer gets the rank-1 term s_i (W_1 ⊙ M_1)[:, i], and each
    later layer the rank-c term of site i's units (vs a full O(w² D) pass per site). The updates
    are blocked: within a block of b ≤ 16 sites only the block's own units are updated per site,
    and the whole width gets one rank-(b c) update per block (measured 5× faster than updating
    the full width per site: memory traffic, not arithmetic, bounds this loop).

    Args:
        event_shape: shape of one configuration (an int N, (N,) or (L, L)).
        key: PRNG key.
        channels: hidden units per site c (width w = cN).
        depth: number of hidden layers D ≥ 1.
        beta_conditioned: model q(s | β) (see the module docstring).
        beta_min, beta_max: range of β mapped onto [−1, 1] for the conditioning input.
        beta_features: number k of β features.
    """

    w_layers: tuple[Float[Array, "out in"], ...]
    b_layers: tuple[Float[Array, " out"], ...]
    masks: tuple[Bool[Array, "out in"], ...]
    u_layers: tuple[Float[Array, "out k"], ...] | None
    beta_embed: BetaEmbedding | None
    shape: tuple[int, ...] = eqx.field(static=True)
    channels: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)

    def __init__(
        self,
        event_shape,
        *,
        key: PRNGKeyArray,
        channels: int = 2,
        depth: int = 2,
        beta_conditioned: bool = False,
        beta_min: float = 0.0,
        beta_max: float = 1.0,
        beta_features: int = 8,
    ):
        shape = tuple(int(s) for s in np.atleast_1d(event_shape))
        if not shape or any(s < 1 for s in shape) or math.prod(shape) < 2:
            raise ValueError(f"event_shape must hold at least 2 spins, got {shape}")
        c = _check_int("channels", channels, 1)
        depth = _check_int("depth", depth, 1)
        n = math.prod(shape)
        masks = _made_masks(n, c, depth)
        keys = jax.random.split(key, len(masks) + 2)
        ws, bs = [], []
        for i, (m, k) in enumerate(zip(masks, keys, strict=False)):
            if i == len(masks) - 1:  # output layer: zero, so q starts uniform
                ws.append(jnp.zeros(m.shape))
            else:
                fan_in = np.maximum(m.sum(axis=1, keepdims=True), 1)
                ws.append(jax.random.normal(k, m.shape) / jnp.asarray(np.sqrt(fan_in)))
            bs.append(jnp.zeros(m.shape[0]))
        self.w_layers, self.b_layers = tuple(ws), tuple(bs)
        self.masks = tuple(jnp.asarray(m) for m in masks)
        if beta_conditioned:
            kf = _check_int("beta_features", beta_features, 1)
            self.beta_embed = BetaEmbedding(kf, beta_min, beta_max, key=keys[-1])
            self.u_layers = tuple(jnp.zeros((m.shape[0], kf)) for m in masks)
        else:
            _check_beta_range(beta_min, beta_max)
            self.beta_embed, self.u_layers = None, None
        self.shape, self.channels, self.depth = shape, c, depth

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one configuration."""
        return self.shape

    @property
    def beta_conditioned(self) -> bool:
        """True for a conditional model q(s | β)."""
        return self.beta_embed is not None

    def _weights(self):
        us = self.u_layers if self.u_layers is not None else (None,) * len(self.w_layers)
        return [
            (jnp.where(m, w, 0.0), b, u)
            for w, b, m, u in zip(self.w_layers, self.b_layers, self.masks, us, strict=True)
        ]

    def _logits(self, s, g):
        layers = self._weights()
        h = s
        for w, b, u in layers[:-1]:
            h = _act(h @ w.T + b[None, :] + _offset(g, u))
        w, b, u = layers[-1]
        return h @ w.T + b[None, :] + _offset(g, u)

    def _sample(self, n, key, g):
        layers = self._weights()
        ws = [w for w, _, _ in layers]
        dtype = ws[0].dtype
        n_sites, c = self.n_spins, self.channels
        b = _block_size(n_sites)
        bc = b * c
        noise = jax.random.logistic(key, (n_sites, n), dtype)
        # pre-activations of every layer, (n, out); each starts at its bias (+ the β offset)
        pre = tuple(
            jnp.broadcast_to(bias[None, :] + _offset(g, u), (n, bias.shape[0]))
            for _, bias, u in layers
        )

        def site(j, carry, blk, w_blk):
            """Site i = blk·b + j: its units in every layer, its spin; block-local updates."""
            p_loc, h_loc, s_loc, log_q = carry
            p_loc, h_loc = list(p_loc), list(h_loc)
            for l in range(len(layers) - 1):
                h = _act(jax.lax.dynamic_slice_in_dim(p_loc[l], j * c, c, axis=1))  # (n, c)
                h_loc[l] = jax.lax.dynamic_update_slice_in_dim(h_loc[l], h, j * c, axis=1)
                # rank-c update of the next layer within the block, from site i's units
                w_cols = jax.lax.dynamic_slice_in_dim(w_blk[l + 1], j * c, c, axis=1)
                p_loc[l + 1] = p_loc[l + 1] + h @ w_cols.T
            logit = jax.lax.dynamic_index_in_dim(p_loc[-1], j, axis=1, keepdims=False)
            si, lq = _sample_spin(logit, noise[blk * b + j])
            col = jax.lax.dynamic_index_in_dim(w_blk[0], j, axis=1, keepdims=False)
            p_loc[0] = p_loc[0] + si[:, None] * col[None, :]  # rank-1 update of layer 1
            s_loc = jax.lax.dynamic_update_index_in_dim(s_loc, si, j, axis=1)
            return tuple(p_loc), tuple(h_loc), s_loc, log_q + lq

        def block(blk, carry):
            pre, s, log_q = carry
            # rows (this block's units / sites) and columns (this block's inputs) of the weights
            units = [bc] * (len(layers) - 1) + [b]
            ins = [b] + [bc] * (len(layers) - 1)
            w_blk = [
                jax.lax.dynamic_slice(w, (blk * r, blk * k), (r, k))
                for w, r, k in zip(ws, units, ins, strict=True)
            ]
            p_loc = tuple(
                jax.lax.dynamic_slice_in_dim(p, blk * r, r, axis=1)
                for p, r in zip(pre, units, strict=True)
            )
            h_loc = tuple(jnp.zeros((n, bc), dtype) for _ in range(len(layers) - 1))
            init = (p_loc, h_loc, jnp.zeros((n, b), dtype), log_q)
            _, h_loc, s_loc, log_q = jax.lax.fori_loop(
                0, b, lambda j, cr: site(j, cr, blk, w_blk), init
            )
            # the block's contribution to every later unit: one rank-(b·c) update per layer
            inputs = (s_loc,) + h_loc
            pre = tuple(
                p + x @ jax.lax.dynamic_slice_in_dim(w, blk * k, k, axis=1).T
                for p, x, w, k in zip(pre, inputs, ws, ins, strict=True)
            )
            s = jax.lax.dynamic_update_slice_in_dim(s, s_loc, blk * b, axis=1)
            return pre, s, log_q

        init = (pre, jnp.zeros((n, n_sites), dtype), jnp.zeros((n,), dtype))
        _, s, log_q = jax.lax.fori_loop(0, n_sites // b, block, init)
        return s, log_q


def _block_size(n: int, largest: int = 16) -> int:
    """Largest divisor of n that is at most ``largest`` (MADE's sampling block)."""
    return max(d for d in range(1, min(n, largest) + 1) if n % d == 0)


def _masked_offsets(h_up: int, h_w: int, dil: int, include_centre: bool) -> list[tuple[int, int]]:
    """Offsets (dr, dc) of the input sites that a masked kernel connects to its output site."""
    out = []
    for i in range(h_up + 1):
        for j in range(2 * h_w + 1):
            dr, dc = (i - h_up) * dil, (j - h_w) * dil
            if dr < 0 or dc < 0 or (include_centre and dc == 0):
                out.append((dr, dc))
    return out


def _kernel_mask(h_up: int, h_w: int, include_centre: bool) -> np.ndarray:
    """Mask of a kernel stored as its upper part: rows −h_up..0, columns −h_w..h_w."""
    m = np.ones((h_up + 1, 2 * h_w + 1), dtype=bool)
    m[h_up, h_w + (1 if include_centre else 0) :] = False
    return m


def receptive_field(L: int, layers: Sequence[tuple[int, int, int, bool]]) -> np.ndarray:
    """Which input sites reach which output sites through a stack of masked convolutions.

    Zero padding: a path counts only if every intermediate site lies in the lattice. Layers after
    the first are residual (each site also keeps its own value).

    Args:
        L: lattice size.
        layers: per layer (h_up, h_w, dilation, include_centre).

    Returns:
        Boolean (N, N) matrix R with R[p, q] = site q (raster index) reaches site p.
    """
    n = L * L
    r, c = np.divmod(np.arange(n), L)

    def adjacency(h_up, h_w, dil, centre):
        a = np.zeros((n, n), dtype=np.float32)
        for dr, dc in _masked_offsets(h_up, h_w, dil, centre):
            rr, cc = r + dr, c + dc
            ok = (rr >= 0) & (rr < L) & (cc >= 0) & (cc < L)
            a[np.arange(n)[ok], (rr * L + cc)[ok]] = 1.0
        return a

    reach = adjacency(*layers[0])
    for spec in layers[1:]:
        a = adjacency(*spec) + np.eye(n, dtype=np.float32)
        reach = ((a @ reach) > 0).astype(np.float32)
    return reach > 0


class PixelCNN(AbstractSpinSampler):
    r"""Masked convolutional autoregressive model on an L×L lattice in raster order (VAN-style).

    With h_0 = s (one channel, zero padding outside the lattice) and masked kernels,

        h_1 = K_1^A * s + b_1,
        h_l = h_{l−1} + K_l^B *_{d_l} φ(h_{l−1}) + b_l        (l = 2..D, residual),
        ℓ = w_o · φ(h_D) + b_o(r, c),   ln q(s) = Σ_{r,c} ln σ(s_{rc} ℓ_{rc}),

    where K^A sees the sites above and to the left of the output site (rows −h..−1 completely,
    the centre row left of the centre) and K^B also the centre; *_d is a convolution with
    dilation d. Kernels are stored as their upper (h + 1) rows. The first kernel spans, by default,
    L rows and 2L − 1 columns ("full"): with zero padding, site (r, 0) reaches (r − 1, L − 1) only
    through a kernel reaching L − 1 columns to the right one row up, which no stack of smaller
    kernels provides. The constructor checks that every site sees every earlier site
    (:func:`receptive_field`) and raises ValueError otherwise. The output weights start at zero
    (q uniform).

    Sampling is one ``lax.fori_loop`` over the N sites with one buffer per layer: the activations
    of a layer at a site depend only on earlier sites, so once computed they are final; each step
    evaluates every layer at the new site from a window of the previous layer's buffer (1/N of a
    forward pass), then draws the spin.

    Args:
        L: lattice size (event shape (L, L)).
        key: PRNG key.
        channels: feature channels C.
        depth: number of masked convolutions D ≥ 1 (one type A, D − 1 residual type B).
        kernel_size: odd kernel size of the type-B layers.
        first_kernel_size: odd kernel size of the first (type A) layer, or "full" / None for
            L rows × (2L − 1) columns.
        dilation: dilation of the type-B layers, one int or one per layer.
        beta_conditioned: model q(s | β) (see the module docstring).
        beta_min, beta_max: range of β mapped onto [−1, 1] for the conditioning input.
        beta_features: number k of β features.
    """

    w_first: Float[Array, "kh kw C"]
    b_first: Float[Array, " C"]
    w_res: tuple[Float[Array, "kh kw C C"], ...]
    b_res: tuple[Float[Array, " C"], ...]
    w_out: Float[Array, " C"]
    b_out: Float[Array, "L L"]
    mask_first: Bool[Array, "kh kw"]
    mask_res: Bool[Array, "kh kw"]
    u_layers: tuple[Float[Array, "out k"], ...] | None
    beta_embed: BetaEmbedding | None
    L: int = eqx.field(static=True)
    channels: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    kernel_size: int = eqx.field(static=True)
    first_half: tuple[int, int] = eqx.field(static=True)
    dilations: tuple[int, ...] = eqx.field(static=True)

    def __init__(
        self,
        L: int,
        *,
        key: PRNGKeyArray,
        channels: int = 16,
        depth: int = 3,
        kernel_size: int = 3,
        first_kernel_size: int | str | None = "full",
        dilation: int | Sequence[int] = 1,
        beta_conditioned: bool = False,
        beta_min: float = 0.0,
        beta_max: float = 1.0,
        beta_features: int = 8,
    ):
        L = _check_int("L", L, 2)
        C = _check_int("channels", channels, 1)
        depth = _check_int("depth", depth, 1)
        k = _check_int("kernel_size", kernel_size, 1)
        if k % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {k}")
        if first_kernel_size is None or first_kernel_size == "full":
            first = (L - 1, L - 1)
        elif isinstance(first_kernel_size, str):
            raise ValueError(
                f"first_kernel_size must be an odd int or 'full', got {first_kernel_size!r}"
            )
        else:
            k1 = _check_int("first_kernel_size", first_kernel_size, 1)
            if k1 % 2 == 0:
                raise ValueError(f"first_kernel_size must be odd, got {k1}")
            first = (k1 // 2, k1 // 2)
        if isinstance(dilation, int | np.integer) and not isinstance(dilation, bool):
            dil = (_check_int("dilation", dilation, 1),) * (depth - 1)
        else:
            dil = tuple(_check_int("dilation", d, 1) for d in dilation)
            if len(dil) != depth - 1:
                raise ValueError(
                    f"dilation needs one value per type-B layer (depth - 1 = {depth - 1}), "
                    f"got {len(dil)}"
                )
        hk = k // 2
        # Coverage check: a first kernel of L rows × (2L − 1) columns alone sees every earlier
        # site; otherwise compute the receptive field through in-lattice paths.
        if first[0] < L - 1 or first[1] < L - 1:
            layers = [(first[0], first[1], 1, False)] + [(hk, hk, d, True) for d in dil]
            reach = receptive_field(L, layers)
            want = np.tril(np.ones((L * L, L * L), dtype=bool), k=-1)
            if np.any(reach & ~want):  # would be a bug in the masks, not a user error
                raise RuntimeError("PixelCNN masks see a later site")
            missing = np.argwhere(want & ~reach)
            if missing.size:
                p, q = (divmod(int(v), L) for v in missing[0])
                fk = "full" if first_kernel_size in (None, "full") else first_kernel_size
                raise ValueError(
                    f"PixelCNN receptive field does not cover all earlier sites for L={L}, "
                    f"first_kernel_size={fk}, kernel_size={k}, depth={depth}, dilation={dil}: "
                    f"site {p} does not see {q} ({len(missing)} such pairs); use "
                    f"first_kernel_size='full' (or a kernel reaching L-1 = {L - 1} columns), "
                    f"or more / dilated layers"
                )
        keys = jax.random.split(key, depth + 2)
        m1 = _kernel_mask(first[0], first[1], include_centre=False)
        self.w_first = jax.random.normal(keys[0], (*m1.shape, C)) / math.sqrt(max(m1.sum(), 1))
        self.b_first = jnp.zeros(C)
        mb = _kernel_mask(hk, hk, include_centre=True)
        scale = 1.0 / math.sqrt(mb.sum() * C)
        self.w_res = tuple(scale * jax.random.normal(kk, (*mb.shape, C, C)) for kk in keys[1:depth])
        self.b_res = tuple(jnp.zeros(C) for _ in range(depth - 1))
        self.w_out = jnp.zeros(C)
        self.b_out = jnp.zeros((L, L))
        self.mask_first, self.mask_res = jnp.asarray(m1), jnp.asarray(mb)
        if beta_conditioned:
            kf = _check_int("beta_features", beta_features, 1)
            self.beta_embed = BetaEmbedding(kf, beta_min, beta_max, key=keys[-1])
            self.u_layers = tuple(jnp.zeros((C, kf)) for _ in range(depth)) + (jnp.zeros((1, kf)),)
        else:
            _check_beta_range(beta_min, beta_max)
            self.beta_embed, self.u_layers = None, None
        self.L, self.channels, self.depth, self.kernel_size = L, C, depth, k
        self.first_half, self.dilations = first, dil

    @property
    def event_shape(self) -> tuple[int, int]:
        """``(L, L)``."""
        return (self.L, self.L)

    @property
    def beta_conditioned(self) -> bool:
        """True for a conditional model q(s | β)."""
        return self.beta_embed is not None

    def _offsets(self, g):
        us = self.u_layers if self.u_layers is not None else (None,) * (self.depth + 1)
        return [_offset(g, u) for u in us]

    def _logits(self, s, g):
        n, L = s.shape[0], self.L
        off = self._offsets(g)
        hu, hw = self.first_half
        hk = self.kernel_size // 2
        dn = ("NHWC", "HWIO", "NHWC")
        w1 = jnp.where(self.mask_first[:, :, None], self.w_first, 0.0)
        if (hu, hw) == (L - 1, L - 1):
            # Full first kernel: as a dense (N, N, C) Toeplitz matrix T[p, q] = K[q − p] and one
            # matmul; XLA's CPU convolution with one input channel and a (L, 2L − 1) kernel was
            # ~40× slower (0.87 s vs 0.02 s at L = 16, C = 16, batch 1024).
            ir, ic = _toeplitz_index(L)
            h = jnp.einsum("nq,pqc->npc", s, w1[ir, ic]).reshape(n, L, L, -1)
        else:
            h = jax.lax.conv_general_dilated(
                s.reshape(n, L, L, 1),
                w1[:, :, None, :],
                (1, 1),
                ((hu, 0), (hw, hw)),
                dimension_numbers=dn,
            )
        h = h + self.b_first[None, None, None, :] + _expand(off[0])
        for idx, (w, b, d) in enumerate(zip(self.w_res, self.b_res, self.dilations, strict=True)):
            wm = jnp.where(self.mask_res[:, :, None, None], w, 0.0)
            pad = hk * d
            h = h + jax.lax.conv_general_dilated(
                _act(h),
                wm,
                (1, 1),
                ((pad, 0), (pad, pad)),
                rhs_dilation=(d, d),
                dimension_numbers=dn,
            )
            h = h + b[None, None, None, :] + _expand(off[idx + 1])
        out_off = off[-1] if isinstance(off[-1], float) else off[-1][:, :, None]  # (n, 1, 1)
        logits = _act(h) @ self.w_out + self.b_out[None] + out_off
        return logits.reshape(n, L * L)

    def _sample(self, n, key, g):
        L, C = self.L, self.channels
        dtype = self.w_first.dtype
        offsets = self._offsets(g)
        off = [jnp.zeros((n, C), dtype) + o for o in offsets[:-1]]
        off_out = (jnp.zeros((n, 1), dtype) + offsets[-1])[:, 0]
        hu, hw = self.first_half
        hk = self.kernel_size // 2
        w1 = jnp.where(self.mask_first[:, :, None], self.w_first, 0.0)
        w_res = [jnp.where(self.mask_res[:, :, None, None], w, 0.0) for w in self.w_res]
        noise = jax.random.logistic(key, (L * L, n), dtype)
        # spins, padded: site (r, c) at [r + hu, c + hw]; zeros elsewhere
        spins = jnp.zeros((n, L + hu, L + 2 * hw), dtype)
        # φ(h_{l−1}) for each type-B layer, padded by hk·d on top / left / right
        bufs = tuple(jnp.zeros((n, L + hk * d, L + 2 * hk * d, C), dtype) for d in self.dilations)

        def body(p, carry):
            spins, bufs, log_q = carry
            r, c = p // L, p % L
            zero = jnp.zeros((), p.dtype)
            win = jax.lax.dynamic_slice(spins, (zero, r, c), (n, hu + 1, 2 * hw + 1))
            h = jnp.einsum("nij,ijo->no", win, w1) + self.b_first[None, :] + off[0]
            new = []
            for idx, (buf, w, b, d) in enumerate(
                zip(bufs, w_res, self.b_res, self.dilations, strict=True)
            ):
                pad = hk * d
                buf = jax.lax.dynamic_update_slice(
                    buf, _act(h)[:, None, None, :], (zero, r + pad, c + pad, zero)
                )
                win = jax.lax.dynamic_slice(buf, (zero, r, c, zero), (n, pad + 1, 2 * pad + 1, C))[
                    :, ::d, ::d, :
                ]
                h = h + jnp.einsum("nijc,ijco->no", win, w) + b[None, :] + off[idx + 1]
                new.append(buf)
            b_site = self.b_out[r, c]
            logit = _act(h) @ self.w_out + b_site + off_out
            si, lq = _sample_spin(logit, noise[p])
            spins = jax.lax.dynamic_update_slice(spins, si[:, None, None], (zero, r + hu, c + hw))
            return spins, tuple(new), log_q + lq

        init = (spins, bufs, jnp.zeros((n,), dtype))
        spins, _, log_q = jax.lax.fori_loop(0, L * L, body, init)
        return spins[:, hu:, hw : hw + L].reshape(n, L * L), log_q


def _toeplitz_index(L: int) -> tuple[np.ndarray, np.ndarray]:
    """Kernel indices (row, col) of the full first kernel for each (output p, input q) pair.

    The full kernel has rows −(L−1)..0 and columns −(L−1)..L−1, stored at [dr + L − 1,
    dc + L − 1]; pairs with q below p (dr > 0) point at row L − 1, column ≥ L − 1: a masked
    entry (the centre or to its right), so they read zero.
    """
    r, c = np.divmod(np.arange(L * L), L)
    dr = r[None, :] - r[:, None]
    dc = c[None, :] - c[:, None]
    below = dr > 0
    ir = np.where(below, L - 1, dr + L - 1)
    ic = np.where(below, L - 1, dc + L - 1)
    return ir, ic


def _expand(o):
    """A per-sample offset (n, C) as (n, 1, 1, C) for NHWC maps (0 stays 0)."""
    if isinstance(o, float):
        return o
    return o[:, None, None, :]


class SpinFlipSymmetric(AbstractSpinSampler):
    r"""Z2-symmetrised sampler q_sym(s) = ½(q(s) + q(−s)).

    ln q_sym(s) = logaddexp(ln q(s), ln q(−s)) − ln 2. Sampling draws s ~ q and flips the whole
    configuration with probability ½, which samples q_sym exactly; ln q_sym of the result needs
    one extra pass, ln q(−s). If q covers only one magnetisation sector, importance sampling from
    q reports ln Z low by ≈ ln 2 on a Z2-symmetric system; from q_sym it is unbiased.

    Works around a conditional model too (then ``beta`` is passed through, and :meth:`at`
    applies), and around a :class:`FixedBeta`.

    Args:
        model: a sampler of ±1 spins (:class:`MADE`, :class:`PixelCNN`, :class:`FixedBeta`).
    """

    model: AbstractSampler

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one configuration."""
        return tuple(self.model.event_shape)

    @property
    def beta_conditioned(self) -> bool:
        """Whether the wrapped model is conditional."""
        return bool(getattr(self.model, "beta_conditioned", False))

    def _beta_args(self, beta) -> tuple:
        if self.beta_conditioned:
            if beta is None:
                raise ValueError(
                    "SpinFlipSymmetric wraps a beta-conditioned model: pass beta, or use .at(beta)"
                )
            return (beta,)
        if beta is not None:
            raise ValueError("SpinFlipSymmetric wraps an unconditional model; do not pass beta")
        return ()

    def log_prob(self, x: Float[Array, "n ..."], beta=None) -> Float[Array, " n"]:
        """Ln q_sym(s) = logaddexp(ln q(s), ln q(−s)) − ln 2 for a batch."""
        check_batch(self, x)
        args = self._beta_args(beta)
        return jnp.logaddexp(self.model.log_prob(x, *args), self.model.log_prob(-x, *args)) - LN2

    def sample_and_log_prob(
        self, n: int, *, key: PRNGKeyArray, beta=None
    ) -> tuple[Float[Array, "n ..."], Float[Array, " n"]]:
        """S ~ q, flipped as a whole with probability ½; with ln q_sym(s)."""
        args = self._beta_args(beta)
        k_q, k_flip = jax.random.split(key)
        kw = {"beta": beta} if args else {}
        x, log_q = self.model.sample_and_log_prob(n, key=k_q, **kw)
        log_q_neg = self.model.log_prob(-x, *args)
        flip = jax.random.bernoulli(k_flip, 0.5, (n,))
        sign = jnp.where(flip, -1.0, 1.0).astype(x.dtype).reshape((n,) + (1,) * (x.ndim - 1))
        return x * sign, jnp.logaddexp(log_q, log_q_neg) - LN2


class FixedBeta(AbstractSampler):
    """A β-conditioned model q(s | β) at one β: a plain :class:`AbstractSampler`.

    ``beta`` is an array leaf (a new β does not recompile) used behind ``lax.stop_gradient``:
    its gradient is zero, so it is not trained (keep it out of weight decay).

    Args:
        model: a conditional model (``model.beta_conditioned``).
        beta: the inverse temperature (scalar).
    """

    model: AbstractSampler
    beta: Float[Array, ""]

    def __init__(self, model: AbstractSampler, beta):
        if not getattr(model, "beta_conditioned", False):
            raise ValueError(
                f"FixedBeta needs a beta-conditioned model, got {type(model).__name__}"
            )
        b = jnp.asarray(beta, param_dtype(model))
        if b.ndim != 0:
            raise ValueError(f"FixedBeta needs a scalar beta, got shape {b.shape}")
        self.model, self.beta = model, b

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one configuration."""
        return tuple(self.model.event_shape)

    def log_prob(self, x: Float[Array, "n ..."]) -> Float[Array, " n"]:
        """Ln q(s | β) for a batch."""
        return self.model.log_prob(x, jax.lax.stop_gradient(self.beta))

    def sample_and_log_prob(
        self, n: int, *, key: PRNGKeyArray
    ) -> tuple[Float[Array, "n ..."], Float[Array, " n"]]:
        """N samples of q(· | β) with their ln q."""
        return self.model.sample_and_log_prob(n, key=key, beta=jax.lax.stop_gradient(self.beta))


__all__ = [
    "AbstractSpinSampler",
    "BetaEmbedding",
    "FixedBeta",
    "MADE",
    "PixelCNN",
    "SpinFlipSymmetric",
    "receptive_field",
]
