"""Checkpoint I/O: bytes on disk → `dict[str, np.ndarray]`; knows no model.

Formats: safetensors, PyTorch `.bin` (torch imported lazily), sharded checkpoints with an index, and
GGUF (our own reader). `resolve` finds the files in a local folder, the Hub cache or on the Hub.
"""

from __future__ import annotations

from pyengine.checkpoints.gguf import (
    GGMLType,
    GGUFFile,
    GGUFTensorInfo,
    dequantize,
    load_gguf_checkpoint,
    load_gguf_config,
    read_gguf,
)
from pyengine.checkpoints.resolve import (
    CONFIG_NAME,
    FLAX_WEIGHTS_NAME,
    GENERATION_CONFIG_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    TF2_WEIGHTS_NAME,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
    HubOptions,
    resolve_file,
    resolve_weight_files,
)
from pyengine.checkpoints.safetensors import load_safetensors, read_safetensors_metadata, save_safetensors
from pyengine.checkpoints.sharded import load_state_dict, parse_size, save_state_dict
from pyengine.checkpoints.torch_bin import load_torch_bin, save_torch_bin

__all__ = [
    "CONFIG_NAME",
    "FLAX_WEIGHTS_NAME",
    "GENERATION_CONFIG_NAME",
    "SAFE_WEIGHTS_INDEX_NAME",
    "SAFE_WEIGHTS_NAME",
    "TF2_WEIGHTS_NAME",
    "WEIGHTS_INDEX_NAME",
    "WEIGHTS_NAME",
    "GGMLType",
    "GGUFFile",
    "GGUFTensorInfo",
    "HubOptions",
    "dequantize",
    "load_gguf_checkpoint",
    "load_gguf_config",
    "load_safetensors",
    "load_state_dict",
    "load_torch_bin",
    "parse_size",
    "read_gguf",
    "read_safetensors_metadata",
    "resolve_file",
    "resolve_weight_files",
    "save_safetensors",
    "save_state_dict",
    "save_torch_bin",
]
