"""The real loading path: `from_pretrained` on a local diffusers-format checkpoint directory, on a
tiny checkpoint the test builds and saves (weights cannot be downloaded here). A checkpoint load must
give the same parameter shapes and dtypes as the random-weight build that calibrations use, since
memory and time depend on those and not on the values."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from wanfit.measure.build import build_from_checkpoint, build_random, save_random_checkpoint  # noqa: E402
from wanfit.measure.runner import run_point  # noqa: E402
from wanfit.measure.tiny import tiny_spec  # noqa: E402
from wanfit.vocabulary.catalog import MODELS  # noqa: E402
from wanfit.vocabulary.workload import Plan, Workload  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["wan2.1-t2v-1.3b", "wan2.2-t2v-a14b"])
def checkpoint(request, tmp_path_factory):
    """(model key, directory) of a saved tiny checkpoint: a random build plus a tokenizer."""
    key = request.param
    return key, save_random_checkpoint(tiny_spec(key), tmp_path_factory.mktemp(key) / "checkpoint", "cpu")


def _layout(module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return {name: (tuple(p.shape), p.dtype) for name, p in module.named_parameters()}


def test_a_checkpoint_loads_with_the_shapes_and_dtypes_of_the_random_build(checkpoint):
    key, path = checkpoint
    loaded = build_from_checkpoint(tiny_spec(key), Plan(), path)
    built = build_random(tiny_spec(key), Plan(), "cpu")
    assert loaded.source == "checkpoint" and loaded.tokenizer is not None
    experts = ["transformer", "transformer_2"] if MODELS[key].experts == 2 else ["transformer"]
    for name in [*experts, "vae"]:
        assert _layout(getattr(loaded.pipe, name)) == _layout(getattr(built.pipe, name)), name
    assert _layout(loaded.text_encoder) == _layout(built.text_encoder)
    dit = _layout(loaded.pipe.transformer)
    assert {dtype for _, dtype in dit.values()} == {torch.bfloat16, torch.float32}  # _keep_in_fp32_modules
    assert {dtype for _, dtype in _layout(loaded.pipe.vae).values()} == {torch.float32}
    # the runner drives the text encoder and tokenizer itself: the pipeline must not hold them
    assert loaded.pipe.text_encoder is None and loaded.pipe.tokenizer is None


def test_a_run_from_a_checkpoint_measures_every_stage(checkpoint):
    key, path = checkpoint
    stride = MODELS[key].spatial_stride
    wl = Workload(model=key, height=2 * stride, width=3 * stride, frames=5, steps=3, guidance=5.0,
                  guidance_2=MODELS[key].defaults.guidance_2)
    m = run_point(wl, Plan(), spec=tiny_spec(key), device="cpu", checkpoint=path)
    assert m.status == "ok", m.error
    assert m.source == "checkpoint"
    assert [s.name for s in m.stages] == ["init", "text_encode", "prepare", "step", "step", "step", "vae_decode",
                                          "total"]
    if MODELS[key].experts == 2:
        assert {s.expert for s in m.steps()} == {1, 2}


def test_a_missing_checkpoint_directory_is_an_error_not_a_download(tmp_path):
    m = run_point(Workload(model="wan2.1-t2v-1.3b", height=32, width=48, frames=5, steps=1, guidance=5.0), Plan(),
                  spec=tiny_spec("wan2.1-t2v-1.3b"), device="cpu", checkpoint=tmp_path / "absent")
    assert m.status == "error" and m.source == "checkpoint"


@pytest.mark.parametrize("key", ["wan2.1-t2v-14b", "wan2.2-ti2v-5b"])
def test_a_dit_built_in_host_memory_has_the_random_builds_layout_and_runs(key):
    """The path for a DiT the plan offloads: built on the CPU with torch.nn.init's fills skipped, then
    filled with random values drawn on the fill device (here the CPU too). Same parameter shapes and
    dtypes as the plain random build, every value random and finite, buffers (RoPE) intact: a
    forward gives finite output of the latent's shape."""
    from diffusers import WanTransformer3DModel

    from wanfit.measure.build import _build_in_host_memory, _keep_fp32, build_module

    spec = tiny_spec(key)
    dit = _build_in_host_memory(lambda: WanTransformer3DModel(**spec.transformer), torch.bfloat16, "cpu")
    _keep_fp32(dit)
    plain = build_module(lambda: WanTransformer3DModel(**spec.transformer), torch.bfloat16, "cpu")
    _keep_fp32(plain)
    assert _layout(dit) == _layout(plain)
    assert torch.nn.init.kaiming_uniform_ is not None and torch.nn.init.normal_(torch.zeros(4)).abs().sum() > 0
    for name, p in dit.named_parameters():
        assert p.device.type == "cpu" and torch.isfinite(p).all(), name
        assert p.abs().max() <= 0.0201 and (p.numel() < 4 or p.std() > 0), name  # 0.02 rounded to bf16
    t = spec.transformer
    latents = torch.randn(1, t["in_channels"], 3, 8, 8, dtype=torch.bfloat16)
    steps = torch.full((1, 3 * 4 * 4) if spec.expand_timesteps else (1,), 500.0)
    text = torch.randn(1, 8, t["text_dim"], dtype=torch.bfloat16)
    with torch.no_grad():
        out = dit(hidden_states=latents, timestep=steps, encoder_hidden_states=text, return_dict=False)[0]
    assert out.shape == (1, t["out_channels"], *latents.shape[2:]) and torch.isfinite(out).all()


def test_a_text_encoder_built_in_host_memory_shares_its_embedding_as_a_checkpoint_load_does():
    """UMT5's token embedding (`shared`) and its encoder's `embed_tokens` are one tensor after from_pretrained
    and after a plain build; built in host memory (initialisation skipped) they were two, and a model-offload
    verify run's text encode measured the 1.96 GiB copy on the GPU."""
    from transformers import UMT5Config, UMT5EncoderModel

    from wanfit.measure.build import _build_in_host_memory, build_module

    config = tiny_spec("wan2.2-ti2v-5b").text_encoder
    te = _build_in_host_memory(lambda: UMT5EncoderModel(UMT5Config(**config)), torch.bfloat16, "cpu")
    plain = build_module(lambda: UMT5EncoderModel(UMT5Config(**config)), torch.bfloat16, "cpu")
    assert te.shared.weight is te.encoder.embed_tokens.weight
    assert sum(p.numel() for p in te.parameters()) == sum(p.numel() for p in plain.parameters())
