"""Fill every GPU profile's missing class rates from its datasheet by stated rules (basis "derived").

    python bench/transfer_rates.py           # rewrite the derived entries of profiles/*.json
    python bench/transfer_rates.py --check   # exit 1 when a derived entry is stale (the tests run this)

A class rate that was measured (wanfit's own device run) or published is kept as it is; every other class a GPU
can run is derived: a datasheet figure of that GPU (or its derived GEMM rate) times the median ratio of the GPUs
that have an achieved figure of that class, same family first. The rule and its inputs are written into the
entry's source, so the numbers live in the profiles only and are never typed twice. The rules:

  gemm_bf16        bf16_dense_tflops x median(gemm / bf16_dense) of the same architecture, else of all GPUs
  attention_fa2    gemm_bf16 x (fa2 / gemm) of the reference nearest in GEMM rate on the same tensor path:
                   mma.sync-native (Ampere, Ada, sm120 Blackwell) or async-MMA (Hopper, sm100 Blackwell: FA2
                   keeps the legacy mma.sync there) -- a kernel's efficiency follows the GPU's compute/bandwidth
                   balance, which a cut-down part (H20) does not share with a full one (H100)
  attention_fa3    sm90 only: gemm_bf16 x (fa3 / gemm) of the nearest sm90 reference
  attention_cudnn  gemm_bf16 x (cudnn / gemm) of the nearest reference of the same family (Ampere, Ada, Hopper,
                   sm100, sm120), else of all GPUs
  attention_fa4    sm100: gemm_bf16 x (fa4 / gemm) of the nearest sm100 reference; sm90: the GPU's fa3 rate
                   (no public sm90 FA4 figure); absent elsewhere
  conv3d_vae       gemm_bf16 x (conv3d / gemm) of the nearest reference: TF32 tensor throughput is half the
                   bf16 rate on every generation from Ampere to Blackwell (NVIDIA architecture whitepapers), so
                   the convolutions follow the GEMM rate
  elementwise      memory_bandwidth_gbps x median(elementwise / memory bandwidth)
  d2d_copy         memory_bandwidth_gbps x median(copy / memory bandwidth)
  h2d_pinned       host_link_gbps x median(pinned h2d / host link)
  nccl_*           gpu_p2p_gbps x median(busbw / p2p) of that collective (all-to-all without a figure of its
                   own: the all-gather's); without peer-to-peer: half the pinned h2d rate (every byte crosses
                   the host link twice, down to host memory and up to the other GPU)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

PROFILES = Path(__file__).resolve().parents[1] / "profiles"
ORDER = ("gemm_bf16", "attention_fa2", "attention_fa3", "attention_cudnn", "attention_fa4", "conv3d_vae",
         "elementwise", "fp64", "h2d_pinned", "d2d_copy", "nccl_all_gather", "nccl_all_to_all")
UNITS = {"elementwise": "GB/s", "h2d_pinned": "GB/s", "d2d_copy": "GB/s", "nccl_all_gather": "GB/s",
         "nccl_all_to_all": "GB/s"}


def _cc(p: dict) -> tuple[int, int]:
    major, minor = p["compute_capability"].split(".")
    return int(major), int(minor)


def family(p: dict) -> str:
    major = _cc(p)[0]
    return {10: "sm100", 12: "sm120"}.get(major, p["architecture"])


def tensor_path(p: dict) -> str:
    return "async-MMA" if _cc(p)[0] in (9, 10) else "mma.sync-native"


def achieved(p: dict, cls: str) -> float | None:
    rate = p["class_rates"].get(cls)
    return rate["value"] if rate is not None and rate["basis"] != "derived" else None


def _value(p: dict, cls: str) -> float | None:
    rate = p["class_rates"].get(cls)
    return rate["value"] if rate is not None else None


def _ratio_rule(profiles: dict[str, dict], target: dict, cls: str, base_of, base_name: str, group=None,
                fallback_all: bool = True, nearest: bool = False) -> tuple[float, str] | None:
    """(median of achieved(cls) / base over the reference GPUs -- or, `nearest`, the ratio of the reference whose
    base is nearest the target's -- and the words saying which) or None."""
    def refs(same_group: bool) -> list[tuple[str, float]]:
        out = []
        for key, p in sorted(profiles.items()):
            a, b = achieved(p, cls), base_of(p)
            if a is None or not b or (same_group and group is not None and group(p) != group(target)):
                continue
            out.append((key, a / b))
        return out

    found, where = refs(True), (f"the {group(target)} GPUs" if group is not None else "the GPUs")
    if not found and fallback_all and group is not None:
        found, where = refs(False), f"all GPUs (none of the {group(target)} GPUs has one)"
    if not found:
        return None
    listed = ", ".join(f"{k} {r:.3f}" for k, r in found)
    if nearest and base_of(target):
        key, ratio = min(found, key=lambda kr: abs(math.log(base_of(profiles[kr[0]]) / base_of(target))))
        return ratio, f"{cls} / {base_name} of {key}, the one of {where} with an achieved figure nearest in " \
                      f"{base_name} ({listed})"
    ratio = statistics.median(r for _, r in found)
    return ratio, f"median {cls} / {base_name} of {where} with an achieved figure: {listed}"


def _entry(cls: str, value: float, words: str) -> OrderedDict:
    return OrderedDict(value=round(value, 3 if value < 10 else 1), unit=UNITS.get(cls, "TFLOP/s"), basis="derived",
                       source=f"derived: {words}")


def derive(profiles: dict[str, dict], p: dict, cls: str) -> OrderedDict | None:
    """The derived entry of `cls` for profile `p` (its achieved entries and the earlier classes already set)."""
    cc = _cc(p)
    gemm = _value(p, "gemm_bf16")
    if cls == "gemm_bf16":
        if not p.get("bf16_dense_tflops"):
            return None
        rule = _ratio_rule(profiles, p, cls, lambda q: q.get("bf16_dense_tflops"), "bf16_dense_tflops",
                           group=lambda q: q["architecture"])
        return rule and _entry(cls, p["bf16_dense_tflops"] * rule[0], f"bf16_dense_tflops {p['bf16_dense_tflops']:g}"
                                                                      f" x {rule[0]:.3f} ({rule[1]})")
    if cls in ("attention_fa2", "attention_fa3", "attention_cudnn", "attention_fa4", "conv3d_vae") and not gemm:
        return None
    if cls == "attention_fa3" and cc != (9, 0):
        return None
    if cls == "attention_fa4":
        if cc == (9, 0):
            fa3 = _value(p, "attention_fa3")
            return fa3 and _entry(cls, fa3, f"the GPU's attention_fa3 {fa3:g} x 1.0 (FA4's sm90 path taken at "
                                             f"FA3's rate: no public sm90 FA4 figure)")
        if cc[0] != 10:
            return None
    group = {"attention_fa2": tensor_path, "attention_fa3": family, "attention_cudnn": family,
             "attention_fa4": family}.get(cls)
    if cls.startswith("attention_") or cls == "conv3d_vae":
        rule = _ratio_rule(profiles, p, cls, lambda q: _value(q, "gemm_bf16"), "gemm_bf16", group=group,
                           fallback_all=cls in ("attention_cudnn", "conv3d_vae"), nearest=True)
        return rule and _entry(cls, gemm * rule[0], f"gemm_bf16 {gemm:g} x {rule[0]:.3f} ({rule[1]})")
    if cls in ("elementwise", "d2d_copy"):
        bw = p["memory_bandwidth_gbps"]
        rule = _ratio_rule(profiles, p, cls, lambda q: q["memory_bandwidth_gbps"], "memory_bandwidth_gbps")
        return rule and _entry(cls, bw * rule[0], f"memory_bandwidth_gbps {bw:g} x {rule[0]:.4f} ({rule[1]})")
    if cls == "h2d_pinned":
        link = p.get("host_link_gbps")
        rule = link and _ratio_rule(profiles, p, cls, lambda q: q.get("host_link_gbps"), "host_link_gbps")
        return rule and _entry(cls, link * rule[0], f"host_link_gbps {link:g} x {rule[0]:.3f} ({rule[1]})")
    if cls.startswith("nccl_"):
        return _derive_nccl(profiles, p, cls)
    return None  # fp64: datasheet figures entered per GPU with their rule


def _derive_nccl(profiles: dict[str, dict], p: dict, cls: str) -> OrderedDict | None:
    p2p = p.get("gpu_p2p_gbps")
    if not p2p:
        h2d = _value(p, "h2d_pinned")
        return h2d and _entry(cls, h2d / 2, f"no peer-to-peer path ({p['interconnect']}): half the pinned h2d rate "
                                             f"{h2d:g} (every byte crosses the host link twice)")
    for source_cls in (cls, "nccl_all_gather"):
        rule = _ratio_rule(profiles, p, source_cls, lambda q: q.get("gpu_p2p_gbps"), "gpu_p2p_gbps")
        if rule:
            borrowed = "" if source_cls == cls else " (no achieved all-to-all figure: the all-gather's share)"
            return _entry(cls, p2p * rule[0], f"gpu_p2p_gbps {p2p:g} x {rule[0]:.3f} ({rule[1]}){borrowed}")
    return None


def rederive(profiles: dict[str, dict]) -> dict[str, dict]:
    """Every profile with its derived entries recomputed (achieved entries untouched), classes in ORDER."""
    out = {k: json.loads(json.dumps(p), object_pairs_hook=OrderedDict) for k, p in profiles.items()}
    for p in out.values():
        p["class_rates"] = OrderedDict((c, r) for c, r in p["class_rates"].items() if r["basis"] != "derived"
                                       or c == "fp64")
    for cls in ORDER:
        for p in out.values():
            if cls in p["class_rates"]:
                continue
            entry = derive(out, p, cls)
            if entry is not None:
                p["class_rates"][cls] = entry
    for p in out.values():
        p["class_rates"] = OrderedDict((c, p["class_rates"][c]) for c in ORDER if c in p["class_rates"])
    return out


def _dump(p: dict) -> str:
    return json.dumps(p, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the derived entries are current")
    args = parser.parse_args(argv)
    paths = sorted(PROFILES.glob("*.json"))
    profiles: dict[str, Any] = {p.stem: json.loads(p.read_text(), object_pairs_hook=OrderedDict) for p in paths}
    derived = rederive(profiles)
    stale = [p for p in paths if p.read_text() != _dump(derived[p.stem])]
    if args.check:
        for path in stale:
            print(f"{path}: derived class rates are stale: run `python bench/transfer_rates.py`", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.write_text(_dump(derived[path.stem]))
    print(f"rewrote {len(stale)} of {len(paths)} profiles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
