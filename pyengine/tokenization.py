"""A small transformers-like tokenizer over a `tokenizers.Tokenizer` (tokenizer.json or GGUF vocab).

It keeps HF's names (`bos_token_id`, `padding_side`, `__call__` → `input_ids`/`attention_mask`,
`batch_decode`, `save_pretrained`, `apply_chat_template`) so generation code written against
`transformers.PreTrainedTokenizerFast` works unchanged for the common calls.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pyengine.checkpoints.resolve import HubOptions, resolve_file

if TYPE_CHECKING:
    import tokenizers

    from pyengine.checkpoints.gguf import GGUFFile

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
_SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")
_GGUF_CONTROL_TOKEN = 3  # llama.cpp token_type: 1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte
_GGUF_USER_DEFINED_TOKEN = 4
# transformers' `clean_up_tokenization`: undo the spaces a word-level detokenizer leaves before punctuation.
_CLEANUPS = (
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
)


def _require_tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError as exc:
        raise ImportError(
            "pyengine.tokenization needs the tokenizers package: pip install tokenizers"
        ) from exc
    return tokenizers


def _token_content(value: Any) -> str | None:
    """tokenizer_config stores special tokens as strings or as serialized AddedToken dicts."""
    if isinstance(value, dict):
        return value.get("content")
    return value


class BatchEncoding(dict):
    """`dict` of `input_ids` / `attention_mask` that also allows attribute access, like HF's."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(self, device: Any) -> BatchEncoding:
        """Moves torch tensors to `device` (other values are returned as they are)."""
        return BatchEncoding({k: v.to(device) if hasattr(v, "to") else v for k, v in self.items()})


class Tokenizer:
    """Text ↔ token ids with a transformers-compatible surface.

    Attributes:
        backend: The wrapped `tokenizers.Tokenizer` (normalizer, pre-tokenizer, model, post-processor).
        bos_token, eos_token, unk_token, pad_token: Special token strings, or None; the `*_id`
            properties look them up in the vocabulary.
        padding_side: `"left"` (what decoder-only generation needs) or `"right"`.
        truncation_side: `"right"` or `"left"`.
        model_max_length: Default `max_length` for `truncation=True`, or None.
        chat_template: Jinja chat template, or None.
        clean_up_tokenization_spaces: Default of `decode`'s argument of the same name.

    Example:
        >>> tok = Tokenizer.from_pretrained("path/to/model")  # doctest: +SKIP
        >>> tok(["Hello", "Hi there"], padding=True, return_tensors="np")["input_ids"].shape  # doctest: +SKIP
        (2, 2)
    """

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        unk_token: str | None = None,
        pad_token: str | None = None,
        padding_side: str = "left",
        truncation_side: str = "right",
        model_max_length: int | None = None,
        chat_template: str | None = None,
        clean_up_tokenization_spaces: bool = False,
        name_or_path: str = "",
    ) -> None:
        for side_name, side in (("padding_side", padding_side), ("truncation_side", truncation_side)):
            if side not in ("left", "right"):
                raise ValueError(f"{side_name} must be 'left' or 'right', got {side!r}.")
        self.backend = backend
        self.bos_token, self.eos_token, self.unk_token, self.pad_token = (
            bos_token,
            eos_token,
            unk_token,
            pad_token,
        )
        self.padding_side = padding_side
        self.truncation_side = truncation_side
        self.model_max_length = model_max_length
        self.chat_template = chat_template
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self.name_or_path = name_or_path

    # ----------------------------------------------------------------------------------------------
    # Vocabulary and special tokens
    # ----------------------------------------------------------------------------------------------

    def _id_of(self, token: str | None) -> int | None:
        return None if token is None else self.backend.token_to_id(token)

    @property
    def bos_token_id(self) -> int | None:
        return self._id_of(self.bos_token)

    @property
    def eos_token_id(self) -> int | None:
        return self._id_of(self.eos_token)

    @property
    def unk_token_id(self) -> int | None:
        return self._id_of(self.unk_token)

    @property
    def pad_token_id(self) -> int | None:
        return self._id_of(self.pad_token)

    @property
    def all_special_ids(self) -> list[int]:
        """Ids of every special (control) token, the named ones included."""
        return sorted(i for i, t in self.backend.get_added_tokens_decoder().items() if t.special)

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary (without tokens added on top), as in transformers."""
        return self.backend.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        return self.backend.get_vocab(with_added_tokens=True)

    def convert_ids_to_tokens(
        self, ids: int | Sequence[int], skip_special_tokens: bool = False
    ) -> str | list[str]:
        """Id(s) → token string(s); a single int gives a single string."""
        if isinstance(ids, (int, np.integer)):
            return self.backend.id_to_token(int(ids))
        special = set(self.all_special_ids) if skip_special_tokens else set()
        return [self.backend.id_to_token(int(i)) for i in _to_id_list(ids) if int(i) not in special]

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | None | list[int | None]:
        if isinstance(tokens, str):
            return self.backend.token_to_id(tokens)
        return [self.backend.token_to_id(t) for t in tokens]

    # ----------------------------------------------------------------------------------------------
    # Encoding
    # ----------------------------------------------------------------------------------------------

    def encode(
        self,
        text: str,
        add_special_tokens: bool = True,
        truncation: bool | str | None = None,
        max_length: int | None = None,
    ) -> list[int]:
        """Token ids of one string (special tokens added by the post-processor when asked)."""
        return self._encode_batch([text], add_special_tokens, truncation, max_length)[0]

    def __call__(
        self,
        text: str | Sequence[str],
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        return_tensors: str | None = None,
        add_special_tokens: bool = True,
        return_attention_mask: bool = True,
    ) -> BatchEncoding:
        """Tokenizes one string or a batch, like `PreTrainedTokenizerFast.__call__`.

        Args:
            text: A string or a list of strings.
            padding: False / `"do_not_pad"`, True / `"longest"` (to the longest row), or `"max_length"`.
            truncation: True / `"longest_first"` / `"only_first"` cut rows to `max_length`
                (default `model_max_length`) on `truncation_side`.
            max_length: Length for truncation and `"max_length"` padding.
            return_tensors: None (Python lists), `"np"` (int64 arrays) or `"pt"` (torch int64 tensors).
            add_special_tokens: Run the post-processor (e.g. prepend BOS).
            return_attention_mask: Include `attention_mask` (1 = real token, 0 = padding).

        Returns:
            `BatchEncoding` with `input_ids` (and `attention_mask`): `[B, S]` for a batch; for one string
            a flat list, or `[1, S]` when `return_tensors` is set.
        """
        batched = not isinstance(text, str)
        texts = list(text) if batched else [text]
        ids = self._encode_batch(texts, add_special_tokens, truncation, max_length)
        masks = [[1] * len(row) for row in ids]
        target = self._pad_length(ids, padding, max_length)
        if target is not None:
            ids, masks = self._pad(ids, masks, target)
        out = BatchEncoding(input_ids=ids, attention_mask=masks)
        if not return_attention_mask:
            del out["attention_mask"]
        if return_tensors is not None:
            return BatchEncoding({k: _as_tensor(v, return_tensors) for k, v in out.items()})
        if not batched:
            return BatchEncoding({k: v[0] for k, v in out.items()})
        return out

    def _encode_batch(
        self,
        texts: list[str],
        add_special_tokens: bool,
        truncation: bool | str | None,
        max_length: int | None,
    ) -> list[list[int]]:
        """Encodes with the backend's own truncation, which keeps room for the special tokens."""
        limit = self._truncation_length(truncation, max_length)
        if limit is None:
            return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=add_special_tokens)]
        previous = self.backend.truncation
        self.backend.enable_truncation(limit, direction=self.truncation_side)
        try:
            return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=add_special_tokens)]
        finally:
            if previous is None:
                self.backend.no_truncation()
            else:
                self.backend.enable_truncation(**previous)

    def _truncation_length(self, truncation: bool | str | None, max_length: int | None) -> int | None:
        if truncation in (None, False, "do_not_truncate"):
            return None
        if truncation not in (True, "longest_first", "only_first"):
            raise ValueError(
                f"truncation={truncation!r} is not supported; use True, 'longest_first' or False."
            )
        return max_length if max_length is not None else self.model_max_length

    def _pad_length(self, ids: list[list[int]], padding: bool | str, max_length: int | None) -> int | None:
        if padding in (False, None, "do_not_pad"):
            return None
        if padding in (True, "longest"):
            return max((len(row) for row in ids), default=0)
        if padding == "max_length":
            if max_length is None:
                raise ValueError("padding='max_length' needs max_length=...")
            return max_length
        raise ValueError(f"padding={padding!r} is not supported; use True, 'longest', 'max_length' or False.")

    def _pad(self, ids: list[list[int]], masks: list[list[int]], length: int) -> tuple[list, list]:
        if self.pad_token_id is None:
            raise ValueError(
                "Asking to pad but the tokenizer does not have a padding token. Set one first, e.g. "
                "`tokenizer.pad_token = tokenizer.eos_token`."
            )
        padded_ids, padded_masks = [], []
        for row, mask in zip(ids, masks):
            n = max(length - len(row), 0)
            if self.padding_side == "left":
                padded_ids.append([self.pad_token_id] * n + row)
                padded_masks.append([0] * n + mask)
            else:
                padded_ids.append(row + [self.pad_token_id] * n)
                padded_masks.append(mask + [0] * n)
        return padded_ids, padded_masks

    # ----------------------------------------------------------------------------------------------
    # Decoding
    # ----------------------------------------------------------------------------------------------

    def decode(
        self, ids: Any, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None
    ) -> str:
        """Token ids (list, NumPy array, torch tensor or int) → text."""
        text = self.backend.decode(_to_id_list(ids), skip_special_tokens=skip_special_tokens)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        if clean_up_tokenization_spaces:
            for before, after in _CLEANUPS:
                text = text.replace(before, after)
        return text

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = False, **kwargs: Any) -> list[str]:
        """Decodes each row of a `[B, T]` batch."""
        rows = sequences.tolist() if hasattr(sequences, "tolist") else sequences
        return [self.decode(row, skip_special_tokens=skip_special_tokens, **kwargs) for row in rows]

    # ----------------------------------------------------------------------------------------------
    # Chat template
    # ----------------------------------------------------------------------------------------------

    def apply_chat_template(
        self,
        messages: list[dict[str, str]],
        add_generation_prompt: bool = True,
        tokenize: bool = False,
        **template_kwargs: Any,
    ) -> str | list[int]:
        """Renders `messages` with the model's Jinja chat template (sandboxed, like transformers).

        Args:
            messages: `[{"role": ..., "content": ...}, ...]`.
            add_generation_prompt: Append the header that starts the assistant's turn.
            tokenize: Return token ids instead of text (the template already holds the special tokens,
                so none are added).
            **template_kwargs: Extra variables for the template.

        Raises:
            ValueError: The tokenizer has no chat template.
            ImportError: jinja2 is not installed.
        """
        if self.chat_template is None:
            raise ValueError("This tokenizer has no chat_template; set `tokenizer.chat_template` first.")
        try:
            from jinja2.sandbox import ImmutableSandboxedEnvironment
        except ImportError as exc:
            raise ImportError("apply_chat_template needs jinja2: pip install jinja2") from exc

        def raise_exception(message: str) -> None:
            raise ValueError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        specials = {name: getattr(self, name) for name in _SPECIAL_NAMES}
        text = env.from_string(self.chat_template).render(
            messages=messages, add_generation_prompt=add_generation_prompt, **specials, **template_kwargs
        )
        return self.encode(text, add_special_tokens=False) if tokenize else text

    # ----------------------------------------------------------------------------------------------
    # Loading and saving
    # ----------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike, **kwargs: Any) -> Tokenizer:
        """Loads `tokenizer.json` (+ `tokenizer_config.json`, `special_tokens_map.json`) from a folder or repo.

        Args:
            path_or_repo_id: Local folder or Hub repo id.
            **kwargs: Hub options (`cache_dir`, `revision`, `token`, `local_files_only`, `subfolder`, ...)
                and overrides of the constructor arguments (`padding_side="right"`, `pad_token=...`).

        Raises:
            OSError: No `tokenizer.json` (slow-only tokenizers are not supported: convert with
                transformers' `AutoTokenizer.from_pretrained(...).save_pretrained(...)`).
        """
        tokenizers = _require_tokenizers()
        options = HubOptions.pop_from(kwargs)
        tokenizer_file = resolve_file(path_or_repo_id, TOKENIZER_FILE, options)
        config = _read_json(resolve_file(path_or_repo_id, TOKENIZER_CONFIG_FILE, options, required=False))
        special_map = _read_json(
            resolve_file(path_or_repo_id, SPECIAL_TOKENS_MAP_FILE, options, required=False)
        )
        template_file = resolve_file(path_or_repo_id, CHAT_TEMPLATE_FILE, options, required=False)
        init: dict[str, Any] = {
            name: _token_content(config.get(name, special_map.get(name))) for name in _SPECIAL_NAMES
        }
        for key in ("padding_side", "truncation_side", "model_max_length", "chat_template"):
            if config.get(key) is not None:
                init[key] = config[key]
        if template_file is not None:
            with open(template_file, encoding="utf-8") as f:
                init["chat_template"] = f.read()
        init["clean_up_tokenization_spaces"] = bool(config.get("clean_up_tokenization_spaces", False))
        if isinstance(init.get("model_max_length"), (int, float)) and init["model_max_length"] > 1e29:
            init["model_max_length"] = None  # transformers' "no limit" sentinel (1e30)
        init.update(kwargs)
        return cls(tokenizers.Tokenizer.from_file(tokenizer_file), name_or_path=str(path_or_repo_id), **init)

    @classmethod
    def from_gguf(cls, gguf: GGUFFile, **kwargs: Any) -> Tokenizer:
        """Builds the tokenizer stored in a GGUF file's `tokenizer.ggml.*` metadata.

        Only byte-level BPE vocabularies (`tokenizer.ggml.model == "gpt2"`, used by SmolLM2, Llama 3,
        Qwen, ...) are supported. Control tokens (token_type 3) become special tokens; BOS/EOS are
        added by the post-processor when `tokenizer.ggml.add_bos_token` / `add_eos_token` say so.

        Args:
            gguf: A file from `pyengine.checkpoints.read_gguf`.
            **kwargs: Overrides of the constructor arguments.

        Raises:
            NotImplementedError: A SentencePiece (`"llama"`) or other non-BPE vocabulary.
        """
        md = gguf.metadata
        model = md.get("tokenizer.ggml.model")
        if model != "gpt2":
            raise NotImplementedError(
                f"GGUF tokenizer model {model!r} is not supported (only byte-level BPE 'gpt2' is). For "
                "SentencePiece ('llama') vocabularies, load tokenizer.json from the original Hub repo with "
                "Tokenizer.from_pretrained."
            )
        tokens: list[str] = md["tokenizer.ggml.tokens"]
        backend = _byte_level_bpe(tokens, md)

        def token(key: str) -> str | None:
            idx = md.get(f"tokenizer.ggml.{key}")
            return tokens[idx] if idx is not None and 0 <= idx < len(tokens) else None

        init: dict[str, Any] = {
            "bos_token": token("bos_token_id"),
            "eos_token": token("eos_token_id"),
            "unk_token": token("unknown_token_id"),
            "pad_token": token("padding_token_id"),
            "chat_template": md.get("tokenizer.chat_template"),
            "model_max_length": md.get(f"{md.get('general.architecture')}.context_length"),
            "name_or_path": gguf.path,
        }
        init.update(kwargs)
        return cls(backend, **init)

    def save_pretrained(self, save_directory: str | os.PathLike) -> tuple[str, ...]:
        """Writes `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json`.

        transformers' `AutoTokenizer.from_pretrained(save_directory)` loads the result as a
        `PreTrainedTokenizerFast` with the same special tokens and padding side.

        Returns:
            The paths written.
        """
        os.makedirs(save_directory, exist_ok=True)
        paths = tuple(
            os.path.join(save_directory, n)
            for n in (TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE)
        )
        self.backend.save(paths[0])
        specials = {name: getattr(self, name) for name in _SPECIAL_NAMES if getattr(self, name) is not None}
        config: dict[str, Any] = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **specials,
            "padding_side": self.padding_side,
            "truncation_side": self.truncation_side,
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
        }
        if self.model_max_length is not None:
            config["model_max_length"] = self.model_max_length
        if self.chat_template is not None:
            config["chat_template"] = self.chat_template
        for path, content in ((paths[1], config), (paths[2], specials)):
            with open(path, "w", encoding="utf-8") as f:
                f.write(json.dumps(content, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
        return paths

    def __repr__(self) -> str:
        return (
            f"Tokenizer(name_or_path={self.name_or_path!r}, vocab_size={self.vocab_size}, "
            f"bos={self.bos_token!r}, eos={self.eos_token!r}, pad={self.pad_token!r}, "
            f"padding_side={self.padding_side!r})"
        )


def _byte_level_bpe(tokens: list[str], md: dict[str, Any]) -> tokenizers.Tokenizer:
    """GPT-2-style byte-level BPE from GGUF tokens/merges, laid out as transformers builds it.

    The pre-tokenizer is ByteLevel with the GPT-2 split regex, as transformers uses for every GGUF
    BPE vocabulary (llama.cpp's per-model `tokenizer.ggml.pre` regexes are not reproduced).
    """
    tokenizers = _require_tokenizers()
    from tokenizers import AddedToken, decoders, models, pre_tokenizers

    vocab = {tok: i for i, tok in enumerate(tokens)}
    merges = [tuple(m.split(" ", 1)) for m in md.get("tokenizer.ggml.merges", [])]
    unk_id = md.get("tokenizer.ggml.unknown_token_id")
    unk = tokens[unk_id] if unk_id is not None else None
    backend = tokenizers.Tokenizer(models.BPE(vocab, merges, unk_token=unk, fuse_unk=False))
    add_prefix_space = bool(md.get("tokenizer.ggml.add_space_prefix", False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(
        add_prefix_space=add_prefix_space, trim_offsets=False, use_regex=True
    )
    backend.decoder = decoders.ByteLevel()
    types = md.get("tokenizer.ggml.token_type", [])
    backend.add_special_tokens(
        [
            AddedToken(tokens[i], special=True, normalized=False)
            for i, t in enumerate(types)
            if t == _GGUF_CONTROL_TOKEN
        ]
    )
    user = [
        AddedToken(tokens[i], special=False, normalized=False)
        for i, t in enumerate(types)
        if t == _GGUF_USER_DEFINED_TOKEN
    ]
    if user:
        backend.add_tokens(user)
    post = _bos_eos_processor(tokens, md)
    if post is not None:
        backend.post_processor = post
    return backend


def _bos_eos_processor(tokens: list[str], md: dict[str, Any]) -> Any:
    """TemplateProcessing that adds BOS/EOS as the GGUF asks (transformers always adds BOS when absent)."""
    from tokenizers import processors

    bos_id, eos_id = md.get("tokenizer.ggml.bos_token_id"), md.get("tokenizer.ggml.eos_token_id")
    add_bos = bos_id is not None and md.get("tokenizer.ggml.add_bos_token", True)
    add_eos = eos_id is not None and md.get("tokenizer.ggml.add_eos_token", False)
    if not (add_bos or add_eos):
        return None
    bos, eos = (tokens[bos_id] if add_bos else None), (tokens[eos_id] if add_eos else None)
    single = " ".join(t for t in (bos and f"{bos}:0", "$A:0", eos and f"{eos}:0") if t)
    pair = " ".join(t for t in (single, bos and f"{bos}:1", "$B:1", eos and f"{eos}:1") if t)
    special = [(t, i) for t, i in ((bos, bos_id), (eos, eos_id)) if t is not None]
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=special)


def _read_json(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _to_id_list(ids: Any) -> list[int]:
    """int / list / NumPy / torch → flat list of Python ints."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if isinstance(ids, int):
        return [ids]
    return [int(i) for i in ids]


def _as_tensor(rows: Any, kind: str) -> Any:
    """Nested lists → int64 NumPy array or torch tensor; ragged rows need padding first."""
    if len({len(r) for r in rows}) > 1:
        raise ValueError("Unable to create a tensor from rows of different lengths; pass padding=True.")
    if kind == "np":
        return np.asarray(rows, dtype=np.int64)
    if kind == "pt":
        import torch

        return torch.tensor(rows, dtype=torch.long)
    raise ValueError(f"return_tensors={kind!r} is not supported; use 'np' or 'pt'.")
