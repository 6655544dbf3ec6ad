"""The "many" benchmark: k people forgotten one after another (or at once), scored after the k-th request.

Methods: ``legato`` (one adapter per request, each within its scope, routed: the model of ``RequestLog``),
``legato-composed`` (the same adapters without their scope, simply composed: the project before session 18),
``lora`` (a low-rank adapter per request, composed) and ``guide`` (the whole generator fine-tuned once per
request, each time from the model the previous requests left). ``legato`` also runs in ``batch`` mode (one run
per k). At each k: how many of the k the judge calls forgotten, whether the first 10 still are, the person's
other photos, retention and PSNR of 64 never-forgotten prior identities, seconds per request and the render
time against one adapter's. Training is checkpointed per request in a work folder: a run resumes where it stopped.
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .. import faceworld
from ..adapters import ODEAdapter, active
from ..adapters.low_rank import LowRankAdapter
from ..adapters.request_log import RequestLog
from ..identity.model import load_identity_model
from ..metrics import identity_similarity, judge_embeddings, judge_similarity, psnr
from ..ranges import check_evaluation_ids
from ..unlearning.engine import ForgetConfig, make_scope
from ..unlearning.many import Person, forget_many
from .methods import METHODS, run_method

MANY_METHODS = ("legato", "legato-composed", "lora", "guide")


@dataclass
class ManyConfig:
    ks: tuple[int, ...] = (1, 10, 50, 100)
    methods: tuple[str, ...] = MANY_METHODS
    batch: bool = True  # also legato in batch mode, one run per k
    sequential: bool = True  # legato (and legato-composed) one request after another
    # give every LEGATO adapter found trained in the work folder the scope today's ForgetConfig makes around its
    # saved centres, before scoring (the training does not depend on the scope: a change of scope alone)
    rescope: bool = False
    first_identity: int = 1_000_000
    retained: int = 64  # never-forgotten prior identities (seeded), 4 views each
    render_repeats: int = 15
    forget: dict = field(default_factory=dict)  # ForgetConfig overrides (e.g. {"steps": 20} for a quick run)

    def __post_init__(self):
        self.ks = tuple(sorted(set(int(k) for k in self.ks)))
        unknown = [m for m in self.methods if m not in MANY_METHODS]
        if unknown or not self.ks or self.ks[0] < 1:
            raise ValueError(f"methods from {MANY_METHODS} and k >= 1; got {list(self.methods)}, {list(self.ks)}")
        check_evaluation_ids([self.first_identity])


class _Knob:
    """The model after k requests as ``at(s)``: s = None the base, anything else the model (metrics' protocol)."""

    def __init__(self, backend, model_context: Callable[[], object], model=None):
        self.backend, self.model_context, self.model = backend, model_context, model

    @contextmanager
    def at(self, s):
        if s is None:
            with active(self.backend, []):
                yield self.backend
            return
        with self.model_context():
            yield self.model or self.backend


def _people(backend, ids: list[int], work: Path) -> dict[str, torch.Tensor]:
    """Each person's inverted photo (view 0) and 5 other photos, inverted once and cached in the work folder."""
    path = work / "people.safetensors"
    have = load_file(str(path)) if path.exists() else {}
    if have and have["ids"].tolist()[:len(ids)] == ids:
        return {k: v[:len(ids)] for k, v in have.items()}
    w, ow, ov = [], [], []
    for ident in ids:
        with torch.enable_grad():
            w.append(backend.invert(faceworld.render([ident], 0))[0])
            o = backend.invert(faceworld.render([ident] * 5, [1, 2, 3, 4, 5]))
        ow.append(o[0][None])
        ov.append(o[1][None])
    out = {"ids": torch.tensor(ids), "w": torch.cat(w), "ow": torch.cat(ow), "ov": torch.cat(ov)}
    work.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.items()}, str(path))
    return out


@torch.no_grad()
def evaluate(backend, knob: _Knob, one: _Knob, people: dict, k: int, judge, repeats: int, seed: int = 4321) -> dict:
    """The model after k requests (``knob``) against the base; ``one``: request 1 alone, for the render time."""
    views8 = backend.canonical_views(8)
    sims = identity_similarity(knob, people["w"][:k], views8, 1.0, judge)
    forgotten = sims < judge.threshold
    ow, ov = people["ow"][:k].flatten(0, 1), people["ov"][:k].flatten(0, 1)
    with knob.at(None) as m:
        base_o = judge_embeddings(m, judge, ow, ov)
    with knob.at(1.0) as m:
        ad_o = judge_embeddings(m, judge, ow, ov)
    others = judge_similarity(judge, base_o, ad_o).view(k, -1).mean(1)
    keep = backend.sample_latents(64, torch.Generator().manual_seed(seed))
    views4 = backend.canonical_views(4)
    ret = identity_similarity(knob, keep, views4, 1.0, judge)
    lat, vw = keep.repeat_interleave(4, 0), views4.repeat(len(keep), 1)
    with knob.at(None) as m:
        before = m.render(lat, vw)
    with knob.at(1.0) as m:
        after = m.render(lat, vw)
    db = psnr(before, after).clamp(max=100)  # 100 dB: identical (a mean over a few moved faces and many exact ones)
    pooled = float(10 * torch.log10(1 / (before - after).square().mean().clamp(min=1e-10)))
    mix = torch.cat([people["w"][:min(k, 4)], keep[:8 - min(k, 4)]])
    views = backend.canonical_views(len(mix))

    def render_ms(kn: _Knob) -> float:
        times = []
        for _ in range(repeats):
            with kn.at(1.0) as m:
                t0 = time.perf_counter()
                m.render(mix, views)
                times.append(time.perf_counter() - t0)
        return 1000 * statistics.median(times)

    ms, ms_one = render_ms(knob), render_ms(one)
    first = forgotten[:min(10, k)]
    return {"forgotten": int(forgotten.sum()), "forgotten_fraction": float(forgotten.float().mean()),
            "first10_forgotten": int(first.sum()), "first10_checked": len(first),
            "id_target_mean": float(sims.mean()), "id_target_max": float(sims.max()),
            "id_others_mean": float(others.mean()), "id_others_below": int((others < judge.threshold).sum()),
            "retention_mean": float(ret.mean()), "retention_p5": float(torch.quantile(ret, 0.05)),
            "others_psnr_db_mean": float(db.mean()), "others_psnr_db_p5": float(torch.quantile(db, 0.05)),
            "others_psnr_db_pooled": pooled, "others_changed": int((db < 100).view(len(keep), -1).any(1).sum()),
            "render_ms": ms, "render_ms_one_adapter": ms_one, "render_ratio": ms / ms_one}


def in_another_scope(log: RequestLog, latents: torch.Tensor) -> int:
    """How many of the people (row i: request i's person) some other request's scope holds (weight > 0)."""
    hit = 0
    for i in range(len(log.requests)):
        others = [o.adapter.scope for j, o in enumerate(log.requests) if j != i and o.adapter.scope is not None]
        hit += any(float(scope.weight(latents[i:i + 1])) > 0 for scope in others)
    return hit


def _without_scope(adapter: ODEAdapter) -> ODEAdapter:
    out = copy.deepcopy(adapter)
    out.set_scope(None)
    return out


class _Record:
    """results.json in the output folder: one record per method, mode and k; rewritten after each record."""

    def __init__(self, out: Path, config: ManyConfig, threshold: float):
        self.path = out / "results.json"
        old = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.data = {"config": asdict(config), "threshold": threshold, "records": old.get("records", []),
                     "commands": old.get("commands", [])}  # every run that added records, in order

    def has(self, method: str, mode: str, k: int) -> bool:
        return any(r["method"] == method and r["mode"] == mode and r["k"] == k for r in self.data["records"])

    def add(self, record: dict) -> None:
        self.data["records"] = [r for r in self.data["records"] if (r["method"], r["mode"], r["k"]) !=
                                (record["method"], record["mode"], record["k"])] + [record]
        self.data["records"].sort(key=lambda r: (r["method"], r["mode"], r["k"]))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=1))


def run_many(backend, config: ManyConfig, out: str | Path, work: str | Path,
             log: Callable[[str], None] = print, command: str | None = None) -> dict:
    """Train (resuming from ``work``) and score every method at every k; results in ``out``/results.json, each
    record naming ``command`` (the command line that made it) in ``made_by``."""
    out, work = Path(out), Path(work)
    work.mkdir(parents=True, exist_ok=True)
    judge = load_identity_model("judge")
    k_max = max(config.ks)
    ids = list(range(config.first_identity, config.first_identity + k_max))
    people = _people(backend, ids, work)
    forget_cfg = ForgetConfig().merged(config.forget)
    record = _Record(out, config, judge.threshold)
    times_path = work / "seconds.json"
    seconds = json.loads(times_path.read_text()) if times_path.exists() else {}

    def save_seconds(key: str, values: list[float]) -> None:
        seconds[key] = values
        times_path.write_text(json.dumps(seconds))

    def checkpoint(key: str, secs: list[float], requests: RequestLog, path: Path, label: str, total: int):
        """forget_many's on_request: keep each request (and its seconds) as it lands, so a rerun resumes."""
        def landed(done) -> None:
            secs.append(done.seconds)
            requests.save(path)
            save_seconds(key, secs)
            log(f"{label} request {len(requests)}/{total}: {done.seconds:.1f} s")
        return landed

    def person(i: int) -> Person:
        return Person(f"identity {ids[i]}", people["w"][i:i + 1])

    def score(method: str, mode: str, k: int, knob: _Knob, one: _Knob, secs: list[float], extra: dict) -> None:
        rec = {"method": method, "mode": mode, "k": k, **evaluate(backend, knob, one, people, k, judge,
                                                                   config.render_repeats),
               "seconds_per_request_median": statistics.median(secs[:k]) if secs else None, **extra,
               **({"made_by": command} if command else {})}
        record.add(rec)
        log(f"{method} {mode} k={k}: forgotten {rec['forgotten']}/{k}, first 10 {rec['first10_forgotten']}, "
            f"retention {rec['retention_mean']:.3f}/{rec['retention_p5']:.3f}, "
            f"PSNR {rec['others_psnr_db_mean']:.1f} dB, render x{rec['render_ratio']:.2f}")

    want = {m for m in config.methods}
    def rescoped(requests: RequestLog) -> RequestLog:
        if config.rescope:
            for r in requests.requests:
                if r.adapter.scope is not None:
                    r.adapter.set_scope(make_scope(backend, r.adapter.scope.centres, forget_cfg.scope))
        return requests

    if want & {"legato", "legato-composed"} and config.sequential:
        path = work / "legato-sequential.requests.safetensors"
        stream = rescoped(RequestLog.load(path, backend)) if path.exists() else RequestLog.for_model(backend)
        secs = seconds.get("legato-sequential", [])[:len(stream)]
        for k in config.ks:
            if all(record.has(m, "sequential", k) for m in want & {"legato", "legato-composed"}):
                continue  # scored already (a rerun given earlier results): nothing to train for it
            saved = checkpoint("legato-sequential", secs, stream, path, "legato", k_max)
            while len(stream) < k:
                forget_many(backend, [person(len(stream))], forget_cfg, "sequential", stream, saved)
            first = stream.requests[0]
            one = _Knob(backend, lambda f=first: active(backend, [(f.adapter, f.t)]))
            upto = RequestLog(stream.base_model_id, stream.base_weight_hash)
            for r in stream.requests[:k]:
                upto.add(r.adapter, r.label, r.u, r.key, r.created)
            if "legato" in want and not record.has("legato", "sequential", k):
                score("legato", "sequential", k, _Knob(backend, lambda u=upto: u.active(backend)), one, secs,
                      {"people_in_another_scope": in_another_scope(upto, people["w"][:k])})
            if "legato-composed" in want and not record.has("legato-composed", "sequential", k):
                acts = [(_without_scope(r.adapter), r.t) for r in upto.requests]
                one_free = _Knob(backend, lambda a=acts[0]: active(backend, [a]))
                score("legato-composed", "sequential", k, _Knob(backend, lambda a=acts: active(backend, a)),
                      one_free, secs, {})
    if config.batch and "legato" in want:
        for k in config.ks:
            if record.has("legato", "batch", k):
                continue
            path_k = work / f"legato-batch-k{k}.requests.safetensors"
            if path_k.exists():
                batch_log, total = rescoped(RequestLog.load(path_k, backend)), seconds[f"legato-batch-k{k}"]
            else:  # each request is saved as it lands: a stopped batch resumes with the same substitutes
                part = work / f"legato-batch-k{k}.partial.requests.safetensors"
                batch_log = RequestLog.load(part, backend) if part.exists() else RequestLog.for_model(backend)
                done_secs = seconds.get(f"legato-batch-k{k}-requests", [])[:len(batch_log)]
                landed = checkpoint(f"legato-batch-k{k}-requests", done_secs, batch_log, part,
                                    f"legato batch k={k}:", k)
                forget_many(backend, [person(i) for i in range(k)], forget_cfg, "batch", batch_log, landed,
                            resume_from=len(batch_log))
                total = [sum(done_secs)]  # each request's training and its share of the joint target search
                batch_log.save(path_k)
                save_seconds(f"legato-batch-k{k}", total)
                part.unlink(missing_ok=True)
            first = batch_log.requests[0]
            one = _Knob(backend, lambda f=first: active(backend, [(f.adapter, f.t)]))
            # the median request (each with its share of the joint target search); runs before per-request
            # checkpoints kept only the total: its mean
            per_request = seconds.get(f"legato-batch-k{k}-requests") or [total[0] / k]
            score("legato", "batch", k, _Knob(backend, lambda b=batch_log: b.active(backend)), one,
                  per_request, {"batch_seconds_total": total[0],
                                   "people_in_another_scope": in_another_scope(batch_log, people["w"][:k])})
    if "lora" in want:
        adapters: list[LowRankAdapter] = []
        secs = seconds.get("lora-sequential", [])
        for k in config.ks:
            while len(adapters) < k:
                i = len(adapters)
                file = work / f"lora-{i + 1:04d}.safetensors"
                if file.exists() and len(secs) > i:
                    adapter = LowRankAdapter({s: c for s, c in _lora_sites(backend).items()}, 4,
                                             backend.base_model_id, backend.weight_hash())
                    adapter.load_state_dict(load_file(str(file)))
                else:
                    res = run_method("lora", backend, people["w"][i:i + 1], forget_cfg, lr=METHODS["lora"].default_lr)
                    adapter = res.knob.adapters[0]
                    save_file({n: p.detach().contiguous() for n, p in adapter.state_dict().items()}, str(file))
                    secs = [*secs[:i], res.seconds]
                    save_seconds("lora-sequential", secs)
                    log(f"lora request {i + 1}/{k_max}: {res.seconds:.1f} s")
                for p in adapter.parameters():
                    p.requires_grad_(False)
                adapters.append(adapter)
            if not record.has("lora", "sequential", k):
                acts = [(a, 1.0) for a in adapters[:k]]
                score("lora", "sequential", k, _Knob(backend, lambda a=acts: active(backend, a)),
                      _Knob(backend, lambda a=acts[0]: active(backend, [a])), secs, {})
    if "guide" in want:
        secs = seconds.get("guide-sequential", [])
        state_path = work / "guide-sequential.safetensors"
        current = copy.deepcopy(backend)
        done = 0
        if state_path.exists():
            state = load_file(str(state_path))
            done = int(state.pop("__requests__").item())
            current.generator.blocks.load_state_dict(state)
        secs = secs[:done]
        for k in config.ks:
            while done < k:
                res = run_method("guide", current, people["w"][done:done + 1], forget_cfg,
                                 lr=METHODS["guide"].default_lr)
                current = res.knob.model  # the fine-tuned copy at full strength: the next request starts here
                done += 1
                secs.append(res.seconds)
                state = {n: p.detach().contiguous() for n, p in current.generator.blocks.state_dict().items()}
                save_file({**state, "__requests__": torch.tensor(done)}, str(state_path))
                save_seconds("guide-sequential", secs)
                log(f"guide request {done}/{k_max}: {res.seconds:.1f} s")
            if not record.has("guide", "sequential", k) and done == k:
                knob = _Knob(backend, lambda c=current: active(c, []), current)
                score("guide", "sequential", k, knob, knob, secs, {})
    return record.data


def _lora_sites(backend) -> dict[str, int]:
    return {k: m.channels for k, m in backend.adapter_sites.items() if getattr(m, "adapter_kind", "conv") == "conv"}


_COLUMNS = [("forgotten", "forgotten"), ("first10_forgotten", "first 10 still forgotten"),
            ("id_others_below", "other photos forgotten"), ("retention_mean", "retention mean"),
            ("retention_p5", "retention p5"), ("others_changed", "others changed (of 64)"),
            ("others_psnr_db_pooled", "others' PSNR dB (pooled)"),
            ("seconds_per_request_median", "s / request (median)"), ("render_ratio", "render ÷ one adapter")]


def results_markdown(data: dict) -> str:
    """The table of results.json: one row per method, mode and k."""
    lines = ["| method | mode | k | " + " | ".join(label for _, label in _COLUMNS) + " |",
             "|---" * (3 + len(_COLUMNS)) + "|"]
    for r in data["records"]:
        cells = []
        for key, _ in _COLUMNS:
            v = r.get(key)
            if key in ("forgotten", "id_others_below"):
                cells.append(f"{v}/{r['k']}")
            elif key == "first10_forgotten":
                cells.append(f"{v}/{r['first10_checked']}")
            elif isinstance(v, float):
                one_place = key in ("others_psnr_db_pooled", "seconds_per_request_median")
                cells.append(f"{v:.1f}" if one_place else f"{v:.3f}" if key.startswith("retention") else f"{v:.2f}")
            else:
                cells.append("–" if v is None else str(v))
        lines.append(f"| {r['method']} | {r['mode']} | {r['k']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_many_outputs(data: dict, out: Path) -> list[Path]:
    """results.json (rewritten with the command), results.md and figures against k, one line per method/mode."""
    from plotly.subplots import make_subplots

    from ..figure_export import write_html, write_png

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(data, indent=1))
    commands = "\n".join(data.get("commands", [])) or data.get("command", "")
    (out / "results.md").write_text(f"Made by, in this order:\n\n```bash\n{commands}\n```\n\n" + results_markdown(data))
    panels = [("forgotten_fraction", "fraction of the k forgotten"), ("retention_mean", "retention (64 others)"),
              ("others_psnr_db_pooled", "others' PSNR (dB, pooled)"), ("render_ratio", "render time ÷ one adapter")]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[t for _, t in panels])
    lines = sorted({(r["method"], r["mode"]) for r in data["records"]})
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    for i, (method, mode) in enumerate(lines):
        rows = sorted((r for r in data["records"] if (r["method"], r["mode"]) == (method, mode)), key=lambda r: r["k"])
        for c, (key, _) in enumerate(panels):
            fig.add_scatter(x=[r["k"] for r in rows], y=[r[key] for r in rows], mode="lines+markers",
                            name=f"{method} ({mode})", legendgroup=f"{method}{mode}", showlegend=c == 0,
                            line={"color": colors[i % len(colors)], "dash": "dash" if mode == "batch" else "solid"},
                            marker={"size": 9 if mode == "batch" else 6}, row=1, col=c + 1)
    fig.update_xaxes(type="log", title_text="k (people forgotten)")
    fig.update_yaxes(range=[0, 1.05], row=1, col=1)
    fig.update_layout(height=380, width=1400, title="Many people: the model after k deletion requests")
    paths = [out / "results.json", out / "results.md", write_html(fig, out / "against_k.html")]
    try:
        paths += write_png({out / "against_k.png": fig})
    except RuntimeError as e:
        (out / "PNG_EXPORT.txt").write_text(f"{e}\n")
        paths.append(out / "PNG_EXPORT.txt")
    return paths
