"""The calibration grid: which sizes and plans `wanfit calibrate` measures for each model it calibrates.

Pure data (the `plan` path reads it to say which model's calibration stands in for another's).
The grid is chosen to make the fits good, not to be a cross product: the baseline plan at sizes
and frame counts spread over the token range (with the VAE decode at each, since decode memory
depends on pixels and frames), and each plan knob at one to three points: its effect is composed by
the planner from the measured weights and per-stage costs. Knob points that do not need a decode
stop at latents to save GPU time.
"""

from wanfit.vocabulary.workload import Plan

BASE = Plan()

# (height, width, frames, steps, decode). Steps: 1 warm-up + steady steps; fewer for long points.
GRIDS: dict[str, list[tuple[Plan, list[tuple[int, int, int, int, bool]]]]] = {
    "wan2.2-ti2v-5b": [
        (BASE, [(480, 832, 41, 3, True), (480, 832, 81, 3, True), (704, 1280, 41, 3, True), (704, 1280, 81, 3, True),
                (704, 1280, 121, 2, True), (1280, 704, 61, 3, True), (704, 1280, 201, 2, True)]),
        (Plan(vae_tiling=True), [(480, 832, 81, 1, True), (704, 1280, 41, 1, True), (704, 1280, 121, 1, True)]),
        (Plan(dit_dtype="fp8"), [(480, 832, 81, 3, False), (704, 1280, 121, 3, False)]),
        (Plan(dit_dtype="fp32"), [(480, 832, 81, 3, False), (704, 1280, 81, 3, False)]),
        (Plan(offload="model"), [(704, 1280, 81, 3, True), (480, 832, 81, 3, False)]),
        (Plan(offload="group"), [(480, 832, 81, 3, False), (704, 1280, 121, 3, False)]),
        # Sequential offload: the steps at four sizes, the (streamed) VAE decode at two of them.
        (Plan(offload="sequential"), [(480, 832, 41, 2, False), (704, 1280, 41, 2, False), (480, 832, 81, 3, True),
                                      (704, 1280, 81, 3, True)]),
        (Plan(text_encoder="cpu"), [(480, 832, 81, 1, False)]),
        (Plan(text_encoder="int8"), [(480, 832, 81, 1, False)]),
        (Plan(expandable_segments=False), [(704, 1280, 121, 3, True)]),
    ],
    "wan2.1-t2v-14b": [
        (BASE, [(480, 832, 21, 2, True), (480, 832, 41, 2, True), (480, 832, 81, 2, True), (720, 1280, 41, 2, True),
                (720, 1280, 81, 2, True)]),
        (Plan(dit_dtype="fp8"), [(480, 832, 81, 2, False)]),
        (Plan(dit_dtype="fp32"), [(480, 832, 81, 2, False)]),
        (Plan(offload="model"), [(480, 832, 81, 2, True)]),
        (Plan(offload="group"), [(480, 832, 81, 2, False)]),
        (Plan(vae_tiling=True), [(480, 832, 81, 1, True)]),
        (Plan(offload="sequential"), [(480, 832, 81, 2, True)]),
    ],
    "wan2.1-t2v-1.3b": [
        (BASE, [(480, 832, 41, 3, True), (480, 832, 81, 3, True), (720, 1280, 41, 3, True), (720, 1280, 81, 2, True)]),
        (Plan(dit_dtype="fp8"), [(480, 832, 81, 3, False)]),
        (Plan(offload="group"), [(480, 832, 81, 3, False)]),
        (Plan(offload="model"), [(480, 832, 81, 3, False)]),
        (Plan(offload="sequential"), [(480, 832, 41, 3, True)]),
    ],
}
# The official Wan2.2 code (runtime wan): its own knobs only. Every point decodes (generate() always does).
# Its baseline for the fits is the bf16 resident DiT (--convert_model_dtype, --offload_model False) with the
# runtime's own attention kernel; fp32 weights (its default), --offload_model, --t5_cpu and the cuDNN kernel
# class at one or two points each, composed by the planner like diffusers' knobs.
WAN_BASE = Plan(runtime="wan", offload="none", dit_dtype="bf16")
OFFICIAL_GRIDS: dict[str, list[tuple[Plan, list[tuple[int, int, int, int, bool]]]]] = {
    "wan2.2-ti2v-5b": [
        (WAN_BASE, [(480, 832, 41, 3, True), (480, 832, 81, 3, True), (704, 1280, 41, 3, True),
                    (704, 1280, 81, 3, True), (704, 1280, 121, 2, True)]),
        (Plan(runtime="wan", offload="none", dit_dtype="fp32"), [(480, 832, 81, 3, True), (704, 1280, 121, 2, True)]),
        (Plan(runtime="wan", offload="model", dit_dtype="bf16"), [(704, 1280, 81, 3, True)]),
        (Plan(runtime="wan", offload="none", text_encoder="cpu", dit_dtype="bf16"), [(480, 832, 81, 2, True)]),
        (Plan(runtime="wan", offload="none", dit_dtype="bf16", attention="cudnn"), [(704, 1280, 81, 3, True),
                                                                                      (704, 1280, 121, 2, True)]),
    ],
    # The two 14B experts: three steps at 480p cross the expert switch of t2v-A14B's shift 12 (the third step's
    # timestep is 857 < the 875 boundary), so the swap (init_on_cpu moves the experts whatever --offload_model)
    # is measured; two steps at 720p time the steady step. No fp32 point: the official build keeps both fp32
    # experts and T5 in host memory (2 x 53 + 11 = 117 GiB), which the lent machines' 128 GiB cannot hold
    # beside the process; fp32 is composed from the counted weights and the 5B's fp32 points. A point costs
    # 1.5-2.5 GPU-minutes (a minute of it building two random 14B experts), so each knob has one.
    "wan2.2-t2v-a14b": [
        (WAN_BASE, [(480, 832, 41, 3, True), (480, 832, 81, 3, True), (720, 1280, 81, 2, True)]),
        (Plan(runtime="wan", offload="none", dit_dtype="bf16", attention="cudnn"), [(720, 1280, 41, 2, True)]),
        (Plan(runtime="wan", offload="model", dit_dtype="bf16"), [(480, 832, 41, 3, True)]),
    ],
}
# Grids without the reset-check repeat: the official runner's reset was checked on the 5B (the same runner),
# and a repeated 14B point would cost as much as a knob's.
NO_RESET_CHECK = {("wan", "wan2.2-t2v-a14b")}
# A repeat of the first baseline point at the end of its (reused) process: shows that the reset
# between points gives the same peaks as a fresh process.
RESET_CHECK_TAG = "reset-check"
# One baseline point per model loaded with `from_pretrained` from a checkpoint saved from random
# weights just before (so from the page cache): a real load's init time, which the random builds of
# the grid (random-number generation on the GPU) do not give. Stops at latents.
CHECKPOINT_POINT = (480, 832, 41, 2, False)
