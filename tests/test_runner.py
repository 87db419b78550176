"""The runner drives the real diffusers Wan pipelines on the CPU with tiny configs."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from wanfit.measure.runner import run_point  # noqa: E402
from wanfit.measure.tiny import tiny_spec  # noqa: E402
from wanfit.model.geometry import high_noise_steps  # noqa: E402
from wanfit.vocabulary.catalog import MODELS  # noqa: E402
from wanfit.vocabulary.workload import Plan, Workload  # noqa: E402

pytestmark = pytest.mark.slow


def tiny_workload(key: str, steps: int = 3, frames: int = 5, guidance: float = 5.0) -> Workload:
    stride = MODELS[key].spatial_stride
    return Workload(model=key, height=2 * stride, width=3 * stride, frames=frames, steps=steps, guidance=guidance,
                    guidance_2=MODELS[key].defaults.guidance_2)


@pytest.mark.parametrize("key", sorted(MODELS))
def test_every_model_runs_end_to_end_with_stages_in_order(key):
    wl = tiny_workload(key)
    m = run_point(wl, Plan(), spec=tiny_spec(key), device="cpu")
    assert m.status == "ok", m.error
    names = [(s.name, s.index) for s in m.stages]
    assert names == [("init", None), ("text_encode", None), ("prepare", None), ("step", 1), ("step", 2),
                     ("step", 3), ("vae_decode", None), ("total", None)]
    assert m.steps_run == 3
    assert all(s.time_s > 0 for s in m.stages)
    total = m.stage("total")
    assert total.time_s >= sum(s.time_s for s in m.stages if s.name != "total") * 0.99
    assert m.environment.torch == torch.__version__
    assert m.source == "random"
    if MODELS[key].experts == 2:
        experts = [s.expert for s in m.steps()]
        high = high_noise_steps(MODELS[key], 3)
        assert experts == [1] * high + [2] * (3 - high)


def test_cfg_off_runs_one_prompt():
    m = run_point(tiny_workload("wan2.1-t2v-1.3b", guidance=1.0), Plan(), spec=tiny_spec("wan2.1-t2v-1.3b"),
                  device="cpu")
    assert m.status == "ok", m.error


@pytest.mark.parametrize("plan", [Plan(text_encoder="cpu"), Plan(dit_dtype="fp32"), Plan(dit_dtype="fp8")],
                         ids=lambda p: p.label())
def test_cpu_capable_plan_knobs_run(plan):
    key = "wan2.2-ti2v-5b"
    m = run_point(tiny_workload(key), plan, spec=tiny_spec(key), device="cpu")
    assert m.status == "ok", m.error


def test_vae_tiling_runs_on_a_size_that_tiles():
    key = "wan2.1-t2v-1.3b"  # Wan2.1 VAE tiles above 256 px
    wl = Workload(model=key, height=288, width=288, frames=5, steps=1, guidance=5.0)
    m = run_point(wl, Plan(vae_tiling=True), spec=tiny_spec(key), device="cpu")
    assert m.status == "ok", m.error


def test_int8_text_encoder_runs_where_torchao_is_installed():
    pytest.importorskip("torchao", reason="int8 text encoder needs torchao (a gpu-extra install)")
    key = "wan2.1-t2v-1.3b"
    m = run_point(tiny_workload(key), Plan(text_encoder="int8"), spec=tiny_spec(key), device="cpu")
    assert m.status == "ok", m.error


@pytest.mark.parametrize("offload", ["model", "group", "sequential"])
def test_offload_modes_need_cuda_and_say_so(offload):
    if torch.cuda.is_available():
        pytest.skip("covered by the GPU tests on a CUDA machine")
    key = "wan2.1-t2v-1.3b"
    m = run_point(tiny_workload(key), Plan(offload=offload), spec=tiny_spec(key), device="cpu")
    assert m.status == "error" and m.failed_stage == "init"
    assert "needs a CUDA device" in m.error


def test_latent_only_point_has_no_decode_stage():
    key = "wan2.1-t2v-1.3b"
    m = run_point(tiny_workload(key), Plan(), spec=tiny_spec(key), device="cpu", decode=False)
    assert m.status == "ok" and not m.decoded
    assert m.stage("vae_decode") is None and len(m.steps()) == 3


def test_oom_is_recorded_with_its_stage_and_keeps_earlier_stages(monkeypatch):
    """An OOM in step 2 ends the run as a data point: status oom, the stage named, steps kept."""
    from diffusers import WanTransformer3DModel

    calls = {"n": 0}
    original = WanTransformer3DModel.forward

    def forward(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # CFG: 2 forwards per step, so the 3rd forward is in step 2
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.60 GiB")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(WanTransformer3DModel, "forward", forward)
    key = "wan2.1-t2v-1.3b"
    m = run_point(tiny_workload(key), Plan(), spec=tiny_spec(key), device="cpu")
    assert m.status == "oom"
    assert m.failed_stage == "step 2"
    assert [s.index for s in m.steps()] == [1]
    assert m.stage("init") is not None and m.stage("total") is not None
    assert "Tried to allocate" in m.error


def test_reused_pipeline_skips_init_and_gives_same_shapes():
    from wanfit.measure.runner import PipelineCache

    key = "wan2.2-ti2v-5b"
    cache = PipelineCache()
    first = run_point(tiny_workload(key), Plan(), spec=tiny_spec(key), device="cpu", cache=cache)
    second = run_point(tiny_workload(key, frames=9), Plan(), spec=tiny_spec(key), device="cpu", cache=cache)
    assert first.stage("init") is not None and second.stage("init") is None
    assert second.status == "ok" and first.id != second.id


@pytest.mark.parametrize(("plan", "on_host"), [
    (Plan(), set()),
    (Plan(text_encoder="cpu"), {"text_encoder"}),
    (Plan(text_encoder="int8", offload="model"), {"transformer", "vae", "image_encoder"}),
    (Plan(offload="model"), {"transformer", "vae", "image_encoder", "text_encoder"}),
    (Plan(offload="sequential", text_encoder="cpu"), {"transformer", "vae", "image_encoder", "text_encoder"}),
    (Plan(offload="group"), {"transformer", "text_encoder"}),
    (Plan(offload="group", text_encoder="int8"), {"transformer"}),
])
def test_random_weights_the_plan_keeps_on_the_host_leave_the_gpu_once_built(plan, on_host):
    """A capped run must not hold every weight at init when the plan keeps some in host memory."""
    from wanfit.measure.build import host_at_start

    assert host_at_start(plan) == on_host


@pytest.mark.parametrize(("plan", "built_on_host"), [
    (Plan(), set()),
    (Plan(dit_dtype="fp8"), {"transformer"}),
    (Plan(text_encoder="int8"), {"transformer", "vae", "image_encoder"}),
    (Plan(text_encoder="cpu", dit_dtype="fp8"), {"transformer", "text_encoder"}),
    (Plan(offload="group", text_encoder="int8"), {"transformer", "vae", "image_encoder"}),
])
def test_random_weights_are_built_where_a_checkpoint_load_puts_them(plan, built_on_host):
    """from_pretrained loads into host memory; a DiT is cast to fp8 there and an int8 encoder is quantised
    on a GPU that holds nothing else yet: the random build starts those components on the host too."""
    from wanfit.measure.build import built_in_host_memory

    assert built_in_host_memory(plan) == built_on_host


def test_a_pinned_attention_kernel_goes_through_diffusers_dispatcher():
    from wanfit.measure.build import build_random
    from wanfit.measure.placement import DIFFUSERS_ATTENTION_BACKENDS, apply_plan, attention_backend

    assert attention_backend("auto") is None
    assert attention_backend("cudnn") == "_native_cudnn"
    # Without the flash-attn packages (as here) the SDPA backend of the same kernel class.
    assert attention_backend("fa2") == "_native_flash" and attention_backend("fa3") == "_native_cudnn"
    assert set(DIFFUSERS_ATTENTION_BACKENDS) == {"fa2", "fa3", "cudnn"}
    comp = build_random(tiny_spec("wan2.1-t2v-1.3b"), Plan(attention="cudnn"), "cpu")
    apply_plan(comp, Plan(attention="cudnn"), "cpu")
    backends = {getattr(m.processor, "_attention_backend", None) for m in comp.pipe.transformer.modules()
                if hasattr(m, "processor")}
    assert backends == {"_native_cudnn"}
