"""Properties of the predictions (hypothesis), from the H100 calibration of Wan2.2-TI2V-5B.

- The predicted peak (device level) and need never decrease when frames or resolution grow.
- They never increase when a plan moves memory off the GPU, along the orders that hold for how
  the plans place weights (weights.resident_gib):
    offload: none >= model >= sequential and none >= group >= sequential. Model and group offload
      are not ordered: group keeps the VAE resident and reserves a transfer-stream pool, model
      offload keeps one whole model at a time, so either can be larger (measured: group 15.5 GiB
      vs model 13.0 GiB at 480x832x81 without decode).
    text encoder: cpu is never above gpu or int8; gpu >= int8 without offload. Under an offload
      mode an int8 encoder is not in the offload chain (it stays resident), so it is not ordered
      against a bf16 encoder that the chain moves off.
    DiT: fp32 >= bf16 >= fp8. VAE tiling: off >= on up to 361 frames (the longest standard
      scenario); far beyond it the tiles a tiled decode keeps can outweigh an untiled decode.
- Predicted time never decreases with more steps or frames.

Memory comparisons allow 0.01 GiB: the fitted per-knob constants carry measurement noise of that
order (e.g. fp8 storage adds 0.001 GiB of activation memory, measured; under sequential offload,
where no DiT weight is resident, that is the only difference between fp8 and bf16).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from planner_fixtures import MODEL, calibration
from wanfit.model.predict import predict
from wanfit.vocabulary.workload import DIT_DTYPES, OFFLOADS, TEXT_ENCODERS, Plan, Workload

STRIDE = 32  # TI2V-5B: VAE x16 x patch 2
EPS = 1e-9
MEMORY_TOLERANCE_GIB = 0.01

frames = st.integers(min_value=0, max_value=90).map(lambda k: 4 * k + 1)  # 1 .. 361
long_frames = st.integers(min_value=0, max_value=250).map(lambda k: 4 * k + 1)  # up to 1001
sides = st.integers(min_value=8, max_value=48).map(lambda k: k * STRIDE)  # 256 .. 1536
steps = st.integers(min_value=1, max_value=60)
plans = st.builds(Plan, offload=st.sampled_from(OFFLOADS), text_encoder=st.sampled_from(TEXT_ENCODERS),
                  dit_dtype=st.sampled_from(DIT_DTYPES), vae_tiling=st.booleans())

SETTINGS = settings(max_examples=60, deadline=None)


def run(plan: Plan, height: int = 704, width: int = 1280, n_frames: int = 121, n_steps: int = 20):
    wl = Workload(model=MODEL, height=height, width=width, frames=n_frames, steps=n_steps, guidance=5.0)
    return predict(wl, plan, calibration())


def memory(p) -> tuple[float, float]:
    return p.peak_vram_gib, p.need_gib


def not_above(smaller, larger) -> bool:
    return all(a <= b + MEMORY_TOLERANCE_GIB for a, b in zip(memory(smaller), memory(larger), strict=True))


@SETTINGS
@given(plan=plans, h=sides, w=sides, f=long_frames, more=st.integers(min_value=1, max_value=40))
def test_peak_never_decreases_with_frames(plan, h, w, f, more):
    assert not_above(run(plan, h, w, f), run(plan, h, w, f + 4 * more))


@SETTINGS
@given(plan=plans, h=sides, w=sides, f=frames, dh=st.integers(0, 8), dw=st.integers(0, 8))
def test_peak_never_decreases_with_resolution(plan, h, w, f, dh, dw):
    assert not_above(run(plan, h, w, f), run(plan, h + dh * STRIDE, w + dw * STRIDE, f))


@SETTINGS
@given(plan=plans, h=sides, w=sides, f=frames)
def test_offloading_more_never_needs_more(plan, h, w, f):
    by = {o: run(plan.model_copy(update={"offload": o}), h, w, f) for o in OFFLOADS}
    for less, more in (("none", "model"), ("none", "group"), ("model", "sequential"), ("group", "sequential")):
        assert not_above(by[more], by[less]), (less, more)


@SETTINGS
@given(plan=plans, h=sides, w=sides, f=frames)
def test_text_encoder_placement(plan, h, w, f):
    by = {t: run(plan.model_copy(update={"text_encoder": t}), h, w, f) for t in TEXT_ENCODERS}
    assert not_above(by["cpu"], by["gpu"]) and not_above(by["cpu"], by["int8"])
    if plan.offload == "none":
        assert not_above(by["int8"], by["gpu"])


@SETTINGS
@given(plan=plans, h=sides, w=sides, f=frames)
def test_dit_dtype_and_vae_tiling(plan, h, w, f):
    by = {d: run(plan.model_copy(update={"dit_dtype": d}), h, w, f) for d in DIT_DTYPES}
    assert not_above(by["bf16"], by["fp32"]) and not_above(by["fp8"], by["bf16"])
    tiled = run(plan.model_copy(update={"vae_tiling": True}), h, w, f)
    untiled = run(plan.model_copy(update={"vae_tiling": False}), h, w, f)
    assert not_above(tiled, untiled)


@SETTINGS
@given(plan=plans, f=long_frames, n=steps, more_steps=st.integers(1, 50), more_frames=st.integers(1, 40))
def test_time_never_decreases_with_steps_or_frames(plan, f, n, more_steps, more_frames):
    base = run(plan, n_frames=f, n_steps=n)
    assert run(plan, n_frames=f, n_steps=n + more_steps).duration_s >= base.duration_s - EPS
    longer = run(plan, n_frames=f + 4 * more_frames, n_steps=n)
    assert longer.duration_s >= base.duration_s - EPS
    assert longer.step_s >= base.step_s - EPS
