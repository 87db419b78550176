"""Remarks written by hand on what bench/accuracy.py measures, for docs/accuracy.md: on the sequential
token ladder, and on the verify runs (READING, each run named by a fragment of its report's file name
in READING_RUNS and numbered in the text as the verify summary numbers it)."""

# What the sequential token ladder (bench/sequential_ladder.py) shows, below its table.
LADDER_READING = (
    "The split bears out the fit's two parts: the stream (the weights at the host's pageable rate, and hooks) "
    "barely moves with the token count, while what accelerate's `empty_cache` at every placed weight adds "
    "(825 calls a forward: the allocator maps the activations afresh leaf after leaf) grows with it. That part "
    "is host-side driver work and varies between hosts: fitted on the calibration sessions' hosts it comes out "
    "10-20 % above this host's at the larger sizes, where the held-out fit fell 11-12 % short of two calibration "
    "points. The host's pageable rate moved from one draw to the next here too (5.07, then 7.84 GB/s for the 5B; "
    "its stream ran at about 7). The 5B's two smallest sizes come out 13 and 21 % short: their stream took "
    "1.67 / 1.63 s against 1.31-1.40 at the larger sizes (less compute for the copies to overlap), and "
    "832x480x81's emptied cache 1.08 s where the next size up took 0.72 (single forwards on a shared host).")


# Remarks on the verify runs; {name} is replaced by the run's number in the generated table (accuracy_verify.run_numbers).
READING = [
    "- Init: a random-weight run's init is random-number generation on the GPU, not a load, so verify shows it "
    "unscored and leaves it out of the total's time. The planner predicts a checkpoint load, fitted from one "
    "`from_pretrained` point per model that `wanfit calibrate` loads from a checkpoint it has just saved (so "
    "from the page cache): 9.6 s for the 1.3B's 13.7 GiB, 7.9 s for the 5B's 22.5 GiB, 12.1 s for the 14B's "
    "37.7 GiB (held-out 35 %: the 1.3B loads slower than its size says, in both sessions measured). The "
    "checkpoint verify runs: the 1.3B (no offload) took 10.9 s with the files in the page cache and 21.9 s "
    "after dropping it; the 5B with model offload 7.1 s and 13.9 s, against 9.6 s predicted for both. A first "
    "load from disk is not predicted, and it is not only init: the weights are mapped from the files, so with a"
    " cold cache the model-offload run also read its text encoder at its first move to the GPU (text encode 7.1"
    " s instead of 2.6 s) and its VAE at the decode (25.9 s instead of 21.2 s).",
    "- A process's first point: every verify run is one, and its text encode took 0.4 to 1.0 s where the "
    "calibration points that reused their process took 0.1 s (CUDA loads kernels lazily, cuBLAS makes its "
    "handle at first use; the first step pays about 0.3 s the same way). The planner predicts a one-video "
    "job: the one-time part is fitted from the calibration points that opened their process (0.45 to 0.48 s "
    "above a reused process's), and under model offload the text encoder's upload follows the host's rate. "
    "The nineteen resident and model-offload runs' text encodes (the cold-checkpoint run aside) are within "
    "0.40 s; seven of the fourteen before today's were more than 0.5 s off. What still keeps most verdicts "
    "at `outside_tolerance` is one or two figures: the sequential text encode (3.4 to 5.4 s for the same "
    "work on different hosts), the "
    "I2V conditioning encode (estimated from the decode), decode times on the H200 and under model offload, "
    "and peaks over-predicted on the safe side.",
    "- Four runs after that change ({fp_int8_fp8}, {fp_13b_model}, {fp_14b_group}, {fp_a14b_model}; the "
    "1.3B's and the 14B's repeat the shapes of a calibration point each, as 50-step jobs on another day's "
    "machine): the 5B at 1280x704x121 with an int8 text encoder and an fp8 "
    "DiT ran at 41.89 GiB against 41.84 predicted, step -0.3 %, text encode 0.60 s against 0.54 (its steps' "
    "peak 7.9 % over: the fp8 casts' slack with the int8 encoder resident, on the safe side); the 1.3B under "
    "model offload passed every figure; the 14B under group offload step +1.7 %, decode +1.1 %, its text "
    "encode's peak 10 % under (3.62 GiB against 4.05, as its calibration point measured 4.06: under group "
    "offload the reservation sits 0.27 GiB above allocated there and the device 0.17 GiB above that, where "
    "the slack fitted without offload adds 0.04) and its decode's 5.2 % over. Wan2.2-T2V-A14B under "
    "model offload (both 14B experts through host memory): step +5.4 %, expert switch +5.6 %, decode -4.1 %, "
    "device peak -0.2 %, at the 7.31 GB/s host-to-device rate verify measured. With model offload's moves to "
    "host memory scaled by that rate, as the planner did before, the switch and the decode came out 27 and "
    "17 % long: those moves land in freshly mapped host pages, 1.21 to 1.37 GB/s in four fresh processes on "
    "that host while its host-to-device rate moved 6.86 to 8.46 GB/s (`bench/device/host_copies.py`, "
    "`bench/results/host-copies-h100.jsonl`; 1.15 and 1.17 at 6.47 and 5.77 GB/s in a later call, "
    "`host-copies-h100-b.jsonl`; the calibrations' fits imply 1.3 to 1.6 GB/s), so they now stay at the "
    "calibration host's rate. verify now measures that rate too (beside the host-to-device one, the median "
    "of three fresh processes) and predicts model offload's moves down at it: {d2h_5b} (the 5B, 7.54 GB/s "
    "up, 1.19 down) and {d2h_a14b} (the A14B, 7.42 and 1.17) passed every scored figure: text encode +3.8 "
    "and +3.7 %, the 5B's decode -0.1 %, the A14B's expert switch +3.6 % and decode +7.2 %. The same two on a "
    "lent H200 (its H100 calibrations transferred), whose host measured 7.29 / 7.40 GB/s up and 1.55 / 1.51 "
    "down: the A14B ({h200_a14b_model}) passed, expert switch -2.7 %, decode +1.6 % (at the calibration "
    "host's rate down: +10.6 and +16.5 %); the 5B ({h200_5b_model}) decode +1.6 %, step +0.8 %, its text "
    "encode 0.51 s long (the upload ran faster than the host's measured rate), 0.01 s past the floor.",
    "- Capped runs ({r4090_untiled}, {r4090_tiled}, {r4090_241}, {l40s}): the plans predicted to fit on an RTX "
    "4090 (tiled decode, {r4090_tiled}) and an L40S ({l40s}) ran; the one predicted to need 2.3 GiB more than "
    "an RTX 4090 has (241 frames, {r4090_241}) ran out of memory at the VAE decode as predicted. The RTX 4090 "
    "plan with an untiled 121-frame decode ({r4090_untiled}) was predicted not to fit (need 26.4 GiB of 24.0 "
    "usable, as recorded before the run) and ran, its decode touching the cap: torch allocated 22.72 GiB at the"
    " decode peak where 23.78 GiB were predicted (the same decode uncapped at 81 frames is predicted within 0.1"
    " %), and the reservation sat 0.18 GiB above allocated. Two things a capped allocator does that the need "
    "did not count: with expandable segments it unmaps the free pages inside its segments (so the need now "
    "carries no fragmentation margin for them: 25.0 GiB re-predicted), and cuDNN falls back to convolution "
    "algorithms with smaller workspaces when a workspace allocation fails (about 1 GiB of the decode is "
    "elastic; not modelled). Near the limit the verdict errs on the cautious side by that much.",
    "- {r4090_241} ran on a freshly started machine whose steps were about 20 % slower than the same work on "
    "the machines before it: its 241-frame step took 8.09 s where {none_241} (the same size, no offload, "
    "another machine) took 6.72 s, with the reservation below the cap and SM activity 89 % instead of 100 %. "
    "Lent H100s of one kind differ; reports now record the GPU's enforced power limit and SM clock ceiling.",
    "- Sequential offload ran in eleven device calls on lent H100s (some perhaps on the same machine), and the "
    "machine matters as much as the size: 832x480x41 on the 5B took 3.08 s (calibration, first session), "
    "3.63 s ({seq_41}), 3.97 s ({seq_41_a}), 3.71 s ({seq_41_c}, a machine measured at 7.56 GB/s "
    "host-to-device from pageable memory) and 5.03 s (the calibration point of the machine measured at 6.40 "
    "GB/s). Why it is slow: accelerate copies every leaf's weights from pageable memory before the leaf runs "
    "(each copy waits for the GPU first, so nothing overlaps), and it empties the CUDA cache at every weight "
    "load, so activations come from freshly mapped memory leaf after leaf. The step model has those terms: the "
    "stream at the machine's own rate, the activation bytes, TI2V-5B's per-token modulation and a per-block "
    "cost, fitted on eight points of the 1.3B, 5B and 14B from four calibrate sessions whose pageable rates "
    "were measured (the DiTs differ in bytes, width and blocks, which separates the terms); the decode likewise "
    "(the VAE streamed per latent frame, plus a part of the resident decode). At each machine's rate: "
    "{seq_161} (36080 tokens, twice the calibrated range, 7.96 GB/s) step +0.9 %, decode +8.2 %; the 6.40 "
    "GB/s machine's {seq_720_b} and {seq_960_b} step -1.3 % and -3.0 % (at the 9.16 GB/s of `ceilings.json`, "
    "which `wanfit plan` assumes for an H100 host: -15 % and -22 %); the 14B's {seq_14b} (7.03 GB/s, a size "
    "its grid point is not) step +12.1 %, decode +5.7 %; the 1.3B's {seq_13b} (9.00 GB/s) step +12.9 %, "
    "decode +30 %. What the pageable rate does not explain stays machine variance: the 7.56 GB/s machine ran "
    "the 5B's 832x480x41 14 % faster than predicted at its rate. The emptied cache is also why no stage keeps "
    "an earlier stage's reservation (the steps' peak sits below the text encode's); modelled so, the device "
    "peaks of all ten sequential runs are within 0.1 to 0.7 % (the 5B's were 12 to 14 % over while the "
    "reservation was carried from stage to stage). It is the plan of last resort and ranked last by time. "
    "`wanfit verify` now measures its host's pageable rate before an offloading plan's run and predicts at it "
    "({seq_host_rate}: 6.35 GB/s, step +1.9 %, decode +6.1 %, within tolerance; {model_host_rate}, model "
    "offload at 6.26 GB/s: step -0.1 %, decode -11.8 %); the re-predicted table below uses each offloading "
    "run's measured rate where there is one.",
    "- Another GPU: five runs on a lent H200 ({h200_5b_960}, {h200_5b_720}, {h200_14b}, {h200_a14b}, "
    "{h200_seq}), with no H200 calibration: every prediction is an H100 calibration transferred. Memory "
    "carries over: device peaks within 0.1 to 2.6 %, among them the A14B at 1280x720x81 with both experts, "
    "the text encoder and the VAE resident (90.9 GiB, more than an H100 has). Time: the H200 has the H100's "
    "compute and 1.43x its memory bandwidth, and its steps were only 0.5 to 3.5 % faster than the same runs "
    "on H100s ({h100_5b_960}: 1.207 s, {h200_5b_960}: 1.164 s; {h100_14b}: 10.03 s, {h200_14b}: 9.98 s). "
    "Scaled by the copy bandwidth, the steps' elementwise share came out 6 to 11 % short. "
    "`bench/device/step_kernels.py` split real DiT forwards by kernel on both GPUs: GEMM time equal, "
    "attention 1 % slower on the H200, the rest (norms, modulation, GELU, casts) 1.17 to 1.19x faster, and the "
    "Wan block's elementwise chain 1.22x where a copy is 1.40x (`bench/results/step-kernels-*.json`). That "
    "chain is now a measured ceiling (`calibrate` records it; the H100 and H200 profiles carry it) and scales "
    "the elementwise terms: the four resident runs' steps re-predicted -0.1, -0.1, -3.3 and -4.3 %. "
    "`bench/device/vae_kernels.py` split both VAEs' decodes the same way: on an H100 half the kernel time is "
    "outside the convolutions' implicit GEMMs (0.50 of the Wan2.1 VAE's, 0.47 of the Wan2.2 VAE's), and on "
    "an H200 those kernels ran 1.20 and 1.18x faster while the GEMMs ran 1.11 and 1.01x "
    "(`bench/results/vae-kernels-*.json`). With that split in the H100 profile and its non-GEMM part scaled "
    "by the elementwise rate, the four resident decodes re-predict +6.0, +3.8, +0.8 and -3.7 % (by matmul "
    "throughput alone, as before: +16.0, +13.7, +9.8 and +4.8 %); on a GPU with less bandwidth per FLOP "
    "(an L40S) the decode now comes out longer than matmul throughput alone says. The "
    "sequential step came out 21 % long at the H100 host's 9.16 GB/s and 29 % long at the 8.33 GB/s measured "
    "on this host: the host, not the GPU, sets it, and this one ran it as fast as the fastest H100 host did "
    "(3.05 s; 3.08 to 5.03 s on H100 hosts) with a slower copy rate than that host's (machine variance the "
    "rate does not explain).",
    "- Image-to-video, no calibration of its own: the Wan2.1-I2V-14B ({i2v_21}; its DiT carries CLIP image "
    "tokens and image cross-attention, carried over from the T2V-14B calibration through FLOPs and shapes) "
    "step +2.4 %, decode -5.5 %, device peak +0.7 %, and the conditioning image's VAE encode (estimated from "
    "the decode) -7.8 %. The Wan2.2-I2V-A14B with both experts, the text encoder and the VAE resident on an "
    "H100 ({i2v_a14b}) was predicted to need 74.4 GiB of 79.6: it ran at 76.72 GiB device peak against "
    "76.71 predicted, step +2.2 %. At 1280x720 the Wan2.1-I2V-14B ({i2v_21_720}) peaked at 69.57 GiB "
    "against 69.59 predicted, step -0.2 %; the A14B ({i2v_a14b_720}), predicted not to fit (need 85.9 GiB "
    "of 79.6, binding at the decode), ran its steps at the H100's limit and ran out of memory at the VAE "
    "decode. With model offload ({i2v_a14b_model}, at the 5.09 GB/s pageable rate "
    "verify measured on its host) the step was +2.4 % and the peak -2.0 %; the expert switch (36.2 s) and "
    "the decode (30.2 s, the DiT leaving first) come out 18.5 and 12.4 % short with the moves to host memory "
    "at the calibration host's rate (31 and 47 % long with them scaled by the host-to-device rate, as "
    "before). That host and the 5B's at 6.26 GB/s ({model_host_rate}, decode -11.8 %) were slower on the way "
    "out too; their fresh-page rate was not measured (verify measures the host-to-device rate only).",
    "- What a user would run: the plans `wanfit plan` recommends for the 14B at its default 1280x720x81, "
    "verified with `--recommended` on an H100 capped to each card's memory. L40S ({rec_l40s}: no offload, "
    "int8 text encoder, fp8 DiT; need 41.8 GiB of 44.0): device peak 44.11 GiB against 44.99 predicted, step "
    "+0.2 %. RTX 4090 ({rec_4090}: model offload, text encoder on the CPU, fp8 DiT; need 22.8 of 23.0, a "
    "0.2 GiB margin): it ran, its steps at 23.66 GiB against 23.72 predicted, step -5.8 %.",
    "- The 361-frame model-offload decode ({model_361}) is over-predicted by 6.2 % (device peak, uncapped): 361"
    " frames are beyond the largest decode calibrated (201 frames).",
    "- Held-out peak VRAM: the worst points (3.4 %) are the allocator's cache, not the tensors: the 1.3B's "
    "1280x720x41 decode reserved 39.14 GiB for 33.59 GiB allocated, its 81-frame decode 38.25 GiB for 34.07.",
    "- Far outside the grid: the 5B at 1920x1088x121 ({far_5b}; the largest calibrated size is 1280x704x121) "
    "passes every figure: step -1.8 %, decode -7.6 %, device peak 79.65 GiB against 79.64 (the decode's cache "
    "held at the card's limit; need 72.7 GiB predicted).",
    "- VAE tiling for a DiT calibrated without it: the 1.3B borrows the 14B's tiled decodes (the same VAE). Its "
    "1280x720x81 tiled decode ({tiled_13b}) allocated 3.91 GiB above its start against 4.30 predicted and took "
    "15.6 s against 14.4; its device peak re-predicts 20.53 GiB against 19.56 (+5.0 %; +27 % while the 14B's "
    "reservation slack was borrowed as well, which follows what the 14B's steps left cached).",
    "- The plan `wanfit plan` recommends for that job on an RTX 4080 (int8 text encoder, fp8 DiT, tiled decode), "
    "verified capped to the 4080's memory: the first run ({r4080_gpu_first}) ran out of memory at init, the "
    "random build having put the DiT and VAE on the GPU beside the bf16 encoder while it was quantised; the "
    "build now places components as a checkpoint load does and the planner holds the whole bf16 encoder at "
    "init. Rerun ({r4080_host}): it ran (init 13.64 GiB device peak, 12.54 allocated: quantising the encoder "
    "holds 2 GiB above its 10.6 GiB of bf16 weights, also with the encoder built in host memory, 12.79; the "
    "planner's init, 11.87 GiB device, counts the bf16 weights only), decode peak +7.1 %. "
    "The 5B int8 + fp8 run repeated the same way ({int8_host}): init 14.74 GiB, was 25.58.",
    "- What `wanfit plan` tells an RTX 4080 owner (16 GB), run capped to its memory: the 5B at its defaults "
    "({r4080_5b}: text encoder on the CPU, fp8 DiT, tiled decode) fits as predicted, every time within "
    "tolerance (step +1.6 %, denoise +0.3 %, decode +2.0 %), device peak 14.86 GiB against 15.99 predicted "
    "(the decode's cache predicted to fill the card). The 14B at 832x480x81 ({r4080_14b}: group offload of an "
    "fp8 DiT, the text encoder streamed) fits as predicted, step -4.5 %, decode peak -3.5 %, but its steps' "
    "peak is 18 % under (7.84 against 9.59 GiB): fp8 casts on streamed blocks are not calibrated.",
    "- The official Wan2.2 code (runtime wan, `h100/wan/wan2.2-ti2v-5b`: 12 points of its own generate(), "
    "attention routed to SDPA's flash backend, the FA2 kernel, and at two points its cuDNN backend): the step "
    "fit puts the FA2-class attention at 1.75x the cuDNN ceiling, the ratio of the two kernels measured on the "
    "H100 (640 / 366 TFLOP/s), and cuDNN at 1.09x; the elementwise term is 235x a bf16 pass where diffusers' is "
    "a few (fp32 norms and modulation, float64 RoPE). Off the grid ({wan_161}: 161 frames, bf16, no offload) "
    "the steps came -0.2 % and the decode -0.7 %; the denoise and decode device peaks -3.2 and +1.3 % as run, "
    "and the encode's +72 % before the fit took T5's upload out of the encode's transient (+0.5 % refitted). "
    "Its text encode, T5 moved up from host memory inside it, was 3.1 s against 2.3 predicted: the 12 "
    "calibration points ran in one process, so the one-time setup of a process's first encode is not "
    "separated (fitted -0.17 s). The users' long-duration case at generate.py's defaults (fp32 DiT, "
    "--offload_model True) capped to an L40S ({wan_361}) was predicted not to fit (44.1 GiB needed of 45.0 "
    "usable) and ran out of memory at its first step. The official README's one-RTX-4090 run of the 5B "
    "(1280x704x121, --offload_model True --t5_cpu --convert_model_dtype; 22.8 GiB peak, its figures being "
    "torch-allocated GiB) run capped to the 4090 ({wan_4090}) was predicted not to fit (need 25.7 GiB of 24.0) "
    "and ran out of memory at the decode: 18.46 GiB allocated and 2.35 GiB reserved but unallocated when a "
    "2.60 GiB block was asked. The official code sets no expandable segments, so fragmentation decided it, as "
    "the need's margin counts. Its steps -0.2 %, their peak +2.3 %, the CPU text encode -4.3 %. The README's "
    "card ran it 1.04 GiB under wanfit's roomy allocated decode, the convolution workspace the capped diffusers "
    "run ({r4090_untiled}) also did without; whether a real 4090 fragments as the emulation did, one emulated "
    "run does not settle.",
    "- The official T2V-A14B (`h100/wan/wan2.2-t2v-a14b`, 5 points, 2026-12-08): held-out device peak 1.0 % mean, "
    "2.4 % worst, steady step 1.4 / 3.0 %. Its steps are fitted on its own points: fitted jointly with the 5B's, "
    "the official code's per-token overhead went into the matmul term (2.4x the ceiling), which fits the H100 "
    "and transfers as matmul (the README's H20 / H100 ratios 18-35 % high; 0-9 % with each DiT's own fit). "
    "Two memory fixes: (1) under --offload_model the official T2V "
    "pipeline sends T5 down without emptying the cache and moves an expert up into T5's freed blocks; the "
    "remainders (30 MiB of each 80 MiB FFN block, T5's 32 MiB attention blocks) stay reserved and out of reach, "
    "6.0 GiB above allocated at the first step against 1.1 without offload. A replay of the caching allocator "
    "over the two modules' parameters (`wanfit/model/stranded_cache.py`) gives 5.15 GiB, and 1.66 for the 5B, "
    "whose pipeline empties the cache after its DiT moves up (measured 1.6); it joins the steps' reservation and "
    "need instead of bending the fitted slack. (2) The grid grows the cache at its decode at two sizes only, so "
    "the decode's slack without expandable segments is fitted proportional to the frame's pixels there (8.3 and "
    "8.6 GiB per megapixel at 480p and 720p); the line through one point that leave-one-out left missed by 4.6 "
    "GiB either way. Three more official runs off the grid: fp32 weights at 161 frames ({wan_fp32_161}) steps "
    "+0.0 %, decode -0.7 %, device peak +0.6 %; no offload with T5 on the GPU capped to an L40S at 121 and 41 "
    "frames ({wan_l40s_121}, {wan_l40s_41}) predicted not to fit at the decode (need 45.6 and 44.7 GiB, the "
    "margin without expandable segments counted, against 44.0 usable after the planner's safety margin) and both "
    "ran out of memory there, their steps "
    "+1.1 and +1.9 %.",
    "- Issue 20's last L40S-capped runs (diffusers, 2026-12-08): group offload with a tiled decode at 241 and "
    "361 frames ({group_241}, {group_361}; the calibration's frames end at 201) passed every scored figure, "
    "device peak +1.9 and +1.4 %, steps +4.1 and +4.0 %, decode +4.5 and +4.0 %. An fp32 DiT with T5 on the "
    "CPU at 121 frames ({fp32_121}) passed, peak -1.9 %. An fp32 DiT under model offload at 241 frames "
    "({fp32_241}) fit as predicted within 4.7 GiB of the card, peak +1.6 %, steps +6.2 %; its text encode's "
    "peak came 13 % over the prediction (13.96 against 12.14 GiB): the runner's build of a text encoder in host "
    "memory skipped transformers' weight tying, so UMT5's 1.96 GiB token embedding was held twice. A checkpoint "
    "load ties it; the build now does too (tested). The model-offload runs before 0f0e0d0 (which skipped "
    "transformers' initialisation there) measured 10.84 GiB allocated at the encode where this one measured "
    "12.80.",
]
# Which report each remark names: a fragment of exactly one report file name.
READING_RUNS = {
    "wan_fp32_161": "1280x704x161f_3of50st_none-tegpu-fp32-untiled-noexp_h100",
    "wan_l40s_121": "1280x704x121f_2of50st_none-tegpu-bf16-untiled-noexp_l40s-capped",
    "wan_l40s_41": "1280x704x41f_2of50st_none-tegpu-bf16-untiled-noexp_l40s-capped",
    "group_241": "1280x704x241f_2of50st_group-tegpu-bf16-tiled_l40s-capped",
    "group_361": "1280x704x361f_2of50st_group-tegpu-bf16-tiled_l40s-capped",
    "fp32_121": "1280x704x121f_2of50st_none-tecpu-fp32-tiled_l40s-capped",
    "fp32_241": "1280x704x241f_2of50st_model-tegpu-fp32-tiled_l40s-capped",
    "wan_161": "1280x704x161f_3of50st_none-tegpu-bf16-untiled-noexp_h100",
    "wan_361": "1280x704x361f_50st_model-tegpu-fp32-untiled-noexp_l40s-capped",
    "wan_4090": "1280x704x121f_2of50st_model-tecpu-bf16-untiled-noexp_rtx4090-capped",
    "r4080_5b": "wan2.2-ti2v-5b_1280x704x121f_2of50st_none-tecpu-fp8-tiled_rtx4080-capped",
    "r4080_14b": "wan2.1-t2v-14b_832x480x81f_2of50st_group-tegpu-fp8-untiled_rtx4080-capped",
    "far_5b": "wan2.2-ti2v-5b_1920x1088x121f",
    "tiled_13b": "wan2.1-t2v-1.3b_1280x720x81f_2of50st_none-tegpu-bf16-tiled_h100",
    "r4080_gpu_first": "rtx4080-capped-gpu-first-build",
    "r4080_host": "tiled_rtx4080-capped-host-build",
    "int8_host": "none-teint8-fp8-untiled_h100-host-build",
    "r4090_untiled": "1280x704x121f_2of50st_model-tegpu-bf16-untiled_rtx4090-capped",
    "r4090_tiled": "1280x704x121f_3of50st_model-tegpu-bf16-tiled_rtx4090-capped",
    "r4090_241": "1280x704x241f_2of50st_model-tegpu-bf16-untiled_rtx4090-capped",
    "l40s": "832x480x81f_2of50st_none-tegpu-bf16-untiled_l40s-capped",
    "none_241": "1280x704x241f_3of50st_none-tegpu-bf16-untiled_h100",
    "seq_41": "832x480x41f_3of50st_sequential-tegpu-bf16-untiled_h100.json",
    "seq_41_a": "832x480x41f_3of50st_sequential-tegpu-bf16-untiled_h100-machine-a",
    "seq_41_c": "832x480x41f_3of50st_sequential-tegpu-bf16-untiled_h100-machine-c",
    "seq_81": "832x480x81f_2of50st_sequential-tegpu-bf16-untiled_h100",
    "seq_720_a": "1280x704x81f_2of50st_sequential-tegpu-bf16-untiled_h100-machine-a",
    "seq_720_b": "1280x704x81f_2of50st_sequential-tegpu-bf16-untiled_h100.json",
    "seq_960_b": "960x544x61f_3of50st_sequential",
    "seq_161": "1280x704x161f_2of50st_sequential",
    "seq_14b": "wan2.1-t2v-14b_832x480x41f_2of50st_sequential",
    "seq_13b": "wan2.1-t2v-1.3b_832x480x81f_3of50st_sequential",
    "model_361": "1280x704x361f_2of50st_model-tegpu-bf16-untiled_h100",
    "h200_5b_960": "ti2v-5b_960x544x121f_4of50st_none-tegpu-bf16-untiled_h200",
    "h200_5b_720": "ti2v-5b_1280x704x121f_2of50st_none-tegpu-bf16-untiled_h200",
    "h200_14b": "t2v-14b_960x544x81f_2of50st_none-tegpu-bf16-untiled_h200",
    "h200_a14b": "a14b_1280x720x81f_4of40st_none-tegpu-bf16-untiled_h200",
    "h200_seq": "ti2v-5b_832x480x41f_3of50st_sequential-tegpu-bf16-untiled_h200",
    "h100_5b_960": "ti2v-5b_960x544x121f_4of50st_none-tegpu-bf16-untiled_h100",
    "h100_14b": "t2v-14b_960x544x81f_2of50st_none-tegpu-bf16-untiled_h100",
    "seq_host_rate": "832x480x41f_3of50st_sequential-tegpu-bf16-untiled_h100-host-rate",
    "model_host_rate": "1280x704x121f_2of50st_model-tegpu-bf16-untiled_h100-host-rate",
    "i2v_21": "wan2.1-i2v-14b_832x480x81f_2of40st_none",
    "i2v_a14b": "wan2.2-i2v-a14b_832x480x81f_4of40st_none",
    "i2v_a14b_model": "wan2.2-i2v-a14b_832x480x81f_4of40st_model",
    "i2v_21_720": "wan2.1-i2v-14b_1280x720x81f_2of40st_none",
    "i2v_a14b_720": "wan2.2-i2v-a14b_1280x720x81f_2of40st_none",
    "rec_l40s": "wan2.1-t2v-14b_1280x720x81f_2of50st_none-teint8-fp8-untiled_l40s-capped",
    "rec_4090": "wan2.1-t2v-14b_1280x720x81f_2of50st_model-tecpu-fp8-untiled_rtx4090-capped",
    "fp_int8_fp8": "wan2.2-ti2v-5b_1280x704x121f_2of50st_none-teint8-fp8-untiled_h100.json",
    "fp_13b_model": "wan2.1-t2v-1.3b_832x480x81f_3of50st_model-tegpu",
    "fp_14b_group": "wan2.1-t2v-14b_832x480x81f_2of50st_group-tegpu-bf16",
    "fp_a14b_model": "wan2.2-t2v-a14b_832x480x81f_4of40st_model-tegpu-bf16-untiled_h100.json",
    "d2h_5b": "wan2.2-ti2v-5b_1280x704x121f_2of50st_model-tegpu-bf16-untiled_h100-host-d2h",
    "d2h_a14b": "wan2.2-t2v-a14b_832x480x81f_4of40st_model-tegpu-bf16-untiled_h100-host-d2h",
    "h200_5b_model": "wan2.2-ti2v-5b_1280x704x121f_2of50st_model-tegpu-bf16-untiled_h200",
    "h200_a14b_model": "wan2.2-t2v-a14b_832x480x81f_4of40st_model-tegpu-bf16-untiled_h200",
}
