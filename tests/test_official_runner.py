"""The official-runtime runner drives the real official Wan2.2 code (PyPI wan22 or a checkout) on the CPU with
tiny architectures: every task, every knob, the expert swap, a checkpoint through the official constructor,
which `wan` ran, and the one-line errors."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch

from wanfit.measure.official import attention as attn
from wanfit.measure.official import loader
from wanfit.measure.official.build import save_official_checkpoint
from wanfit.measure.official.knobs import OfficialKnobs, knobs_for, user_stage_breakdown
from wanfit.measure.official.runner import run_official_point
from wanfit.measure.official.tiny import tiny_arch
from wanfit.vocabulary.catalog import MODELS, official_task
from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.workload import Plan, Workload

# The README's test command installs the official code (wan22, without its requirements): these tests run,
# they do not skip, wherever the tests run.
assert loader.importlib.util.find_spec("wan") is not None, "pip install --no-deps wan22==2.2.11 (README)"

pytestmark = pytest.mark.slow
LAYERS = tiny_arch().dit["num_layers"]


def tiny_workload(key: str, steps: int = 3) -> Workload:
    stride = MODELS[key].spatial_stride
    return Workload(model=key, height=stride, width=2 * stride, frames=5, steps=steps, guidance=5.0,
                    guidance_2=MODELS[key].defaults.guidance_2)


def run(key: str, knobs: OfficialKnobs, steps: int = 3, **kwargs):
    m = run_official_point(tiny_workload(key, steps), knobs, device="cpu", arch=tiny_arch(), **kwargs)
    assert m.status == "ok", m.error
    return m


def check_stages(m, steps: int) -> None:
    names = [(s.name, s.index) for s in m.stages]
    assert names == [("init", None), ("text_encode", None), ("prepare", None),
                     *[("step", i) for i in range(1, steps + 1)], ("vae_decode", None), ("total", None)]
    assert m.steps_run == steps and all(s.time_s > 0 for s in m.stages)
    assert m.stage("total").time_s >= 0.99 * sum(s.time_s for s in m.stages if s.name != "total")
    assert 0 < m.extra["vae_decode_call_s"] <= m.stage("vae_decode").time_s
    code = m.environment.wan
    assert code is not None and code.path.endswith("wan") and code.version == "2.2.11"
    assert m.environment.attention_kernel == "sdpa-math"
    # both CFG forwards of every step, self- and cross-attention in every block, all through the route
    forwards = sum(v for k, v in m.extra.items() if k.startswith("dit_forwards."))
    assert forwards == 2 * steps
    assert m.extra["attention_calls"] == forwards * LAYERS * 2


KNOBS = [OfficialKnobs(), OfficialKnobs(offload_model=True, t5_cpu=True, convert_model_dtype=True),
         OfficialKnobs(offload_model=True)]


@pytest.fixture(scope="module")
def ti2v_runs():
    return {k: run("wan2.2-ti2v-5b", k) for k in KNOBS}


@pytest.mark.parametrize("knobs", KNOBS, ids=lambda k: k.label())
def test_ti2v_runs_the_official_t2v_path_with_each_knob(ti2v_runs, knobs):
    m = ti2v_runs[knobs]
    check_stages(m, 3)
    assert all(s.expert is None for s in m.steps())
    assert knobs_for(m.plan) == knobs  # the recorded plan maps back onto the knobs that ran
    assert m.extra["shift"] == 5.0


def test_convert_model_dtype_halves_the_dit_and_leaves_t5_and_vae(ti2v_runs):
    fp32, bf16 = ti2v_runs[KNOBS[0]].extra, ti2v_runs[KNOBS[1]].extra
    assert bf16["weights_gib.transformer"] == pytest.approx(fp32["weights_gib.transformer"] / 2, rel=1e-6)
    assert bf16["weights_gib.text_encoder"] == fp32["weights_gib.text_encoder"]  # bf16 either way
    assert bf16["weights_gib.vae"] == fp32["weights_gib.vae"]  # fp32 either way


def test_t2v_a14b_swaps_experts_within_the_steps():
    m = run("wan2.2-t2v-a14b", OfficialKnobs(offload_model=True, convert_model_dtype=True))
    check_stages(m, 3)
    # the official shift 12.0 at 3 steps: timesteps 999, 959 >= 875 (high noise), then 856 (low noise)
    assert m.extra["shift"] == 12.0 and [s.expert for s in m.steps()] == [1, 1, 2]
    assert m.extra["dit_forwards.transformer"] == 4 and m.extra["dit_forwards.transformer_2"] == 2
    assert m.switch_step().index == 3


def test_i2v_a14b_runs_with_an_image():
    m = run("wan2.2-i2v-a14b", OfficialKnobs(t5_cpu=True))
    check_stages(m, 3)
    assert [s.expert for s in m.steps()] == [1, 1, 2]  # shift 5.0: 999, 908 >= 900, then 713


def test_a_tiny_checkpoint_loads_through_the_official_constructor(tmp_path):
    wan = loader.load_wan()
    ckpt = save_official_checkpoint(wan, "ti2v-5B", MODELS["wan2.2-ti2v-5b"], tmp_path / "ti2v", arch=tiny_arch())
    assert {p.name for p in ckpt.iterdir()} >= {"config.json", "models_t5_umt5-xxl-enc-bf16.pth", "Wan2.2_VAE.pth"}
    m = run("wan2.2-ti2v-5b", OfficialKnobs(), steps=1, checkpoint=ckpt)
    assert m.source == "checkpoint"
    check_stages(m, 1)


def test_only_the_used_wan_modules_load():
    loader.load_wan()
    assert "wan.textimage2video" in sys.modules
    assert not [k for k in sys.modules if k.startswith(("wan.speech2video", "wan.animate", "wan.modules.s2v"))]


def test_user_stage_names_recover_the_users_breakdown(ti2v_runs):
    m = ti2v_runs[KNOBS[0]]
    names = list(user_stage_breakdown(m))
    assert names[:2] == ["Model_Initialization", "T5_Encoding"] and names[-2:] == ["VAE_Decoding", "Total_Execution"]
    assert "Step_3_Inference" in names


def test_plan_knobs_map_onto_the_official_flags():
    k = knobs_for(Plan(runtime="wan", offload="model", text_encoder="cpu", dit_dtype="bf16", attention="cudnn"))
    assert (k.offload_model, k.t5_cpu, k.convert_model_dtype, k.attention) == (True, True, True, "cudnn")
    k = knobs_for(Plan(runtime="wan", dit_dtype="fp32"))
    assert (k.offload_model, k.t5_cpu, k.convert_model_dtype) == (False, False, False)
    with pytest.raises(WanfitError, match="runs runtime wan plans"):
        knobs_for(Plan(dit_dtype="fp32"))
    for knobs in ({"offload": "group"}, {"text_encoder": "int8"}, {"dit_dtype": "fp8"}, {"vae_tiling": True}):
        with pytest.raises(WanfitError, match="wan runtime has no"):
            Plan(runtime="wan", **knobs)


@pytest.mark.parametrize("model", ["wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.1-i2v-14b"])
def test_wan21_models_are_a_one_line_error(model):
    assert official_task("wan2.2-t2v-a14b") == "t2v-A14B"
    with pytest.raises(WanfitError) as e:
        run_official_point(Workload.for_model(model, steps=1), OfficialKnobs(), device="cpu")
    assert "\n" not in str(e.value) and "no task for" in str(e.value)


def test_missing_wan_is_a_one_line_error_naming_the_install(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "wan")
    monkeypatch.setattr(loader.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WanfitError) as e:
        loader.load_wan()
    assert "\n" not in str(e.value) and "pip install --no-deps wan22==2.2.11" in str(e.value)
    with pytest.raises(WanfitError, match="no official Wan package"):
        loader.load_wan(tmp_path)


def test_kernels_resolve_by_class_and_the_sdpa_route_honours_varlen(monkeypatch):
    monkeypatch.setattr(attn, "_has", lambda module: False)
    assert [attn.resolve_kernel(k, cuda=True) for k in attn.ATTENTION_KNOBS] == [
        "sdpa-flash", "sdpa-flash", "sdpa-cudnn", "sdpa-cudnn"]
    assert attn.resolve_kernel("fa3", cuda=False) == "sdpa-math"
    with pytest.raises(WanfitError):
        attn.resolve_kernel("xformers", cuda=False)
    route = attn.AttentionRoute(kernel="sdpa-math")
    q, k, v = (torch.randn(2, 6, 2, 8) for _ in range(3))
    out = attn.sdpa_attention(route)(q, k, v, k_lens=torch.tensor([6, 3]))
    assert out.dtype == q.dtype and out.shape == q.shape
    half = [t.to(torch.bfloat16).transpose(1, 2) for t in (q[1:], k[1:, :3], v[1:, :3])]
    ref = torch.nn.functional.scaled_dot_product_attention(*half).transpose(1, 2).float()
    assert torch.allclose(out[1:], ref, atol=1e-2)  # sample 2 attends only its first 3 keys


def test_a_checkout_records_its_commit(tmp_path):
    """Last: it loads `wan` from another directory (the next load_wan() goes back to the installed one)."""
    if shutil.which("git") is None:
        pytest.skip("no git")
    repo = tmp_path / "Wan2.2"
    shutil.copytree(loader.load_wan().code.path, repo / "wan", ignore=shutil.ignore_patterns("__pycache__"))

    def git(*args):
        return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    git("add", "wan")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "wan")
    m = run("wan2.2-ti2v-5b", OfficialKnobs(), steps=1, wan_repo=repo)
    code = m.environment.wan
    assert code.path == str((repo / "wan").resolve()) and code.version is None
    assert code.commit == git("rev-parse", "HEAD").strip() and code.dirty is False
    loader.load_wan()  # back to the installed package for whatever runs next


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kernel", ["fa2", "fa3", "cudnn"])
def test_on_the_gpu_each_kernel_runs_and_is_recorded(kernel):
    wl = Workload(model="wan2.2-ti2v-5b", height=64, width=128, frames=9, steps=2, guidance=5.0)
    m = run_official_point(wl, OfficialKnobs(offload_model=True, attention=kernel), device="cuda", arch=tiny_arch())
    assert m.status == "ok", m.error
    assert m.environment.attention_kernel == attn.resolve_kernel(kernel, cuda=True)
    assert m.stage("step", 1).torch_peak_allocated_gib > 0 and m.extra["step_1_loading_s"] > 0
    assert m.resident_weights_gib["transformer"] == 0  # init_on_cpu: the DiT waits in host memory
