"""Exit adapters (sd2.exit_adapters): each exit's own decoder layer on a frozen prefix, as the loss
and the exit report see it, what a draft with them records, and SD2 drafting with them losslessly."""
from __future__ import annotations

import json

import pytest
import torch

from sd2.draft_spec import DraftSpec
from sd2.exit_adapters import (ADAPTERS_FILE, attach_exit_adapters, load_exit_adapters, new_exit_adapters,
                               save_exit_adapters)
from sd2train.exits import all_exit_logits, exit_states

from helpers import tiny_llama


def draft_with_adapters(exits=(1, 3), init="last"):
    target = tiny_llama(num_layers=5, seed=0)
    draft = tiny_llama(num_layers=3, seed=0)  # the target's first 3 layers: same seed, same init order
    for mine, theirs in zip(draft.model.layers, target.model.layers):
        mine.load_state_dict(theirs.state_dict())
    attach_exit_adapters(draft, new_exit_adapters(target.model.layers, list(exits), init))
    return target, draft


def by_hand(draft, input_ids, k):
    """head(norm(adapter_k(h_k))), the layers and the adapter called by hand, no hooks."""
    h = draft.model.embed_tokens(input_ids)
    positions = torch.arange(input_ids.shape[1])[None]
    rope = draft.model.rotary_emb(h, positions)
    for layer in draft.model.layers[:k]:
        h = layer(h, attention_mask=None, position_ids=positions, position_embeddings=rope)
    h = draft.exit_adapters[str(k)](h, attention_mask=None, position_ids=positions, position_embeddings=rope)
    return draft.lm_head(draft.model.norm(h))


def test_an_exit_runs_its_own_adapter_and_the_deeper_layers_read_the_state_before_it():
    _, draft = draft_with_adapters()
    input_ids = torch.randint(0, 128, (1, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits = all_exit_logits(draft, [1, 3], input_ids)
        for k in (1, 3):
            assert torch.allclose(logits[k], by_hand(draft, input_ids, k), atol=1e-5)
        # the deeper layers see the unadapted state: exit 3 is unchanged by adapter 1's weights
        for p in draft.exit_adapters["1"].parameters():
            p.add_(1.0)
        assert torch.allclose(all_exit_logits(draft, [3], input_ids)[3], logits[3], atol=1e-6)


def test_adapters_start_as_copies_of_the_chosen_target_layer():
    target, draft = draft_with_adapters(init="last")
    last = target.model.layers[-1].state_dict()
    for k in ("1", "3"):
        assert all(torch.equal(t, last[name]) for name, t in draft.exit_adapters[k].state_dict().items())
    nxt = new_exit_adapters(target.model.layers, [1, 3], "next")
    assert torch.equal(nxt["1"].mlp.up_proj.weight, target.model.layers[1].mlp.up_proj.weight)
    assert torch.equal(nxt["3"].mlp.up_proj.weight, target.model.layers[3].mlp.up_proj.weight)
    with pytest.raises(ValueError, match="init 'next' needs a target layer after every exit"):
        new_exit_adapters(target.model.layers, [2, 5], "next")
    with pytest.raises(ValueError, match="exit adapter init must be one of"):
        new_exit_adapters(target.model.layers, [1], "first")


def test_saved_adapters_load_back_and_a_wrong_file_is_named(tmp_path):
    _, draft = draft_with_adapters()
    save_exit_adapters(draft.exit_adapters, tmp_path)
    input_ids = torch.arange(7)[None]
    with torch.no_grad():
        before = {k: h.clone() for k, h in exit_states(draft, [1, 3], input_ids).items()}
    fresh = tiny_llama(num_layers=3, seed=0)
    fresh.load_state_dict(draft.state_dict(), strict=False)
    load_exit_adapters(fresh, tmp_path, [1, 3])
    with torch.no_grad():
        after = exit_states(fresh, [1, 3], input_ids)
    assert all(torch.equal(before[k], after[k]) for k in (1, 3))
    with pytest.raises(ValueError, match=r"does not hold the exit adapters of exits \[1, 2\]"):
        load_exit_adapters(tiny_llama(num_layers=3), tmp_path, [1, 2])
    with pytest.raises(ValueError, match=f"{ADAPTERS_FILE} does not exist"):
        load_exit_adapters(tiny_llama(num_layers=3), tmp_path / "nowhere", [1, 3])


def test_an_exit_without_an_adapter_is_refused():
    _, draft = draft_with_adapters(exits=(1, 3))
    with pytest.raises(ValueError, match=r"exit adapters for exits \[1, 3\], not \[2\]"):
        exit_states(draft, [2], torch.arange(5)[None])


def test_the_spec_records_adapters_and_keeps_their_exits():
    spec = DraftSpec([2, 4], exit_adapters=True)
    entry = spec.to_config()
    assert entry["exit_adapters"] is True
    assert "exit_adapters" not in DraftSpec([2, 4]).to_config()  # plain drafts' configs are unchanged
    config = type("Config", (), {"sd2": entry, "num_hidden_layers": 4})()
    assert DraftSpec.from_config(config).exit_adapters
    with pytest.raises(ValueError, match=r"exit adapters for exits \[2, 4\] only; it cannot exit at \[3\]"):
        DraftSpec.from_config(config, exits=[3, 4])
    assert DraftSpec.from_config(config, exits=[4]).exits == [4]  # any of its exits alone
    json.dumps(entry)


def adapted_sd2_draft(target, exits=(1, 2, 4)):
    """The target's own first 4 layers with perturbed adapters at ``exits`` (so they matter)."""
    import copy

    draft = copy.deepcopy(target)
    adapters = new_exit_adapters(target.model.layers, list(exits), "last")
    with torch.no_grad():
        for p in adapters.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    attach_exit_adapters(draft, adapters)
    draft.config.sd2 = DraftSpec(list(exits), [0.3, 0.5, 0.0], exit_adapters=True).to_config()
    return draft


@pytest.mark.parametrize("passes", ["eager", "static"])
@pytest.mark.parametrize("tree", [False, True], ids=["chain", "tree"])
def test_sd2_with_exit_adapters_equals_ar_and_uses_every_exit(target, ar_tokens, tree, passes):
    from specdec.drafters.sd2 import SD2Drafter
    from specdec.engine import SpeculativeEngine

    from helpers import PROMPT

    drafter = SD2Drafter(adapted_sd2_draft(target), tree=tree, total_token=12, depth=3, top_k=3, passes=passes)
    out = SpeculativeEngine(target, drafter).generate(PROMPT, 40, set())
    assert out.token_ids == ar_tokens[:40]
    assert all(out.stats["exit_tokens"][e] > 0 for e in (1, 2, 4)), out.stats


@pytest.mark.parametrize("exits", [[1], [4], [2, 4]])
def test_sd2_on_some_of_the_adapted_exits_equals_ar(target, ar_tokens, exits):
    from specdec.drafters.sd2 import SD2Drafter
    from specdec.engine import SpeculativeEngine

    from helpers import PROMPT

    drafter = SD2Drafter(adapted_sd2_draft(target), exits=exits, thresholds=[0.5] * (len(exits) - 1) + [0.0],
                         tree=True, total_token=4, depth=2, top_k=2)
    assert drafter.draft.adapters == [range(4 + j, 5 + j) for j in range(len(exits))]  # the chosen exits' only
    out = SpeculativeEngine(target, drafter).generate(PROMPT, 40, set())
    assert out.token_ids == ar_tokens[:40]


def test_sd2_drafts_each_exit_through_its_adapter(target):
    """The first drafted token's distribution is head(norm(adapter(h_k))) of the exit it left at."""
    from specdec.drafters.sd2 import SD2Drafter

    from helpers import PROMPT

    draft = adapted_sd2_draft(target)
    drafter = SD2Drafter(draft, thresholds=[0.0, 0.0, 0.0])  # always exit 1
    with torch.inference_mode():
        drafter.reset(torch.tensor(PROMPT))
        drafter.draft.feed_context(torch.tensor(PROMPT), 4)
        logp, exit_ = drafter.draft.cascade(len(PROMPT), 1)
    with torch.no_grad():
        expected = torch.log_softmax(all_exit_logits(draft, [1], torch.tensor([PROMPT]))[1][0, -1], -1)
    assert exit_ == 1
    torch.testing.assert_close(logp[0], expected, atol=1e-4, rtol=1e-4)


def test_a_draft_folder_with_exit_adapters_loads_for_sd2(target, tmp_path):
    from specdec.drafters.sd2.drafter import load_sd2_drafter

    draft = adapted_sd2_draft(target)
    adapters = draft.exit_adapters
    del draft.exit_adapters
    draft.save_pretrained(tmp_path)
    save_exit_adapters(adapters, tmp_path)
    drafter = load_sd2_drafter(tmp_path, target)
    assert drafter.draft.adapters == [range(4, 5), range(5, 6), range(6, 7)]
    assert drafter.runner.num_layers == 7 and drafter.runner.depth == 4
    assert load_sd2_drafter(tmp_path, target, exits=[2], thresholds=[0.0]).draft.adapters == [range(4, 5)]
    (tmp_path / ADAPTERS_FILE).unlink()
    with pytest.raises(ValueError, match="says the draft has exit adapters"):
        load_sd2_drafter(tmp_path, target)


def test_an_int8_draft_quantises_its_adapters_and_stays_lossless(target, ar_tokens):
    from specdec.drafters.sd2 import SD2Drafter
    from specdec.engine import SpeculativeEngine

    from helpers import PROMPT

    draft = adapted_sd2_draft(target).to(torch.bfloat16)
    drafter = SD2Drafter(draft, tree=True, total_token=12, depth=3, top_k=3, int8_weights=True)
    assert id(draft.exit_adapters["4"].mlp.down_proj) in drafter.runner.int8
    assert SpeculativeEngine(target, drafter).generate(PROMPT, 40, set()).token_ids == ar_tokens[:40]


@pytest.mark.parametrize("frozen", [True, False])
def test_training_freezes_the_draft_around_its_adapters_unless_told_not_to(tmp_path, frozen):
    from sd2train.train import ModelArguments, with_exit_adapters

    target = tiny_llama(num_layers=5)
    target.save_pretrained(tmp_path / "target")
    draft = tiny_llama(num_layers=3)
    args = ModelArguments(model_name_or_path=str(tmp_path / "draft"), exit_adapters=True, exit_adapters_frozen=frozen)
    spec = with_exit_adapters(draft, DraftSpec([1, 3]), [1, 3], args, str(tmp_path / "target"))
    assert spec.exit_adapters and spec.exits == [1, 3]
    sft = with_exit_adapters(tiny_llama(num_layers=3), DraftSpec([1, 3]), [3], args, str(tmp_path / "target"))
    assert sft.exits == [3] and sft.thresholds == [0.0]  # one exit: its own threshold, not the three's
    assert all(p.requires_grad for p in draft.exit_adapters.parameters())
    assert all(p.requires_grad != frozen for p in draft.model.layers.parameters())
