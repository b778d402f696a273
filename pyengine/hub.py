"""`PushToHubMixin`: upload what `save_pretrained` writes to a Hugging Face Hub repo (transformers 4.57).

Steps of `push_to_hub(repo_id)`:
1. resolve the repo id (deprecated `repo_name` / `repo_url` / `organization` folded in) and create the repo
   if needed (`HfApi.create_repo(exist_ok=True)`); a bare name lands in the token owner's namespace;
2. `save_pretrained` into a temporary folder (or into `./<name>` when that folder exists, as transformers
   does), add a minimal model card when the repo has none;
3. create the branch `revision` if asked, then `HfApi.upload_folder` with the files written in step 2.

Everything goes through `huggingface_hub.HfApi(endpoint=...)`; the endpoint defaults to
`huggingface_hub.constants.ENDPOINT` (the `HF_ENDPOINT` environment variable, read when huggingface_hub is
imported). huggingface_hub is imported on use only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
import warnings
from typing import Any

logger = logging.getLogger("pyengine")

_DEFAULT_HUB = "https://huggingface.co"
_MODEL_CARD = """---
library_name: transformers
{tags}---

# Model card

Weights and configuration in the transformers format, uploaded with pyengine's `push_to_hub`.
"""


@dataclasses.dataclass
class PushPlan:
    """What `save_pretrained(push_to_hub=True)` needs after saving: where to upload and which files changed."""

    repo_id: str
    files_timestamps: dict[str, float]
    commit_message: str | None = None
    commit_description: str | None = None
    token: str | bool | None = None
    revision: str | None = None
    create_pr: bool = False
    tags: list[str] | None = None
    endpoint: str | None = None


def _hf_api(endpoint: str | None, token: str | bool | None) -> Any:
    try:
        from huggingface_hub import HfApi
    except ImportError as exc:
        raise ImportError("push_to_hub needs huggingface_hub: pip install huggingface_hub") from exc
    return HfApi(endpoint=endpoint, token=token)


def _pop_token(kwargs: dict[str, Any], token: str | bool | None) -> str | bool | None:
    """`use_auth_token` is the deprecated name of `token` (FutureWarning; both set is an error)."""
    use_auth_token = kwargs.pop("use_auth_token", None)
    if use_auth_token is None:
        return token
    warnings.warn("`use_auth_token` is deprecated; pass `token` instead.", FutureWarning, stacklevel=3)
    if token is not None:
        raise ValueError("`token` and `use_auth_token` are both specified. Please set only the argument `token`.")
    return use_auth_token


class PushToHubMixin:
    """Adds `push_to_hub` to anything with a `save_pretrained(directory, **kwargs)` method."""

    def _create_repo(
        self,
        repo_id: str | None,
        private: bool | None = None,
        token: str | bool | None = None,
        repo_url: str | None = None,
        organization: str | None = None,
        endpoint: str | None = None,
    ) -> str:
        """Create the repo if needed; returns its full id (`namespace/name`) as the Hub reports it."""
        if repo_url is not None:
            warnings.warn("`repo_url` is deprecated; pass `repo_id` instead.", FutureWarning, stacklevel=3)
            if repo_id is not None:
                raise ValueError("`repo_id` and `repo_url` are both specified. Please set only the argument `repo_id`.")
            api_endpoint = (endpoint or _hf_api(None, None).endpoint).rstrip("/")
            repo_id = repo_url.rstrip("/").removeprefix(f"{api_endpoint}/").removeprefix(f"{_DEFAULT_HUB}/")
        if repo_id is None:
            raise ValueError("push_to_hub needs a `repo_id` (e.g. 'my-model' or 'my-org/my-model').")
        if organization is not None:
            warnings.warn("`organization` is deprecated; pass `repo_id='{organization}/{name}'` instead.",
                          FutureWarning, stacklevel=3)  # fmt: skip
            if not repo_id.startswith(organization):
                repo_id = f"{organization}/{repo_id.split('/')[-1]}"
        url = _hf_api(endpoint, token).create_repo(repo_id=repo_id, private=private, exist_ok=True)
        return url.repo_id

    @staticmethod
    def _get_files_timestamps(working_dir: str | os.PathLike) -> dict[str, float]:
        return {f: os.path.getmtime(os.path.join(working_dir, f)) for f in os.listdir(working_dir)}

    def _prepare_push(self, save_directory: str | os.PathLike, kwargs: dict[str, Any]) -> PushPlan:
        """`save_pretrained(push_to_hub=True, **kwargs)`: create the repo, remember what exists before saving."""
        token = _pop_token(kwargs, kwargs.pop("token", None))
        endpoint = kwargs.pop("endpoint", None)
        repo_id = kwargs.pop("repo_id", None) or os.path.basename(os.path.normpath(save_directory))
        repo_id = self._create_repo(repo_id, kwargs.pop("private", None), token, kwargs.pop("repo_url", None),
                                    kwargs.pop("organization", None), endpoint)  # fmt: skip
        return PushPlan(
            repo_id=repo_id,
            files_timestamps=self._get_files_timestamps(save_directory),
            commit_message=kwargs.pop("commit_message", None),
            commit_description=kwargs.pop("commit_description", None),
            token=token,
            revision=kwargs.pop("revision", None),
            create_pr=kwargs.pop("create_pr", False),
            tags=kwargs.pop("tags", None),
            endpoint=endpoint,
        )

    def _default_commit_message(self) -> str:
        name = type(self).__name__
        for kind in ("Model", "Config", "Tokenizer"):
            if kind in name:
                return f"Upload {kind.lower()}"
        return f"Upload {name}"

    def _upload_modified_files(self, working_dir: str | os.PathLike, plan: PushPlan) -> Any:
        """Upload the files of `working_dir` that are new or changed since `plan.files_timestamps`."""
        api = _hf_api(plan.endpoint, plan.token)
        readme = os.path.join(working_dir, "README.md")
        if not os.path.exists(readme) and not api.file_exists(plan.repo_id, "README.md", revision=plan.revision):
            tags = "".join(f"- {t}\n" for t in plan.tags or [])
            with open(readme, "w", encoding="utf-8") as f:
                f.write(_MODEL_CARD.format(tags=f"tags:\n{tags}" if tags else ""))
        modified = [
            name
            for name in os.listdir(working_dir)
            if name not in plan.files_timestamps
            or os.path.getmtime(os.path.join(working_dir, name)) > plan.files_timestamps[name]
        ]
        patterns = [f"{name}/**" if os.path.isdir(os.path.join(working_dir, name)) else name for name in modified]
        if plan.revision is not None and not plan.revision.startswith("refs/pr"):
            api.create_branch(plan.repo_id, branch=plan.revision, exist_ok=True)
        logger.info(f"Uploading the following files to {plan.repo_id}: {','.join(modified)}")
        info = api.upload_folder(
            repo_id=plan.repo_id,
            folder_path=os.fspath(working_dir),
            allow_patterns=patterns,
            commit_message=plan.commit_message or self._default_commit_message(),
            commit_description=plan.commit_description,
            revision=plan.revision,
            create_pr=plan.create_pr,
        )
        from huggingface_hub import CommitInfo

        # upload_folder's str() is the folder's tree URL; transformers returns the commit's URL.
        return CommitInfo(commit_url=info.commit_url, commit_message=info.commit_message,
                          commit_description=info.commit_description, oid=info.oid, pr_url=info.pr_url)  # fmt: skip

    def push_to_hub(
        self,
        repo_id: str | None = None,
        use_temp_dir: bool | None = None,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | bool | None = None,
        max_shard_size: int | str | None = "5GB",
        create_pr: bool = False,
        safe_serialization: bool = True,
        revision: str | None = None,
        commit_description: str | None = None,
        tags: list[str] | None = None,
        *,
        endpoint: str | None = None,
        **deprecated_kwargs: Any,
    ) -> Any:
        """Upload the files `save_pretrained` writes to the Hub (transformers `PushToHubMixin.push_to_hub`).

        Args:
            repo_id: `"name"` (your namespace) or `"org/name"`; `repo_name` / `repo_path_or_name` are old
                names for it, `repo_url` + `organization` older ways to give it (all deprecated).
            use_temp_dir: save into a temporary folder; default: True unless a folder named like the repo
                exists in the working directory (then that folder is used and only changed files are sent).
            commit_message: default "Upload model" / "Upload config" / "Upload <ClassName>".
            private: create the repo private (ignored when it exists).
            token: Hub token (`use_auth_token` is the deprecated name); None uses the saved login.
            max_shard_size, safe_serialization: passed to `save_pretrained` (models only).
            create_pr: open a pull request instead of committing to the branch.
            revision: branch to push to (created from main when missing).
            commit_description, tags: commit description; tags for a new model card.
            endpoint: Hub URL (default `huggingface_hub.constants.ENDPOINT`, i.e. `HF_ENDPOINT`).

        Returns:
            `huggingface_hub.CommitInfo`, a `str` holding the commit URL (`.oid` is the commit sha).

        Example:
            >>> model.push_to_hub("my-finetuned-bert", commit_message="first version")  # doctest: +SKIP
        """
        token = _pop_token(deprecated_kwargs, token)
        for old in ("repo_name", "repo_path_or_name"):
            value = deprecated_kwargs.pop(old, None)
            if value is not None:
                warnings.warn(f"`{old}` is deprecated; pass `repo_id` instead.", FutureWarning, stacklevel=2)
                if repo_id is not None:
                    raise ValueError(f"`repo_id` and `{old}` are both specified. Please set only the argument `repo_id`.")
                repo_id = os.path.basename(os.path.normpath(value)) if os.path.isdir(value) else value
        repo_url = deprecated_kwargs.pop("repo_url", None)
        organization = deprecated_kwargs.pop("organization", None)
        if deprecated_kwargs:
            raise TypeError(f"push_to_hub() got unexpected keyword arguments: {sorted(deprecated_kwargs)}")
        repo_id = self._create_repo(repo_id, private, token, repo_url, organization, endpoint)
        working_dir = repo_id.split("/")[-1]
        if use_temp_dir is None:
            use_temp_dir = not os.path.isdir(working_dir)
        save_kwargs: dict[str, Any] = {}
        if hasattr(self, "state_dict"):  # models take the weight-format options; configs don't
            save_kwargs = {"max_shard_size": max_shard_size, "safe_serialization": safe_serialization}
        with tempfile.TemporaryDirectory() if use_temp_dir else contextlib.nullcontext(working_dir) as work_dir:
            plan = PushPlan(repo_id, self._get_files_timestamps(work_dir), commit_message, commit_description,
                            token, revision, create_pr, tags, endpoint)  # fmt: skip
            self.save_pretrained(work_dir, **save_kwargs)
            return self._upload_modified_files(work_dir, plan)

