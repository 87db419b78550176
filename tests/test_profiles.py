"""GPU profiles: every shipped file validates and sources its numbers; names resolve; pins to published figures."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.paths import profiles_dir
from wanfit.vocabulary.profiles import (
    RATE_CLASSES,
    GpuProfile,
    get_profile,
    known_names,
    load_profiles,
    match_local_gpu,
    numeric_fields,
    profile_table_rows,
)

REQUIRED_KEYS = {"rtx6000", "l40s", "rtx4090", "rtx4080", "rtx3090", "rtx5090", "a100-40g", "a100-80g", "h100",
                 "h100-pcie", "h200", "h20", "b200", "l4", "a10g", "rtx-a6000"}
# What the planner's transfer code reads; renaming any of these breaks it.
PLANNER_FIELDS = {"key", "name", "memory_gib", "bf16_dense_tflops", "memory_bandwidth_gbps", "host_link_gbps",
                  "architecture", "class_rates", "default_attention", "interconnect", "gpu_p2p_gbps",
                  "cuda_context_gib"}
# The class keys the multi-GPU planner and the transfer read.
CLASS_KEYS = {"gemm_bf16", "attention_fa2", "attention_fa3", "attention_cudnn", "attention_fa4", "conv3d_vae",
              "elementwise", "fp64", "h2d_pinned", "nccl_all_gather", "nccl_all_to_all"}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def profiles() -> dict[str, GpuProfile]:
    return load_profiles()


def test_every_required_gpu_has_a_valid_profile(profiles):
    assert set(profiles) == REQUIRED_KEYS
    assert set(GpuProfile.model_fields) >= PLANNER_FIELDS
    for path in sorted(profiles_dir().glob("*.json")):
        profile = GpuProfile.model_validate(json.loads(path.read_text()))
        assert profile.key == path.stem


def test_every_numeric_field_has_a_source_and_nulls_say_why(profiles):
    assert {"memory_gib", "bf16_dense_tflops", "host_link_gbps", "cuda_context_gib"} <= set(numeric_fields())
    for profile in profiles.values():
        for field in numeric_fields():
            source = profile.sources.get(field, "")
            assert len(source) > 10, f"{profile.key}.{field} has no source"
            if getattr(profile, field) is None:
                assert source.startswith("null"), f"{profile.key}.{field} is null without saying why"


def test_usable_memory_is_the_driver_total(profiles):
    for profile in profiles.values():
        assert profile.memory_gib == pytest.approx(profile.nvidia_smi_total_mib / 1024, rel=5e-3)
        # the driver keeps a little; never more than 7 % (ECC on GDDR takes 6.25 %)
        assert 0.93 * profile.memory_total_gib <= profile.memory_gib <= profile.memory_total_gib


def test_measured_matmul_is_plausible_against_the_datasheet(profiles):
    for profile in profiles.values():
        if profile.achieved("gemm_bf16") is None or profile.bf16_dense_tflops is None:
            continue
        # GeForce cards boost past the whitepaper clock (up to ~+15 %); power-limited cards (L4) fall far below
        ratio = profile.achieved("gemm_bf16") / profile.bf16_dense_tflops
        assert 0.5 <= ratio <= 1.25, (profile.key, ratio)


# Published figures, each checked against the document named in the comment.
PINS = [
    # NVIDIA H100 datasheet: H100 SXM BF16 1,979 TFLOPS with sparsity (989 dense), 3.35 TB/s, 80 GB, 700 W
    ("h100", "bf16_dense_tflops", 989.0), ("h100", "memory_bandwidth_gbps", 3350), ("h100", "memory_total_gib", 80),
    ("h100", "tdp_w", 700),
    # nvidia-smi on this project's device machines: H100 80GB HBM3 81559 MiB, H200 143771 MiB
    ("h100", "memory_gib", 81559 / 1024), ("h200", "memory_gib", 143771 / 1024),
    # NVIDIA H100 datasheet: H100 PCIe BF16 1,513 TFLOPS with sparsity, 2 TB/s
    ("h100-pcie", "bf16_dense_tflops", 1513 / 2), ("h100-pcie", "memory_bandwidth_gbps", 2000),
    # NVIDIA H200 datasheet: 141 GB HBM3e at 4.8 TB/s, BF16 1,979 TFLOPS with sparsity
    ("h200", "memory_total_gib", 141), ("h200", "memory_bandwidth_gbps", 4800), ("h200", "bf16_dense_tflops", 989.0),
    # NVIDIA L40S datasheet: 48 GB GDDR6, 864 GB/s, BF16 362.05 | 733* TFLOPS, 350 W
    ("l40s", "memory_total_gib", 48), ("l40s", "memory_bandwidth_gbps", 864), ("l40s", "bf16_dense_tflops", 362.05),
    ("l40s", "tdp_w", 350),
    # NVIDIA Ada whitepaper Appendix A: RTX 4090 24 GB, 1008 GB/s, BF16 with FP32 accumulate 165.2/330.4
    ("rtx4090", "memory_total_gib", 24), ("rtx4090", "memory_bandwidth_gbps", 1008),
    ("rtx4090", "bf16_dense_tflops", 165.2),
    # NVIDIA RTX Blackwell whitepaper Table 3: RTX 5090 BF16 with FP32 accumulate 209.5/419; 32 GB at 1,792 GB/s
    ("rtx5090", "bf16_dense_tflops", 209.5), ("rtx5090", "memory_bandwidth_gbps", 1792),
    # NVIDIA GA102 whitepaper: RTX 3090 BF16 with FP32 accumulate 71/142, 936 GB/s; RTX A6000 154.8/309.6
    ("rtx3090", "bf16_dense_tflops", 71), ("rtx3090", "memory_bandwidth_gbps", 936),
    ("rtx-a6000", "bf16_dense_tflops", 154.8), ("rtx-a6000", "memory_bandwidth_gbps", 768),
    # NVIDIA A100 datasheet: BF16 312 | 624* TFLOPS; 40GB 1,555 GB/s, 80GB SXM 2,039 GB/s
    ("a100-40g", "bf16_dense_tflops", 312), ("a100-40g", "memory_bandwidth_gbps", 1555),
    ("a100-80g", "bf16_dense_tflops", 312), ("a100-80g", "memory_bandwidth_gbps", 2039),
    # NVIDIA HGX B200 datasheet: 180 GB HBM3E, 7.7 TB/s, FP16/BF16 4.5 PFLOPS with sparsity per GPU, 1,000 W
    ("b200", "memory_total_gib", 180), ("b200", "bf16_dense_tflops", 2250), ("b200", "memory_bandwidth_gbps", 7700),
    # NVIDIA L4 datasheet: 24 GB, 300 GB/s, BF16 242 TFLOPS with sparsity, 72 W
    ("l4", "bf16_dense_tflops", 121), ("l4", "memory_bandwidth_gbps", 300), ("l4", "tdp_w", 72),
    # NVIDIA RTX PRO Blackwell whitepaper Table 4: RTX PRO 6000 Workstation 96 GB, BF16 with FP32 accumulate 503.8
    ("rtx6000", "memory_total_gib", 96), ("rtx6000", "bf16_dense_tflops", 503.8), ("rtx6000", "tdp_w", 600),
    # PCIe 5.0 x16 = 32 GT/s x 16 x 128/130 / 8 = 63.0 GB/s per direction; PCIe 4.0 x16 = 31.5
    ("h100", "host_link_gbps", 63.0), ("l40s", "host_link_gbps", 31.5),
    # wanfit device measurement 2026-11-22 (shared/reference/h100-2026-11-22.json ceilings) and the kernel
    # comparison of ../shared/DESIGN.md (SDPA cuDNN 640, flash 366 at 27,280 tokens)
    ("h100", "gemm_bf16", 797.3), ("h100", "attention_cudnn", 640), ("h100", "attention_fa2", 366),
    ("h100", "h2d_pinned", 53.1), ("h100", "d2d_copy", 2975),
    # FlashAttention-3 paper Fig. 5 (head dim 128, 16k, non-causal): FA3 648; nccl-tests issue 326: 360 GB/s
    ("h100", "attention_fa3", 648), ("h100", "nccl_all_gather", 360),
    # NVIDIA H100 / HGX B200 datasheets: NVLink 900 GB/s and 1.8 TB/s bidirectional
    ("h100", "gpu_p2p_gbps", 450), ("b200", "gpu_p2p_gbps", 900),
]


@pytest.mark.parametrize(("key", "field", "published"), PINS)
def test_pinned_published_values(profiles, key, field, published):
    profile = profiles[key]
    value = profile.rate(field).value if field in RATE_CLASSES else getattr(profile, field)
    assert value == pytest.approx(published, rel=0.01)


@pytest.mark.parametrize(("name", "key"), [
    ("rtx6000", "rtx6000"), ("rtx-pro-6000", "rtx6000"), ("RTXPRO6000", "rtx6000"), ("RTX PRO 6000", "rtx6000"),
    ("h100", "h100"), ("H100-SXM", "h100"), ("h100_pcie", "h100-pcie"), ("L40S", "l40s"), ("rtx 4090", "rtx4090"),
    ("a6000", "rtx-a6000"), ("A100-80GB", "a100-80g"),
    ("NVIDIA H100 80GB HBM3", "h100"), ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "rtx6000"),
])
def test_keys_aliases_and_device_names_resolve(name, key):
    assert get_profile(name).key == key


@pytest.mark.parametrize(("name", "suggestion"), [("l40", "l40s"), ("h100x", "h100"), ("rtx4070", "rtx4080")])
def test_unknown_gpu_is_one_line_with_closest_names(name, suggestion):
    with pytest.raises(WanfitError) as err:
        get_profile(name)
    message = str(err.value)
    assert "\n" not in message
    assert f"unknown GPU '{name}'" in message
    assert suggestion in message.split("closest:")[1]
    assert "wanfit gpus" in message


def test_known_names_are_unique_keys_and_aliases(profiles):
    names = known_names(profiles)
    assert len(names) == len(set(names))
    assert set(names) >= REQUIRED_KEYS
    assert {"rtx-pro-6000", "rtxpro6000", "h100-sxm"} <= set(names)


@pytest.mark.parametrize(("device", "total_gib", "key"), [
    ("NVIDIA H100 80GB HBM3", 81559 / 1024, "h100"),       # NVML total
    ("NVIDIA H100 80GB HBM3", 79.19, "h100"),              # torch total_memory (driver-reserved memory left out)
    ("NVIDIA H200", 143771 / 1024, "h200"),
    ("NVIDIA H200", 139.8, "h200"),
    ("NVIDIA H100 PCIe", 79.2, "h100-pcie"),
    ("GeForce RTX 4090", 23.99, "rtx4090"),                # older drivers print no "NVIDIA " prefix
    ("NVIDIA L40S", 49140 / 1024, "l40s"),                 # ECC off
    ("NVIDIA A100 80GB PCIe", 79.1, "a100-80g"),
    ("NVIDIA RTX PRO 6000 Blackwell Server Edition", 95.6, "rtx6000"),
])
def test_match_local_gpu_finds_the_profile(device, total_gib, key):
    profile = match_local_gpu(device, total_gib)
    assert profile is not None and profile.key == key


@pytest.mark.parametrize(("device", "total_gib"), [
    ("NVIDIA GeForce RTX 4090", 47.99),                              # 48 GB modified board
    ("NVIDIA H100 NVL", 93.0),                                       # another board
    ("NVIDIA H100 80GB HBM3 MIG 1g.10gb", 9.5),                      # a MIG slice
    ("NVIDIA H100 80GB HBM3", 9.5),                                  # right name, wrong memory
    ("NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition", 95.6),
    ("NVIDIA GeForce RTX 4080 SUPER", 15.99),
])
def test_match_local_gpu_rejects_other_boards(device, total_gib):
    assert match_local_gpu(device, total_gib) is None


def test_profile_table_rows(profiles):
    rows = profile_table_rows(profiles)
    assert [r["key"] for r in rows] == sorted(REQUIRED_KEYS)
    h100 = next(r for r in rows if r["key"] == "h100")
    assert h100["memory_gib"] == 79.65 and h100["bf16_tflops"] == 989.4
    assert (h100["gemm"], h100["fa3"], h100["attn"], h100["allgather"]) == ("797 m", "648 p", "cudnn/fa2", "360 p")
    l40s = next(r for r in rows if r["key"] == "l40s")
    assert l40s["fa3"] is None and l40s["fa4"] is None and l40s["gemm"] == "269 p" and l40s["fa2"].endswith(" d")
    assert profile_table_rows() == rows


def _copy_profiles(tmp_path: Path) -> Path:
    directory = tmp_path / "profiles"
    shutil.copytree(profiles_dir(), directory)
    return directory


def _load_error(directory: Path) -> str:
    with pytest.raises(WanfitError) as err:
        load_profiles(directory)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_corrupt_json_names_the_file(tmp_path):
    directory = _copy_profiles(tmp_path)
    (directory / "l40s.json").write_text("{ not json")
    message = _load_error(directory)
    assert "corrupt GPU profile" in message and str(directory / "l40s.json") in message


def test_number_without_source_is_rejected(tmp_path):
    directory = _copy_profiles(tmp_path)
    path = directory / "rtx4090.json"
    data = json.loads(path.read_text())
    del data["sources"]["memory_bandwidth_gbps"]
    path.write_text(json.dumps(data))
    message = _load_error(directory)
    assert str(path) in message and "memory_bandwidth_gbps" in message


def test_inconsistent_memory_and_mismatched_key_are_rejected(tmp_path):
    directory = _copy_profiles(tmp_path)
    path = directory / "h100.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "memory_gib": 80.0}))
    assert "memory_gib" in _load_error(directory)
    path.write_text(json.dumps({**data, "key": "h100-sxm5"}))
    assert "must equal the file name" in _load_error(directory)


def test_duplicate_alias_across_files_is_rejected(tmp_path):
    directory = _copy_profiles(tmp_path)
    path = directory / "h200.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "aliases": [*data["aliases"], "h100-sxm"]}))
    assert "both claim the name 'h100-sxm'" in _load_error(directory)


def test_profile_model_is_frozen_and_strict(profiles):
    data = profiles["h100"].model_dump()
    with pytest.raises(ValidationError):
        GpuProfile.model_validate({**data, "flops": 1.0})
    with pytest.raises(ValidationError):
        profiles["h100"].memory_gib = 1.0


def test_docs_table_is_generated_from_the_profiles():
    spec = importlib.util.spec_from_file_location("gpus_table", REPO / "bench" / "gpus_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0, "docs/gpus.md is stale: run `python bench/gpus_table.py`"


def test_profiles_load_without_torch():
    code = ("import sys; from wanfit.vocabulary.profiles import get_profile; get_profile('l40s'); "
            "assert 'torch' not in sys.modules and 'sklearn' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_profile_has_the_class_table_and_runtime_backends(profiles):
    assert set(RATE_CLASSES) >= CLASS_KEYS
    for p in profiles.values():
        assert set(p.default_attention) == {"diffusers", "wan"}
        assert p.sources["default_attention"] and p.sources["interconnect"]
        major = int(p.compute_capability.split(".")[0])
        assert ("attention_fa3" in p.class_rates) == (major == 9 and p.rate("gemm_bf16") is not None), p.key
        assert "attention_fa4" not in p.class_rates or major in (9, 10)
        # SDPA prefers cuDNN on sm90/sm100 only; the official code runs FA2 with flash-attn 2 installed
        assert p.default_attention == {"diffusers": "cudnn" if major in (9, 10) else "fa2", "wan": "fa2"}, p.key
        for name, rate in p.class_rates.items():
            assert rate.unit == RATE_CLASSES[name][0] and len(rate.source) > 20
            assert rate.basis != "derived" or rate.source.startswith("derived:") or name == "fp64"
    h100 = profiles["h100"]
    assert (h100.rate("gemm_bf16").basis, h100.rate("attention_cudnn").value, h100.rate("attention_fa2").value) == (
        "measured", 640.0, 366.0)
    assert profiles["h100"].rate("fp64").value / profiles["rtx4090"].rate("fp64").value > 20


def test_interconnect_figures_the_multi_gpu_planner_reads(profiles):
    assert profiles["h100"].gpu_p2p_gbps == 450.0 and profiles["b200"].gpu_p2p_gbps == 900.0
    assert profiles["rtx4090"].gpu_p2p_gbps is None and "no P2P" in profiles["rtx4090"].interconnect
    for p in profiles.values():
        ag, a2a = p.rate("nccl_all_gather"), p.rate("nccl_all_to_all")
        if ag is not None:
            assert a2a is not None and ag.unit == "GB/s"
            link = p.gpu_p2p_gbps or p.host_link_gbps
            assert ag.value <= link, p.key  # a bus bandwidth never beats the link it runs on


def _h100_data() -> dict:
    return json.loads((profiles_dir() / "h100.json").read_text())


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d["class_rates"].update(flops={"value": 1.0, "unit": "TFLOP/s", "basis": "public",
                                              "source": "a made-up class of kernels"}), "unknown class"),
    (lambda d: d["class_rates"]["gemm_bf16"].update(unit="GB/s"), "unit GB/s"),
    (lambda d: d["class_rates"]["gemm_bf16"].update(basis="guessed"), "basis"),
    (lambda d: d.update(compute_capability="8.9"), "attention_fa3"),
    (lambda d: d["default_attention"].pop("wan"), "runtime wan"),
    (lambda d: d["sources"].pop("interconnect"), "interconnect without a source"),
])
def test_bad_class_tables_are_rejected(mutate, message):
    data = _h100_data()
    mutate(data)
    with pytest.raises(ValidationError) as err:
        GpuProfile.model_validate(data)
    assert message in str(err.value)


def test_achieved_reads_measured_and_published_rates_only(profiles):
    h100, h200, l40s = profiles["h100"], profiles["h200"], profiles["l40s"]
    assert h200.achieved("elementwise") == h200.rate("elementwise").value == 19.04
    assert l40s.rate("elementwise").basis == "derived" and l40s.achieved("elementwise") is None
    assert h200.default_attention["diffusers"] == "cudnn" and h200.achieved("attention_cudnn") == 601.15
    assert h100.rate("attention_fa3").basis == "public"
    assert h100.achieved("attention_fa3") == h100.rate("attention_fa3").value
    assert l40s.rate("attention_fa3") is None and l40s.achieved("attention_fa3") is None  # FA3 is Hopper's only


def _rates_module():
    spec = importlib.util.spec_from_file_location("transfer_rates", REPO / "bench" / "transfer_rates.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_derived_rates_are_current():
    assert _rates_module().main(["--check"]) == 0, "derived class rates are stale: run python bench/transfer_rates.py"


def test_derivation_rules_on_synthetic_profiles():
    """Two reference GPUs of one family and one target: every derived rate is the target's datasheet figure times
    the median ratio of the references, achieved entries untouched, FA3 only on sm90."""
    rates = _rates_module()

    def gpu(key, arch, cc, dense, bw, link, p2p, **achieved):
        units = {"elementwise": "GB/s", "h2d_pinned": "GB/s", "nccl_all_gather": "GB/s"}
        return {"key": key, "architecture": arch, "compute_capability": cc, "bf16_dense_tflops": dense,
                "memory_bandwidth_gbps": bw, "host_link_gbps": link, "gpu_p2p_gbps": p2p, "interconnect": "x",
                "class_rates": {c: {"value": v, "unit": units.get(c, "TFLOP/s"), "basis": "public", "source": "s"}
                                for c, v in achieved.items()}}

    profiles = {"a": gpu("a", "Ada", "8.9", 100.0, 1000.0, 30.0, None, gemm_bf16=80.0, attention_fa2=60.0,
                         elementwise=4.0, h2d_pinned=24.0),
                "b": gpu("b", "Ada", "8.9", 200.0, 1000.0, 30.0, None, gemm_bf16=180.0, attention_fa2=90.0,
                         elementwise=6.0, h2d_pinned=27.0),
                "h": gpu("h", "Hopper", "9.0", 1000.0, 3000.0, 60.0, 400.0, gemm_bf16=800.0, attention_fa3=640.0,
                         nccl_all_gather=320.0),
                "c": gpu("c", "Ada", "8.9", 100.0, 1000.0, 30.0, None, gemm_bf16=50.0),
                "t": gpu("t", "Ada", "8.9", 300.0, 500.0, 30.0, None)}
    out = rates.rederive(profiles)
    t = out["t"]["class_rates"]
    assert t["gemm_bf16"]["value"] == pytest.approx(300 * 0.8, rel=5e-3)   # median of 0.5, 0.8, 0.9
    gemm = t["gemm_bf16"]["value"]
    assert t["attention_fa2"]["value"] == pytest.approx(gemm * 0.5, rel=5e-3)  # b's: nearest in GEMM rate
    assert t["elementwise"]["value"] == pytest.approx(500 * 0.005, rel=5e-3)
    assert t["h2d_pinned"]["value"] == pytest.approx(30 * 0.85, rel=5e-3)
    assert t["nccl_all_gather"]["value"] == pytest.approx(t["h2d_pinned"]["value"] / 2, rel=5e-3)  # no P2P
    assert "attention_fa3" not in t and all(e["basis"] == "derived" for e in t.values())
    assert out["a"]["class_rates"]["gemm_bf16"]["basis"] == "public"
    h = out["h"]["class_rates"]
    assert h["attention_fa4"]["value"] == 640.0 and h["nccl_all_to_all"]["value"] == 320.0  # FA3's / all-gather's
