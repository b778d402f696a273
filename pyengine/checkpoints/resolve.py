"""Find checkpoint files: a local folder, a single file, or a Hugging Face Hub repo (cache included).

The lookup order and the error messages follow transformers 4.57 (`utils/hub.py::cached_file` and
`modeling_utils.py::_get_resolved_checkpoint_files`) so that a path that loads there loads here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import warnings
from typing import Any

CONFIG_NAME = "config.json"
GENERATION_CONFIG_NAME = "generation_config.json"
SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
WEIGHTS_NAME = "pytorch_model.bin"
WEIGHTS_INDEX_NAME = "pytorch_model.bin.index.json"
TF2_WEIGHTS_NAME = "tf_model.h5"
FLAX_WEIGHTS_NAME = "flax_model.msgpack"

_HUB_URL = "https://huggingface.co"


@dataclasses.dataclass
class HubOptions:
    """Where and how to look a file up on the Hub; the `from_pretrained` keyword arguments of transformers.

    Attributes:
        cache_dir: Hub cache folder (default: `HF_HUB_CACHE`).
        revision: Branch, tag or commit sha.
        force_download: Download again even when the file is cached.
        local_files_only: Never touch the network; only the local folder or the cache.
        token: Hub token for private or gated repos (`True` uses the saved login).
        proxies: `requests`-style proxies mapping.
        subfolder: Folder inside the repo or local directory that holds the files.
    """

    cache_dir: str | os.PathLike | None = None
    revision: str | None = None
    force_download: bool = False
    local_files_only: bool = False
    token: str | bool | None = None
    proxies: dict[str, str] | None = None
    subfolder: str = ""

    @classmethod
    def pop_from(cls, kwargs: dict[str, Any]) -> HubOptions:
        """Pops the hub keyword arguments out of `kwargs` (mutated) and returns them as options.

        `use_auth_token` is accepted as a deprecated alias of `token`; `resume_download` is ignored
        (downloads always resume); `_commit_hash` pins the revision like in transformers.
        """
        fields = {f.name: kwargs.pop(f.name) for f in dataclasses.fields(cls) if f.name in kwargs}
        use_auth_token = kwargs.pop("use_auth_token", None)
        if use_auth_token is not None:
            warnings.warn(
                "`use_auth_token` is deprecated; pass `token` instead.", FutureWarning, stacklevel=2
            )
            if fields.get("token") is not None:
                raise ValueError("`token` and `use_auth_token` are both set; only set `token`.")
            fields["token"] = use_auth_token
        kwargs.pop("resume_download", None)
        commit_hash = kwargs.pop("_commit_hash", None)
        if commit_hash is not None and fields.get("revision") is None:
            fields["revision"] = commit_hash
        if fields.get("subfolder") is None:
            fields["subfolder"] = ""
        return cls(**fields)


IGNORED_HUB_KWARGS = {
    "mirror": "set the HF_ENDPOINT environment variable to download from a mirror.",
    "resume_download": "huggingface_hub always resumes interrupted downloads.",
}


def pop_hub_kwargs(
    kwargs: dict[str, Any],
    *,
    cache_dir: str | os.PathLike | None,
    force_download: bool,
    local_files_only: bool,
    token: str | bool | None,
    revision: str | None,
) -> tuple[dict[str, Any], HubOptions]:
    """The download options of every `from_pretrained` (PyTorch, TF, Flax), popped out of `kwargs`.

    Returns `(hub, options)`: `hub` is what `config_class.from_pretrained` takes (`token` resolved from the
    deprecated `use_auth_token`), `options` the same as HubOptions for the weight resolvers. `mirror` and
    `resume_download` are accepted and ignored with a FutureWarning saying why.
    """
    for ignored, why in IGNORED_HUB_KWARGS.items():
        if kwargs.pop(ignored, None) is not None:
            warnings.warn(f"`{ignored}` is deprecated and ignored: {why}", FutureWarning, stacklevel=3)
    hub = {"cache_dir": cache_dir, "force_download": force_download, "local_files_only": local_files_only,
           "token": token, "revision": revision}  # fmt: skip
    for name in ("proxies", "subfolder", "use_auth_token"):
        if name in kwargs:
            hub[name] = kwargs.pop(name)
    options = HubOptions.pop_from(dict(hub))
    hub = {k: v for k, v in hub.items() if k != "use_auth_token"}
    hub["token"] = options.token
    return hub, options


def add_variant(filename: str, variant: str | None) -> str:
    """Inserts a variant before the extension: `model.safetensors` + `fp16` → `model.fp16.safetensors`."""
    if variant is None:
        return filename
    stem, ext = filename.rsplit(".", 1)
    return f"{stem}.{variant}.{ext}"


def is_offline(options: HubOptions) -> bool:
    """True when the network must not be used (read at call time so tests can set the env var late)."""
    if options.local_files_only:
        return True
    try:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return True
    except ImportError:
        pass
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def resolve_file(
    path_or_repo_id: str | os.PathLike,
    filename: str,
    options: HubOptions,
    *,
    required: bool = True,
) -> str | None:
    """Returns the local path of `filename` in a local folder or a Hub repo (downloading it if needed).

    Args:
        path_or_repo_id: A local directory or a Hub repo id such as `"openai-community/gpt2"`.
        filename: File name inside the directory / repo (relative to `options.subfolder`).
        options: Hub options.
        required: When False, a missing file returns None instead of raising.

    Returns:
        The path of the file on disk, or None if it does not exist and `required` is False.

    Raises:
        OSError: The file or repo cannot be found or downloaded; the message says what to try.
    """
    path = str(path_or_repo_id)
    if os.path.isdir(path):
        candidate = os.path.join(path, options.subfolder, filename)
        if os.path.isfile(candidate):
            return candidate
        if not required:
            return None
        raise OSError(
            f"{path} does not appear to have a file named {os.path.join(options.subfolder, filename)}. "
            "Check the folder content or pass the right `subfolder`."
        )
    return _hub_download(path, filename, options, required=required)


def _hub_download(repo_id: str, filename: str, options: HubOptions, *, required: bool) -> str | None:
    """Resolves `filename` through `hf_hub_download` (cache first) and maps its errors to OSError."""
    try:
        import huggingface_hub
        from huggingface_hub import errors
    except ImportError as exc:
        raise OSError(
            f"{repo_id} is not a local folder and huggingface_hub is not installed to fetch it from the Hub. "
            "Install it with `pip install huggingface_hub` or pass a local directory."
        ) from exc
    offline = is_offline(options)
    try:
        return huggingface_hub.hf_hub_download(
            repo_id,
            filename,
            subfolder=options.subfolder or None,
            revision=options.revision,
            cache_dir=options.cache_dir,
            force_download=options.force_download,
            local_files_only=offline,
            token=options.token,
            proxies=options.proxies,
        )
    except errors.GatedRepoError as exc:
        raise OSError(
            f"You are trying to access a gated repo ({repo_id}). Make sure to request access at "
            f"{_HUB_URL}/{repo_id} and pass a token having permission to it with `token=...` "
            "or log in with `huggingface-cli login`."
        ) from exc
    except errors.RepositoryNotFoundError as exc:
        raise OSError(
            f"{repo_id} is not a local folder and is not a valid model identifier listed on "
            f"'{_HUB_URL}/models'. If this is a private repository, make sure to pass a token having "
            "permission to this repo with `token=...` or log in with `huggingface-cli login`."
        ) from exc
    except errors.RevisionNotFoundError as exc:
        raise OSError(
            f"{options.revision} is not a valid git identifier (branch name, tag name or commit id) that "
            f"exists for this model name. Check the model page at '{_HUB_URL}/{repo_id}' for available revisions."
        ) from exc
    except errors.LocalEntryNotFoundError as exc:
        if not required:
            return None
        if offline:
            raise OSError(
                f"Cannot find {filename} for {repo_id} in the local cache and network access is disabled "
                "(HF_HUB_OFFLINE=1 or local_files_only=True). Download it once with network access, or "
                "pass the path to a local directory."
            ) from exc
        raise OSError(
            f"We couldn't connect to '{_HUB_URL}' to load {filename} of {repo_id}, and it is not in the cached "
            "files. Check your internet connection, or pass the path to a local directory."
        ) from exc
    except errors.EntryNotFoundError as exc:
        if not required:
            return None
        raise OSError(
            f"{repo_id} does not appear to have a file named {os.path.join(options.subfolder, filename)}. "
            f"Checkout '{_HUB_URL}/{repo_id}/tree/{options.revision or 'main'}' for available files."
        ) from exc
    except errors.HFValidationError as exc:
        raise OSError(
            f"Incorrect path_or_model_id: '{repo_id}'. It is neither an existing local folder nor a valid "
            "Hub repo id (`namespace/repo_name`). Check the spelling or the path."
        ) from exc
    except errors.HfHubHTTPError as exc:
        raise OSError(f"There was a specific connection error when trying to load {repo_id}:\n{exc}") from exc


def resolve_weight_files(
    path_or_repo_id: str | os.PathLike,
    options: HubOptions,
    *,
    use_safetensors: bool | None = None,
    variant: str | None = None,
) -> list[str]:
    """Finds the PyTorch-format weight files of a checkpoint, shards included.

    Order (transformers 4.57): `model.safetensors`, `model.safetensors.index.json`,
    `pytorch_model.bin`, `pytorch_model.bin.index.json`.

    Args:
        path_or_repo_id: Local directory, Hub repo id, or the path of a single weights/index file.
        options: Hub options.
        use_safetensors: True: only safetensors; False: only `.bin`; None: prefer safetensors.
        variant: Weights variant, e.g. `"fp16"` for `model.fp16.safetensors`.

    Returns:
        Local paths of the weight files (one per shard), in shard order.

    Raises:
        OSError: No usable weights were found; the message lists what exists and what to do.
    """
    path = str(path_or_repo_id)
    if os.path.isfile(path):
        return _single_file(path)
    candidates: list[str] = []
    if use_safetensors is not False:
        candidates += [SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME]
    if use_safetensors is not True:
        candidates += [WEIGHTS_NAME, WEIGHTS_INDEX_NAME]
    for name in candidates:
        found = resolve_file(path, add_variant(name, variant), options, required=False)
        if found is None:
            continue
        if name.endswith(".index.json"):
            return _resolve_shards(path, found, options)
        return [found]
    raise _missing_weights_error(path, options, use_safetensors, variant)


def _single_file(path: str) -> list[str]:
    """A path given directly: a weights file, or an index that lists shards next to it."""
    if re.search(r"\.index(\.[^.]+)?\.json$", path):
        return _resolve_shards(os.path.dirname(os.path.abspath(path)), path, HubOptions())
    if path.endswith((".safetensors", ".bin", ".pt", ".pth")):
        return [path]
    raise OSError(
        f"{path} is not a .safetensors, .bin or .index.json weights file; pass a checkpoint folder instead."
    )


def _resolve_shards(path_or_repo_id: str, index_file: str, options: HubOptions) -> list[str]:
    """Reads a sharded-checkpoint index and resolves every shard it names."""
    try:
        with open(index_file, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise OSError(
            f"{index_file} is not a valid checkpoint index (no 'weight_map'); re-download it."
        ) from exc
    if not isinstance(weight_map, dict) or not all(isinstance(s, str) for s in weight_map.values()):
        raise OSError(f"{index_file} is not a valid checkpoint index ('weight_map' must map names to files).")
    shard_names = sorted(set(weight_map.values()))
    _check_shard_names(index_file, shard_names)
    folder = os.path.dirname(index_file)
    if os.path.isdir(path_or_repo_id) or not shard_names:
        missing = [s for s in shard_names if not os.path.isfile(os.path.join(folder, s))]
        if missing:
            raise OSError(
                f"{index_file} lists shards that are missing next to it: {missing}; re-download them."
            )
        return [os.path.join(folder, s) for s in shard_names]
    return [resolve_file(path_or_repo_id, s, options) for s in shard_names]  # type: ignore[misc]


def _check_shard_names(index_file: str, shard_names: list[str]) -> None:
    """Refuses shard names that would leave the checkpoint folder (`../x`, `/abs/x`, `C:\\x`).

    An index is data from the download, not a trusted path list: without this check a crafted
    `weight_map` makes `from_pretrained` open any file the process can read. Names stay relative to the
    index's folder; subfolders inside it are fine.
    """
    for name in shard_names:
        # Backslashes count as separators too, so a Windows-style `..\\x` is refused on every OS.
        parts = os.path.normpath(name.replace("\\", "/")).split(os.sep)
        absolute = os.path.isabs(name) or name.startswith("\\") or bool(os.path.splitdrive(name)[0])
        if not name or absolute or parts[0] == ".." or "\0" in name or ":" in name:
            raise OSError(
                f"{index_file} lists shard {name!r}, which is not a file inside the checkpoint folder; "
                "shard names must be relative paths below the index. Re-download the index."
            )


def _missing_weights_error(
    path: str, options: HubOptions, use_safetensors: bool | None, variant: str | None
) -> OSError:
    """Builds the "no weights" error, naming other formats found (TF/Flax) and what to do."""
    other = [
        name
        for name in (TF2_WEIGHTS_NAME, FLAX_WEIGHTS_NAME)
        if resolve_file(path, add_variant(name, variant), options, required=False) is not None
    ]
    if other:
        return OSError(
            f"{path} has {', '.join(other)} but no PyTorch-format weights ({SAFE_WEIGHTS_NAME} or {WEIGHTS_NAME}). "
            "Loading TensorFlow/Flax weights is not supported from PyTorch yet; convert the checkpoint to "
            "safetensors with the framework that wrote it."
        )
    if use_safetensors is True:
        wanted = f"{add_variant(SAFE_WEIGHTS_NAME, variant)} (use_safetensors=True)"
    elif use_safetensors is False:
        wanted = f"{add_variant(WEIGHTS_NAME, variant)} (use_safetensors=False)"
    else:
        wanted = f"{add_variant(SAFE_WEIGHTS_NAME, variant)} or {add_variant(WEIGHTS_NAME, variant)}"
    where = os.path.join(path, options.subfolder) if options.subfolder else path
    return OSError(
        f"Error no file named {wanted} found in {where}. Check the path, the `subfolder`, "
        "the `variant` and the `use_safetensors` setting."
    )
