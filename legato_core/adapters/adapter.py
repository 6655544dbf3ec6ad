"""ODE adapters injected into a frozen generator by site name, as peft injects LoRA by module name.

An :class:`ODEAdapter` owns one vector field per site and nothing else: it holds no intensity and no on/off
switch. Which adapters run, and at what intensity, is an argument: ``adapters.active(model, [(adapter, t)])``
(see :mod:`.activation`); the base weights are never touched. Adapters save alone to a small safetensors file
whose metadata names the base model and its weight hash, so one can never be loaded onto the wrong generator
by accident.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Protocol

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .dial import DialMap, fields_digest
from .ode import ODEConfig, make_field, solve
from .scope import Scope, WeightedField

FORMAT_VERSION = "1"
SCOPE_KEY = "scope.centres"  # the scope's centres, stored beside the fields' tensors (not part of their digest)


class AdaptableModel(Protocol):
    """What an adapter needs from a base model: named sites (modules with ``channels``), an identity, and a
    place to put the adapter's parameters (its device)."""

    base_model_id: str
    adapter_sites: dict[str, nn.Module]

    def weight_hash(self) -> str: ...

    def prepare_adapter(self, adapter: nn.Module) -> None: ...


def read_safetensors(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file, or a ValueError that names the file and ``what`` it should be."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}
    except Exception as e:
        raise ValueError(f"{path.name} is not a readable safetensors {what} ({type(e).__name__}: {e})") from e


class AdapterMismatchError(ValueError):
    """Raised when an adapter is attached to or loaded for a base model it was not trained on."""


class ODEAdapter(nn.Module):
    def __init__(self, sites: dict[str, int], config: ODEConfig | None = None, base_model_id: str = "",
                 base_weight_hash: str = "", description: dict | None = None, site_kinds: dict[str, str] | None = None):
        super().__init__()
        if not sites:
            raise ValueError("an adapter needs at least one site")
        unknown = sorted(set(site_kinds or {}) - set(sites))
        if unknown:
            raise ValueError(f"site_kinds names sites the adapter does not have: {unknown}")
        self.config = config or ODEConfig()
        self.site_channels = dict(sites)
        # "conv" (B, C, H, W) feature maps unless the site says otherwise, e.g. "token" for (B, tokens, C)
        self.site_kinds = {name: (site_kinds or {}).get(name, "conv") for name in sites}
        self.fields = nn.ModuleDict({name: make_field(self.site_kinds[name], c, self.config.hidden)
                                     for name, c in sites.items()})
        self.base_model_id, self.base_weight_hash = base_model_id, base_weight_hash
        self.description = dict(description or {})
        self.dial: DialMap | None = None  # slider position u -> t, measured after training (calibration.py)
        self.scope: Scope | None = None  # where the latent fields act (scope.py); None: everywhere

    @classmethod
    def for_model(cls, model: AdaptableModel, sites: list[str] | None = None, config: ODEConfig | None = None,
                  description: dict | None = None) -> ODEAdapter:
        """A zero (identity) adapter on ``sites`` of ``model`` (all its sites when None), with each site's
        channels and kind read from the model and the model's id and weight hash recorded."""
        found = model.adapter_sites
        names = list(found) if sites is None else list(sites)
        unknown = [s for s in names if s not in found]
        if unknown:
            raise AdapterMismatchError(f"base model has no adapter sites {unknown}; it has {sorted(found)}")
        return cls({s: found[s].channels for s in names}, config, model.base_model_id, model.weight_hash(),
                   description, {s: getattr(found[s], "adapter_kind", "conv") for s in names})

    # -- running ------------------------------------------------------------------------------------------
    def transform(self, site: str, x: torch.Tensor, intensity: float,
                  states: dict[str, list[torch.Tensor]] | None = None) -> torch.Tensor:
        """The site's feature map integrated to ``intensity``; with ``states``, the solver's states go there."""
        if intensity == 0:
            if states is not None:
                states[site] = [x]
            return x
        field = self.fields[site]
        if self.scope is not None and self.site_kinds[site] == "latent":
            field = WeightedField(field, self.scope.weight(x))
        if states is not None:
            out, states[site] = solve(field, x, intensity, self.config, return_states=True)
            return out
        return solve(field, x, intensity, self.config)

    def check_intensity(self, t: float) -> float:
        """``t`` as a float in [0, t_max], or a ValueError that says the range."""
        t = float(t)
        t_max = self.config.t_max
        if not 0 <= t <= t_max * (1 + 1e-6):  # float32 values of t_max (1.6000000238) are t_max
            raise ValueError(f"the intensity t must be in [0, {t_max}], got {t}")
        return min(t, t_max)

    def digest(self) -> str:
        """Content hash of the vector fields' weights (what a dial map is tied to)."""
        return fields_digest(self.fields.state_dict())

    def set_scope(self, scope: Scope | None) -> None:
        """Limit the latent fields to a ball around the person (``Scope``); None: they act everywhere."""
        if scope is not None:
            dims = {c for name, c in self.site_channels.items() if self.site_kinds[name] == "latent"}
            if not dims:
                raise ValueError("a scope applies to latent sites, and this adapter has none")
            if scope.centres.shape[1] not in dims:
                raise ValueError(f"the scope's centres are {scope.centres.shape[1]}-d, the latent sites {sorted(dims)}")
        self.scope = scope

    def set_dial(self, dial: DialMap | None) -> None:
        """Attach a dial map measured on this adapter (AdapterMismatchError if it was measured on another)."""
        if dial is not None:
            if dial.adapter_digest != self.digest():
                raise AdapterMismatchError(f"this dial map was measured on adapter {dial.adapter_digest}, "
                                           f"not on this one ({self.digest()})")
            if abs(dial.t[-1] - self.config.t_max) > 1e-4 * max(1.0, self.config.t_max):
                raise ValueError(f"a dial map must end at t_max = {self.config.t_max}, it ends at {dial.t[-1]}")
        self.dial = dial

    def t_at(self, u: float) -> float:
        """Intensity t at slider position u in [0, 1]: the dial map's, else the raw knob u * t_max."""
        if self.dial is not None:
            return self.dial.t_at(u)
        u = float(u)
        if not 0 <= u <= 1 + 1e-9:
            raise ValueError(f"the slider position u must be in [0, 1], got {u}")
        return min(u, 1.0) * self.config.t_max

    def u_at(self, t: float) -> float:
        """The first slider position u whose intensity is ``t`` (clamped to [0, t_max]): the inverse of ``t_at``."""
        if self.dial is not None:
            return self.dial.u_at(t)
        t_max = self.config.t_max
        return min(max(float(t), 0.0), t_max) / t_max

    # -- injection ----------------------------------------------------------------------------------------
    def check_base(self, model: AdaptableModel) -> None:
        sites = model.adapter_sites
        missing = [s for s in self.site_channels if s not in sites]
        if missing:
            raise AdapterMismatchError(f"base model has no adapter sites {missing}; it has {sorted(sites)}")
        for name, c in self.site_channels.items():
            if getattr(sites[name], "channels", c) != c:
                raise AdapterMismatchError(f"site {name!r} has {sites[name].channels} channels, adapter expects {c}")
            kind = getattr(sites[name], "adapter_kind", "conv")
            if kind != self.site_kinds[name]:
                raise AdapterMismatchError(f"site {name!r} is a {kind!r} site, adapter has a {self.site_kinds[name]!r} "
                                           "vector field there")
        if self.base_weight_hash and self.base_weight_hash != model.weight_hash():
            raise AdapterMismatchError(
                f"this adapter was trained for base model {self.base_model_id!r} (weights {self.base_weight_hash}); "
                f"the loaded base is {model.base_model_id!r} (weights {model.weight_hash()})")

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- persistence -------------------------------------------------------------------------------------
    def metadata(self) -> dict[str, str]:
        meta = {
            "format": "legato-ode-adapter", "format_version": FORMAT_VERSION,
            "base_model_id": self.base_model_id, "base_weight_hash": self.base_weight_hash,
            "sites": json.dumps(self.site_channels), "ode": json.dumps(self.config.to_dict()),
            "description": json.dumps(self.description),
            "created": getattr(self, "created", "") or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
        if any(k != "conv" for k in self.site_kinds.values()):  # all-conv files stay as before
            meta["site_kinds"] = json.dumps(self.site_kinds)
        if self.dial is not None:
            meta["dial"] = self.dial.to_json()
        if self.scope is not None:
            meta["scope"] = self.scope.to_json()
        return meta

    def tensors(self) -> dict[str, torch.Tensor]:
        """What the adapter's file stores: the fields' weights and, with a scope, its centres."""
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.fields.state_dict().items()}
        if self.scope is not None:
            tensors[SCOPE_KEY] = self.scope.centres.cpu()
        return tensors

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = self.tensors()
        tmp = path.with_suffix(path.suffix + ".tmp")
        save_file(tensors, tmp, metadata=self.metadata())
        tmp.replace(path)  # atomic: a crash never leaves a half-written adapter
        return path

    @classmethod
    def load(cls, path: str | Path, model: AdaptableModel | None = None) -> ODEAdapter:
        """Load an adapter file; with ``model``, refuse (AdapterMismatchError) if it belongs to another base."""
        path = Path(path)
        tensors, meta = read_safetensors(path, "adapter")
        adapter = cls.from_tensors(tensors, meta, path.name)
        if model is not None:
            adapter.check_base(model)
        return adapter

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], meta: dict[str, str], name: str = "adapter") -> ODEAdapter:
        """An adapter from what its file holds (tensors and metadata); ``name`` is what messages call it."""
        if meta.get("format") != "legato-ode-adapter":
            raise ValueError(f"{name} is not a legato ODE adapter (metadata format={meta.get('format')!r})")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{name} has adapter format {meta.get('format_version')}, expected {FORMAT_VERSION}")
        tensors = dict(tensors)
        adapter = cls(json.loads(meta["sites"]), ODEConfig(**json.loads(meta["ode"])), meta["base_model_id"],
                      meta["base_weight_hash"], json.loads(meta.get("description", "{}")),
                      json.loads(meta.get("site_kinds", "{}")))
        centres = tensors.pop(SCOPE_KEY, None)
        adapter.fields.load_state_dict(tensors)
        if "dial" in meta:
            try:
                dial = DialMap.from_json(meta["dial"])
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{name} has an unreadable dial map ({e})") from e
            adapter.set_dial(dial)  # refuses a map measured on other weights
        if (centres is None) != ("scope" not in meta):
            raise ValueError(f"{name} has half a scope (its centres or its radii, not both)")
        if centres is not None:
            try:
                adapter.set_scope(Scope.from_saved(centres, meta["scope"]))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{name} has an unreadable scope ({e})") from e
        adapter.created = meta.get("created", "")
        return adapter
