"""The media response of a fitted MMM over its posterior draws, with analytic gradients.

The optimizer evaluates ``contribution(spend plan)`` and its gradient hundreds of times, for every
posterior draw at once. This module holds the model's media maths in NumPy, vectorised over
``(weeks, draws, channels)``: adstock with precomputed weights, saturation, ``beta``, and the exact
derivative of that chain (the adjoint of the adstock convolution is a correlation with the same
weights). Contributions are in KPI units and spend in currency; the scaling (``spend / spend_scale``,
``kpi_scale``) is folded in.

Two ways of scoring a plan (see :class:`mmm_pipeline.optimize.plan.Horizon`):

* steady state: a constant weekly spend ``x`` ``(C,)``; weekly contribution ``beta * sat(x / scale)``
  (normalized adstock maps a constant spend to itself), the long-run yield of a weekly run rate.
* plan: spend ``X`` ``(H, C)`` for weeks ``0..H-1`` after the history, whose last ``l_max - 1`` weeks
  (``carry_in``) carry over into the plan. The plan is scored on weeks ``0..H+l_max-2``: the plan weeks
  plus the ``l_max - 1`` weeks its carry-over reaches, so the objective counts the full effect of the
  plan's spend. In those tail weeks the spend ``after`` the plan goes on (by default the current weekly
  allocation; zeros if not given), because it shares the saturation with the plan's carry-over: with
  nothing spent after the plan, spend in the last weeks would look better than it is (its carry-over
  would land on an unsaturated curve). The value is incremental, per draw: contribution with the plan
  minus contribution with nothing spent in the plan weeks, both with the same carry-in and the same
  spend after; what no plan can change (the carry-in's effect, the later spend's own effect) cancels.

Beyond the observed range (:meth:`ResponseModel.with_observed_max`): the data say nothing about a
channel's curvature past the largest adstocked weekly spend ``M`` it saw (:meth:`adstocked_max` of the
history, per draw: the level its saturation curve read, below the largest raw week), so there the
posterior curve is the prior's (and a weakly curved fit stays almost straight). With an observed max
set, each draw's saturation of an adstocked weekly spend ``a > M`` is the lower of the posterior's and a
logarithmic continuation from ``M``, ``sat(M) + sat'(M) M ln(a / M)``: value and marginal return agree
with the posterior at ``M``, and beyond it the marginal return falls at least in inverse proportion to
spend (halved at ``2 M``). No tuning constant; within the observed range nothing changes.

Media effects in this model are additive and do not vary with the season, so seasonality (and trend,
controls) shifts the KPI by the same amount under every plan and does not enter the objective.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from mmm_pipeline.model import transforms

if TYPE_CHECKING:
    import arviz as az

    from mmm_pipeline.model.build import ScalingSpec
    from mmm_pipeline.model.predict import PosteriorDraws
    from mmm_pipeline.model.spec import ModelSpec


@dataclass(frozen=True)
class SaturationBlock:
    """One saturation kind applied to some channels: ``params`` name -> ``(S, len(channels))``."""

    kind: transforms.SaturationKind
    channels: np.ndarray  # channel indices
    params: dict[str, np.ndarray]


def _saturation_and_slope(kind: str, x: np.ndarray, params: dict[str, np.ndarray]) -> tuple:
    """Saturation of scaled adstocked spend ``x`` ``(T, S, k)`` and its derivative in ``x``."""
    if kind == "logistic":
        lam = params["lam"]
        value = transforms.logistic_saturation(x, lam)
        slope = np.multiply(value, value)  # in place from here: these arrays are large
        np.subtract(1.0, slope, out=slope)
        slope *= 0.5 * lam
        return value, slope
    if kind == "hill":
        half_sat, slope = params["half_sat"], params["slope"]
        value = transforms.hill_saturation(x, half_sat, slope)
        # d/dx r/(1+r) with r = (x/K)^s: s r / (x (1+r)^2); at x = 0 the limit is 0 for s > 1, 1/K for
        # s = 1 and infinite below: a tiny positive x keeps it finite.
        tiny = 1e-9 * half_sat
        xs = np.maximum(x, tiny)
        ratio = (xs / half_sat) ** slope
        return value, slope * ratio / (xs * (1.0 + ratio) ** 2)
    raise ValueError(f"unknown saturation kind {kind!r}")


@dataclass
class ResponseModel:
    """Media response of ``C`` channels over ``S`` draws, in currency in and KPI units out.

    ``weights`` ``(L, S, C)``: normalized adstock weights (lag 0 first; a channel with a shorter reach
    has zeros at the end). ``beta`` ``(S, C)`` in scaled KPI. ``saturation``: blocks of channels sharing
    a saturation kind, parameters on the scaled spend. Use :meth:`from_posterior` / :meth:`from_idata`
    for a fitted model (the test kit builds a synthetic world's true response as one draw).
    """

    channels: tuple[str, ...]
    weights: np.ndarray
    beta: np.ndarray
    saturation: list[SaturationBlock]
    spend_scale: np.ndarray
    kpi_scale: float
    observed_max: np.ndarray | None = None
    """Adstocked weekly spend (currency) beyond which the response is extrapolated conservatively (see the
    module docstring), ``(C,)`` or per draw ``(S, C)`` (:meth:`adstocked_max` of the history: each draw's
    adstock saw its own largest level); ``None``: the posterior everywhere. A channel with 0 (never spent)
    keeps its posterior."""
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        self.spend_scale = np.asarray(self.spend_scale, dtype=float)
        s, c = self.beta.shape
        if self.weights.shape[1:] != (s, c) or len(self.channels) != c or self.spend_scale.shape != (c,):
            raise ValueError("weights (L, S, C), beta (S, C), channels and spend_scale (C,) disagree")
        covered = np.sort(np.concatenate([b.channels for b in self.saturation]))
        if not np.array_equal(covered, np.arange(c)):
            raise ValueError("every channel needs exactly one saturation block")
        if len(self.saturation) == 1 and not np.array_equal(self.saturation[0].channels, np.arange(c)):
            raise ValueError("a single saturation block must list the channels in order")
        if self.observed_max is not None:
            self.observed_max = np.asarray(self.observed_max, dtype=float)
            if self.observed_max.shape not in ((c,), (s, c)) or (self.observed_max < 0).any():
                raise ValueError("observed_max must be (C,) or (S, C) non-negative adstocked weekly spend")

    def with_observed_max(self, observed_max: np.ndarray | None) -> ResponseModel:
        """The same model, extrapolating conservatively past each channel's ``observed_max`` adstocked
        weekly spend, ``(C,)`` or ``(S, C)`` (see the module docstring); ``None`` removes it."""
        return ResponseModel(
            self.channels, self.weights, self.beta, self.saturation, self.spend_scale, self.kpi_scale,
            observed_max,
        )  # fmt: skip

    # --- constructors ---------------------------------------------------------------------------------

    @classmethod
    def from_posterior(
        cls,
        draws: PosteriorDraws,
        scaling: ScalingSpec,
        spec: ModelSpec,
        max_draws: int | None = None,
    ) -> ResponseModel:
        """From a fitted model's posterior draws, its frozen scaling and its spec (the model's own maths).

        ``max_draws`` thins the draws evenly (fewer draws, faster optimization).
        """
        n = draws.beta.shape[0]
        keep = np.arange(n) if max_draws is None or max_draws >= n else np.linspace(0, n - 1, max_draws)
        keep = np.round(keep).astype(int)
        theta = None if draws.theta is None else draws.theta[keep]
        weights = transforms.adstock_weights(spec.adstock, spec.l_max, alpha=draws.alpha[keep], theta=theta)
        blocks = [
            SaturationBlock(kind, idx, {k: v[keep] for k, v in params.items()})
            for kind, idx, params in draws.saturation_groups()
        ]
        return cls(
            tuple(scaling.channels), np.asarray(weights), draws.beta[keep], blocks,
            np.asarray(scaling.spend_scale), float(scaling.kpi_scale),
        )  # fmt: skip

    @classmethod
    def from_idata(
        cls, idata: az.InferenceData, scaling: ScalingSpec, spec: ModelSpec, max_draws: int | None = None
    ) -> ResponseModel:
        """From an ArviZ posterior (e.g. a champion loaded from storage)."""
        from mmm_pipeline.model.predict import PosteriorDraws

        return cls.from_posterior(PosteriorDraws.from_idata(idata, spec), scaling, spec, max_draws)

    # --- basic properties -----------------------------------------------------------------------------

    @property
    def n_draws(self) -> int:
        return self.beta.shape[0]

    @property
    def n_channels(self) -> int:
        return self.beta.shape[1]

    @property
    def l_max(self) -> int:
        return self.weights.shape[0]

    def subset(self, draws: Sequence[int] | np.ndarray) -> ResponseModel:
        """The same model on a subset of draws."""
        idx = np.asarray(draws)
        blocks = [
            SaturationBlock(b.kind, b.channels, {k: v[idx] for k, v in b.params.items()})
            for b in self.saturation
        ]
        observed = self.observed_max
        if observed is not None and observed.ndim == 2:
            observed = observed[idx]
        return ResponseModel(
            self.channels, self.weights[:, idx], self.beta[idx], blocks, self.spend_scale, self.kpi_scale,
            observed,
        )  # fmt: skip

    def adstocked_spend(self, spend: np.ndarray, carry_in: np.ndarray | None = None) -> np.ndarray:
        """Adstocked weekly spend ``(S, T, C)`` in currency of ``spend`` ``(T, C)`` after ``carry_in``
        (raw spend of the weeks before, its last ``l_max - 1`` rows; zeros if ``None``): the level each
        draw's saturation curve reads, week by week."""
        spend = np.asarray(spend, dtype=float).reshape(-1, self.n_channels)
        adstocked = self._adstock(spend / self.spend_scale, self._carry(carry_in))  # (C, T, S)
        return adstocked.transpose(2, 1, 0) * self.spend_scale

    def adstocked_max(self, history: np.ndarray, weeks: int | None = None) -> np.ndarray:
        """Per draw, each channel's largest adstocked weekly spend ``(S, C)`` over the last ``weeks`` weeks of
        ``history`` (raw weekly spend ``(W, C)``, oldest first; all weeks if ``None``): where the data end
        for the curve. Adstock spreads a week's spend over the following weeks, so this is below the largest
        raw week (0.76-0.98 of it on the synthetic worlds), and the largest raw week is not a level the
        model ever saw."""
        adstocked = self.adstocked_spend(history)
        if weeks is not None:
            adstocked = adstocked[:, -weeks:]
        return adstocked.max(axis=1)

    # --- maths ----------------------------------------------------------------------------------------

    # Plan maths run channel-major, ``(C, T, S)``: adstock is then one batched matrix product per channel
    # (lagged spend ``(T, L)`` times weights ``(L, S)``) and its adjoint another, both in BLAS.

    def _layout(self) -> tuple[np.ndarray, np.ndarray, list[tuple[str, np.ndarray, dict[str, np.ndarray]]]]:
        """Weights ``(C, L, S)``, beta ``(C, 1, S)`` and saturation blocks with ``(k, 1, S)`` parameters."""
        if "layout" not in self._cache:
            weights = np.ascontiguousarray(self.weights.transpose(2, 0, 1))
            beta = np.ascontiguousarray(self.beta.T[:, None, :])
            blocks = [
                (b.kind, b.channels, {k: np.ascontiguousarray(v.T[:, None, :]) for k, v in b.params.items()})
                for b in self.saturation
            ]
            self._cache["layout"] = (weights, beta, blocks)
        return self._cache["layout"]

    def _saturate(self, adstocked: np.ndarray, slope: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Saturation ``(C, T, S)`` of scaled adstocked spend and (optionally) its derivative, with the
        conservative continuation past :attr:`observed_max`."""
        value, deriv = self._saturate_posterior(adstocked, slope)
        if self.observed_max is None:
            return value, deriv
        if "edge" not in self._cache:
            observed = np.broadcast_to(self.observed_max, (self.n_draws, self.n_channels))
            edge = np.ascontiguousarray((observed / self.spend_scale).T[:, None, :])  # (C, 1, S)
            v_edge, d_edge = self._saturate_posterior(edge, slope=True)
            self._cache["edge"] = (edge, v_edge, d_edge * edge)  # sat(M), M sat'(M)
        edge, v_edge, md_edge = self._cache["edge"]
        beyond = (adstocked > edge) & (edge > 0)
        if not beyond.any():
            return value, deriv
        with np.errstate(divide="ignore", invalid="ignore"):
            log_value = v_edge + md_edge * np.log(adstocked / np.where(edge > 0, edge, 1.0))
        lower = beyond & (log_value < value)
        value = np.where(lower, log_value, value)
        if deriv is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                deriv = np.where(lower, md_edge / adstocked, deriv)
        return value, deriv

    def _saturate_posterior(self, adstocked: np.ndarray, slope: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Saturation ``(C, T, S)`` of scaled adstocked spend and (optionally) its derivative."""
        _, _, blocks = self._layout()
        if len(blocks) == 1:  # one kind for all channels (a fitted model): no gathering
            kind, _, params = blocks[0]
            if slope:
                return _saturation_and_slope(kind, adstocked, params)
            return transforms.saturation(kind, adstocked, **params), None
        value = np.empty_like(adstocked)
        deriv = np.empty_like(adstocked) if slope else None
        for kind, idx, params in blocks:
            x = adstocked[idx]
            if slope:
                v, d = _saturation_and_slope(kind, x, params)
                deriv[idx] = d
            else:
                v = transforms.saturation(kind, x, **params)
            value[idx] = v
        return value, deriv

    def _adstock(self, scaled: np.ndarray, scaled_carry: np.ndarray) -> np.ndarray:
        """``(C, T, S)`` adstock of ``(T, C)`` scaled spend after ``(L-1, C)`` scaled carry-in."""
        weights, _, _ = self._layout()
        padded = np.concatenate([scaled_carry, scaled], axis=0)  # (L-1+T, C)
        # windows[t, c, j] = padded[t + j, c]; lag l = L-1-j
        windows = np.lib.stride_tricks.sliding_window_view(padded, self.l_max, axis=0)
        lagged = np.ascontiguousarray(windows[:, :, ::-1].transpose(1, 0, 2))  # (C, T, L)
        return np.matmul(lagged, weights)

    def _carry(self, carry_in: np.ndarray | None) -> np.ndarray:
        need = self.l_max - 1
        out = np.zeros((need, self.n_channels))
        if carry_in is not None and need > 0:
            carry_in = np.asarray(carry_in, dtype=float).reshape(-1, self.n_channels)
            tail = carry_in[max(0, carry_in.shape[0] - need) :]
            out[need - tail.shape[0] :] = tail
        return out / self.spend_scale

    def _baseline(self, scaled_carry: np.ndarray, scaled_after: np.ndarray, n_plan: int) -> np.ndarray:
        """Per-draw, per-channel contribution ``(S, C)`` with nothing spent in the ``n_plan`` plan weeks."""
        key = ("baseline", scaled_carry.tobytes(), scaled_after.tobytes(), n_plan)
        if key not in self._cache:
            zeros = np.concatenate([np.zeros((n_plan, self.n_channels)), scaled_after])
            sat, _ = self._saturate(self._adstock(zeros, scaled_carry), slope=False)
            _, beta, _ = self._layout()
            for old in [k for k in self._cache if k[0] == "baseline"]:
                del self._cache[old]
            self._cache[key] = self.kpi_scale * (sat.sum(axis=1) * beta[:, 0, :]).T
        return self._cache[key]

    def steady_state(self, spend: np.ndarray) -> np.ndarray:
        """Weekly contribution ``(S, C)`` of a constant weekly spend ``(C,)`` once adstock has built up."""
        return self.steady_state_grad(spend, slope=False)[0]

    def steady_state_grad(
        self, spend: np.ndarray, slope: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Steady-state contribution ``(S, C)`` and its derivative in each channel's weekly spend
        ``(S, C)``."""
        x = np.asarray(spend, dtype=float) / self.spend_scale
        x = np.ascontiguousarray(np.broadcast_to(x[:, None, None], (self.n_channels, 1, self.n_draws)))
        sat, deriv = self._saturate(x, slope=slope)
        _, beta, _ = self._layout()
        value = self.kpi_scale * (sat[:, 0] * beta[:, 0]).T
        if deriv is None:
            return value, None
        return value, self.kpi_scale * (deriv[:, 0] * beta[:, 0]).T / self.spend_scale

    def _after(self, after: np.ndarray | None) -> np.ndarray:
        """Scaled spend ``(l_max - 1, C)`` of the weeks after the plan: a weekly ``(C,)`` spend repeated."""
        if after is None:
            return np.zeros((self.l_max - 1, self.n_channels))
        after = np.asarray(after, dtype=float).reshape(-1, self.n_channels)
        if after.shape[0] == 1:
            after = np.repeat(after, self.l_max - 1, axis=0)
        if after.shape[0] < self.l_max - 1:
            raise ValueError(
                f"after must hold at least l_max - 1 = {self.l_max - 1} weeks or one weekly spend"
            )
        return after[: self.l_max - 1] / self.spend_scale

    def plan_contribution(
        self, plan: np.ndarray, carry_in: np.ndarray | None = None, after: np.ndarray | None = None
    ) -> np.ndarray:
        """Incremental contribution ``(S, C)`` of a weekly plan ``(H, C)``, carry-over tail included.

        ``carry_in``: raw spend of the weeks before the plan (its last ``l_max - 1`` rows are used);
        ``after``: raw weekly spend ``(C,)`` (or ``(l_max - 1, C)``) after the plan; zeros if ``None``.
        """
        return self.plan_forward(plan, carry_in, after, slope=False)[0]

    def plan_forward(
        self,
        plan: np.ndarray,
        carry_in: np.ndarray | None = None,
        after: np.ndarray | None = None,
        slope: bool = True,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Contribution ``(S, C)`` of ``plan`` ``(H, C)`` and, with ``slope``, the state for :meth:`plan_vjp`.

        The state is ``beta * saturation'(adstock)`` ``(C, T, S)`` over the ``T = H + l_max - 1`` scored
        weeks.
        """
        plan = np.asarray(plan, dtype=float)
        if plan.ndim != 2 or plan.shape[1] != self.n_channels:
            raise ValueError(f"plan must be (H, {self.n_channels})")
        n_plan = plan.shape[0]
        scaled_carry, scaled_after = self._carry(carry_in), self._after(after)
        x = np.concatenate([plan / self.spend_scale, scaled_after])
        sat, deriv = self._saturate(self._adstock(x, scaled_carry), slope=slope)
        _, beta, _ = self._layout()
        baseline = self._baseline(scaled_carry, scaled_after, n_plan)
        contribution = self.kpi_scale * (sat.sum(axis=1) * beta[:, 0, :]).T - baseline
        if deriv is not None:
            deriv *= beta
        return contribution, deriv

    def plan_vjp(self, state: np.ndarray, omega: np.ndarray) -> np.ndarray:
        """``d(sum_s omega_s sum_c contribution_sc) / d plan`` ``(H, C)`` from :meth:`plan_forward`'s state.

        The adjoint of the adstock convolution: spend in week ``u`` reaches week ``u + lag`` with weight
        ``w[lag]``, so the gradient correlates the weighted saturation slopes with the adstock weights.
        """
        weights, _, _ = self._layout()
        n_plan = state.shape[1] - self.l_max + 1
        weighted = weights * np.asarray(omega, dtype=float)[None, None, :]  # (C, L, S)
        m = np.matmul(state, weighted.transpose(0, 2, 1))  # (C, T, L): week t's slope x lag weights
        grad = sum(m[:, lag : lag + n_plan, lag] for lag in range(self.l_max))  # (C, H)
        return grad.T * self.kpi_scale / self.spend_scale

    def plan_jacobian(
        self, plan: np.ndarray, carry_in: np.ndarray | None = None, after: np.ndarray | None = None
    ) -> np.ndarray:
        """Per-draw gradient ``(S, H, C)``: ``d contribution_s[c] / d plan[u, c]`` (channels are
        separable)."""
        plan = np.asarray(plan, dtype=float)
        n_plan = plan.shape[0]
        weights, _, _ = self._layout()
        _, state = self.plan_forward(plan, carry_in, after, slope=True)
        out = sum(state[:, lag : lag + n_plan, :] * weights[:, lag, None, :] for lag in range(self.l_max))
        return out.transpose(2, 1, 0) * self.kpi_scale / self.spend_scale
