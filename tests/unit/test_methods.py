"""The method registry: every entry point runs through it, shared flag names and Spec-Bench's own
spellings parse alike, and a method's checks run before any model loads."""
from __future__ import annotations

import importlib

import pytest

from evaluation.eval import EvalConfigError
from evaluation.methods import REGISTRY, parser_for, run_method

ENTRY_POINTS = {"inference_baseline": "ar", "inference_sd2": "sd2", "inference_sps": "sps", "inference_pld": "pld",
                "inference_lookahead": "lookahead", "inference_rest": "rest", "inference_eagle": "eagle",
                "inference_eagle2": "eagle2", "inference_eagle3": "eagle3", "inference_medusa": "medusa",
                "inference_hydra": "hydra", "inference_recycling": "recycling", "inference_samd": "samd",
                "inference_ar_llamacpp": "ar_llamacpp", "inference_hf": "hf"}


def test_every_entry_point_is_a_registered_method(monkeypatch):
    assert set(REGISTRY) == set(ENTRY_POINTS.values())
    called = []
    monkeypatch.setattr("evaluation.methods.run_method", lambda name, argv=None, doc=None: called.append(name))
    for module, name in ENTRY_POINTS.items():
        entry = importlib.import_module(f"evaluation.{module}")
        monkeypatch.setattr(entry, "run_method", lambda name, argv=None, doc=None: called.append(name), raising=False)
        entry.main([])
    assert called == list(ENTRY_POINTS.values())


@pytest.mark.parametrize("method, spec_bench, shared, dest, extra", [
    ("pld", "--num-pred-tokens", "--draft-tokens", "num_pred_tokens", []),
    ("sps", "--num-draft-tokens", "--draft-tokens", "num_draft_tokens", ["--drafter-path", "d"]),
    ("rest", "--num-draft", "--draft-tokens", "num_draft", []),
    ("sd2", "--submodels", "--exits", "submodels", ["--drafter-path", "d"]),
])
def test_spec_bench_flag_names_and_the_shared_ones_parse_alike(method, spec_bench, shared, dest, extra):
    parser = parser_for(REGISTRY[method])
    old = parser.parse_args(["--model-id", "m", *extra, spec_bench, "7"])
    new = parser.parse_args(["--model-id", "m", *extra, shared, "7"])
    assert getattr(old, dest) == getattr(new, dest) in (7, [7])


def test_eval_sh_flags_parse():
    """The flags inference/eval.sh passes, exactly as it spells them."""
    parser_for(REGISTRY["lookahead"]).parse_args(["--model-id", "m", "--level", "5", "--window", "7", "--guess", "7"])
    parser_for(REGISTRY["rest"]).parse_args(["--model-id", "m", "--num-draft", "64", "--max-token-span", "16"])
    parser_for(REGISTRY["sd2"]).parse_args(["--model-id", "m", "--drafter-path", "d", "--draft-dtype", "int8", "--tree",
                                            "--total-token", "auto", "--lookup-tokens", "8"])
    parser_for(REGISTRY["eagle"]).parse_args(["--model-id", "m", "--ea-model-path", "h", "--cuda-graphs"])
    parser_for(REGISTRY["eagle2"]).parse_args(["--model-id", "m", "--ea-model-path", "h", "--total-token", "60",
                                               "--depth", "5", "--top-k", "10"])


@pytest.mark.parametrize("method, argv, message", [
    ("rest", ["--datastore-path", "/no/such.npz"], "REST datastore not found"),
    ("pld", ["--max-ngram-size", "0"], "n-gram sizes"),
    ("sps", ["--drafter-path", "d", "--draft-tokens", "30"], "need 1 <= --draft-tokens \\(30\\) <= --max-draft-tokens"),
    ("lookahead", ["--window", "0"], "lookahead window must be an integer >= 1"),
    ("hf", ["--method", "assisted"], "--method assisted needs --drafter-path"),
    ("pld", ["--cuda-graphs", "--engine", "hf"], "--cuda-graphs is for the shared engine"),
    ("ar", ["--cuda-graphs", "--device", "cpu"], "--cuda-graphs needs a CUDA device"),
    ("eagle2", ["--ea-model-path", "/no/such/head"], "--ea-model-path /no/such/head"),
    ("hydra", ["--hydra-model-path", "h", "--total-token", "1"], "need --total-token >= 2"),
    ("eagle2", ["--ea-model-path", "h", "--top-k", "0"], "need --total-token >= 2, --depth >= 1 and --top-k >= 1"),
])
def test_a_methods_checks_run_before_the_target_loads(method, argv, message):
    # the target path does not exist: reaching load_target would fail with another message
    with pytest.raises(EvalConfigError, match=message):
        run_method(method, ["--model-id", "m", "--model-path", "/no/target", *argv])
