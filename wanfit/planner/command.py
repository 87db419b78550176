"""The command that runs a plan: the official `generate.py` line, or the diffusers lines that apply it.

Pure string building (no torch, no diffusers: `wanfit plan` imports it). `plan_command(workload, plan)` is the
entry point; the planner sets its text on each GPU's recommended candidate (the JSON contract's `command`).

Runtime `wan`: the flags of the official Wan2.2 `generate.py` (github Wan-Video/Wan2.2, generate.py, read at
commit 0610493c7c9e): `--task`, `--size W*H` (a key of wan/configs/__init__.py SIZE_CONFIGS, which maps
'1280*704' to (1280, 704), width first; each task accepts only its SUPPORTED_SIZES), `--frame_num`,
`--sample_steps`, `--sample_guide_scale` (argparse `type=float`: one value for both experts; a two-expert
task's own default is the pair in its config, low noise first), `--ckpt_dir`, `--offload_model` (str2bool;
left out it is True on one GPU, False under torchrun), `--t5_cpu`, `--convert_model_dtype`, `--image`,
`--prompt`. It has no attention flag: wan/modules/attention.py's `flash_attention` runs FlashAttention-3
(`flash_attn_interface`) when it imports, else FlashAttention-2 (`flash_attn`), and asserts without either.
It sets no PYTORCH_CUDA_ALLOC_CONF: a plan with expandable segments puts it before the command.

Runtime `diffusers`: what wanfit's runner does for each knob (wanfit/measure/placement.py apply_plan,
measure/build.py, measure/runner.py), with diffusers 0.42.1 names (each checked by tests/test_command.py
against the installed diffusers): `from_pretrained(..., dtype={...})` with the VAE in fp32, fp8 as
`enable_layerwise_casting`, fp32 DiT weights under bf16 autocast, the text encoder on the CPU encoding there
(`encode_prompt`, the pipeline then takes the embeddings), int8 as torchao `quantize_(...,
Int8WeightOnlyConfig())`, model / sequential offload through the pipeline's hooks, group offload as
`diffusers.hooks.apply_group_offloading` (DiT block level, one block a group, on a CUDA stream; a GPU text
encoder at leaf level), `vae.enable_tiling()`, the attention kernel through `set_attention_backend`.
"""

from __future__ import annotations

from wanfit.vocabulary.catalog import ModelSpec, official_task
from wanfit.vocabulary.workload import Plan, Workload

PROMPT = "..."
IMAGE = "input.jpg"
OUTPUT = "output.mp4"
ALLOC_CONF = "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"
# The official code's own tables (wan/configs/__init__.py SUPPORTED_SIZES; the configs' sample_guide_scale,
# low noise first): tests/test_command.py checks them against the installed `wan` package.
OFFICIAL_SIZES = {"t2v-A14B": ("720*1280", "1280*720", "480*832", "832*480"),
                  "i2v-A14B": ("720*1280", "1280*720", "480*832", "832*480"),
                  "ti2v-5B": ("704*1280", "1280*704")}
OFFICIAL_GUIDE_SCALES: dict[str, float | tuple[float, float]] = {
    "t2v-A14B": (3.0, 4.0), "i2v-A14B": (3.5, 3.5), "ti2v-5B": 5.0}
OFFICIAL_ATTENTION = {
    "auto": "generate.py has no attention flag: wan/modules/attention.py runs FlashAttention-3 "
            "(flash_attn_interface) when it imports, else FlashAttention-2 (pip install flash-attn), and fails "
            "without either",
    "fa2": "attention fa2: generate.py has no flag for it; install flash-attn (FlashAttention-2) and not "
           "flash_attn_interface (FlashAttention-3), which wan/modules/attention.py prefers when it imports",
    "fa3": "attention fa3: generate.py has no flag for it; install flash_attn_interface (FlashAttention-3, "
           "Hopper: flash-attention's hopper/ build), which wan/modules/attention.py prefers over flash-attn",
    "cudnn": "attention cudnn: generate.py has no flag for it and no SDPA path (wan/modules/attention.py calls "
             "flash-attn); SDPA's cuDNN kernel needs wan.modules.model's flash_attention routed to torch SDPA, "
             "as wanfit's own runner does",
}
# diffusers 0.42.1 models/attention_dispatch.py AttentionBackendName values, and what each needs.
DIFFUSERS_ATTENTION = {
    "fa2": ("_native_flash", "SDPA's flash kernel (FlashAttention-2); \"flash\" with flash-attn installed"),
    "fa3": ("_flash_3", "FlashAttention-3 (package flash_attn_3, Hopper); without it \"_native_cudnn\", "
                        "the same kernel class on Hopper"),
    "cudnn": ("_native_cudnn", "SDPA's cuDNN kernel"),
}


def plan_command(workload: Workload, plan: Plan) -> str:
    """The command that runs `workload` under `plan`: comment lines (#), then what to run."""
    if plan.runtime == "wan":
        return official_command(workload, plan)
    return diffusers_snippet(workload, plan)


def _number(value: float) -> str:
    return repr(float(value))


def _guide_scale(task: str, workload: Workload) -> tuple[list[str], list[str]]:
    """(flags, comments) for the guidance: one float for both experts; the task's own pair by leaving it out."""
    high, low = workload.guidance, workload.guidance_2
    if low is None or low == high:
        return ["--sample_guide_scale", _number(high)], []
    pair = (_number(low), _number(high))
    if OFFICIAL_GUIDE_SCALES[task] == (low, high):
        return [], [f"guidance {pair[1]} (high noise) / {pair[0]} (low noise) is {task}'s own pair: "
                    "--sample_guide_scale (one float for both experts) left out"]
    return [], [f"guidance {pair[1]} (high noise) / {pair[0]} (low noise): --sample_guide_scale takes one float "
                f"for both experts; set sample_guide_scale = ({pair[0]}, {pair[1]}) (low noise, high noise) in "
                f"wan/configs/wan_{task.replace('-', '_')}.py"]


def official_command(workload: Workload, plan: Plan) -> str:
    """The official Wan2.2 `generate.py` line (run in a clone of github Wan-Video/Wan2.2)."""
    spec = workload.spec
    task = official_task(spec.key)
    checkpoint = spec.hf_repo.removesuffix("-Diffusers")
    ckpt_dir = "./" + checkpoint.split("/")[-1]
    size = f"{workload.width}*{workload.height}"
    comments = [f"official Wan2.2 code: git clone https://github.com/Wan-Video/Wan2.2 && cd Wan2.2; "
                f"weights: huggingface-cli download {checkpoint} --local-dir {ckpt_dir}",
                OFFICIAL_ATTENTION[plan.attention]]
    if size not in OFFICIAL_SIZES[task]:
        comments.append(f"generate.py rejects --size {size} for {task}: it accepts "
                        f"{', '.join(OFFICIAL_SIZES[task])} (width*height)")
    if workload.batch != 1:
        comments.append(f"generate.py makes one video a run: run it {workload.batch} times for batch "
                        f"{workload.batch}")
    guide_flags, guide_comments = _guide_scale(task, workload)
    launcher = ["torchrun", f"--nproc_per_node={plan.gpus}"] if plan.gpus > 1 else ["python"]
    args = [*launcher, "generate.py", "--task", task, "--size", size, "--frame_num", str(workload.frames),
            "--sample_steps", str(workload.steps), *guide_flags, "--ckpt_dir", ckpt_dir, *plan.official_flags()]
    args += ["--image", IMAGE] if spec.is_i2v else []
    args += ["--prompt", f'"{PROMPT}"']
    env = [ALLOC_CONF] if plan.expandable_segments else []
    env += shared_cores_env(plan)
    return "\n".join([*(f"# {c}" for c in comments + guide_comments), " ".join(env + args)])


def shared_cores_env(plan: Plan) -> list[str]:
    """The OpenMP threads of each rank when every rank encodes the prompt on the CPU: the host's cores split
    between them, as the prediction times it (wanfit.model.sharding; torchrun's default is one thread a rank);
    nothing otherwise."""
    if plan.gpus == 1 or plan.text_encoder != "cpu":
        return []
    return [f"OMP_NUM_THREADS=$(( $(nproc) / {plan.gpus} ))"]


def _imports(spec: ModelSpec, plan: Plan) -> list[str]:
    lines = []
    if plan.expandable_segments:
        lines += ["import os", f'os.environ["PYTORCH_CUDA_ALLOC_CONF"] = "{ALLOC_CONF.split("=", 1)[1]}"'
                  "  # before torch loads", ""]
    lines += ["import torch", f"from diffusers import {spec.pipeline}",
              "from diffusers.utils import export_to_video" + (", load_image" if spec.is_i2v else "")]
    lines += ["from diffusers.hooks import apply_group_offloading"] if plan.offload == "group" else []
    lines += ["from torchao.quantization import Int8WeightOnlyConfig, quantize_"] if plan.text_encoder == "int8" else []
    return lines


def _load(spec: ModelSpec, plan: Plan) -> list[str]:
    """from_pretrained as wanfit's runner loads it: bf16, the VAE fp32, fp32 DiT weights for an fp32 plan."""
    dtype = '"default": torch.bfloat16, "vae": torch.float32'
    if plan.dit_dtype == "fp32":
        dtype += ', "transformer": torch.float32' + (', "transformer_2": torch.float32' if spec.experts == 2 else "")
    return [f"pipe = {spec.pipeline}.from_pretrained(", f'    "{spec.hf_repo}",', f"    dtype={{{dtype}}},", ")"]


def _text_encoder(workload: Workload, plan: Plan) -> list[str]:
    """A CPU or int8 text encoder encodes the prompt itself, outside the pipeline (as wanfit's runner does)."""
    if plan.text_encoder == "gpu":
        return []
    device = "cpu" if plan.text_encoder == "cpu" else "cuda"
    lines = ["text_encoder = pipe.text_encoder"]
    if plan.text_encoder == "int8":
        lines += ['text_encoder.to("cuda")', "quantize_(text_encoder, Int8WeightOnlyConfig())  # weight-only int8"]
    cfg = "" if workload.cfg else ", do_classifier_free_guidance=False"
    lines += ["prompt_embeds, negative_prompt_embeds = pipe.encode_prompt(",
              f'    prompt, max_sequence_length=512, device=torch.device("{device}"){cfg}', ")",
              "pipe.text_encoder = None  # the pipeline takes the embeddings; its offload leaves the encoder be"]
    return lines


def _dit(spec: ModelSpec, plan: Plan) -> list[str]:
    """Per-DiT knobs (attention kernel, storage dtype, group offload): on each expert of a two-expert model."""
    lines = []
    if plan.attention != "auto":
        backend, what = DIFFUSERS_ATTENTION[plan.attention]
        lines += [f'dit.set_attention_backend("{backend}")  # {what}']
    if plan.dit_dtype == "fp8":
        lines += ["dit.enable_layerwise_casting(", "    storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16",
                  ")"]
    elif plan.dit_dtype == "fp32":
        lines += ['dit.forward = torch.autocast("cuda", dtype=torch.bfloat16)(dit.forward)  # fp32 weights, bf16 math']
    if plan.offload == "group":
        lines += ["apply_group_offloading(", '    dit, onload_device=torch.device("cuda"), '
                  'offload_device=torch.device("cpu"),', '    offload_type="block_level", num_blocks_per_group=1, '
                  "use_stream=True,", ")"]
    if not lines:
        return []
    if spec.experts == 2:
        return ["for dit in (pipe.transformer, pipe.transformer_2):", *("    " + line for line in lines)]
    return [line.replace("dit.", "pipe.transformer.").replace("    dit,", "    pipe.transformer,") for line in lines]


def _offload(spec: ModelSpec, plan: Plan) -> list[str]:
    if plan.offload == "none":
        return ['pipe.to("cuda")']
    if plan.offload == "model":
        return ["pipe.enable_model_cpu_offload()"]
    if plan.offload == "sequential":
        return ["pipe.enable_sequential_cpu_offload()"]
    lines = []
    if plan.text_encoder == "gpu":  # leaf level: UMT5's blocks sit under encoder.block
        lines += ["apply_group_offloading(", '    pipe.text_encoder, onload_device=torch.device("cuda"), '
                  'offload_device=torch.device("cpu"),', '    offload_type="leaf_level", use_stream=True,', ")"]
    lines += ['pipe.vae.to("cuda")']
    lines += ['pipe.image_encoder.to("cuda")'] if spec.image_encoder else []
    return lines


def _call(workload: Workload, plan: Plan) -> list[str]:
    spec = workload.spec
    if plan.text_encoder == "gpu":
        text = "prompt=prompt"
    else:
        to = '.to("cuda")' if plan.text_encoder == "cpu" else ""
        text = f"prompt_embeds=prompt_embeds{to}"
        text += f", negative_prompt_embeds=negative_prompt_embeds{to}" if workload.cfg else ""
    args = [text] + ([f'image=load_image("{IMAGE}")'] if spec.is_i2v else [])
    args += [f"height={workload.height}, width={workload.width}, num_frames={workload.frames}",
             f"num_inference_steps={workload.steps}, guidance_scale={_number(workload.guidance)}"
             + (f", guidance_scale_2={_number(workload.guidance_2)}"
                if spec.experts == 2 and workload.guidance_2 is not None else "")]
    args += [f"num_videos_per_prompt={workload.batch}"] if workload.batch != 1 else []
    return ["video = pipe(", *(f"    {a}," for a in args), ").frames[0]",
            f'export_to_video(video, "{OUTPUT}", fps={spec.defaults.fps})']


def _process_group(plan: Plan) -> list[str]:
    if plan.gpus == 1:
        return []
    return ['torch.distributed.init_process_group("nccl")', "rank = torch.distributed.get_rank()",
            "torch.cuda.set_device(rank)"]


def _parallel(spec: ModelSpec, plan: Plan) -> list[str]:
    """Several GPUs, as wanfit's runner applies them (measure/distributed/diffusers_cp.py), before the pipeline
    moves to the GPU: a log-sum-exp-returning attention backend for ring attention (the default native one
    refuses it), diffusers' context parallelism, and with dit_fsdp FSDP2 of each block then the DiT in bf16, the
    few weights diffusers keeps in fp32 left whole (FSDP2 wants one dtype a group); `pipe.to` then moves only
    this rank's shards."""
    if plan.gpus == 1:
        return []
    dits = "(pipe.transformer, pipe.transformer_2)" if spec.experts == 2 else "(pipe.transformer,)"
    body = []
    if plan.ring > 1 and plan.attention == "auto":
        body += [f'dit.set_attention_backend("{DIFFUSERS_ATTENTION["cudnn"][0]}")  # ring attention needs the '
                 "log-sum-exp: not the default native backend"]
    body += [f"dit.enable_parallelism(config=ContextParallelConfig(ulysses_degree={plan.ulysses}, "
             f"ring_degree={plan.ring}))"]
    if plan.dit_fsdp:
        body += ["kept = {p for p in dit.parameters() if p.dtype == torch.float32}",
                 "policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16)",
                 "for block in dit.blocks:",
                 "    fully_shard(block, mp_policy=policy, ignored_params=kept & set(block.parameters()) or None)",
                 "fully_shard(dit, mp_policy=policy, ignored_params=kept or None)"]
    return [f"for dit in {dits}:", *("    " + line for line in body)]


def diffusers_snippet(workload: Workload, plan: Plan) -> str:
    """The Python lines that run `workload` under `plan` with diffusers 0.42.1 (several GPUs: the script that
    `torchrun --nproc_per_node N` runs on every rank; rank 0 writes the video)."""
    spec = workload.spec
    head = [f"# diffusers 0.42.1{' + torchao' if plan.text_encoder == 'int8' else ''}: the plan {plan.label()}"]
    if plan.gpus > 1:
        launch = " ".join([*shared_cores_env(plan), f"torchrun --nproc_per_node={plan.gpus} run.py"])
        head += [f"# save as run.py and launch: {launch}"]
    imports = _imports(spec, plan)
    if plan.gpus > 1:
        imports += ["from diffusers import ContextParallelConfig"]
        imports += ["from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard"] if plan.dit_fsdp else []
    lines = [*head, *imports, "", *_process_group(plan), *_load(spec, plan), f'prompt = "{PROMPT}"',
             *_text_encoder(workload, plan), *_dit(spec, plan), *_parallel(spec, plan), *_offload(spec, plan)]
    lines += ["pipe.vae.enable_tiling()"] if plan.vae_tiling else []
    call = _call(workload, plan)
    if plan.gpus > 1:
        call = [*call[:-1], "if rank == 0:", "    " + call[-1]]
    return "\n".join(lines + call)
