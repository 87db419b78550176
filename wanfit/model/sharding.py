"""Several GPUs for one video: what each rank holds and does, from the one-GPU calibration and counted bytes.

Memory per rank (wanfit.model.weights places the weights; this module adds what sharding moves):
  weights: the DiT's stored weights / N under FSDP (every expert: the official code builds them all on the GPU
  when N > 1), the T5 encoder's / N under T5 FSDP, the VAE (and image encoder) whole on every rank;
  in flight: FSDP's gathered bf16 blocks and its root unit (embeddings, head) during a forward;
  activations: the fitted activation of L/U tokens (U = Ulysses x ring degree), plus the all-to-all's gathered
  q, k, v beside their sources; the latents, the text encode and the VAE decode are whole on every rank that
  runs them (the official code decodes on rank 0 only: wan/textimage2video.py, text2video.py `if self.rank
  == 0: videos = self.vae.decode(x0)`; diffusers' context-parallel pipeline decodes on every rank);
  outside torch: each rank's CUDA context and NCCL's buffers.
Time per rank: the step's token-proportional terms / U (attention is quadratic in the whole sequence but each
rank computes 1/U of the heads), its per-block overhead whole, plus communication from counted bytes over the
profile's NCCL bus bandwidth: Ulysses moves 4 x (U-1)/U x (L/U) x hidden x 2 bytes per rank per attention
layer (q, k, v and the output), FSDP all-gathers (N-1)/N of the bf16 DiT per forward, T5 FSDP (N-1)/N of the
bf16 encoder per encode, ring attention all-gathers K and V; a text encoder on the CPU encodes on every rank at
once, the ranks sharing the host's cores.

Assumptions, named in every prediction's notes and widening its interval until a multi-GPU calibration
(`wanfit calibrate --gpus N`) measures them: the overlaps below, NCCL_BUFFERS_GIB, FSDP_BLOCKS_IN_FLIGHT,
COLLECTIVE_LATENCY_S, and the bus bandwidth when the profile has no measured figure. Pure Python (`plan` path).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from wanfit.model import kernel_classes
from wanfit.model.context import PredictContext
from wanfit.model.geometry import crosses_expert_switch
from wanfit.model.official_params import umt5_encoder_root_bytes, wan_dit_root_bytes
from wanfit.model.stages import denoise
from wanfit.model.transfer import TERM_BOUND
from wanfit.vocabulary.errors import WanfitError
from wanfit.vocabulary.units import GB, GIB

# NCCL's own device buffers per rank (channels x peers x NCCL_BUFFSIZE, 4 MiB by default, plus its work FIFO):
# not measured; 0.5 GiB stands for a node of up to 8 GPUs, and its own size is added to the memory interval.
NCCL_BUFFERS_GIB = 0.5
# FSDP1 (the official code's wan/distributed/fsdp.py; limit_all_gathers on by default) keeps at most two blocks'
# gathered parameters alive: the one computing and the one being gathered; the root unit (patch and text
# embeddings, time embedding, head) stays gathered through the forward and weighs about one block more.
FSDP_BLOCKS_IN_FLIGHT = 2
FSDP_ROOT_BLOCKS = 1
# One NCCL collective's fixed cost on one host (launch and synchronisation), seconds: an assumption of the
# order nccl-tests report for small messages on NVLink and PCIe hosts.
COLLECTIVE_LATENCY_S = 30e-6
# When the profile has no NCCL figure: this share of the GPU-to-GPU link's datasheet rate (or the host link's,
# for cards that exchange through it).
LINK_EFFICIENCY = 0.7
# Interval policy until measured: the split of a step over ranks is not measured (+10 % relative), and each
# communication figure may be off by its own size.
SPLIT_TIME_REL = 0.10


class NoInterconnect(WanfitError):
    """The GPU profile has no figure to time collectives with: that GPU cannot be planned several at a time."""


@dataclass(frozen=True)
class Links:
    """NCCL bus bandwidths one rank sees (GB/s) and what they rest on."""

    all_to_all_gbps: float
    all_gather_gbps: float
    measured: bool
    note: str


def links(profile: Any, gpus: int) -> Links:
    """The collectives' bus bandwidth on `gpus` GPUs of the profile's kind: its NCCL figures, else a share of
    its GPU-to-GPU link, else of its host link (cards without peer-to-peer exchange through the host)."""
    key = getattr(profile, "key", "this GPU")
    a2a, ag = kernel_classes.rate(profile, "nccl_all_to_all"), kernel_classes.rate(profile, "nccl_all_gather")
    if a2a and ag:
        basis = ", ".join(sorted({a2a[1], ag[1]}))
        return Links(a2a[0], ag[0], basis == "measured",
                     f"collectives at {key}'s NCCL bus bandwidth (all-to-all {a2a[0]:g}, all-gather {ag[0]:g} GB/s, "
                     f"{basis}; at the profile's GPU count, used for {gpus})")
    p2p = getattr(profile, "gpu_p2p_gbps", None)
    link, what = (float(p2p), "GPU-to-GPU link") if p2p else (float(getattr(profile, "host_link_gbps", 0) or 0),
                                                              "host link")
    if link <= 0:
        raise NoInterconnect(f"{key} has no interconnect figure (NCCL bus bandwidth, GPU-to-GPU or host link): "
                          f"plan it on one GPU, or add one to its profile")
    rate = (a2a or ag or (link * LINK_EFFICIENCY,))[0]
    return Links(rate, (ag or a2a or (rate,))[0], False,
                 f"no NCCL figure for {key}: collectives assumed at {LINK_EFFICIENCY:g} x its {what} "
                 f"({link:g} GB/s per direction) = {link * LINK_EFFICIENCY:g} GB/s")


def padded_tokens(pc: PredictContext) -> float:
    """The DiT sequence each rank computes a 1/U share of: padded up to a multiple of U (the official
    sp_dit_forward pads it so every rank gets as many tokens)."""
    u = pc.plan.sequence_parallel
    return math.ceil(pc.x["tokens"] / u) * u


def bf16_dit_gib(pc: PredictContext) -> float:
    """One DiT expert in bf16: what FSDP's mixed precision gathers, whatever the stored dtype."""
    return pc.calibrated_weight("transformer", "bf16")


def in_flight_gib(pc: PredictContext) -> float:
    """FSDP's gathered bf16 blocks and root unit during a forward (0 without DiT FSDP)."""
    if not pc.plan.dit_fsdp:
        return 0.0
    return (FSDP_BLOCKS_IN_FLIGHT + FSDP_ROOT_BLOCKS) * bf16_dit_gib(pc) / pc.weights.dit_layers


def t5_in_flight_gib(pc: PredictContext) -> float:
    """T5 FSDP's gathered blocks during the encode and its root unit, which holds the token embedding (vocab x
    d_model bf16: 1.96 GiB for UMT5-XXL, about five blocks' worth), 0 without it."""
    if not pc.plan.t5_fsdp:
        return 0.0
    te = pc.spec.text_encoder
    embedding = te["vocab_size"] * te["d_model"] * 2 / GIB
    block = (pc.calibrated_weight("text_encoder", "bf16") - embedding) / te["num_layers"]
    return FSDP_BLOCKS_IN_FLIGHT * block + embedding


def kept_roots_gib(pc: PredictContext, stage: str) -> float:
    """FSDP roots left gathered on every rank after their forward, which expects a backward that inference never
    runs: the official code's FSDP1 does not reshard its root unit in the post-forward under FULL_SHARD
    (torch/distributed/fsdp/_runtime_utils.py _post_forward_reshard), nor does diffusers' FSDP2 (fully_shard's
    reshard_after_forward=None: False for the root, _fully_shard/_fsdp_state.py). T5's root (its 1.96 GiB token
    embedding, bf16; official only) stays from the encode on; each DiT expert's root (embeddings, time
    projection, head: 0.43 GiB for a 14B, the official layout's; diffusers leaves its fp32 time embedder
    unsharded, about 0.05 GiB of it, counted here on the safe side) from its first forward, so a two-expert run
    keeps the first expert's beside the second's in flight and both at the decode. The official README's
    several-GPU A14B peaks sat 1.9-2.9 GiB above wanfit's per-rank allocated peaks before these were counted."""
    kept = 0.0
    if pc.plan.t5_fsdp and stage not in ("init", "text_encode"):
        kept += umt5_encoder_root_bytes(pc.spec.text_encoder) / GIB
    if pc.plan.dit_fsdp and stage in ("denoise", "expert_switch", "vae_decode"):
        experts_run = 2 if crosses_expert_switch(pc.spec, pc.wl.steps) else 1
        roots = experts_run if stage == "vae_decode" else experts_run - 1  # in flight: counted by in_flight_gib
        kept += roots * wan_dit_root_bytes(pc.spec.transformer) / GIB
    return kept


def rank_activation_gib(pc: PredictContext, act: float, bf16_activation: float) -> tuple[float, float]:
    """(the step's transient on one rank, its bf16 resident activation): the activation fit at L/U tokens, the
    all-to-all's gathered q, k, v, FSDP's blocks in flight; fp32 weights' autocast casts stay on every rank
    that computes with them (none under FSDP, which gathers bf16)."""
    u = pc.plan.sequence_parallel
    m = pc.model(denoise.ACTIVATION)
    assert m is not None
    share = padded_tokens(pc) / u / pc.x["tokens"]
    rank_bf16 = max(0.0, m.predict({**pc.x, "hidden_state_gib": pc.x["hidden_state_gib"] * share}))
    knob_extra = 0.0 if pc.plan.dit_fsdp else act - bf16_activation
    gathered_qkv = 3 * pc.x["hidden_state_gib"] * share if pc.plan.ulysses > 1 else 0.0
    # diffusers' ring all-gathers the sequence's K and V for this rank's heads before attention runs.
    gathered_kv = 2 * pc.x["hidden_state_gib"] / pc.plan.ulysses if pc.plan.ring > 1 else 0.0
    return rank_bf16 + knob_extra + gathered_qkv + gathered_kv + whole_time_embedding_gib(pc) + in_flight_gib(pc), \
        rank_bf16


def whole_time_embedding_gib(pc: PredictContext) -> float:
    """The official sp_dit_forward embeds the timestep for the whole padded sequence in fp32 (e: dim, e0: 6 x dim
    per token) and gives each rank a chunk *view* of it, so every rank keeps the full-length storage through the
    blocks (wan/distributed/sequence_parallel.py): the (U-1)/U of it that the activation fit at L/U tokens leaves
    out. diffusers splits the timestep before embedding it (its _cp_plan): nothing to add."""
    u = pc.plan.ulysses
    if pc.plan.runtime != "wan" or u == 1:
        return 0.0
    return padded_tokens(pc) * 7 * pc.spec.inner_dim * 4 * pc.wl.batch / GIB * (1 - 1 / u)


@dataclass(frozen=True)
class RankStep:
    step_s: float  # one steady step on one rank, communication included
    comm_s: float  # the communication in it that no compute hides
    ulysses_bytes: float  # per rank per step
    fsdp_bytes: float  # per rank per step


def _overhead_s(pc: PredictContext) -> float:
    """The step's per-block and fixed overhead: every rank pays it whole."""
    m = pc.model(denoise.STEP)
    assert m is not None
    fixed = sum(term for name, term in m.terms(pc.x).items() if TERM_BOUND[name] == "overhead")
    return (fixed + m.intercept) * pc.scale.overhead


def ulysses_bytes_per_step(pc: PredictContext) -> float:
    """4 all-to-alls (q, k, v, output) per attention layer per forward, each moving (U-1)/U of the rank's
    L/U x hidden bf16 share."""
    u = pc.plan.ulysses
    if u == 1:
        return 0.0
    per_layer = 4 * (u - 1) / u * (padded_tokens(pc) / pc.plan.sequence_parallel) * pc.spec.inner_dim * 2
    return per_layer * pc.weights.dit_layers * pc.x["forwards_per_step"] * pc.wl.batch


def fsdp_bytes_per_step(pc: PredictContext) -> float:
    """Each forward all-gathers the (N-1)/N of the bf16 DiT a rank does not hold."""
    if not pc.plan.dit_fsdp:
        return 0.0
    n = pc.plan.gpus
    return (n - 1) / n * bf16_dit_gib(pc) * GIB * pc.x["forwards_per_step"]


def ring_bytes_per_step(pc: PredictContext) -> float:
    """diffusers' ring attention rotates K and V by all-gather (ContextParallelConfig rotate_method "allgather",
    the only one 0.42.1 has): after Ulysses each rank gathers the (R-1)/R of the sequence's K and V it lacks,
    for its hidden/U share of the heads, per attention layer."""
    r, u = pc.plan.ring, pc.plan.ulysses
    if r == 1:
        return 0.0
    per_layer = 2 * (r - 1) / r * padded_tokens(pc) * (pc.spec.inner_dim / u) * 2
    return per_layer * pc.weights.dit_layers * pc.x["forwards_per_step"] * pc.wl.batch


def rank_step(pc: PredictContext, base: float, step: float, net: Links) -> RankStep:
    """One rank's steady step: the parallel share of the one-GPU step, the overhead whole, the exposed
    communication. Overlap assumed (not measured): Ulysses' all-to-alls sit between the projections and
    attention, nothing hides them, nor the ring's K/V all-gathers, which attention waits for; FSDP gathers the
    next block on its own stream while one computes, so only the first block's gather and what exceeds the
    forward's compute show."""
    plan, u = pc.plan, pc.plan.sequence_parallel
    overhead = _overhead_s(pc)
    cast = denoise.cast_extra_s(pc, base) if plan.dit_dtype != "bf16" else 0.0
    per_rank_cast = 0.0 if plan.dit_fsdp else cast  # FSDP gathers bf16: no autocast casts
    parallel = max(0.0, step - overhead - cast) * padded_tokens(pc) / pc.x["tokens"] / u
    compute = parallel + overhead + per_rank_cast
    forwards = pc.x["forwards_per_step"]
    a2a = ulysses_bytes_per_step(pc)
    a2a_s = a2a / (net.all_to_all_gbps * GB) + (4 * pc.weights.dit_layers * forwards * COLLECTIVE_LATENCY_S
                                                 if plan.ulysses > 1 else 0.0)
    gather = fsdp_bytes_per_step(pc)
    gather_s = gather / (net.all_gather_gbps * GB)
    gather_exposed = max(gather_s / pc.weights.dit_layers, gather_s - compute) if gather else 0.0
    ring_s = ring_bytes_per_step(pc) / (net.all_gather_gbps * GB) + (2 * pc.weights.dit_layers * forwards
                                                                      * COLLECTIVE_LATENCY_S if plan.ring > 1 else 0.0)
    comm = a2a_s + gather_exposed + ring_s
    compute += ring_merge_s(pc)
    return RankStep(step_s=compute + comm, comm_s=comm, ulysses_bytes=a2a, fsdp_bytes=gather)


def ring_merge_s(pc: PredictContext) -> float:
    """diffusers' ring attention runs one attention call per K/V chunk and merges the R partial outputs with their
    log-sum-exps in fp32 (convert_to_fp32): each layer reads and writes the rank's L/R x hidden/U output R times,
    8 x L x hidden / U bytes, at the device's copy rate."""
    r, u = pc.plan.ring, pc.plan.ulysses
    if r == 1:
        return 0.0
    per_layer = 8 * padded_tokens(pc) * pc.spec.inner_dim / u
    total = per_layer * pc.weights.dit_layers * pc.x["forwards_per_step"] * pc.wl.batch
    return total / (pc.cal.feature_ceilings.device_copy_gbps * GB) * pc.scale.bandwidth


def t5_gather_s(pc: PredictContext, net: Links) -> float:
    """T5 FSDP: each encode (the prompt and the negative prompt) all-gathers (N-1)/N of the bf16 encoder;
    its compute is too short to hide it."""
    if not pc.plan.t5_fsdp:
        return 0.0
    n = pc.plan.gpus
    return 2 * (n - 1) / n * pc.calibrated_weight("text_encoder", "bf16") * GIB / (net.all_gather_gbps * GB)


def shared_host_encode_s(pc: PredictContext, encode_s: float) -> float:
    """A text encoder on the CPU under N ranks: every rank encodes the same prompts at the same time on the one
    host's cores, each with 1/N of them (the command wanfit prints sets OMP_NUM_THREADS to nproc / N; torchrun's
    own default, one thread a rank, is slower still on a host with more cores than ranks), so the CPU-bound
    encode, timed with the calibration host's cores to itself, takes about N times as long: (N-1) x encode_s
    more."""
    if pc.plan.text_encoder != "cpu" or pc.plan.gpus == 1:
        return 0.0
    return (pc.plan.gpus - 1) * encode_s


def init_broadcast_s(pc: PredictContext, net: Links) -> float:
    """FSDP's sync_module_states broadcasts rank 0's stored DiT weights to every rank at build."""
    if not pc.plan.dit_fsdp:
        return 0.0
    return pc.weights.dit * pc.weights.experts * GIB / (net.all_gather_gbps * GB)


def assumptions_note(pc: PredictContext, net: Links) -> str:
    plan = pc.plan
    parts = [f"{plan.gpus} GPUs: predicted per rank from the one-GPU calibration {pc.cal.label} and counted "
             f"bytes, not measured on several GPUs", net.note,
             f"NCCL buffers {NCCL_BUFFERS_GIB:g} GiB per rank assumed"]
    if plan.ulysses > 1:
        parts.append("Ulysses all-to-alls assumed not overlapped")
    if plan.dit_fsdp:
        parts.append(f"FSDP: {FSDP_BLOCKS_IN_FLIGHT} blocks + the root unit gathered at a time, each root left "
                     f"gathered after its forward, gathers assumed hidden behind the previous block's compute")
    if plan.ring > 1:
        parts.append("ring K/V all-gathers assumed not overlapped, its fp32 merge timed at the copy rate")
    if plan.text_encoder == "cpu":
        parts.append(f"the {plan.gpus} ranks' CPU text encodes share the host's cores (as many as the calibration "
                     f"host's assumed)")
    return "; ".join(parts) + ": wider interval"
