"""The catalog's architectures are the real ones: parameter counts match the modules diffusers and
transformers build from these configs (and the reference H100 measurements), the expert split
matches the scheduler, and bad workloads get one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wanfit.model.geometry import geometry, high_noise_steps
from wanfit.vocabulary.catalog import MODELS, get_model
from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.workload import Workload

REFERENCE = Path(__file__).resolve().parents[1] / "bench" / "reference" / "h100-2026-11-22.json"


def test_parameter_counts_match_the_reference_measurements():
    ref = json.loads(REFERENCE.read_text())
    five = MODELS["wan2.2-ti2v-5b"].params
    assert five.dit_per_expert == ref["wan2.2_ti2v_5b"]["params"]["dit"]
    assert five.vae == ref["wan2.2_ti2v_5b"]["params"]["vae"]
    assert five.text_encoder == ref["wan2.2_ti2v_5b"]["params"]["text_encoder"]
    assert MODELS["wan2.1-t2v-14b"].params.dit_per_expert == ref["wan2.1_t2v_14b_shape"]["dit_params"]


@pytest.mark.parametrize("key", sorted(MODELS))
def test_parameter_counts_match_the_built_modules(key):
    torch = pytest.importorskip("torch")
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, UMT5Config, UMT5EncoderModel

    spec = MODELS[key]

    def count(module):
        return sum(p.numel() for p in module.parameters())

    with torch.device("meta"):
        assert count(WanTransformer3DModel(**spec.transformer)) == spec.params.dit_per_expert
        assert count(AutoencoderKLWan(**spec.vae)) == spec.params.vae
        assert count(UMT5EncoderModel(UMT5Config(**spec.text_encoder))) == spec.params.text_encoder
        if spec.image_encoder:
            clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**spec.image_encoder))
            assert count(clip) == spec.params.image_encoder


@pytest.mark.parametrize(("key", "steps", "shift", "high"), [
    ("wan2.2-t2v-a14b", 40, 3.0, 13), ("wan2.2-t2v-a14b", 40, 5.0, 17), ("wan2.2-t2v-a14b", 40, 12.0, 26),
    ("wan2.2-t2v-a14b", 50, 3.0, 16), ("wan2.2-i2v-a14b", 40, 3.0, 11), ("wan2.2-i2v-a14b", 40, 5.0, 15),
    ("wan2.2-i2v-a14b", 40, 12.0, 23), ("wan2.2-i2v-a14b", 50, 5.0, 18), ("wan2.1-t2v-14b", 40, 3.0, 40),
])
def test_expert_split_follows_the_flow_scheduler(key, steps, shift, high):
    assert high_noise_steps(MODELS[key], steps, shift) == high


def test_expert_split_matches_the_diffusers_scheduler():
    pytest.importorskip("diffusers")
    from diffusers import UniPCMultistepScheduler

    spec = MODELS["wan2.2-t2v-a14b"]
    for steps, shift in [(40, 3.0), (40, 12.0), (7, 5.0)]:
        s = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                    num_train_timesteps=1000, flow_shift=shift)
        s.set_timesteps(steps)
        expected = sum(1 for t in s.timesteps if t >= spec.boundary_ratio * 1000)
        assert high_noise_steps(spec, steps, shift) == expected


@pytest.mark.parametrize(("key", "h", "w", "f", "tokens"), [
    ("wan2.2-ti2v-5b", 704, 1280, 121, 27_280), ("wan2.2-ti2v-5b", 704, 1280, 81, 18_480),
    ("wan2.1-t2v-14b", 480, 832, 81, 32_760), ("wan2.1-t2v-14b", 720, 1280, 81, 75_600),
])
def test_tokens_match_the_pipeline_latents(key, h, w, f, tokens):
    g = geometry(Workload(model=key, height=h, width=w, frames=f, steps=1, guidance=5.0))
    assert g.tokens == tokens


def test_only_per_token_modulation_adds_modulation_traffic():
    """TI2V-5B expands the timestep per token (diffusers' expand_timesteps): 124 extra bytes per token
    per hidden element per block per forward; the Wan2.1 DiTs broadcast one vector and add none."""
    five = geometry(Workload(model="wan2.2-ti2v-5b", height=704, width=1280, frames=121, steps=1, guidance=5.0))
    assert MODELS["wan2.2-ti2v-5b"].expand_timesteps
    assert five.modulation_bytes == 124 * 27_280 * 3072 * 30
    assert five.per_step(five.modulation_bytes) == 2 * five.modulation_bytes  # CFG: two forwards
    for key in ("wan2.1-t2v-14b", "wan2.1-t2v-1.3b", "wan2.2-t2v-a14b"):
        g = geometry(Workload(model=key, height=480, width=832, frames=81, steps=1, guidance=5.0))
        assert not MODELS[key].expand_timesteps and g.modulation_bytes == 0.0


def test_bad_workloads_get_one_line_errors():
    with pytest.raises(WanfitError, match=r"frames must be 4k\+1.*117 or 121"):
        Workload(height=704, width=1280, frames=120, steps=50, guidance=5.0)
    with pytest.raises(WanfitError, match=r"height 720 is not a multiple of 32.*704 or 736"):
        Workload(height=720, width=1280, frames=121, steps=50, guidance=5.0)
    with pytest.raises(WanfitError, match=r"unknown model 'wan2.2-ti2v-5' \(closest: wan2.2-ti2v-5b"):
        get_model("wan2.2-ti2v-5")


def test_defaults_come_from_each_model():
    wl = Workload.for_model("wan2.2-t2v-a14b")
    assert (wl.height, wl.width, wl.frames, wl.steps, wl.guidance, wl.guidance_2) == (720, 1280, 81, 40, 4.0, 3.0)
    assert Workload.for_model(frames=361).frames == 361


def test_shipped_data_is_found_inside_an_installed_package():
    """A wheel ships profiles/ and calibration/ in wanfit/data/ (pyproject's force-include): the path must
    point into the package whichever module of it asks."""
    from pathlib import Path

    import wanfit
    from wanfit.vocabulary import paths

    assert Path(wanfit.__file__).resolve().parent / "data" == paths._PACKAGE_DATA
    assert paths.profiles_dir().is_dir() and any(paths.profiles_dir().glob("*.json"))
    assert (paths.shipped_calibration_dir() / "h100").is_dir()
