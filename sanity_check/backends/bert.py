"""BERT encoder (Devlin et al. 2019) with Hugging Face module names, built from a small config."""
import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Union

import torch
from torch import Tensor, nn

ModelOutput = Union[Dict[str, Tensor], Tuple[Tensor, ...]]


@dataclass
class BertConfig:
    """Model sizes; the defaults give two-layer models of about 0.14 M parameters.

    ``return_dict=False`` makes models return tuples (in the order of their dict keys) instead of dicts.
    """

    vocab_size: int = 1000
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 128
    max_position_embeddings: int = 64
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    return_dict: bool = True


class BertEmbeddings(nn.Module):
    """Sum of word, position and token-type embeddings, then LayerNorm."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.register_buffer("position_ids", torch.arange(config.max_position_embeddings)[None], persistent=False)

    def forward(self, input_ids: Tensor, token_type_ids: Optional[Tensor] = None) -> Tensor:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        positions = self.position_ids[:, : input_ids.shape[1]]
        embeddings = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        return self.LayerNorm(embeddings + self.position_embeddings(positions))


class BertSelfAttention(nn.Module):
    """Scaled dot-product attention with separate ``query``/``key``/``value`` Linears.

    ``all_head_size = num_attention_heads * attention_head_size``; forward reads these attributes, so pruning heads
    must update ``num_attention_heads`` and ``all_head_size``.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        if config.hidden_size % config.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size {config.hidden_size} must be divisible by "
                f"num_attention_heads {config.num_attention_heads}"
            )
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.all_head_size = self.num_attention_heads * self.attention_head_size
        self.query = nn.Linear(config.hidden_size, self.all_head_size)
        self.key = nn.Linear(config.hidden_size, self.all_head_size)
        self.value = nn.Linear(config.hidden_size, self.all_head_size)

    def transpose_for_scores(self, x: Tensor) -> Tensor:
        """``[B, L, all_head_size]`` -> ``[B, heads, L, head_size]``."""
        x = x.view(x.shape[0], x.shape[1], self.num_attention_heads, self.attention_head_size)
        return x.permute(0, 2, 1, 3)

    def forward(self, hidden_states: Tensor, attention_mask: Optional[Tensor] = None) -> Tensor:
        """``attention_mask``: additive, broadcastable to ``[B, heads, L, L]``."""
        query = self.transpose_for_scores(self.query(hidden_states))
        key = self.transpose_for_scores(self.key(hidden_states))
        value = self.transpose_for_scores(self.value(hidden_states))
        scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(self.attention_head_size)
        if attention_mask is not None:
            scores = scores + attention_mask
        context = torch.matmul(nn.functional.softmax(scores, dim=-1), value).permute(0, 2, 1, 3).contiguous()
        return context.view(context.shape[0], context.shape[1], self.all_head_size)


class BertSelfOutput(nn.Module):
    """Output projection, residual add, LayerNorm."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: Tensor, input_tensor: Tensor) -> Tensor:
        return self.LayerNorm(self.dense(hidden_states) + input_tensor)


class BertAttention(nn.Module):
    """Self-attention (``self``) followed by its output projection (``output``)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, hidden_states: Tensor, attention_mask: Optional[Tensor] = None) -> Tensor:
        return self.output(self.self(hidden_states, attention_mask), hidden_states)


class BertIntermediate(nn.Module):
    """Linear to ``intermediate_size`` then GELU."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = nn.GELU()

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class BertOutput(nn.Module):
    """Linear back to ``hidden_size``, residual add, LayerNorm."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: Tensor, input_tensor: Tensor) -> Tensor:
        return self.LayerNorm(self.dense(hidden_states) + input_tensor)


class BertLayer(nn.Module):
    """Attention block then feed-forward block (post-norm)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, hidden_states: Tensor, attention_mask: Optional[Tensor] = None) -> Tensor:
        attention_output = self.attention(hidden_states, attention_mask)
        return self.output(self.intermediate(attention_output), attention_output)


class BertEncoder(nn.Module):
    """A stack of ``num_hidden_layers`` BertLayers."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, hidden_states: Tensor, attention_mask: Optional[Tensor] = None) -> Tensor:
        for layer in self.layer:
            hidden_states = layer(hidden_states, attention_mask)
        return hidden_states


class BertPooler(nn.Module):
    """Linear + tanh on the first ([CLS]) token."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.activation(self.dense(hidden_states[:, 0]))


class BertPreTrainedModel(nn.Module):
    """Shared weight initialisation (normal with ``initializer_range``, zero biases) and output packing."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config

    def init_weights(self) -> None:
        """Initialise every Linear/Embedding/LayerNorm below this module."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=self.config.initializer_range)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def pack(self, **outputs: Tensor) -> ModelOutput:
        """A dict of the outputs, or their tuple when ``config.return_dict`` is False."""
        return outputs if self.config.return_dict else tuple(outputs.values())


def extended_attention_mask(attention_mask: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    """``[B, L]`` 1/0 keep mask -> additive ``[B, 1, 1, L]`` mask (0 keeps, dtype minimum drops)."""
    if attention_mask is None:
        return None
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class BertModel(BertPreTrainedModel):
    """Embeddings, encoder and (optionally) pooler; outputs ``last_hidden_state`` ``[B, L, H]`` and
    ``pooler_output`` ``[B, H]``."""

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.init_weights()

    def encode(
        self, input_ids: Tensor, attention_mask: Optional[Tensor] = None, token_type_ids: Optional[Tensor] = None
    ) -> Tensor:
        """Token ids ``[B, L]`` -> hidden states ``[B, L, H]``."""
        hidden_states = self.embeddings(input_ids, token_type_ids)
        return self.encoder(hidden_states, extended_attention_mask(attention_mask, hidden_states.dtype))

    def forward(
        self, input_ids: Tensor, attention_mask: Optional[Tensor] = None, token_type_ids: Optional[Tensor] = None
    ) -> ModelOutput:
        hidden_states = self.encode(input_ids, attention_mask, token_type_ids)
        if self.pooler is None:
            return self.pack(last_hidden_state=hidden_states)
        return self.pack(last_hidden_state=hidden_states, pooler_output=self.pooler(hidden_states))


class BertForQuestionAnswering(BertPreTrainedModel):
    """Encoder without pooler and a Linear(H, 2) span head; outputs ``start_logits`` and ``end_logits`` ``[B, L]``."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.init_weights()

    def forward(
        self, input_ids: Tensor, attention_mask: Optional[Tensor] = None, token_type_ids: Optional[Tensor] = None
    ) -> ModelOutput:
        logits = self.qa_outputs(self.bert.encode(input_ids, attention_mask, token_type_ids))
        start_logits, end_logits = logits.unbind(dim=-1)
        return self.pack(start_logits=start_logits, end_logits=end_logits)


class BertForSequenceClassification(BertPreTrainedModel):
    """Encoder with pooler and a Linear(H, num_labels) classifier; outputs ``logits`` ``[B, num_labels]``."""

    def __init__(self, config: BertConfig, num_labels: int = 2) -> None:
        super().__init__(config)
        self.bert = BertModel(config)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        self.init_weights()

    def forward(
        self, input_ids: Tensor, attention_mask: Optional[Tensor] = None, token_type_ids: Optional[Tensor] = None
    ) -> ModelOutput:
        hidden_states = self.bert.encode(input_ids, attention_mask, token_type_ids)
        return self.pack(logits=self.classifier(self.bert.pooler(hidden_states)))
