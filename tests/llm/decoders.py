"""Tiny Hugging Face decoders built from configs (random init, no downloads), one per attention layout."""

from __future__ import annotations

from typing import Callable, Dict

import torch

from tests.thirdparty import import_or_skip

VOCAB = 64
_COMMON = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
               max_position_embeddings=64)


def _llama_gqa(t):
    return t.LlamaForCausalLM(t.LlamaConfig(num_attention_heads=4, num_key_value_heads=2, **_COMMON))


def _llama_gqa_eager(t):
    return t.LlamaForCausalLM(t.LlamaConfig(num_attention_heads=4, num_key_value_heads=2, attn_implementation="eager",
                                            **_COMMON))


def _llama_mha(t):
    return t.LlamaForCausalLM(t.LlamaConfig(num_attention_heads=4, num_key_value_heads=4, **_COMMON))


def _llama_mqa(t):
    return t.LlamaForCausalLM(t.LlamaConfig(num_attention_heads=4, num_key_value_heads=1, **_COMMON))


def _qwen2(t):
    return t.Qwen2ForCausalLM(t.Qwen2Config(num_attention_heads=4, num_key_value_heads=2, **_COMMON))


def _qwen3(t):
    return t.Qwen3ForCausalLM(t.Qwen3Config(num_attention_heads=4, num_key_value_heads=2, head_dim=8, **_COMMON))


def _mistral(t):
    return t.MistralForCausalLM(t.MistralConfig(num_attention_heads=4, num_key_value_heads=2, **_COMMON))


def _gemma(t):
    return t.GemmaForCausalLM(t.GemmaConfig(num_attention_heads=4, num_key_value_heads=2, head_dim=8, **_COMMON))


def _gemma3(t):
    return t.Gemma3ForCausalLM(t.Gemma3TextConfig(num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                                  **_COMMON))


def _phi3(t):
    return t.Phi3ForCausalLM(t.Phi3Config(num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, **_COMMON))


def _gpt2(t):
    return t.GPT2LMHeadModel(t.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                          bos_token_id=0, eos_token_id=0))


def _gpt_neox(t):
    return t.GPTNeoXForCausalLM(t.GPTNeoXConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48,
                                                num_hidden_layers=2, num_attention_heads=4,
                                                max_position_embeddings=64))


DECODERS: Dict[str, Callable] = {
    "llama_gqa": _llama_gqa, "llama_gqa_eager": _llama_gqa_eager, "llama_mha": _llama_mha, "llama_mqa": _llama_mqa,
    "qwen2": _qwen2, "qwen3": _qwen3,
    "mistral": _mistral, "gemma": _gemma, "gemma3": _gemma3, "phi3": _phi3, "gpt2": _gpt2, "gpt_neox": _gpt_neox,
}


def build_decoder(name: str, seed: int = 0) -> torch.nn.Module:
    """A tiny random decoder of layout ``name`` (see :data:`DECODERS`), in eval mode."""
    transformers = import_or_skip("transformers")
    torch.manual_seed(seed)
    return DECODERS[name](transformers).eval()


def token_ids(batch: int = 1, length: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))
