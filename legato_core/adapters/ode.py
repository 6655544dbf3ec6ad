"""Neural-ODE adapters: a feature map x becomes the solution at time t of dx/dt = f_theta(x).

At t = 0 the solution is x itself, so an adapter at t = 0 is exactly the base model (we return the input
tensor untouched, not a numerical zero-step solve). The end time t is therefore a continuous knob:
the forgetting intensity.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torchdiffeq import odeint

SOLVERS = ("euler", "midpoint", "rk4", "dopri5")


@dataclass
class ODEConfig:
    """Solver and vector-field settings (defaults: the LEGATO reference)."""

    hidden: int = 256
    method: str = "euler"
    step_size: float = 0.4
    t_end: float = 1.6  # training end time T
    t_max: float | None = None  # largest t offered at inference (defaults to T)
    rtol: float = 1e-3  # dopri5 only
    atol: float = 1e-4

    def __post_init__(self):
        if self.method not in SOLVERS:
            raise ValueError(f"unknown ODE solver {self.method!r}; choose from {SOLVERS}")
        if not self.step_size > 0 or not self.t_end > 0:
            raise ValueError("step_size and t_end must be positive")
        if self.t_max is None:
            self.t_max = self.t_end

    def to_dict(self) -> dict:
        return asdict(self)


class _TwoLayerField(nn.Module):
    """f(x) = layer(C->H) -> LeakyReLU(0.2) -> layer(H->C); the last layer starts at zero, so f == 0 at init."""

    def __init__(self, layer, channels: int, hidden: int = 256):
        super().__init__()
        self.inp = layer(channels, hidden)
        self.out = layer(hidden, channels)
        nn.init.kaiming_uniform_(self.inp.weight, a=math.sqrt(5))
        nn.init.zeros_(self.inp.bias)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # time-independent field
        return self.out(nn.functional.leaky_relu(self.inp(x), 0.2))


class ConvVectorField(_TwoLayerField):
    """Conv1x1(C->H) -> LeakyReLU(0.2) -> Conv1x1(H->C) on (B, C, H, W) feature maps (the LEGATO reference)."""

    def __init__(self, channels: int, hidden: int = 256):
        super().__init__(lambda cin, cout: nn.Conv2d(cin, cout, 1), channels, hidden)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # the two 1x1 convolutions as matmuls over the pixels (same weights, same sums): on a CPU a 1x1 Conv2d
        # whose weights need gradients takes a slow unfolding path, ~5 % of an engine step at 4 sites x 4 steps
        b, c, h, w = x.shape
        pixels = x.permute(0, 2, 3, 1).reshape(b, h * w, c)  # a view when x is channels-last
        hidden = nn.functional.leaky_relu(nn.functional.linear(pixels, self.inp.weight.flatten(1), self.inp.bias), 0.2)
        out = nn.functional.linear(hidden, self.out.weight.flatten(1), self.out.bias)
        return out.view(b, h, w, c).permute(0, 3, 1, 2)


class TokenVectorField(_TwoLayerField):
    """Linear(C->H) -> LeakyReLU(0.2) -> Linear(H->C) over the last axis, for token sequences (B, tokens, C)
    such as a diffusion UNet's cross-attention output: the same per-position map as :class:`ConvVectorField`."""

    def __init__(self, channels: int, hidden: int = 256):
        super().__init__(nn.Linear, channels, hidden)


class LatentVectorField(_TwoLayerField):
    """Linear(C->H) -> LeakyReLU(0.2) -> Linear(H->C) on latent vectors (B, C): a flow in the space the generator
    reads identity from, so every point of the path is a latent the frozen generator draws."""

    def __init__(self, channels: int, hidden: int = 256):
        super().__init__(nn.Linear, channels, hidden)


FIELD_KINDS: dict[str, type[nn.Module]] = {"conv": ConvVectorField, "token": TokenVectorField,
                                           "latent": LatentVectorField}


def make_field(kind: str, channels: int, hidden: int = 256) -> nn.Module:
    """The vector field for a site kind: "conv" for (B, C, H, W) feature maps, "token" for (B, tokens, C)."""
    if kind not in FIELD_KINDS:
        raise ValueError(f"unknown adapter site kind {kind!r}; choose from {tuple(FIELD_KINDS)}")
    return FIELD_KINDS[kind](channels, hidden)


def time_grid(t: float, step_size: float) -> torch.Tensor:
    """0, h, 2h, ... then t itself (float32): the times the solver reports states at.

    A t within float32 rounding of a grid point (e.g. 0.8000001 from a slider or linspace) replaces that point,
    since torchdiffeq needs strictly increasing float32 times.
    """
    n_full = math.floor(t / step_size + 1e-6)
    grid = [k * step_size for k in range(n_full + 1)]
    if len(grid) > 1 and abs(t - grid[-1]) <= 1e-6 * max(1.0, t):
        grid[-1] = t
    elif t > grid[-1]:
        grid.append(t)
    return torch.tensor(grid, dtype=torch.float32)


def solve(field: nn.Module, x: torch.Tensor, t: float, config: ODEConfig,
          return_states: bool = False) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """Integrate ``field`` from 0 to ``t`` starting at ``x``.

    With ``return_states`` also returns the states the solver visited at multiples of the step
    (s_0 = x, ..., s_K), which the trajectory-consistency loss penalises.
    """
    if t < 0:
        raise ValueError(f"integration time must be >= 0, got {t}")
    if t == 0:
        return (x, [x]) if return_states else x
    times = time_grid(t, config.step_size)
    if config.method == "euler":  # the default: a plain loop, without odeint's stacked solution buffer
        states, y = [x], x
        for k in range(len(times) - 1):
            y = y + (times[k + 1] - times[k]).item() * field(times[k], y)
            states.append(y)
        return (y, states) if return_states else y
    options = {} if config.method == "dopri5" else {"step_size": config.step_size}
    kwargs = {"rtol": config.rtol, "atol": config.atol} if config.method == "dopri5" else {}
    states = odeint(field, x, times.to(x.device), method=config.method, options=options, **kwargs)
    out = states[-1]
    if return_states:
        return out, list(states)
    return out
