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
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .dial import DialMap, fields_digest
from .gate import IdentityGate, IdentityReader, gated_path
from .ode import ODEConfig, make_field, solve
from .scope import Scope, WeightedField

FORMAT_VERSION = "1"
SCOPE_KEY = "scope.centres"  # the scope's centres, stored beside the fields' tensors (not part of their digest)
SCOPE_METRIC_KEY = "scope.metric"  # the scope's distance metric, where it has one
GATE_KEYS = ("gate.centres", "gate.anchor")  # robust mode's identity gate (gate.py), likewise
HELD_CACHE = 4096  # latents whose gate answer an adapter remembers (1 KB each on the embedded generator)


class AdaptableModel(Protocol):
    """What an adapter needs from a base model: named sites (modules with ``channels``), an identity, and a
    place to put the adapter's parameters (its device)."""

    base_model_id: str
    adapter_sites: dict[str, nn.Module]

    def weight_hash(self) -> str: ...

    def prepare_adapter(self, adapter: nn.Module) -> None: ...

    # robust mode only (adapters with an identity gate): unit loss-network embeddings (B, views, E) of the base
    # model's renders of latents (B, D) in its first ``views`` canonical views
    # def latent_identity(self, latents: torch.Tensor, views: int) -> torch.Tensor: ...


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
        self.gate: IdentityGate | None = None  # robust mode (gate.py): every latent drawn as the person is moved
        self._identity_reader: IdentityReader | None = None  # the base model's, bound by adapters.active
        self._held: OrderedDict[bytes, bool] = OrderedDict()  # the gate's answers per latent (they hold for any t)

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
        scoped = self.scope is not None and self.site_kinds[site] == "latent"
        if scoped and self.scope.carry == "parallel":
            out = self._parallel(site, x, intensity, states)
        else:
            if scoped:
                field = WeightedField(field, self.scope.weight(x))
            if states is not None:
                out, states[site] = solve(field, x, intensity, self.config, return_states=True)
            else:
                out = solve(field, x, intensity, self.config)
        if self.gate is not None and self.site_kinds[site] == "latent":
            out = self._gate(site, x, out, intensity)
        return out

    def _parallel(self, site: str, x: torch.Tensor, intensity: float,
                  states: dict[str, list[torch.Tensor]] | None) -> torch.Tensor:
        """A parallel scope: every row moves by the upload's own path (scope.py); with ``states``, the solver's
        states of each row are the upload's, moved the same way."""
        upload = self.scope.centres[:1].to(device=x.device, dtype=x.dtype)
        if states is None:
            return self.scope.parallel(x, solve(self.fields[site], upload, intensity, self.config))
        _, path = solve(self.fields[site], upload, intensity, self.config, return_states=True)
        states[site] = [self.scope.parallel(x, s) for s in path]
        return states[site][-1]

    def _gate(self, site: str, x: torch.Tensor, out: torch.Tensor, intensity: float) -> torch.Tensor:
        """Robust mode: rows the base model draws as the person follow the person's path (gate.py)."""
        if self._identity_reader is None:
            raise RuntimeError("this adapter has an identity gate: run it through adapters.active(model, ...), "
                               "which binds the model's identity reader")
        held = self._read_gate(x).to(x.device)
        if not held.any():
            return out
        anchor = self.gate.anchor.to(device=x.device, dtype=x.dtype)
        moved = gated_path(x, solve(self.fields[site], anchor, intensity, self.config), anchor, intensity,
                           self.config.t_end)
        return torch.where(held[:, None], moved, out)

    def _read_gate(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) bool: the gate's answer for each row, remembered per latent, so a slider that draws the same
        latents at another t reads no identity again (the answer does not depend on t)."""
        cache = self._held  # one dict per gate; another thread may add to it meanwhile
        keys = [row.numpy().tobytes() for row in x.detach().float().cpu()]
        answers = [cache.get(k) for k in keys]
        missing = [i for i, a in enumerate(answers) if a is None]
        if missing:
            with torch.no_grad():
                held = self.gate.holds(self._identity_reader(x.detach()[missing], self.gate.views))
            for i, h in zip(missing, held.tolist(), strict=True):
                answers[i] = cache[keys[i]] = h
            while len(cache) > HELD_CACHE:
                cache.popitem(last=False)
        return torch.tensor(answers)

    def bind(self, model: AdaptableModel) -> None:
        """What a gated adapter reads from its base model while it runs (``adapters.active`` calls this)."""
        if self.gate is None:
            return
        reader = getattr(model, "latent_identity", None)
        if reader is None:
            raise AdapterMismatchError(f"this adapter is gated (robust mode) and base model {model.base_model_id!r} "
                                       "cannot read identities of latents (no latent_identity)")
        if reader != self._identity_reader:
            self._identity_reader = reader
            self._held = OrderedDict()

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

    def set_gate(self, gate: IdentityGate | None) -> None:
        """Robust mode: hold every latent the base model draws as the person (``IdentityGate``); None: off."""
        if gate is not None:
            dims = {c for name, c in self.site_channels.items() if self.site_kinds[name] == "latent"}
            if gate.anchor.shape[1] not in dims:
                raise ValueError(f"a gate's anchor is {gate.anchor.shape[1]}-d; the adapter's latent sites are "
                                 f"{sorted(dims) or 'none'}")
        self.gate = gate
        self._identity_reader = None
        self._held = OrderedDict()

    def set_dial(self, dial: DialMap | None) -> None:
        """Attach a dial map measured on this adapter (AdapterMismatchError if it was measured on another)."""
        if dial is not None:
            if dial.adapter_digest != self.digest():
                raise AdapterMismatchError(f"this dial map was measured on adapter {dial.adapter_digest}, "
                                           f"not on this one ({self.digest()})")
            # a dial may end before t_max (calibration.end_at_floor: where the person is first unrelated), the
            # rest of the knob left to the raw t; never past what the adapter offers
            if not 0 < dial.t[-1] <= self.config.t_max * (1 + 1e-4):
                raise ValueError(f"a dial map must end in (0, t_max = {self.config.t_max}], it ends at {dial.t[-1]}")
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
        if self.gate is not None:
            meta["gate"] = self.gate.to_json()
        return meta

    def tensors(self) -> dict[str, torch.Tensor]:
        """What the adapter's file stores: the fields' weights and, with a scope or a gate, theirs."""
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.fields.state_dict().items()}
        if self.scope is not None:
            tensors[SCOPE_KEY] = self.scope.centres.cpu().clone()
            if self.scope.metric is not None:
                tensors[SCOPE_METRIC_KEY] = self.scope.metric.cpu().clone()
        if self.gate is not None:
            # copies: the anchor is the upload's latent, which the scope's centres may share memory with
            tensors[GATE_KEYS[0]] = self.gate.centres.cpu().clone()
            tensors[GATE_KEYS[1]] = self.gate.anchor.cpu().clone()
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
        centres, metric = tensors.pop(SCOPE_KEY, None), tensors.pop(SCOPE_METRIC_KEY, None)
        gate = [tensors.pop(k, None) for k in GATE_KEYS]
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
                adapter.set_scope(Scope.from_saved(centres, meta["scope"], metric))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{name} has an unreadable scope ({e})") from e
        if any(g is None for g in gate) != ("gate" not in meta) or (gate[0] is None) != (gate[1] is None):
            raise ValueError(f"{name} has part of an identity gate (its tensors or its threshold, not both)")
        if gate[0] is not None:
            try:
                adapter.set_gate(IdentityGate.from_saved(gate[0], gate[1], meta["gate"]))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{name} has an unreadable identity gate ({e})") from e
        adapter.created = meta.get("created", "")
        return adapter
