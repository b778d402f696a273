"""TensorFlow checkpoints <-> named NumPy arrays: `tf_model.h5` (Keras 2 weights layout, as transformers
4.57 writes it) and TF1 `.ckpt` checkpoints (read only; the original BERT releases).

`tf_model.h5` layout (what `tf_keras.Model.save_weights` writes and transformers' `load_tf_weights`
reads): root attrs `backend`, `keras_version`, `layer_names` (the model's top-level layers); one group
per layer with a `weight_names` attr listing full weight names (`<model_name>/<layer>/.../kernel:0`);
each weight is a dataset at `<layer>/<full weight name>`. transformers matches weights by name with the
first component (the model name) stripped, so names here are returned and taken in that stripped form:
`transformer/h_._0/attn/c_attn/weight:0`. A weight may sit in several layer groups (T5's shared
embedding is stored with the encoder and the decoder too): readers keep one copy.

Only h5py is needed for h5 files; TF1 checkpoints need TensorFlow.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

KERAS_VERSION = "2.20.1"  # the tf_keras version whose files we write (transformers 4.57 + TF 2.20)


def _h5py() -> Any:
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("Reading or writing tf_model.h5 needs h5py: pip install h5py") from exc
    return h5py


def _strings(attr: Any) -> list[str]:
    return [s.decode("utf8") if hasattr(s, "decode") else str(s) for s in np.asarray(attr).reshape(-1)]


def load_tf_h5(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a Keras-2 `tf_model.h5` into `{name without the model prefix: array}`.

    Raises:
        OSError: not an HDF5 weights file in the Keras layout (the message says what was found).
    """
    h5py = _h5py()
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise OSError(f"{path} is not a readable HDF5 file ({exc}); re-download or re-save the checkpoint.") from exc
    with f:
        if "layer_names" not in f.attrs:
            raise OSError(f"{path} is HDF5 but has no 'layer_names' attribute: not a Keras/transformers tf_model.h5.")
        out: dict[str, np.ndarray] = {}
        for layer in _strings(f.attrs["layer_names"]):
            group = f[layer]
            for full in _strings(group.attrs.get("weight_names", [])):
                name = full.split("/", 1)[1] if "/" in full else full
                out.setdefault(name, np.asarray(group[full]))
        return out


def save_tf_h5(path: str | os.PathLike, model_name: str, layers: Iterable[tuple[str, list[tuple[str, Any]]]]) -> None:
    """Write `tf_model.h5` as tf_keras' `save_weights` does.

    Args:
        path: the file to write.
        model_name: the Keras model name that prefixes every weight name (`tfgpt2lm_head_model`).
        layers: `(layer name, [(weight name without the model prefix, array), ...])` in layer order.
    """
    h5py = _h5py()
    layers = list(layers)
    with h5py.File(path, "w") as f:
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = KERAS_VERSION.encode("utf8")
        f.attrs["layer_names"] = np.array([name.encode("utf8") for name, _ in layers])
        for layer, weights in layers:
            group = f.create_group(layer)
            full_names = [_full_name(model_name, name) for name, _ in weights]
            group.attrs["weight_names"] = np.array([n.encode("utf8") for n in full_names])
            for full, (_, array) in zip(full_names, weights):
                array = np.asarray(array)
                group.create_dataset(full, data=array, dtype=array.dtype)
        f.create_group("top_level_model_weights").attrs["weight_names"] = np.array([], dtype=np.float64)


def _full_name(model_name: str, name: str) -> str:
    # Weights created outside the model's name scope (T5's `shared/shared/embeddings:0`) keep their own
    # first component; the caller marks them with a leading "/".
    return name[1:] if name.startswith("/") else f"{model_name}/{name}"


def load_tf1_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a TF1 checkpoint (`model.ckpt`, given as the prefix or as `model.ckpt.index`) into
    `{variable name: array}`, skipping optimizer slots and the step counter."""
    from pyengine.backends.tf import tf

    prefix = str(path).removesuffix(".index")
    reader = tf.train.load_checkpoint(prefix)
    skip = ("adam_v", "adam_m", "AdamWeightDecayOptimizer", "AdamWeightDecayOptimizer_1", "global_step")
    return {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if not any(part in skip for part in name.split("/"))
    }


def load_tf_as_pt(
    path: str, options: Any, to_pt: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]], variant: str | None
) -> dict[str, np.ndarray]:
    """`from_tf=True` for PyTorch models: TF weights (tf_model.h5, or a TF1 `.ckpt.index`) renamed by the
    family's `convert.tf_to_pt` into PyTorch names and layouts."""
    from pyengine.checkpoints.resolve import TF2_WEIGHTS_NAME, add_variant, resolve_file

    if os.path.isfile(path) and path.endswith(".index"):
        return to_pt(load_tf1_checkpoint(path))
    if os.path.isfile(path):
        return to_pt(load_tf_h5(path))
    return to_pt(load_tf_h5(resolve_file(path, add_variant(TF2_WEIGHTS_NAME, variant), options)))
