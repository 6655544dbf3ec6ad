"""The model after deletion requests 1..k: one base model plus each request's adapter and intensity, as one file.

Each request's adapter is trained on the base model alone, so adding request k+1 never touches requests 1..k and
removing request j leaves exactly the model that requests 1..k without j would have given. The adapters run
composed, in request order; :class:`RoutedRequests` runs them in one activation and skips every adapter whose scope
(adapters/scope.py) holds none of the latents being drawn, so drawing with 100 requests costs about what drawing
with one does.

    log = RequestLog.for_model(backend)
    log.add(result.adapter, label="identity 1000003")
    with log.active(backend):
        images = backend.render(latents, views)
    log.save("model.requests.safetensors"); RequestLog.load("model.requests.safetensors", backend)
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from .activation import active
from .adapter import AdaptableModel, AdapterMismatchError, ODEAdapter, read_safetensors
from .scope import measured, same_metric

LOG_FORMAT = "legato-request-log"
LOG_FORMAT_VERSION = "1"
_KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass
class Request:
    """One deletion request: who (``label``, free text), its adapter and the slider position it is honoured at."""

    key: str
    label: str
    adapter: ODEAdapter
    u: float = 1.0
    created: str = ""

    @property
    def t(self) -> float:
        return self.adapter.t_at(self.u)


class RequestLog:
    """An ordered list of requests bound to one base model (its id and weight hash, as adapter files are)."""

    def __init__(self, base_model_id: str, base_weight_hash: str):
        self.base_model_id, self.base_weight_hash = base_model_id, base_weight_hash
        self.requests: list[Request] = []

    @classmethod
    def for_model(cls, model: AdaptableModel) -> RequestLog:
        return cls(model.base_model_id, model.weight_hash())

    def __len__(self) -> int:
        return len(self.requests)

    def keys(self) -> list[str]:
        return [r.key for r in self.requests]

    def get(self, key: str) -> Request:
        for r in self.requests:
            if r.key == key:
                return r
        raise KeyError(f"no request {key!r}; the log has {self.keys()}")

    def _next_key(self) -> str:
        used = set(self.keys())
        n = len(self.requests) + 1
        while f"r{n:04d}" in used:
            n += 1
        return f"r{n:04d}"

    def add(self, adapter: ODEAdapter, label: str = "", u: float = 1.0, key: str | None = None,
            created: str | None = None) -> Request:
        """Append a request (its adapter must belong to this log's base model); returns it."""
        if adapter.base_weight_hash != self.base_weight_hash or adapter.base_model_id != self.base_model_id:
            raise AdapterMismatchError(
                f"this adapter belongs to base model {adapter.base_model_id!r} ({adapter.base_weight_hash}); the "
                f"log is for {self.base_model_id!r} ({self.base_weight_hash})")
        key = key or self._next_key()
        if not _KEY.match(key):
            raise ValueError(f"a request key is 1-64 letters, digits, '-' or '_', got {key!r}")
        if key in self.keys():
            raise ValueError(f"the log already has a request {key!r}")
        adapter.t_at(u)  # the range check of the slider position
        for p in adapter.parameters():
            p.requires_grad_(False)
        created = created or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        request = Request(key, str(label), adapter, float(u), created)
        self.requests.append(request)
        return request

    def remove(self, key: str) -> Request:
        """Withdraw a request: the log is then exactly the log that never had it."""
        request = self.get(key)
        self.requests.remove(request)
        return request

    def set_u(self, key: str, u: float) -> None:
        request = self.get(key)
        request.adapter.t_at(u)
        request.u = float(u)

    def activations(self) -> list[tuple[ODEAdapter, float]]:
        """Each request's adapter at its intensity, in request order (for ``adapters.active``)."""
        return [(r.adapter, r.t) for r in self.requests]

    def routed(self, scale: float = 1.0) -> RoutedRequests:
        """All requests as one site adapter; ``scale`` in [0, 1] multiplies every request's intensity."""
        return RoutedRequests(self.activations(), scale)

    @contextmanager
    def active(self, model: AdaptableModel, scale: float = 1.0) -> Iterator[None]:
        """Draw with every request applied (routed), in this thread, inside the block."""
        if not self.requests:
            with active(model, []):
                yield
            return
        with active(model, [(self.routed(scale), 1.0)]):
            yield

    # -- persistence ------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """One safetensors file: each request's tensors under its key, the list and the base in the metadata."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors, entries = {}, []
        for r in self.requests:
            meta = r.adapter.metadata()
            tensors.update({f"{r.key}/{k}": v for k, v in r.adapter.tensors().items()})
            entries.append({"key": r.key, "label": r.label, "u": r.u, "created": r.created, "adapter": meta})
        metadata = {"format": LOG_FORMAT, "format_version": LOG_FORMAT_VERSION, "base_model_id": self.base_model_id,
                    "base_weight_hash": self.base_weight_hash, "requests": json.dumps(entries)}
        tmp = path.with_suffix(path.suffix + ".tmp")
        save_file(tensors, tmp, metadata=metadata)
        tmp.replace(path)  # atomic: a crash never leaves a half-written log
        return path

    @classmethod
    def load(cls, path: str | Path, model: AdaptableModel | None = None) -> RequestLog:
        """Read a log file; with ``model``, refuse (AdapterMismatchError) a log made for another base model."""
        path = Path(path)
        tensors, meta = read_safetensors(path, "request log")
        if meta.get("format") != LOG_FORMAT:
            raise ValueError(f"{path.name} is not a legato request log (metadata format={meta.get('format')!r})")
        if meta.get("format_version") != LOG_FORMAT_VERSION:
            raise ValueError(f"{path.name} has request-log format {meta.get('format_version')}, "
                             f"expected {LOG_FORMAT_VERSION}")
        log = cls(meta["base_model_id"], meta["base_weight_hash"])
        if model is not None and (log.base_weight_hash != model.weight_hash()):
            raise AdapterMismatchError(
                f"{path.name} was made for base model {log.base_model_id!r} (weights {log.base_weight_hash}); the "
                f"loaded base is {model.base_model_id!r} (weights {model.weight_hash()})")
        for entry in json.loads(meta["requests"]):
            own = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith(entry["key"] + "/")}
            adapter = ODEAdapter.from_tensors(own, {k: str(v) for k, v in entry["adapter"].items()},
                                              f"{path.name}[{entry['key']}]")
            log.add(adapter, entry["label"], entry["u"], entry["key"], entry["created"])
        return log


class RoutedRequests:
    """Every request of a log as one site adapter (``adapters.active`` takes it at intensity 1): the adapters run
    in request order, each at its own t (times ``scale``), and only those whose scope holds one of the rows."""

    def __init__(self, activations: list[tuple[ODEAdapter, float]], scale: float = 1.0):
        if not 0 <= scale <= 1:
            raise ValueError(f"scale must be in [0, 1], got {scale}")
        self.activations = [(a, t * scale) for a, t in activations if t * scale > 0]
        self.fields = {site for a, _ in self.activations for site in a.fields}  # the sites it acts on
        self._scoped = [a for a, _ in self.activations if a.scope is not None]
        self._centres = {}  # site -> (all scoped adapters' centres, which adapter each row belongs to)

    def check_intensity(self, t: float) -> float:
        if float(t) != 1.0:
            raise ValueError("a request log runs at intensity 1; scale it with RequestLog.routed(scale)")
        return 1.0

    def check_base(self, model: AdaptableModel) -> None:
        seen: set[int] = set()
        for a, _ in self.activations:
            if id(a) not in seen:
                a.check_base(model)
                seen.add(id(a))

    def bind(self, model: AdaptableModel) -> None:
        for a, _ in self.activations:
            a.bind(model)

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        for a, _ in self.activations:
            yield from a.parameters()

    def to(self, device) -> RoutedRequests:
        for a, _ in self.activations:
            a.to(device)
        return self

    def _in_scope(self, x: torch.Tensor) -> set[int]:
        """ids of the adapters with a scope that may hold a row of x, in one distance pass per metric (the scopes
        of one base model share theirs). A margin over the outer radius keeps the routing conservative: an
        adapter it keeps whose weight is 0 changes nothing, so the result is the plain composition's whatever
        rounding the batched distances have."""
        if not self._scoped:
            return set()
        if "groups" not in self._centres:
            groups: list[tuple[torch.Tensor | None, list[int]]] = []  # (metric, the scopes that measure with it)
            for i, a in enumerate(self._scoped):
                group = next((g for g in groups if same_metric(g[0], a.scope.metric)), None)
                if group is None:
                    groups.append((a.scope.metric, [i]))
                else:
                    group[1].append(i)
            self._centres["outer"] = torch.tensor([a.scope.outer * (1 + 1e-3) + 1e-4 for a in self._scoped])
            self._centres["groups"] = [
                (m, torch.cat([self._scoped[i].scope.mapped_centres for i in members]),
                 torch.cat([torch.full((len(self._scoped[i].scope.centres),), i) for i in members]))
                for m, members in groups]
        outer = self._centres["outer"].to(x.device)
        held: set[int] = set()
        for metric, centres, owner in self._centres["groups"]:
            near = torch.cdist(measured(x.detach().float(), metric), centres.to(x.device)) < outer[owner]
            held |= {id(self._scoped[i]) for i in owner[near.any(0).cpu()].unique().tolist()}
        return held

    def transform(self, site: str, x: torch.Tensor, intensity: float,
                  states: dict[str, list[torch.Tensor]] | None = None) -> torch.Tensor:
        """Apply each request's adapter in turn, skipping those whose scope holds none of the rows as they stand
        (looked up again after each adapter that runs): the plain composition, bit for bit, at a fraction of
        its cost."""
        latent = x.dim() == 2
        in_scope = self._in_scope(x) if latent else set()
        for a, t in self.activations:
            if site not in a.fields:
                continue
            if latent and a.scope is not None and a.gate is None and a.site_kinds[site] == "latent" \
                    and id(a) not in in_scope:  # a gated adapter (robust mode) also holds rows beyond its scope
                continue
            x = a.transform(site, x, t, states)
            if latent:
                in_scope = self._in_scope(x)
        return x
