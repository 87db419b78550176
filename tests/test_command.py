"""The command that runs the recommended plan (wanfit.planner.command): exact strings through `wanfit plan
--format json`, the diffusers lines checked against the installed diffusers (a misspelled API fails), the
official flags' tables against the installed official `wan` package."""

from __future__ import annotations

import ast
import inspect
import json

import pytest
from typer.testing import CliRunner

from wanfit.cli import app
from wanfit.planner.command import (
    DIFFUSERS_ATTENTION,
    OFFICIAL_GUIDE_SCALES,
    OFFICIAL_SIZES,
    diffusers_snippet,
    official_command,
    plan_command,
)
from wanfit.vocabulary.workload import RUNTIME_KNOB_CHOICES, Plan, Workload

WAN_CLONE = ("# official Wan2.2 code: git clone https://github.com/Wan-Video/Wan2.2 && cd Wan2.2; "
             "weights: huggingface-cli download Wan-AI/{name} --local-dir ./{name}")
FLASH_AUTO = ("# generate.py has no attention flag: wan/modules/attention.py runs FlashAttention-3 "
              "(flash_attn_interface) when it imports, else FlashAttention-2 (pip install flash-attn), and fails "
              "without either")


def recommended_command(*args: str) -> str:
    result = CliRunner().invoke(app, ["plan", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    recommended = json.loads(result.output)["results"][0]["recommended"]
    assert recommended is not None, "the pinned plan should fit"
    return recommended["command"]


# ---- runtime wan: the official generate.py line ----

def test_ti2v_official_command_with_offload_and_t5_on_the_cpu():
    command = recommended_command("--runtime", "wan", "--offload", "model", "--text-encoder", "cpu",
                                  "--dit-dtype", "fp32", "--gpu", "h100")
    assert command == "\n".join([
        WAN_CLONE.format(name="Wan2.2-TI2V-5B"), FLASH_AUTO,
        'python generate.py --task ti2v-5B --size 1280*704 --frame_num 121 --sample_steps 50 '
        '--sample_guide_scale 5.0 --ckpt_dir ./Wan2.2-TI2V-5B --offload_model True --t5_cpu --prompt "..."'])


def test_several_ranks_encoding_on_the_cpu_split_the_hosts_cores_in_the_command():
    """Pinning T5 to the CPU on 4 GPUs drops the baseline's --t5_fsdp and --dit_fsdp (the official code refuses
    --t5_cpu with --t5_fsdp, --convert_model_dtype under --dit_fsdp) and splits the cores between the ranks:
    torchrun's default is one OpenMP thread a rank."""
    command = recommended_command("--runtime", "wan", "--gpus", "4", "--offload", "model", "--text-encoder", "cpu",
                                  "--dit-dtype", "bf16", "--gpu", "h100")
    assert command.splitlines()[-1] == (
        'OMP_NUM_THREADS=$(( $(nproc) / 4 )) torchrun --nproc_per_node=4 generate.py --task ti2v-5B --size 1280*704 '
        '--frame_num 121 --sample_steps 50 --sample_guide_scale 5.0 --ckpt_dir ./Wan2.2-TI2V-5B --offload_model True '
        '--t5_cpu --convert_model_dtype --ulysses_size 4 --prompt "..."')
    on_gpu = recommended_command("--runtime", "wan", "--gpus", "4", "--text-encoder", "gpu", "--gpu", "h100")
    assert "OMP_NUM_THREADS" not in on_gpu and on_gpu.splitlines()[-1].startswith("torchrun --nproc_per_node=4")
    script = diffusers_snippet(Workload.for_model("wan2.2-ti2v-5b"), Plan(gpus=2, ulysses=2, text_encoder="cpu"))
    assert "# save as run.py and launch: OMP_NUM_THREADS=$(( $(nproc) / 2 )) torchrun --nproc_per_node=2 run.py" \
        in script.splitlines()


def test_ti2v_official_command_resident_bf16_portrait():
    command = recommended_command("--runtime", "wan", "--offload", "none", "--text-encoder", "gpu",
                                  "--dit-dtype", "bf16", "--size", "704x1280", "--frames", "81", "--steps", "30",
                                  "--attention", "fa3", "--gpu", "h100")
    assert command == "\n".join([
        WAN_CLONE.format(name="Wan2.2-TI2V-5B"),
        "# attention fa3: generate.py has no flag for it; install flash_attn_interface (FlashAttention-3, Hopper: "
        "flash-attention's hopper/ build), which wan/modules/attention.py prefers over flash-attn",
        'python generate.py --task ti2v-5B --size 704*1280 --frame_num 81 --sample_steps 30 --sample_guide_scale 5.0 '
        '--ckpt_dir ./Wan2.2-TI2V-5B --offload_model False --convert_model_dtype --prompt "..."'])


def test_a14b_official_command_keeps_the_tasks_own_guidance_pair():
    command = recommended_command("--model", "wan2.2-t2v-a14b", "--runtime", "wan", "--offload", "model",
                                  "--text-encoder", "cpu", "--dit-dtype", "bf16", "--size", "832x480", "--gpu", "h100")
    assert command == "\n".join([
        WAN_CLONE.format(name="Wan2.2-T2V-A14B"), FLASH_AUTO,
        "# guidance 4.0 (high noise) / 3.0 (low noise) is t2v-A14B's own pair: --sample_guide_scale (one float for "
        "both experts) left out",
        'python generate.py --task t2v-A14B --size 832*480 --frame_num 81 --sample_steps 40 '
        '--ckpt_dir ./Wan2.2-T2V-A14B --offload_model True --t5_cpu --convert_model_dtype --prompt "..."'])


def test_a14b_official_guidance_flag_allocator_and_unsupported_size():
    """One guidance for both experts is the flag; another pair says where it goes; the allocator setting goes in
    front; a size the task rejects is said."""
    plan = Plan(runtime="wan", offload="model", dit_dtype="bf16", expandable_segments=True, attention="cudnn")
    same = Workload.for_model("wan2.2-i2v-a14b", height=704, width=1280)
    assert official_command(same, plan).splitlines()[1:] == [
        "# attention cudnn: generate.py has no flag for it and no SDPA path (wan/modules/attention.py calls "
        "flash-attn); SDPA's cuDNN kernel needs wan.modules.model's flash_attention routed to torch SDPA, as "
        "wanfit's own runner does",
        "# generate.py rejects --size 1280*704 for i2v-A14B: it accepts 720*1280, 1280*720, 480*832, 832*480 "
        "(width*height)",
        'PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True python generate.py --task i2v-A14B --size 1280*704 '
        '--frame_num 81 --sample_steps 40 --sample_guide_scale 3.5 --ckpt_dir ./Wan2.2-I2V-A14B --offload_model '
        'True --convert_model_dtype --image input.jpg --prompt "..."']
    other = Workload.for_model("wan2.2-t2v-a14b", guidance=5.0)
    assert ("# guidance 5.0 (high noise) / 3.0 (low noise): --sample_guide_scale takes one float for both experts; "
            "set sample_guide_scale = (3.0, 5.0) (low noise, high noise) in wan/configs/wan_t2v_A14B.py"
            in official_command(other, plan).splitlines())


# ---- runtime diffusers: the Python lines ----

def test_ti2v_diffusers_group_offload_fp8_tiling_cudnn():
    command = recommended_command("--offload", "group", "--text-encoder", "gpu", "--dit-dtype", "fp8",
                                  "--vae-tiling", "--attention", "cudnn", "--frames", "81", "--gpu", "rtx4090")
    assert command == '''\
# diffusers 0.42.1: the plan offload=group te=gpu dit=fp8 vae=tiled attn=cudnn
import os
os.environ["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"  # before torch loads

import torch
from diffusers import WanPipeline
from diffusers.utils import export_to_video
from diffusers.hooks import apply_group_offloading

pipe = WanPipeline.from_pretrained(
    "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
    dtype={"default": torch.bfloat16, "vae": torch.float32},
)
prompt = "..."
pipe.transformer.set_attention_backend("_native_cudnn")  # SDPA's cuDNN kernel
pipe.transformer.enable_layerwise_casting(
    storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16
)
apply_group_offloading(
    pipe.transformer, onload_device=torch.device("cuda"), offload_device=torch.device("cpu"),
    offload_type="block_level", num_blocks_per_group=1, use_stream=True,
)
apply_group_offloading(
    pipe.text_encoder, onload_device=torch.device("cuda"), offload_device=torch.device("cpu"),
    offload_type="leaf_level", use_stream=True,
)
pipe.vae.to("cuda")
pipe.vae.enable_tiling()
video = pipe(
    prompt=prompt,
    height=704, width=1280, num_frames=81,
    num_inference_steps=50, guidance_scale=5.0,
).frames[0]
export_to_video(video, "output.mp4", fps=24)'''


def test_a14b_diffusers_model_offload_cpu_text_encoder_fa3():
    command = recommended_command("--model", "wan2.2-t2v-a14b", "--offload", "model", "--text-encoder", "cpu",
                                  "--dit-dtype", "fp8", "--no-vae-tiling", "--attention", "fa3", "--gpu", "h100")
    assert command == '''\
# diffusers 0.42.1: the plan offload=model te=cpu dit=fp8 vae=untiled attn=fa3
import os
os.environ["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"  # before torch loads

import torch
from diffusers import WanPipeline
from diffusers.utils import export_to_video

pipe = WanPipeline.from_pretrained(
    "Wan-AI/Wan2.2-T2V-A14B-Diffusers",
    dtype={"default": torch.bfloat16, "vae": torch.float32},
)
prompt = "..."
text_encoder = pipe.text_encoder
prompt_embeds, negative_prompt_embeds = pipe.encode_prompt(
    prompt, max_sequence_length=512, device=torch.device("cpu")
)
pipe.text_encoder = None  # the pipeline takes the embeddings; its offload leaves the encoder be
for dit in (pipe.transformer, pipe.transformer_2):
    dit.set_attention_backend("_flash_3")  # FlashAttention-3 (package flash_attn_3, Hopper); without it \
"_native_cudnn", the same kernel class on Hopper
    dit.enable_layerwise_casting(
        storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16
    )
pipe.enable_model_cpu_offload()
video = pipe(
    prompt_embeds=prompt_embeds.to("cuda"), negative_prompt_embeds=negative_prompt_embeds.to("cuda"),
    height=720, width=1280, num_frames=81,
    num_inference_steps=40, guidance_scale=4.0, guidance_scale_2=3.0,
).frames[0]
export_to_video(video, "output.mp4", fps=16)'''


def test_i2v_diffusers_int8_fp32_without_expandable_segments():
    plan = Plan(text_encoder="int8", dit_dtype="fp32", offload="sequential", expandable_segments=False)
    snippet = diffusers_snippet(Workload.for_model("wan2.2-i2v-a14b", guidance=1.0, guidance_2=1.0), plan)
    assert "PYTORCH_CUDA_ALLOC_CONF" not in snippet and "import os" not in snippet
    for line in ["from diffusers import WanImageToVideoPipeline",
                 "from diffusers.utils import export_to_video, load_image",
                 "from torchao.quantization import Int8WeightOnlyConfig, quantize_",
                 '    dtype={"default": torch.bfloat16, "vae": torch.float32, "transformer": torch.float32, '
                 '"transformer_2": torch.float32},',
                 'text_encoder.to("cuda")',
                 "quantize_(text_encoder, Int8WeightOnlyConfig())  # weight-only int8",
                 '    prompt, max_sequence_length=512, device=torch.device("cuda"), do_classifier_free_guidance=False',
                 '    dit.forward = torch.autocast("cuda", dtype=torch.bfloat16)(dit.forward)  # fp32 weights, bf16 math',
                 "pipe.enable_sequential_cpu_offload()",
                 "    prompt_embeds=prompt_embeds,",  # no negative embeddings without CFG; int8 encodes on the GPU
                 '    image=load_image("input.jpg"),',
                 "    num_inference_steps=40, guidance_scale=1.0, guidance_scale_2=1.0,"]:
        assert line in snippet.splitlines(), line


# ---- the diffusers lines against the installed diffusers ----

def _receiver_classes(namespace: dict, pipeline_cls) -> dict[str, object]:
    """What each name or attribute chain the snippet calls a method on is (a class from the installed libraries)."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import CLIPVisionModel as ImageEncoder  # Wan2.1 I2V's image encoder
    from transformers import UMT5EncoderModel

    return {"pipe": pipeline_cls, "pipe.transformer": WanTransformer3DModel, "pipe.transformer_2": WanTransformer3DModel,
            "dit": WanTransformer3DModel, "pipe.vae": AutoencoderKLWan, "pipe.text_encoder": UMT5EncoderModel,
            "text_encoder": UMT5EncoderModel, "pipe.image_encoder": ImageEncoder, **namespace}


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and (base := _dotted(node.value)) is not None:
        return f"{base}.{node.attr}"
    return None


def _check_call(call: ast.Call, receivers: dict[str, object]) -> list[str]:
    """The problems of one call: an attribute the receiver's class lacks, a keyword its signature lacks."""
    func = call.func
    if isinstance(func, ast.Attribute) and (owner := _dotted(func.value)) in receivers:
        target = getattr(receivers[owner], func.attr, None)
        if target is None:
            return [f"{owner}.{func.attr}: no attribute {func.attr} on {receivers[owner]}"]
        if func.attr == "set_attention_backend":
            from diffusers.models.attention_dispatch import AttentionBackendName

            backend = call.args[0].value
            if backend not in {b.value for b in AttentionBackendName}:
                return [f"unknown attention backend {backend}"]
    elif isinstance(func, ast.Name) and func.id in receivers:
        target = receivers[func.id]
        target = target.__call__ if func.id == "pipe" else target
    else:
        return []
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return []
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return []
    return [f"{ast.unparse(func)}: no keyword {kw.arg}" for kw in call.keywords if kw.arg not in params]


def snippet_problems(snippet: str, pipeline: str) -> list[str]:
    tree = ast.parse(compile(snippet, "<snippet>", "exec", flags=ast.PyCF_ONLY_AST))
    namespace: dict = {}
    for node in tree.body:  # run the imports alone: every imported name must exist
        if isinstance(node, ast.Import | ast.ImportFrom):
            exec(compile(ast.Module([node], type_ignores=[]), "<imports>", "exec"), namespace)
    receivers = _receiver_classes({k: v for k, v in namespace.items() if not k.startswith("__")}, namespace[pipeline])
    return [p for node in ast.walk(tree) if isinstance(node, ast.Call) for p in _check_call(node, receivers)]


def _diffusers_plans() -> list[Plan]:
    knobs = RUNTIME_KNOB_CHOICES["diffusers"]
    return [Plan(offload=o, text_encoder=t, dit_dtype=d, vae_tiling=v, attention=a)
            for o in knobs["offload"] for t in knobs["text_encoder"] for d in knobs["dit_dtype"]
            for v in knobs["vae_tiling"] for a in ("auto", *DIFFUSERS_ATTENTION)
            if a == "auto" or (t, d, v) == ("gpu", "bf16", False)]


@pytest.mark.parametrize("model", ["wan2.2-ti2v-5b", "wan2.2-t2v-a14b", "wan2.2-i2v-a14b", "wan2.1-i2v-14b"])
def test_every_diffusers_snippet_compiles_and_calls_only_what_diffusers_has(model):
    pytest.importorskip("diffusers")
    pytest.importorskip("torchao")
    workload = Workload.for_model(model)
    for plan in _diffusers_plans():
        snippet = plan_command(workload, plan)
        assert snippet_problems(snippet, workload.spec.pipeline) == [], plan.label()


def test_the_checker_catches_a_misspelled_api():
    pytest.importorskip("diffusers")
    snippet = diffusers_snippet(Workload.for_model("wan2.2-ti2v-5b"), Plan(offload="model", vae_tiling=True))
    assert snippet_problems(snippet, "WanPipeline") == []
    bad = snippet.replace("enable_model_cpu_offload()", "enable_model_offload()").replace(
        "num_frames=", "frames=")
    assert snippet_problems(bad, "WanPipeline") == [
        "pipe.enable_model_offload: no attribute enable_model_offload on <class "
        "'diffusers.pipelines.wan.pipeline_wan.WanPipeline'>", "pipe: no keyword frames"]
    backend = diffusers_snippet(Workload.for_model("wan2.2-ti2v-5b"), Plan(attention="cudnn"))
    assert snippet_problems(backend.replace("_native_cudnn", "cudnn"), "WanPipeline") == [
        "unknown attention backend cudnn"]


# ---- the official tables against the installed official code ----

def test_official_tables_match_the_installed_wan_package():
    pytest.importorskip("torch")
    from wanfit.measure.official.loader import load_wan

    configs = load_wan()["wan.configs"]
    for task, sizes in OFFICIAL_SIZES.items():
        assert configs.SUPPORTED_SIZES[task] == sizes
        assert configs.WAN_CONFIGS[task].sample_guide_scale == OFFICIAL_GUIDE_SCALES[task]
    # --size is width*height: the key maps to (width, height), what generate.py passes as `size`.
    assert configs.SIZE_CONFIGS["1280*704"] == (1280, 704)
    for model in ("wan2.2-ti2v-5b", "wan2.2-t2v-a14b", "wan2.2-i2v-a14b"):
        workload = Workload.for_model(model)
        line = official_command(workload, Plan(runtime="wan")).splitlines()[-1].split()
        size = line[line.index("--size") + 1]
        assert configs.SIZE_CONFIGS[size] == (workload.width, workload.height)
        assert "generate.py rejects" not in official_command(workload, Plan(runtime="wan"))
