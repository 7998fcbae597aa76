"""Open-Sora 1.2 weights: the official checkpoints' names and layout <-> this package's modules.

The official STDiT3 (``hpcai-tech/OpenSora-STDiT-v3``, a transformers ``PreTrainedModel``: config.json +
model.safetensors) names its parameters after its modules (hpcaitech/Open-Sora ``opensora/v1.2``,
``opensora/models/stdit/stdit3.py``, ``layers/blocks.py``): ``x_embedder.proj``, ``t_embedder.mlp.{0,2}``,
``fps_embedder.mlp.{0,2}``, ``t_block.1``, ``y_embedder.y_proj.fc{1,2}``, the buffer ``y_embedder.y_embedding``,
``spatial_blocks.{i}`` / ``temporal_blocks.{i}`` (``attn.qkv`` fused, ``attn.{q,k}_norm``, ``attn.proj``,
``cross_attn.q_linear``, ``cross_attn.kv_linear`` fused, ``cross_attn.proj``, ``mlp.fc{1,2}``,
``scale_shift_table``), ``final_layer.{linear,scale_shift_table}`` and ``rope.freqs`` (rotary_embedding_torch's
frequencies, a parameter that is not learned: checked against ours and dropped). Here the blocks are one list in
execution order: spatial i -> ``transformer_blocks.{2i}``, temporal i -> ``transformer_blocks.{2i+1}``, and the
fused projections are split into ``to_q`` / ``to_k`` / ``to_v``.

The official VAE (``hpcai-tech/OpenSora-VAE-v1.2``) holds ``spatial_vae.module.*`` (diffusers AutoencoderKL
names), ``temporal_vae.*`` (the names of ``vae.py`` here) and the buffers ``scale`` / ``shift``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from ...errors import BenchError

OFFICIAL = {"transformer": "hpcai-tech/OpenSora-STDiT-v3", "vae": "hpcai-tech/OpenSora-VAE-v1.2",
            "text_encoder": "DeepFloyd/t5-v1_1-xxl"}
WEIGHTS_FILE = "model.safetensors"

# The spatial VAE of OpenSoraVAE_V1_2: PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers, subfolder vae (SDXL VAE).
SDXL_VAE = {"in_channels": 3, "out_channels": 3, "latent_channels": 4,
            "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
            "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "norm_num_groups": 32,
            "act_fn": "silu", "sample_size": 1024, "scaling_factor": 0.13025}
TEMPORAL_VAE = {"channels": 4, "latent": 4, "filters": 128, "res_blocks": 4, "multipliers": [1, 2, 2, 4],
                "downsample": [False, True, True], "groups": 32}
VAE_CONFIG = {"spatial": SDXL_VAE, "temporal": TEMPORAL_VAE, "micro_frame_size": 17, "micro_batch_size": 4,
              "shift": [-0.10, 0.34, 0.27, 0.98], "scale": [3.85, 2.32, 2.33, 3.06]}

# top-level official module -> ours (a prefix of each parameter name)
_TOP = {"x_embedder.proj.": "patch_embed.proj.", "t_embedder.mlp.0.": "time_embed.linear_1.",
        "t_embedder.mlp.2.": "time_embed.linear_2.", "fps_embedder.mlp.0.": "fps_embed.linear_1.",
        "fps_embedder.mlp.2.": "fps_embed.linear_2.", "t_block.1.": "adaln_single.linear.",
        "y_embedder.y_proj.fc1.": "caption_projection.linear_1.", "y_embedder.y_proj.fc2.": "caption_projection.linear_2.",
        "final_layer.linear.": "proj_out."}
_TOP_EXACT = {"y_embedder.y_embedding": "caption_projection.null_embedding",
              "final_layer.scale_shift_table": "out_scale_shift_table"}
# inside a block: official -> ours (one to one)
_BLOCK = {"attn.q_norm.weight": "attn1.norm_q.weight", "attn.k_norm.weight": "attn1.norm_k.weight",
          "attn.proj.weight": "attn1.to_out.weight", "attn.proj.bias": "attn1.to_out.bias",
          "cross_attn.q_linear.weight": "attn2.to_q.weight", "cross_attn.q_linear.bias": "attn2.to_q.bias",
          "cross_attn.proj.weight": "attn2.to_out.weight", "cross_attn.proj.bias": "attn2.to_out.bias",
          "mlp.fc1.weight": "ff.proj_in.weight", "mlp.fc1.bias": "ff.proj_in.bias",
          "mlp.fc2.weight": "ff.proj_out.weight", "mlp.fc2.bias": "ff.proj_out.bias",
          "scale_shift_table": "scale_shift_table"}
# fused official projections -> the parts they are split into (rows, in order)
_FUSED = {"attn.qkv": ("attn1.to_q", "attn1.to_k", "attn1.to_v"), "cross_attn.kv_linear": ("attn2.to_k", "attn2.to_v")}
_BLOCK_RE = re.compile(r"^(spatial|temporal)_blocks\.(\d+)\.(.+)$")
DERIVED = ("rope.freqs",)  # official parameters that are computed here, not loaded


# ---------------------------------------------------------------------------------------------------
# The official architecture's parameter names and shapes (from the modules listed above)
# ---------------------------------------------------------------------------------------------------
def official_parameter_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor of the official STDiT3 state dict (parameters and the persistent null caption) for an
    official config (hidden_size, depth, num_heads, patch_size, in_channels, caption_channels,
    model_max_length, mlp_ratio, pred_sigma, qk_norm)."""
    d, heads, c_in = config["hidden_size"], config["num_heads"], config["in_channels"]
    p = tuple(config["patch_size"])
    cap, hidden = config["caption_channels"], int(d * config["mlp_ratio"])
    out = c_in * 2 if config["pred_sigma"] else c_in
    shapes: dict[str, tuple[int, ...]] = {
        "x_embedder.proj.weight": (d, c_in, *p), "x_embedder.proj.bias": (d,),
        "t_embedder.mlp.0.weight": (d, 256), "t_embedder.mlp.0.bias": (d,),
        "t_embedder.mlp.2.weight": (d, d), "t_embedder.mlp.2.bias": (d,),
        "fps_embedder.mlp.0.weight": (d, 256), "fps_embedder.mlp.0.bias": (d,),
        "fps_embedder.mlp.2.weight": (d, d), "fps_embedder.mlp.2.bias": (d,),
        "t_block.1.weight": (6 * d, d), "t_block.1.bias": (6 * d,),
        "y_embedder.y_proj.fc1.weight": (d, cap), "y_embedder.y_proj.fc1.bias": (d,),
        "y_embedder.y_proj.fc2.weight": (d, d), "y_embedder.y_proj.fc2.bias": (d,),
        "y_embedder.y_embedding": (config["model_max_length"], cap),
        "rope.freqs": (d // heads // 2,),
        "final_layer.scale_shift_table": (2, d),
        "final_layer.linear.weight": (p[0] * p[1] * p[2] * out, d), "final_layer.linear.bias": (p[0] * p[1] * p[2] * out,),
    }
    block = {"scale_shift_table": (6, d), "attn.qkv.weight": (3 * d, d), "attn.qkv.bias": (3 * d,),
             "attn.proj.weight": (d, d), "attn.proj.bias": (d,),
             "cross_attn.q_linear.weight": (d, d), "cross_attn.q_linear.bias": (d,),
             "cross_attn.kv_linear.weight": (2 * d, d), "cross_attn.kv_linear.bias": (2 * d,),
             "cross_attn.proj.weight": (d, d), "cross_attn.proj.bias": (d,),
             "mlp.fc1.weight": (hidden, d), "mlp.fc1.bias": (hidden,),
             "mlp.fc2.weight": (d, hidden), "mlp.fc2.bias": (d,)}
    if config.get("qk_norm", True):
        block.update({"attn.q_norm.weight": (d // heads,), "attn.k_norm.weight": (d // heads,)})
    for kind in ("spatial", "temporal"):
        for i in range(config["depth"]):
            shapes.update({f"{kind}_blocks.{i}.{k}": v for k, v in block.items()})
    return shapes


# ---------------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------------
_CONFIG_KEYS = ("in_channels", "patch_size", "hidden_size", "depth", "num_heads", "mlp_ratio", "caption_channels",
                "model_max_length", "qk_norm", "pred_sigma", "input_sq_size")
# STDiT3Config's defaults (opensora/models/stdit/stdit3.py), for keys an official config.json leaves out
_OFFICIAL_DEFAULTS = {"in_channels": 4, "patch_size": [1, 2, 2], "hidden_size": 1152, "depth": 28, "num_heads": 16,
                      "mlp_ratio": 4.0, "caption_channels": 4096, "model_max_length": 300, "qk_norm": True,
                      "pred_sigma": True, "input_sq_size": 512}


def config_from_official(official: dict) -> dict:
    """Our transformer config from an official config.json."""
    return {k: (list(official.get(k, _OFFICIAL_DEFAULTS[k])) if k == "patch_size" else official.get(k, _OFFICIAL_DEFAULTS[k]))
            for k in _CONFIG_KEYS}


def official_config(config) -> dict:
    """An official-style config.json for our transformer config."""
    out = {k: (list(config[k]) if k == "patch_size" else config[k]) for k in _CONFIG_KEYS}
    out.update({"model_type": "STDiT3", "architectures": ["STDiT3"]})
    return out


# ---------------------------------------------------------------------------------------------------
# State dicts
# ---------------------------------------------------------------------------------------------------
def our_name(official: str) -> list[str]:
    """The parameter name(s) an official name maps to (several for a fused projection; none when derived)."""
    if official in DERIVED:
        return []
    if official in _TOP_EXACT:
        return [_TOP_EXACT[official]]
    for old, new in _TOP.items():
        if official.startswith(old):
            return [new + official[len(old):]]
    m = _BLOCK_RE.match(official)
    if m is None:
        raise KeyError(f"unknown official STDiT3 parameter {official!r}")
    kind, i, rest = m.group(1), int(m.group(2)), m.group(3)
    prefix = f"transformer_blocks.{2 * i + (kind == 'temporal')}."
    if rest in _BLOCK:
        return [prefix + _BLOCK[rest]]
    module, _, leaf = rest.rpartition(".")
    if module in _FUSED:
        return [f"{prefix}{part}.{leaf}" for part in _FUSED[module]]
    raise KeyError(f"unknown official STDiT3 parameter {official!r}")


def from_official(state: dict[str, torch.Tensor], rope_freqs: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Official STDiT3 state dict -> ours (fused projections split by rows; ``rope.freqs`` checked, dropped)."""
    out = {}
    for name, tensor in state.items():
        targets = our_name(name)
        if not targets:
            if rope_freqs is not None and not torch.allclose(tensor.float().cpu(), rope_freqs.float().cpu()):
                raise BenchError(f"the checkpoint's {name} differs from the RoPE frequencies 1/10000^(2k/d) this "
                                 f"model computes: not an Open-Sora 1.2 STDiT3 checkpoint")
            continue
        parts = tensor.chunk(len(targets), dim=0) if len(targets) > 1 else (tensor,)
        for target, part in zip(targets, parts):
            out[target] = part.contiguous()
    return out


def to_official(state: dict[str, torch.Tensor], rope_freqs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Ours -> the official layout (the inverse of :func:`from_official`), e.g. to write an official-style file."""
    out: dict[str, list] = {}
    for ours, tensor in state.items():
        official = _official_name(ours)
        out.setdefault(official[0], [None] * official[2])[official[1]] = tensor
    merged = {name: (parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)).contiguous() for name, parts in out.items()}
    merged["rope.freqs"] = rope_freqs.clone()
    return merged


def _official_name(ours: str) -> tuple[str, int, int]:
    """(official name, index among the fused parts, number of parts)."""
    for old, new in _TOP_EXACT.items():
        if ours == new:
            return old, 0, 1
    for old, new in _TOP.items():
        if ours.startswith(new):
            return old + ours[len(new):], 0, 1
    m = re.match(r"^transformer_blocks\.(\d+)\.(.+)$", ours)
    if m is None:
        raise KeyError(f"no official name for parameter {ours!r}")
    k, rest = int(m.group(1)), m.group(2)
    prefix = f"{'temporal' if k % 2 else 'spatial'}_blocks.{k // 2}."
    for old, new in _BLOCK.items():
        if rest == new:
            return prefix + old, 0, 1
    module, _, leaf = rest.rpartition(".")
    for fused, parts in _FUSED.items():
        if module in parts:
            return f"{prefix}{fused}.{leaf}", parts.index(module), len(parts)
    raise KeyError(f"no official name for parameter {ours!r}")


def vae_from_official(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """Official OpenSoraVAE_V1_2 state dict -> ours (the ``spatial_vae.module.`` wrapper dropped; the scale and
    shift buffers checked against the config)."""
    out = {}
    for name, tensor in state.items():
        if name in ("scale", "shift"):
            if not torch.allclose(tensor.float().flatten(), torch.tensor(config[name], dtype=torch.float32)):
                raise BenchError(f"the VAE checkpoint's latent {name} {tensor.flatten().tolist()} differs from "
                                 f"Open-Sora 1.2's {config[name]}")
            continue
        if name.startswith("spatial_vae.module."):
            out["spatial_vae." + name[len("spatial_vae.module."):]] = tensor
        elif name.startswith("temporal_vae."):
            out[name] = tensor
        else:
            raise BenchError(f"unknown tensor {name!r} in the Open-Sora VAE checkpoint")
    return out


def vae_to_official(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    out = {("spatial_vae.module." + k[len("spatial_vae."):] if k.startswith("spatial_vae.") else k): v
           for k, v in state.items()}
    out["scale"] = torch.tensor(config["scale"], dtype=torch.float32)
    out["shift"] = torch.tensor(config["shift"], dtype=torch.float32)
    return out


# ---------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------
def _missing(err: Exception | None = None) -> BenchError:
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    state = "HF_HUB_OFFLINE is set and they are not in the local cache" if offline else "they could not be fetched"
    ids = ", ".join(OFFICIAL.values())
    why = f" ({str(err).splitlines()[0]})" if err is not None and str(err) else ""
    return BenchError(f"Open-Sora 1.2 weights are not available ({state}){why}: download {ids} with `hf download "
                      f"<repo>` on a machine with internet (then copy the cache or pass model.path=<local dir>)")


def _file(source: str, name: str) -> Path:
    """A file of a local directory or of a hub repo (from the cache when offline)."""
    if os.path.isdir(source):
        path = Path(source) / name
        if not path.is_file():
            raise BenchError(f"{source} has no {name}: expected the official layout (config.json, {WEIGHTS_FILE})")
        return path
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(source, name))
    except Exception as err:  # noqa: BLE001 - any hub failure is the same missing-weights message
        raise _missing(err) from None


def load_official_transformer(source: str, dtype: torch.dtype = torch.float32):
    """STDiT3 from the official config.json + model.safetensors (hub id or directory)."""
    from safetensors.torch import load_file

    from .transformer import OpenSoraSTDiT3Transformer

    config = config_from_official(json.loads(_file(source, "config.json").read_text()))
    state = load_file(str(_file(source, WEIGHTS_FILE)))
    model = OpenSoraSTDiT3Transformer(**config)
    model.load_state_dict(from_official(state, model.rope_freqs), strict=True)
    return model.to(dtype).eval()


def load_official_vae(source: str, dtype: torch.dtype = torch.float32, config: dict | None = None):
    from safetensors.torch import load_file

    from .vae import OpenSoraVAE

    config = config or VAE_CONFIG
    model = OpenSoraVAE(**config)
    model.load_state_dict(vae_from_official(load_file(str(_file(source, WEIGHTS_FILE))), config), strict=True)
    return model.to(dtype).eval()


def load_official_pipeline(cls, source: str, dtype: torch.dtype = torch.float32):
    """The official checkpoints: the transformer from ``source``, the VAE and T5 from their hub ids."""
    from transformers import AutoTokenizer, T5EncoderModel

    from .scheduler import OpenSoraRFlowScheduler

    transformer = load_official_transformer(source, dtype)
    vae = load_official_vae(OFFICIAL["vae"], dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(OFFICIAL["text_encoder"])
        text_encoder = T5EncoderModel.from_pretrained(OFFICIAL["text_encoder"], dtype=dtype)
    except (OSError, ValueError) as err:
        raise _missing(err) from None
    return cls(tokenizer=tokenizer, text_encoder=text_encoder.eval(), transformer=transformer, vae=vae,
               scheduler=OpenSoraRFlowScheduler())


def load_saved_pipeline(cls, directory: str, dtype: torch.dtype = torch.float32):
    """A directory written by ``OpenSoraPipeline.save_pretrained`` (each component in its subfolder)."""
    from transformers import AutoTokenizer, T5EncoderModel

    from .scheduler import OpenSoraRFlowScheduler
    from .transformer import OpenSoraSTDiT3Transformer
    from .vae import OpenSoraVAE

    root = Path(directory)
    return cls(tokenizer=AutoTokenizer.from_pretrained(root / "tokenizer"),
               text_encoder=T5EncoderModel.from_pretrained(root / "text_encoder", dtype=dtype).eval(),
               transformer=OpenSoraSTDiT3Transformer.from_pretrained(root / "transformer", torch_dtype=dtype).eval(),
               vae=OpenSoraVAE.from_pretrained(root / "vae", torch_dtype=dtype).eval(),
               scheduler=OpenSoraRFlowScheduler.from_pretrained(root / "scheduler"))


def save_official(transformer, directory: str | Path) -> Path:
    """Write a transformer in the official layout (config.json + model.safetensors): the round-trip's input."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(official_config(transformer.config), indent=2))
    save_file(to_official(transformer.state_dict(), transformer.rope_freqs), str(directory / WEIGHTS_FILE))
    return directory


def save_official_vae(vae, directory: str | Path) -> Path:
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in vae_to_official(vae.state_dict(), vae.config).items()},
              str(directory / WEIGHTS_FILE))
    return directory
