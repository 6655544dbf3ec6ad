"""Many people: the forget-many / requests commands, a batch's substitutes, and the "many" benchmark's table."""

import json

import pytest
import torch

from legato_core.baselines.many_benchmark import ManyConfig, results_markdown
from legato_core.cli import main
from legato_core.unlearning.targets import TargetConfig, make_target


def test_forget_many_appends_to_a_log_and_requests_remove_takes_one_out(tmp_path, capsys):
    log, light = tmp_path / "model.requests.safetensors", tmp_path / "light.json"
    # the log's mechanics, not the forgetting: no view anchors, no dial measured, a small substitute pool whose
    # nearest face is taken without checking its path
    light.write_text(json.dumps({"view_anchors": 0, "calibration": None,
                                 "target": {"pool_size": 32, "path_candidates": 0}}))
    base = ["forget-many", "--log", str(log), "--steps", "1", "--threads", "1", "--quiet", "--config", str(light)]
    assert main([*base, "--identities", "200040-200041"]) == 0
    assert main([*base, "--identities", "200042", "--mode", "batch"]) == 0  # appended to the same log
    capsys.readouterr()
    assert main(["requests", "list", "--log", str(log), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["key"] for r in listed["requests"]] == ["r0001", "r0002", "r0003"]
    assert [r["label"] for r in listed["requests"]] == ["identity 200040", "identity 200041", "identity 200042"]
    assert all(r["scope"] for r in listed["requests"])  # every adapter acts only near its person
    assert main(["requests", "remove", "--log", str(log), "--key", "r0002"]) == 0
    assert main(["requests", "list", "--log", str(log), "--json"]) == 0
    out = capsys.readouterr().out
    assert [r["key"] for r in json.loads(out[out.index("{"):])["requests"]] == ["r0001", "r0003"]
    assert main(["requests", "remove", "--log", str(log)]) == 2  # no --key: the message names the keys
    assert "['r0001', 'r0003']" in capsys.readouterr().err
    assert main(["requests", "remove", "--log", str(log), "--key", "r0042"]) == 2
    assert "no request 'r0042'" in capsys.readouterr().err


def test_a_batch_gives_every_person_their_own_substitute(embedded):
    people = embedded.sample_latents(3, torch.Generator().manual_seed(11))
    cfg = TargetConfig(pool_size=32, path_candidates=0)  # distinct picks, not the path check, are under test
    _, alone = make_target(embedded, torch.cat([people[:1], people[:1]]), cfg)
    assert alone["pool_index"][0] == alone["pool_index"][1]  # the same person twice: one substitute
    _, together = make_target(embedded, torch.cat([people[:1], people[:1], people[1:]]), cfg, distinct=True)
    assert len(together["pool_index"]) == 4 and len(set(together["pool_index"])) == 4


def test_the_many_benchmark_scores_only_evaluation_ids_and_known_methods():
    with pytest.raises(ValueError, match="evaluation ids"):
        ManyConfig(first_identity=100_000)
    with pytest.raises(ValueError, match="methods from"):
        ManyConfig(methods=("legato", "salun"))
    assert ManyConfig(ks=(10, 1, 10)).ks == (1, 10)


def test_the_many_table_has_one_row_per_method_mode_and_k():
    rec = {"forgotten": 9, "first10_forgotten": 9, "first10_checked": 10, "id_others_below": 7, "retention_mean": 0.99,
           "retention_p5": 0.95, "others_changed": 12, "others_psnr_db_pooled": 41.23,
           "seconds_per_request_median": 47.0, "render_ratio": 1.1}
    table = results_markdown({"records": [{"method": "legato", "mode": "sequential", "k": 10, **rec},
                                          {"method": "guide", "mode": "sequential", "k": 10, **rec}]})
    rows = [line for line in table.splitlines() if line.startswith("| legato") or line.startswith("| guide")]
    assert len(rows) == 2
    assert "| 9/10 | 9/10 | 7/10 | 0.990 | 0.950 | 12 | 41.2 | 47.0 | 1.10 |" in rows[0]


def test_the_substitute_pool_is_rendered_once_per_backend_and_gives_the_same_targets(embedded):
    from legato_core.unlearning import targets

    people = embedded.sample_latents(2, torch.Generator().manual_seed(12))
    cfg = TargetConfig(pool_size=32, pool_seed=3, path_candidates=0)  # the pool's cache is under test
    targets._POOLS.pop(embedded, None)
    first, d1 = make_target(embedded, people, cfg)
    cached = targets._POOLS[embedded]
    again, d2 = make_target(embedded, people, cfg)
    assert targets._POOLS[embedded] is cached and len(cached) == 1
    assert torch.equal(first, again) and d1["pool_index"] == d2["pool_index"]



def test_a_stopped_batch_resumes_with_the_substitutes_and_adapters_of_one_run(embedded, one_thread):
    from legato_core.adapters.request_log import RequestLog
    from legato_core.unlearning.engine import ForgetConfig
    from legato_core.unlearning.many import Person, forget_many

    latents = embedded.sample_latents(3, torch.Generator().manual_seed(13))
    people = [Person(f"p{i}", w[None]) for i, w in enumerate(latents)]
    cfg = ForgetConfig(steps=1, view_anchors=0, calibration=None, target=TargetConfig(pool_size=32, path_candidates=0))
    whole = forget_many(embedded, people, cfg, "batch")

    def stop(done):
        raise RuntimeError("the machine stopped")

    log = RequestLog.for_model(embedded)
    with pytest.raises(RuntimeError, match="machine stopped"):
        forget_many(embedded, people, cfg, "batch", log, on_request=stop)
    assert len(log) == 1  # the first request landed before the stop
    forget_many(embedded, people, cfg, "batch", log, resume_from=len(log))
    assert [r.label for r in log.requests] == ["p0", "p1", "p2"]
    assert [r.adapter.digest() for r in log.requests] == [r.adapter.digest() for r in whole.requests]
    with pytest.raises(ValueError, match="holds only 3"):
        forget_many(embedded, people + people[:1], cfg, "batch", log, resume_from=4)
    with pytest.raises(ValueError, match="between 0 and the 3 people"):
        forget_many(embedded, people, cfg, "batch", log, resume_from=5)


def test_a_rerun_given_scored_records_trains_nothing_for_them(embedded, tmp_path):
    """bench-many resumes from earlier results: a sequential k already scored is not trained again (a rerun that
    only adds, say, a batch row must not retrain the whole stream)."""
    from safetensors.torch import save_file

    from legato_core.baselines.many_benchmark import run_many

    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    work.mkdir()
    w = embedded.sample_latents(6, torch.Generator().manual_seed(3))
    save_file({"ids": torch.tensor([1_000_000]), "w": w[:1], "ow": w[1:].unsqueeze(0),
               "ov": embedded.canonical_views(5).unsqueeze(0)}, str(work / "people.safetensors"))
    scored = [{"method": m, "mode": "sequential", "k": 1, "forgotten": 1} for m in ("legato", "legato-composed")]
    (out / "results.json").write_text(json.dumps({"records": scored}))
    said: list[str] = []
    data = run_many(embedded, ManyConfig(ks=(1,), methods=("legato", "legato-composed"), batch=False), out, work,
                    log=said.append)
    assert data["records"] == scored and said == []
    assert not (work / "legato-sequential.requests.safetensors").exists()


def test_rescope_scores_trained_adapters_with_todays_scope_and_trains_nothing(embedded, tmp_path, monkeypatch):
    """bench-many --rescope --no-sequential: the batch log already in the work folder is scored with the scope
    today's ForgetConfig makes around each adapter's saved centres (a scope is set after training)."""
    from safetensors.torch import save_file

    from legato_core.adapters import ODEAdapter, ODEConfig
    from legato_core.adapters.request_log import RequestLog
    from legato_core.adapters.scope import Scope
    from legato_core.baselines import many_benchmark
    from legato_core.unlearning.engine import ForgetConfig

    out, work = tmp_path / "out", tmp_path / "work"
    work.mkdir()
    w = embedded.sample_latents(6, torch.Generator().manual_seed(3))
    save_file({"ids": torch.tensor([1_000_000]), "w": w[:1], "ow": w[1:].unsqueeze(0),
               "ov": embedded.canonical_views(5).unsqueeze(0)}, str(work / "people.safetensors"))
    adapter = ODEAdapter.for_model(embedded, ["w"], ODEConfig(hidden=8))
    adapter.set_scope(Scope(w[:1], 1.0, 1.5))  # a file of the time before carries: the field, plain distance
    log = RequestLog.for_model(embedded)
    log.add(adapter, label="identity 1000000")
    log.save(work / "legato-batch-k1.requests.safetensors")
    (work / "seconds.json").write_text(json.dumps({"legato-batch-k1": [3.0]}))
    made, scored = [], []
    real_make_scope = many_benchmark.make_scope

    def scope_spy(backend, centres, config):
        made.append(real_make_scope(backend, centres, config))
        return made[-1]

    def evaluate_spy(backend, knob, one, people, k, judge, repeats, seed=4321):
        scored.append(k)
        return {"forgotten": 0, "first10_forgotten": 0, "retention_mean": 1.0, "retention_p5": 1.0,
                "others_psnr_db_mean": 100.0, "render_ratio": 1.0}

    monkeypatch.setattr(many_benchmark, "make_scope", scope_spy)
    monkeypatch.setattr(many_benchmark, "evaluate", evaluate_spy)
    cfg = ManyConfig(ks=(1,), methods=("legato",), sequential=False, rescope=True)
    data = many_benchmark.run_many(embedded, cfg, out, work, log=lambda _: None)
    assert [(r["method"], r["mode"]) for r in data["records"]] == [("legato", "batch")] and scored == [1]
    (scope,) = made
    today = ForgetConfig().scope
    assert scope.carry == today.carry and (scope.metric is not None) == (today.metric == "inversion_scatter")
    assert torch.equal(scope.centres, w[:1])
    assert not (work / "legato-sequential.requests.safetensors").exists(), "nothing trained"
