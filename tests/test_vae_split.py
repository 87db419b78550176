"""The VAE decode's kernel split: how kernels are classed, the profiles' figures against the committed
profiles of real decodes, and the calibration's own measurement taking precedence in the planner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner_fixtures import calibration
from wanfit.model.predict import predict
from wanfit.vocabulary.profiles import get_profile
from wanfit.vocabulary.workload import Plan, Workload

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


def test_gemm_kernels_are_the_convolutions_tensor_core_kernels():
    from wanfit.measure.vae_split import is_gemm

    assert is_gemm("sm90_xmma_fprop_implicit_gemm_f32f32_tf32f32_f32_nhwckrsc_nhwc_tilesize256x32x32")
    assert is_gemm("sm80_xmma_fprop_implicit_gemm_indexed_wo_smem_tf32f32_tf32f32_f32_nhwckrsc_nhwc_")
    for name in ("void at::native::elementwise_kernel<128, 2, at::native::gpu_kernel_impl_nocast<a",
                 "void cudnn::engines_precompiled::nchwToNhwcKernel<float, float, float, false, tr",
                 "Memcpy DtoD (Device -> Device)", "void at::native::reduce_kernel<128, 4, at::native::ReduceOp"):
        assert not is_gemm(name), name


@pytest.mark.parametrize("gpu", ["h100", "h200"])
def test_the_profiles_split_is_the_one_their_gpus_decodes_measured(gpu):
    """profiles/<gpu>.json's vae_decode_non_gemm_share recomputed from bench/results/vae-kernels-<gpu>.json."""
    from wanfit.measure.vae_split import is_gemm
    from wanfit.vocabulary.catalog import get_model

    run = json.loads((RESULTS / f"vae-kernels-{gpu}.json").read_text())
    recorded = get_profile(gpu).vae_decode_non_gemm_share
    for case in run["cases"]:
        total = case["kernel_s"]["conv"] + case["kernel_s"]["other"]
        gemm = sum(k["s"] for k in case["top_kernels"] if is_gemm(k["name"]))
        family = get_model(case["model"]).vae_family
        assert recorded[family] == pytest.approx((total - gemm) / total, abs=0.001), family


def test_a_calibrations_own_split_comes_before_its_gpus_profile():
    cal = calibration()
    wl = Workload.for_model(cal.model, frames=81)

    def decode(c) -> float:
        return predict(wl, Plan(), c, get_profile("l40s")).stage("vae_decode").time_s

    with_profile = decode(cal)
    all_gemm = cal.model_copy(update={"ceilings": cal.ceilings.model_copy(
        update={"vae_decode_non_gemm_share": {"wan2.2-vae": 0.0}})})
    all_other = cal.model_copy(update={"ceilings": cal.ceilings.model_copy(
        update={"vae_decode_non_gemm_share": {"wan2.2-vae": 1.0}})})
    # An L40S has far less bandwidth per FLOP than an H100: the non-GEMM part is its slower part.
    assert decode(all_gemm) < with_profile < decode(all_other)
    same_gpu = predict(wl, Plan(), all_other).stage("vae_decode").time_s
    assert same_gpu == predict(wl, Plan(), cal).stage("vae_decode").time_s  # no transfer, no split


def test_a_decode_profiles_on_the_cpu(tmp_path):
    pytest.importorskip("diffusers")
    from wanfit.measure.vae_split import profile_decode

    r = profile_decode("wan2.1-t2v-1.3b", 64, 48, 5, device="cpu")
    assert r["vae"] == "wan2.1-vae" and r["decode_wall_s"] > 0 and r["size"] == "64x48x5"
