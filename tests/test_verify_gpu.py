"""`wanfit verify` end to end on a real GPU: the real runner in a fresh process, the real planner,
the comparison, the report files. Needs a CUDA GPU and shipped calibrations for the local GPU.

These check the machinery (stages measured, steps extrapolated, the cap applied and recorded,
files written), not the prediction accuracy: that is what the committed verify reports and
docs/accuracy.md are for.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

from wanfit.vocabulary.workload import Plan, Workload  # noqa: E402

# Small enough to run in a minute or two: the 1.3B model at 256x256, 9 frames, 2 of 8 steps.
WORKLOAD = Workload.for_model("wan2.1-t2v-1.3b", height=256, width=256, frames=9, steps=8)


def _local_profile():
    from wanfit.measure.local_gpu import local_gpu
    from wanfit.vocabulary.profiles import match_local_gpu

    local = local_gpu()
    assert local is not None, "nvidia-smi should see the GPU that torch sees"
    profile = match_local_gpu(*local)
    assert profile is not None, f"no GPU profile matches the local {local[0]} ({local[1]:.1f} GiB)"
    return profile


def _check_common(r, tmp_path):
    from wanfit.views.verify_report import plot_memory, render_markdown, report_stem, write_json

    m = r.measurement
    assert m.status == "ok", m.error
    assert (r.steps_run, r.steps_requested, r.extrapolated) == (2, 8, True)
    assert [s.index for s in m.steps()] == [1, 2]
    stages = {row.stage: row for row in r.rows}
    for name in ("init", "text_encode", "denoise", "vae_decode", "total"):
        assert stages[name].measured_time_s and stages[name].measured_time_s > 0, name
        assert stages[name].predicted_peak_gib is not None, name
    assert stages["denoise"].extrapolated and stages["total"].extrapolated
    assert stages["total"].measured_peak_gib > 1.0  # at least the weights and the context
    assert m.timeline, "the NVML poller should have sampled device memory"
    assert m.context_gib is not None and m.context_gib > 0
    stem = report_stem(r)
    write_json(r, tmp_path / f"{stem}.json")
    md = render_markdown(r)
    assert "Model_Initialization" in md and "Step_3..8_Inference *" in md
    assert plot_memory(r, tmp_path / f"{stem}.png").stat().st_size > 10_000


def test_tiny_verify_on_the_local_gpu(tmp_path):
    from wanfit.verify.run import run_verify

    profile = _local_profile()
    r = run_verify(WORKLOAD, Plan(), profile.key, steps=2)
    assert r.same_gpu and r.cap is None
    assert r.environment.memory_cap_gib is None
    _check_common(r, tmp_path)


def test_tiny_verify_capped_to_a_smaller_gpu(tmp_path):
    from wanfit.verify.run import run_verify
    from wanfit.vocabulary.profiles import load_profiles

    local = _local_profile()
    smaller = [p for p in load_profiles().values() if p.memory_gib < 0.9 * local.memory_gib and p.memory_gib >= 20]
    target = min(smaller, key=lambda p: p.memory_gib)  # the tightest cap this small job still fits under
    r = run_verify(WORKLOAD, Plan(), target.key, steps=2)
    assert not r.same_gpu and r.cap is not None
    assert r.environment.memory_cap_gib == pytest.approx(target.memory_gib)
    assert r.cap.torch_budget_gib + r.cap.outside_torch_gib == pytest.approx(target.memory_gib)
    # the cap holds: the process never used more device memory than the target has (NVML sampling slack)
    assert r.measurement.peak_device_used_gib <= target.memory_gib + 0.25
    _check_common(r, tmp_path)
