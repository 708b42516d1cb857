"""Generation: KV cache, sampling, stop sequences, batching of prompts, streaming, errors."""

from __future__ import annotations

import pytest
import torch

from guardrails.generators import ModelGenerator
from guardrails.generators.moe import GenerationError
from guardrails.generators.moe.generation import (
    SamplingParams,
    generate_ids,
    sample_next,
)

GREEDY = {"temperature": 0.0, "max_tokens": 12}


def test_generator_satisfies_model_generator_protocol(tiny_generator):
    """The loaded generator is a `ModelGenerator` with the checkpoint's name."""
    assert isinstance(tiny_generator, ModelGenerator)
    assert tiny_generator.name.startswith("tiny")


def test_cached_decoding_equals_full_forward(tiny_generator):
    """Logits from one-token steps over the KV cache equal a full forward pass."""
    model = tiny_generator.model
    ids = torch.randint(
        0, model.config.vocab_size, (1, 20), generator=torch.Generator().manual_seed(3)
    )
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache()
        steps = [model(ids[:, :5], cache=cache)]
        steps += [model(ids[:, i : i + 1], cache=cache) for i in range(5, 20)]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-5)


def test_left_padded_batch_equals_single_prompts(tiny_generator):
    """Greedy ids of prompts decoded together equal each prompt decoded alone."""
    model = tiny_generator.model
    prompts = [[5, 9, 30, 2], [7], [11, 12, 13, 14, 15, 16, 17]]
    params = SamplingParams(max_new_tokens=10, temperature=0.0, ignore_eos=True)
    together = generate_ids(model, prompts, params)
    alone = [generate_ids(model, [p], params)[0] for p in prompts]
    assert together == alone


def test_seeded_sampling_is_reproducible(tiny_generator):
    """The same seed gives the same sampled text; the sampled text is not always greedy."""
    opts = {"temperature": 1.5, "top_k": 0, "top_p": 1.0, "max_tokens": 16}
    a = tiny_generator.generate("The guard", seed=11, **opts)
    b = tiny_generator.generate("The guard", seed=11, **opts)
    others = {tiny_generator.generate("The guard", seed=s, **opts) for s in range(12, 18)}
    assert a == b
    assert len(others | {a}) > 1


def test_top_k_one_and_tiny_top_p_are_greedy():
    """top_k=1 and a tiny top_p both reduce sampling to argmax."""
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(0))
    greedy = logits.argmax(-1)
    rng = torch.Generator().manual_seed(1)
    assert torch.equal(sample_next(logits, SamplingParams(temperature=1.0, top_k=1), rng), greedy)
    tiny_p = SamplingParams(temperature=1.0, top_k=0, top_p=1e-6)
    assert torch.equal(sample_next(logits, tiny_p, rng), greedy)


def test_top_k_never_samples_outside_the_k_best():
    """Every token sampled with top_k=3 is among the 3 highest logits."""
    logits = torch.randn(1, 40, generator=torch.Generator().manual_seed(5)).expand(500, 40)
    rng = torch.Generator().manual_seed(2)
    picks = sample_next(logits, SamplingParams(temperature=2.0, top_k=3, top_p=1.0), rng)
    allowed = set(logits[0].topk(3).indices.tolist())
    assert set(picks.tolist()) <= allowed


def test_stream_chunks_join_to_generate(tiny_generator):
    """Streaming yields several chunks whose concatenation is the generate() text."""
    chunks = list(tiny_generator.stream("Streaming output", **GREEDY))
    assert len(chunks) > 1
    assert "".join(chunks) == tiny_generator.generate("Streaming output", **GREEDY)


def test_stop_sequence_truncates_and_never_streams(tiny_generator):
    """Output ends right before the stop string, which never appears in any chunk."""
    full = tiny_generator.generate("A rule", temperature=0.0, max_tokens=24)
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert stop.strip(), full
    cut = tiny_generator.generate("A rule", temperature=0.0, max_tokens=24, stop=[stop])
    assert cut == full[: full.index(stop)]
    streamed = "".join(tiny_generator.stream("A rule", temperature=0.0, max_tokens=24, stop=stop))
    assert streamed == cut


def test_generate_batch_matches_single_generate(tiny_generator):
    """generate_batch returns, per prompt, what generate returns for it alone."""
    prompts = ["The guard", "A rule may block", "Streaming"]
    batch = tiny_generator.generate_batch(prompts, **GREEDY)
    assert batch == [tiny_generator.generate(p, **GREEDY) for p in prompts]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"max_tokens": 0}, "max_new_tokens"),
        ({"stop": [""]}, "stop"),
        ({"frequency_penalty": 1.0}, "unknown generation options"),
        ({"n": 2}, "one completion"),
    ],
)
def test_invalid_options_raise_clear_errors(tiny_generator, options, message):
    """Each invalid sampling option raises GenerationError naming it."""
    with pytest.raises(GenerationError, match=message):
        tiny_generator.generate("The guard", **options)


def test_all_invalid_parameters_reported_together():
    """SamplingParams reports every bad field in one error."""
    with pytest.raises(GenerationError) as err:
        SamplingParams(temperature=-1, top_p=2.0, max_new_tokens=0)
    assert all(w in str(err.value) for w in ("temperature", "top_p", "max_new_tokens"))


def test_empty_and_too_long_prompts_are_rejected(tiny_generator):
    """An empty prompt and one past the context window raise GenerationError."""
    with pytest.raises(GenerationError, match="empty"):
        tiny_generator.generate("   ")
    with pytest.raises(GenerationError, match="context window is 64"):
        tiny_generator.generate("guard " * 200)


def test_max_tokens_is_clipped_to_the_context(tiny_generator):
    """Asking for more tokens than the context holds stops at the context, without error."""
    model = tiny_generator.model
    params = SamplingParams(max_new_tokens=500, temperature=0.0, ignore_eos=True)
    out = generate_ids(model, [[3] * 60], params)[0]
    assert len(out) == 4
