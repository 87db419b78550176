"""The official Wan modules' parameters (wan/modules/t5.py T5Encoder, wan/modules/model.py WanModel) from the
catalog's architecture dims: the large ones in the order `Module.to()` moves them (what torch's caching allocator
sees: wanfit.model.stranded_cache), and the FSDP units the official wan/distributed/fsdp.py wraps (each block a
unit; the rest, embeddings and head, the root unit: wanfit.model.sharding). Checked against the modules
themselves in tests/test_stranded_cache.py."""

from __future__ import annotations

from wanfit.model.geometry import BYTES

BF16_BYTES = BYTES["bf16"]


def umt5_encoder_param_bytes(te: dict) -> list[int]:
    """Large parameters of the official T5Encoder (wan/modules/t5.py) in `Module.to()` order, bf16: the token
    embedding, then per block the attention's q, k, v, o and the gated FFN's gate, fc1, fc2 (norms and the
    relative position tables are small-pool sizes)."""
    dim, ffn, attn = te["d_model"], te["d_ff"], te["num_heads"] * te["d_kv"]
    block = [dim * attn] * 4 + [dim * ffn] * 3
    return [te["vocab_size"] * dim * BF16_BYTES] + [n * BF16_BYTES for n in block] * te["num_layers"]


def _dit_root_weights(dit: dict) -> tuple[list[int], int]:
    """Elements of WanModel's weights outside its blocks: (the patch, text and time embeddings and the time
    projection, in `Module.to()` order; the head)."""
    dim = dit["num_attention_heads"] * dit["attention_head_dim"]
    patch = dit["patch_size"][0] * dit["patch_size"][1] * dit["patch_size"][2]
    embeddings = [dim * dit["in_channels"] * patch, dit["text_dim"] * dim, dim * dim, dit["freq_dim"] * dim, dim * dim,
                  dim * 6 * dim]
    return embeddings, dim * dit["out_channels"] * patch


def wan_dit_param_bytes(dit: dict, bytes_per_param: int = BF16_BYTES) -> list[int]:
    """Large parameters of the official WanModel (wan/modules/model.py) in `Module.to()` order (bf16 unless
    told: fp32 without --convert_model_dtype): the patch embedding, text and time embeddings, time projection,
    then per block self- and cross-attention's q, k, v, o and the FFN's two layers (biases, norms and modulation
    are small-pool sizes), then the head."""
    dim, ffn = dit["num_attention_heads"] * dit["attention_head_dim"], dit["ffn_dim"]
    embeddings, head = _dit_root_weights(dit)
    block = [dim * dim] * 8 + [dim * ffn, ffn * dim]
    return [n * bytes_per_param for n in embeddings + block * dit["num_layers"] + [head]]


def wan_dit_root_bytes(dit: dict) -> int:
    """bf16 bytes of WanModel's FSDP root unit: everything outside its blocks (patch, text and time embeddings,
    the time projection, the head), weights, biases and the head's modulation."""
    dim = dit["num_attention_heads"] * dit["attention_head_dim"]
    embeddings, head = _dit_root_weights(dit)
    patch = dit["patch_size"][0] * dit["patch_size"][1] * dit["patch_size"][2]
    biases = 5 * dim + 6 * dim + dit["out_channels"] * patch
    head_modulation = 2 * dim
    return (sum(embeddings) + head + biases + head_modulation) * BF16_BYTES


def umt5_encoder_root_bytes(te: dict) -> int:
    """bf16 bytes of T5Encoder's FSDP root unit: the token embedding and the final norm (the blocks hold the rest,
    their relative position tables included)."""
    return (te["vocab_size"] * te["d_model"] + te["d_model"]) * BF16_BYTES
