"""The per-worker model cache, in this process: loads once, evicts the least recently used,
and lets an evicted model's memory go although loaded models are frozen out of the GC."""

from __future__ import annotations

import gc
import weakref
from collections import OrderedDict, Counter

import pytest
from helpers.data import tiny_cnn

from sql_dl.executor import loading as worker, model_cache
from sql_dl.manifest import load_manifest, local_path
from sql_dl.driver.models import plan_model


@pytest.fixture
def small_cache(monkeypatch):
    monkeypatch.setattr(model_cache, "MAX_MODELS", 1)
    monkeypatch.setattr(model_cache, "_entries", OrderedDict())
    monkeypatch.setattr(model_cache, "_loads", Counter())
    monkeypatch.setattr(model_cache, "_hits", Counter())
    yield
    gc.unfreeze()


def test_an_evicted_model_is_collected_although_loaded_models_are_frozen(small_cache, tmp_path):
    files = {}
    for seed, name in ((1, "first"), (2, "second")):
        files[name] = tmp_path / f"{name}.keras"
        tiny_cnn(seed=seed).save(files[name])
    manifest = load_manifest({"models": {n: {"path": str(f)} for n, f in files.items()}})
    plans = {n: plan_model(manifest.models[n], manifest, local_path) for n in files}

    alive = []
    for name in ("first", "second") * 3:  # two models alternating in a cache of one
        loaded = worker.get_model(plans[name])
        alive.append(weakref.ref(loaded.model))
        del loaded
    gc.collect()
    assert [ref() is not None for ref in alive] == [False] * 5 + [True]
    stats = model_cache.stats()
    assert stats["loads"] == {plans["first"].staged_name: 3, plans["second"].staged_name: 3}
    assert stats["hits"] == {}


def test_a_model_in_the_cache_is_loaded_once(small_cache, cnn_file):
    manifest = load_manifest({"models": {"m": {"path": str(cnn_file)}}})
    plan = plan_model(manifest.models["m"], manifest, local_path)
    first = worker.get_model(plan)
    assert worker.get_model(plan) is first
    assert model_cache.stats() == {"loads": {plan.staged_name: 1}, "hits": {plan.staged_name: 1}}
