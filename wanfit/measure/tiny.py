"""Tiny variants of each catalog model: the same structure (VAE strides, latent channels,
experts, expand_timesteps, CLIP for Wan2.1 I2V) at toy widths, so the real diffusers pipeline
runs on a CPU in seconds. Used by the tests and by GPU smoke runs; never for predictions."""

from __future__ import annotations

from wanfit.vocabulary.catalog import ModelSpec, get_model

_TEXT_DIM = 32


def tiny_spec(key: str) -> ModelSpec:
    spec = get_model(key)
    dit = {**spec.transformer, "num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 12,
           "ffn_dim": 48, "text_dim": _TEXT_DIM, "freq_dim": 32}
    if dit.get("image_dim"):
        dit["image_dim"] = 32
        dit["added_kv_proj_dim"] = 24
    vae = {**spec.vae, "base_dim": 8}
    if spec.vae.get("decoder_base_dim"):
        vae["decoder_base_dim"] = 8
    te = {**spec.text_encoder, "vocab_size": 512, "d_model": _TEXT_DIM, "d_kv": 8, "d_ff": 48, "num_layers": 2,
          "num_decoder_layers": 2, "num_heads": 4, "relative_attention_num_buckets": 8}
    clip = None
    if spec.image_encoder:
        clip = {**spec.image_encoder, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
                "num_attention_heads": 2, "projection_dim": 16}
    return spec.model_copy(update={"transformer": dit, "vae": vae, "text_encoder": te, "image_encoder": clip})


_WORDS = ["a", "cat", "walks", "on", "the", "grass", "at", "sunset", "bright", "colors", "blurry", "low", "quality",
          "worst", "static"]


def tiny_tokenizer():
    """A word-level fast tokenizer for checkpoints saved from random weights (the UMT5 sentencepiece
    model cannot be downloaded here). Prompts are padded to the same 512 tokens either way, so the
    text encoder does the same work as with the real tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(_WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
