"""The benchmark runs every method end to end through the same API (tiny budget; figures live in docs/)."""

import json

import pytest

from legato_core.baselines import METHODS, run_method
from legato_core.baselines.benchmark import run_benchmark, summarise, write_outputs
from legato_core.figure_export import static_export_unavailable
from legato_core.unlearning import ForgetConfig
from legato_core.unlearning.targets import TargetConfig

# one method per kind of knob: integration time (legato), weight interpolation (guide), adapter scale (lora). Every
# registered method runs in the slow test below (5 min); CI's `bench --quick` runs the six default ones end to end
KNOB_KINDS = ["legato", "guide", "lora"]


# the benchmark's bookkeeping is under test, not the choice of substitute: the nearest is taken unchecked
QUICK = ForgetConfig(steps=2, target=TargetConfig(path_candidates=0))


def _bench(embedded, methods):
    return run_benchmark(embedded, methods, [200_040], QUICK, audit_steps=10, n_retain=20, n_fd=20,
                         check_every=1, progress=False, dial_views=2)


@pytest.fixture(scope="module")
def tiny_bench(embedded):
    return _bench(embedded, KNOB_KINDS)


def _assert_same_metrics(bench, methods):
    rows = bench["results"]
    assert sorted(r["method"] for r in rows) == sorted(methods)
    for r in rows:
        for key in ("id_target", "id_others", "retention_mean", "retention_p5", "fd_judge", "curve",
                    "curve_spearman", "curve_max_jump", "attack_reinvert", "attack_unseen_photos",
                    "attack_encoder_guess", "attack_warm_start", "trainable_parameters",
                    "wall_seconds", "retention_curve", "evenness_calibrated", "manifold_db_min", "reach_db"):
            assert key in r, (r["method"], key)
        assert r["curve"][0][1] == pytest.approx(1.0, abs=1e-4), f"{r['method']}: knob 0 must be the base model"
        assert len(r["curve"]) == 9


def test_each_kind_of_knob_reports_the_same_metrics(tiny_bench):
    _assert_same_metrics(tiny_bench, KNOB_KINDS)


@pytest.mark.slow
def test_every_registered_method_reports_the_same_metrics(embedded):
    _assert_same_metrics(_bench(embedded, list(METHODS)), list(METHODS))


def test_outputs_are_written(tiny_bench, tmp_path):
    paths = write_outputs(tiny_bench, tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())["methods"] == KNOB_KINDS
    assert "| legato |" in (tmp_path / "results.md").read_text()
    html = (tmp_path / "curves.html").read_text()
    assert "plotly.min.js" in html and "cdn.plot.ly" not in html, "figures must open offline"
    assert (tmp_path / "plotly.min.js").stat().st_size > 100_000
    assert "guide" in summarise(tiny_bench)
    if static_export_unavailable() is None:
        pngs = [tmp_path / "curves.png", tmp_path / "tradeoff.png"]
        assert all(p in paths and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    else:
        assert static_export_unavailable() in (tmp_path / "PNG_EXPORT.txt").read_text()


def test_baselines_leave_the_shared_backend_untouched(embedded):
    import torch

    w = embedded.sample_latents(1, torch.Generator().manual_seed(2))
    v = embedded.canonical_views(2)
    before = embedded.render(w.expand(2, -1), v)
    for m in ("guide", "lora"):
        run_method(m, embedded, w, QUICK)
    assert torch.equal(embedded.render(w.expand(2, -1), v), before)


def test_unknown_method_is_refused(embedded):
    with pytest.raises(ValueError, match="unknown method"):
        run_method("magic", embedded, embedded.w_avg[None], ForgetConfig(steps=1))


def _load_merge():  # scripts/merge_bench.py as a module
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "merge_bench.py"
    spec = importlib.util.spec_from_file_location("merge_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_halves_merge_over_targets_or_methods_and_nothing_else():
    merge = _load_merge().merge

    def run(methods, ids):
        return {"config": {"steps": 3}, "lrs": {"a": 1}, "threshold": 0.5, "methods": methods, "identities": ids,
                "base_model_attacks": [{"reinvert": 0.9}] * len(ids),
                "results": [{"method": m, "identity": i} for m in methods for i in ids]}

    by_target = merge([run(["a", "b"], [1, 2]), run(["a", "b"], [3])])
    assert by_target["identities"] == [1, 2, 3] and len(by_target["results"]) == 6
    assert len(by_target["base_model_attacks"]) == 3
    by_method = merge([run(["a"], [1, 2]), run(["b", "c"], [1, 2])])
    assert by_method["methods"] == ["a", "b", "c"] and len(by_method["results"]) == 6
    for clash in ([run(["a"], [1]), run(["a"], [1])], [run(["a"], [1]), run(["b"], [2])]):
        with pytest.raises(SystemExit, match="cannot merge"):
            merge(clash)
    # LEGATO adapters on the same sites (or a run from before they were recorded) merge; on others they do not
    on_sites = merge([{**run(["a"], [1]), "legato_sites": ["b8"]}, run(["b"], [1])])
    assert on_sites["legato_sites"] == ["b8"]
    with pytest.raises(SystemExit, match="different sites"):
        merge([{**run(["a"], [1]), "legato_sites": ["b8"]}, {**run(["b"], [1]), "legato_sites": ["b16"]}])


def test_bench_merge_can_take_some_methods_of_a_run_and_let_named_config_keys_differ():
    module = _load_merge()

    def run(methods, config):
        return {"config": config, "lrs": {"a": 1}, "threshold": 0.5, "methods": methods, "identities": [1],
                "base_model_attacks": [{"reinvert": 0.9}], "command": "bench",
                "results": [{"method": m, "identity": 1} for m in methods]}

    old = run(["a", "b"], {"steps": 3, "target": {"kind": "x"}})
    new = run(["a"], {"steps": 3, "target": {"kind": "x", "search_extend": 2.0}})
    with pytest.raises(SystemExit, match=r"target\.search_extend"):
        module.merge([new, module.select(old, ["b"])])
    merged = module.merge([new, module.select(old, ["b"])], ignore=("target.search_extend",))
    assert merged["methods"] == ["a", "b"] and [r["method"] for r in merged["results"]] == ["a", "b"]
    assert merged["config_differences"] == {"target.search_extend": [2.0, None]}
    assert merged["command"] == ["bench", "bench"]
    with pytest.raises(SystemExit, match="differ in 'config' \\(steps\\)"):
        module.merge([new, module.select(run(["b"], {"steps": 4, "target": {"kind": "x"}}), ["b"])],
                     ignore=("target.search_extend",))
    with pytest.raises(SystemExit, match="cannot select"):
        module.select(old, ["c"])


def test_each_kind_of_knob_forgets_toward_the_same_recorded_target(tiny_bench):
    targets = {r["method"]: (r["target_kind"], r["target_pool_index"]) for r in tiny_bench["results"]}
    kind, first = targets["legato"]
    assert kind == "substitute" and isinstance(first, list) and len(first) == 1 and 0 <= first[0] < 256
    assert all(t == (kind, first) for t in targets.values()), targets


def test_each_kind_of_knob_reports_its_dial_raw_and_calibrated(tiny_bench):
    for r in tiny_bench["results"]:
        for key in ("evenness_raw", "evenness_calibrated", "pixel_evenness_calibrated", "sharpness_min",
                    "manifold_db_min", "reach_db", "monotone_calibrated"):
            assert key in r, (r["method"], key)
        assert len(r["dial_raw"]["judge_curve"]) == 17 and len(r["dial_calibrated"]["knob"]) == 17
        assert r["dial_calibrated"]["knob"][0] == 0 and r["dial_calibrated"]["knob"][-1] == pytest.approx(1.0)


def test_the_summary_prints_counts_whole_in_every_row():
    runs = {"a": [(0.1, 42), (0.2, 38)], "b": [(0.1, 84), (0.2, 120)], "c": [(0.9, None), (0.8, 7)]}
    rows = [{"method": m, "id_target": sim, "steps_to_forget": steps} for m, pairs in runs.items()
            for sim, steps in pairs]
    table = summarise({"methods": ["a", "b", "c"], "threshold": 0.5, "results": rows})
    a, b, c = table.splitlines()[2:]
    assert "| 40 ± 3 |" in a and "| 102 ± 25 |" in b, "small and large step counts alike"
    assert "| 7 ± 0 (1 never) |" in c and "| 0.150 ± 0.071 |" in a


def test_robust_guide_draws_every_held_latent_as_guide_draws_the_person_and_the_rest_as_guide(embedded):
    import torch

    from legato_core import faceworld

    with torch.enable_grad():
        w, _ = embedded.invert(faceworld.render([200_041], 0))
    res = run_method("guide-robust", embedded, w, QUICK)
    views = embedded.canonical_views(2)
    others = embedded.sample_latents(2, torch.Generator().manual_seed(5))
    from legato_core.unlearning.anchors import view_anchors

    held = view_anchors(embedded, w, 2, torch.Generator().manual_seed(9))  # the model's other views of the person
    with res.knob.knob.at(1.0) as guide:  # the same fine-tuned weights without the gate
        person, rest = guide.render(w.expand(2, -1), views), guide.render(others, views)
    with res.knob.at(0.0) as model:
        assert torch.equal(model.render(held, views), embedded.render(held, views)), "s = 0 is the base model"
    with res.knob.at(1.0) as model:
        assert torch.equal(model.render(held, views), person), "the person in other views lands on their latent"
        assert torch.equal(model.render(others, views), rest), "random people are left to the fine-tune"
    assert res.target["robust"]["threshold"] > res.target["robust"]["bank_quantile"]
    res.close()


def test_a_benchmark_with_a_work_folder_resumes_where_it_stopped_and_refuses_other_settings(embedded, tmp_path,
                                                                                          monkeypatch):
    from legato_core.baselines import benchmark

    cfg = ForgetConfig(steps=1, target=TargetConfig(path_candidates=0))
    kw = {"audit_steps": 0, "n_retain": 8, "n_fd": 8, "progress": False, "work": tmp_path, "dial_views": 2}
    first = run_benchmark(embedded, ["lora"], [200_042], cfg, **kw)
    assert (tmp_path / "lora-200042.json").exists()

    def no_training(*args, **kwargs):
        raise AssertionError("a kept record was trained again")

    monkeypatch.setattr(benchmark, "run_method", no_training)
    again = run_benchmark(embedded, ["lora"], [200_042], cfg, **kw)
    assert json.dumps(again["results"], default=float) == json.dumps(first["results"], default=float)
    with pytest.raises(ValueError, match=r"other settings \(config\)"):
        run_benchmark(embedded, ["lora"], [200_042], QUICK, **kw)
    with pytest.raises(ValueError, match=r"other settings \(dial_views\)"):
        run_benchmark(embedded, ["lora"], [200_042], cfg, **{**kw, "dial_views": 8})
