"""The replay of torch's caching allocator that gives the T5 cache the official --offload_model strands under
its DiT (wanfit.model.stranded_cache): the allocator's rules on small cases, the parameter lists against the
official modules themselves, and the stranded GiB against the official calibrations' measured steps."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch

from wanfit.measure.official.loader import load_wan
from wanfit.model.official_params import (
    umt5_encoder_param_bytes,
    umt5_encoder_root_bytes,
    wan_dit_param_bytes,
    wan_dit_root_bytes,
)
from wanfit.model.stages.allocator import stranded_text_encoder_gib
from wanfit.model.stranded_cache import MIB, CachingAllocator, stranded_gib
from wanfit.vocabulary.catalog import OFFICIAL_TASKS, get_model
from wanfit.vocabulary.workload import Plan

OFFICIAL_CALIBRATIONS = Path(__file__).resolve().parents[1] / "calibration" / "h100" / "wan"


def test_best_fit_splits_the_smallest_block_that_holds_the_request():
    a = CachingAllocator()
    a.allocate(80 * MIB)
    a.allocate(32 * MIB)
    a.free_everything()
    a.allocate(30 * MIB)  # into the 32 MiB block (best fit), 2 MiB left: split
    assert a.segments == [80 * MIB, 32 * MIB]
    assert a.free_bytes() == 80 * MIB + 2 * MIB
    a.allocate(50 * MIB)  # into the 80 MiB block: 30 MiB stay free in a used segment
    assert a.free_bytes(only_used_segments=True) == 32 * MIB
    a.allocate(60 * MIB)  # nothing free holds it: a new segment of its size
    assert a.segments[-1] == 60 * MIB


def test_small_remainders_stay_with_the_block_and_mid_sized_requests_share_a_buffer():
    a = CachingAllocator()
    a.allocate(40 * MIB)
    a.free_everything()
    a.allocate(39 * MIB + 512 * 1024)  # 0.5 MiB would remain: not split
    assert a.free_bytes() == 0
    b = CachingAllocator()
    b.allocate(5 * MIB)  # under 10 MiB: a 20 MiB segment, 15 MiB of it free for the next request
    assert b.segments == [20 * MIB] and b.free_bytes() == 15 * MIB
    b.allocate(512 * 1024)  # the small pool: not tracked
    assert b.segments == [20 * MIB]
    b.allocate(10 * MIB)
    assert b.segments == [20 * MIB] and b.free_bytes() == 5 * MIB
    c = CachingAllocator()
    c.allocate(11 * MIB + 1)  # rounded up to 2 MiB
    assert c.segments == [12 * MIB]


def _large_params_in_move_order(module: torch.nn.Module) -> list[int]:
    """What `Module.to()` allocates over 1 MiB, in its order: each child first, then the module's own tensors."""
    out = []
    for child in module.children():
        out += _large_params_in_move_order(child)
    own = [*module._parameters.values(), *module._buffers.values()]
    out += [t.numel() * 2 for t in own if t is not None and t.numel() * 2 > MIB]
    return out


@pytest.mark.parametrize("model", sorted(OFFICIAL_TASKS))
def test_the_parameter_lists_are_the_official_modules(model):
    """The DiT and T5 the official code builds (wan/modules, from the catalog's dims, on the meta device) allocate
    exactly the listed large parameters, in the listed order, and their FSDP root units weigh what is listed."""
    load_wan()
    t5 = importlib.import_module("wan.modules.t5")
    dit = importlib.import_module("wan.modules.model")
    spec = get_model(model)
    te, tr = spec.text_encoder, spec.transformer
    with torch.device("meta"):
        encoder = t5.T5Encoder(vocab=te["vocab_size"], dim=te["d_model"], dim_attn=te["num_heads"] * te["d_kv"],
                               dim_ffn=te["d_ff"], num_heads=te["num_heads"], num_layers=te["num_layers"],
                               num_buckets=te["relative_attention_num_buckets"], shared_pos=False)
        wan_model = dit.WanModel(model_type="i2v" if spec.is_i2v else "t2v", patch_size=tuple(tr["patch_size"]),
                                 in_dim=tr["in_channels"], dim=tr["num_attention_heads"] * tr["attention_head_dim"],
                                 ffn_dim=tr["ffn_dim"], freq_dim=tr["freq_dim"], text_dim=tr["text_dim"],
                                 out_dim=tr["out_channels"], num_heads=tr["num_attention_heads"],
                                 num_layers=tr["num_layers"])
    assert _large_params_in_move_order(encoder.to(torch.bfloat16)) == \
        [n for n in umt5_encoder_param_bytes(te) if n > MIB]
    assert _large_params_in_move_order(wan_model.to(torch.bfloat16)) == \
        [n for n in wan_dit_param_bytes(tr) if n > MIB]
    # FSDP's root units (wan/distributed/fsdp.py wraps each block): everything outside the blocks, in bf16.
    for module, root in ((encoder, umt5_encoder_root_bytes(te)), (wan_model, wan_dit_root_bytes(tr))):
        assert 2 * sum(p.numel() for n, p in module.named_parameters() if not n.startswith("blocks.")) == root


def _first_step_slack_gib(model: str, offload: str) -> float:
    """Reserved above allocated at the first step of the official calibration's bf16, T5-on-GPU 480p/704p point."""
    rows = [json.loads(line) for line in (OFFICIAL_CALIBRATIONS / f"{model}.measurements.jsonl").open()]
    height = {"wan2.2-t2v-a14b": 480, "wan2.2-ti2v-5b": 704}[model]
    frames = {"wan2.2-t2v-a14b": 41, "wan2.2-ti2v-5b": 81}[model]
    for r in rows:
        p, w = r["plan"], r["workload"]
        if (p["offload"], p["dit_dtype"], p["text_encoder"], p.get("attention", "auto"), w["height"], w["frames"]) \
                == (offload, "bf16", "gpu", "auto", height, frames):
            step = next(s for s in r["stages"] if s["name"] == "step" and s["index"] == 1)
            return step["torch_peak_reserved_gib"] - step["torch_peak_allocated_gib"]
    raise AssertionError(f"no {offload} point of {model} at {height}p x {frames}")


@pytest.mark.parametrize(("model", "replayed"), [("wan2.2-t2v-a14b", 5.15), ("wan2.2-ti2v-5b", 1.66)])
def test_the_replay_gives_what_offload_model_added_to_the_measured_first_step(model, replayed):
    """The same size measured with and without --offload_model on an H100: the first step's reservation above
    allocated grew by what the replay strands (A14B: 4.9 GiB measured; the 5B, whose pipeline empties the cache
    after its DiT moves up, 1.6 GiB), within the quarter GiB the steps' small buffers take back."""
    assert stranded_gib(model) == pytest.approx(replayed, abs=0.01)
    measured = _first_step_slack_gib(model, "model") - _first_step_slack_gib(model, "none")
    assert stranded_gib(model) == pytest.approx(measured, abs=0.3)


def test_only_the_official_offload_with_t5_on_the_gpu_strands_it():
    a14b = "wan2.2-t2v-a14b"
    assert stranded_text_encoder_gib(Plan(runtime="wan", offload="model"), a14b) == stranded_gib(a14b)
    # fp32 weights (no --convert_model_dtype) are twice the bytes: they land in T5's blocks differently.
    fp32 = Plan(runtime="wan", offload="model", dit_dtype="fp32")
    assert stranded_text_encoder_gib(fp32, a14b) == stranded_gib(a14b, 4) == pytest.approx(8.57, abs=0.01)
    for plan in (Plan(runtime="wan", offload="none"), Plan(runtime="wan", offload="model", text_encoder="cpu"),
                 Plan(offload="model")):
        assert stranded_text_encoder_gib(plan, a14b) == 0.0
    assert stranded_gib("wan2.2-i2v-a14b") == 0.0  # WanI2V empties the cache before its DiT moves up
    assert stranded_gib("wan2.1-t2v-14b") == 0.0  # not an official Wan2.2 task


@pytest.mark.parametrize("held_out", [(480, 832, 41), (720, 1280, 41)])
def test_the_official_a14b_calibration_predicts_each_size_it_was_not_fitted_on(held_out):
    """Leave one size of the official A14B grid out, refit, predict its points: device peak within 3 %, steady
    step within 5 %. The two sizes out here are the two where the decode grows the cache (the proportional
    decode slack) and the 480p one holds the --offload_model point (the stranded T5 cache)."""
    from wanfit.model.calibration import load_calibration
    from wanfit.model.fit import fit_calibration, size_key
    from wanfit.model.predict import predict
    from wanfit.vocabulary.measurement import fastest_steady_step_s
    from wanfit.vocabulary.measurements_file import load_measurements

    ms = load_measurements(OFFICIAL_CALIBRATIONS / "wan2.2-t2v-a14b.measurements.jsonl")
    out = [m for m in ms if (m.workload.height, m.workload.width, m.workload.frames) == held_out]
    assert out
    ceilings = load_calibration(OFFICIAL_CALIBRATIONS / "wan2.2-t2v-a14b.json").ceilings
    cal = fit_calibration([m for m in ms if size_key(m) != size_key(out[0])], "h100", "wan2.2-t2v-a14b", ceilings,
                          gpu_minutes=0.0, held_out=False)
    for m in out:
        p = predict(m.workload, m.plan, cal, first_in_process=bool(m.first_in_process))
        measured = max(s.device_used_peak_gib for s in m.stages if s.name not in ("init", "total"))
        assert p.peak_vram_gib == pytest.approx(measured, rel=0.03), m.plan.label()
        assert p.step_s == pytest.approx(fastest_steady_step_s(m.steps()), rel=0.05), m.plan.label()
