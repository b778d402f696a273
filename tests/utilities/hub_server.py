"""A tiny local stand-in for the Hugging Face Hub, enough for `push_to_hub` and `hf_hub_download`.

Implements only what huggingface_hub 0.36 calls for those (read from its `hf_api.py`, `_commit_api.py`
and `file_download.py`):

    POST /api/repos/create                                  create_repo (409 when it exists)
    POST /api/validate-yaml                                 README.md metadata check before upload
    POST /api/models/{repo}/preupload/{rev}                 upload mode per file: always "regular" (no LFS)
    POST /api/models/{repo}/commit/{rev}                    ndjson commit: header, file (base64), deletedFile
    POST /api/models/{repo}/branch/{branch}                 create_branch
    GET  /api/models/{repo}[/revision/{rev}]                repo_info (used when a commit changes nothing)
    HEAD/GET /{repo}/resolve/{rev}/{path}                   X-Repo-Commit, ETag (git blob sha1), Content-Length;
                                                            errors carry X-Error-Code as the Hub's do

Blobs live in a folder on disk (content-addressed by git blob sha1); repos, branches and commits in memory.
Every request is appended to `server.requests` as `(method, path, authorization header)`.

Example:
    >>> with HubServer(tmp_path) as hub:              # doctest: +SKIP
    ...     HfApi(endpoint=hub.url).create_repo("org/name")
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

USER = "pyengine-user"  # namespace of repos created without an organization


def git_blob_sha(data: bytes) -> str:
    """The id git (and the Hub's ETag) gives a regular file: sha1 of `blob <size>\\0<data>`."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Repo:
    def __init__(self, private: bool) -> None:
        self.private = private
        self.commits: dict[str, dict[str, str]] = {}  # commit sha → {path: blob sha}
        self.branches: dict[str, str] = {}  # branch → commit sha

    def commit(self, files: dict[str, str], message: str) -> str:
        sha = hashlib.sha1(f"{len(self.commits)}:{message}:{sorted(files.items())}".encode()).hexdigest()
        self.commits[sha] = files
        return sha

    def resolve(self, revision: str) -> str | None:
        """Branch name or full commit sha → commit sha."""
        if revision in self.branches:
            return self.branches[revision]
        return revision if revision in self.commits else None


class HubServer:
    """`http.server` on 127.0.0.1 (port chosen by the OS) in a daemon thread; use as a context manager."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.blob_dir = os.path.join(root, "hub-blobs")
        os.makedirs(self.blob_dir, exist_ok=True)
        self.repos: dict[str, _Repo] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- storage -----------------------------------------------------------------------------------------
    def put_blob(self, data: bytes) -> str:
        sha = git_blob_sha(data)
        with open(os.path.join(self.blob_dir, sha), "wb") as f:
            f.write(data)
        return sha

    def read_blob(self, sha: str) -> bytes:
        with open(os.path.join(self.blob_dir, sha), "rb") as f:
            return f.read()


def _handler_for(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep pytest output clean
            pass

        # -- plumbing --------------------------------------------------------------------------------
        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if "Content-Length" not in (headers or {}):
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, payload: Any, error_code: str | None = None) -> None:
            headers = {"Content-Type": "application/json"}
            if error_code:
                headers["X-Error-Code"] = error_code
                headers["X-Error-Message"] = str(payload.get("error", ""))
            self._send(status, json.dumps(payload).encode(), headers)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length", 0)))

        def _record(self) -> list[str]:
            hub.requests.append((self.command, self.path, self.headers.get("Authorization")))
            return [unquote(p) for p in urlsplit(self.path).path.strip("/").split("/")]

        def _repo(self, repo_id: str) -> _Repo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._json(404, {"error": "Repository not found"}, "RepoNotFound")
            return repo

        # -- routes ----------------------------------------------------------------------------------
        def do_POST(self) -> None:  # noqa: N802
            parts = self._record()
            with hub.lock:
                if parts[:3] == ["api", "repos", "create"]:
                    return self._create_repo(json.loads(self._body()))
                if parts[:2] == ["api", "validate-yaml"]:
                    return self._json(200, {"errors": [], "warnings": []})
                if len(parts) == 6 and parts[:2] == ["api", "models"]:
                    repo_id, action, rev = f"{parts[2]}/{parts[3]}", parts[4], parts[5]
                    handler = {"preupload": self._preupload, "commit": self._commit, "branch": self._branch}
                    if action in handler:
                        return handler[action](repo_id, rev)
            self._json(404, {"error": f"no route for POST {self.path}"})

        def do_GET(self) -> None:  # noqa: N802
            parts = self._record()
            with hub.lock:
                if parts[:2] == ["api", "models"] and len(parts) in (4, 6):
                    return self._repo_info(f"{parts[2]}/{parts[3]}", parts[5] if len(parts) == 6 else "main")
                if len(parts) >= 5 and parts[2] == "resolve":
                    return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
            self._json(404, {"error": f"no route for GET {self.path}"})

        do_HEAD = do_GET  # noqa: N815  (_send drops the body for HEAD)

        # -- API ---------------------------------------------------------------------------------------
        def _create_repo(self, payload: dict[str, Any]) -> None:
            repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
            url = f"{hub.url}/{repo_id}"
            if repo_id in hub.repos:
                return self._json(409, {"error": "You already created this model repo", "url": url})
            repo = hub.repos[repo_id] = _Repo(bool(payload.get("private")))
            gitattributes = hub.put_blob(b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
            repo.branches["main"] = repo.commit({".gitattributes": gitattributes}, "initial commit")
            self._json(200, {"url": url, "name": repo_id})

        def _preupload(self, repo_id: str, revision: str) -> None:
            repo = self._repo(repo_id)
            if repo is None:
                return
            files = repo.commits.get(repo.resolve(revision) or "", {})
            payload = json.loads(self._body())
            self._json(200, {"files": [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": files.get(f["path"])}
                for f in payload["files"]
            ]})  # fmt: skip

        def _commit(self, repo_id: str, revision: str) -> None:
            repo = self._repo(repo_id)
            if repo is None:
                return
            if parse_qs(urlsplit(self.path).query).get("create_pr"):
                return self._json(400, {"error": "pull requests are not implemented by the test hub"})
            parent = repo.resolve(revision)
            if parent is None or revision not in repo.branches:
                return self._json(404, {"error": f"Invalid rev id: {revision}"}, "RevisionNotFound")
            files, message = dict(repo.commits[parent]), ""
            for line in self._body().splitlines():
                item = json.loads(line)
                value = item["value"]
                if item["key"] == "header":
                    message = value["summary"]
                elif item["key"] == "file":
                    files[value["path"]] = hub.put_blob(base64.b64decode(value["content"]))
                elif item["key"] == "deletedFile":
                    files.pop(value["path"], None)
                else:
                    return self._json(400, {"error": f"unsupported commit operation {item['key']}"})
            sha = repo.branches[revision] = repo.commit(files, message)
            self._json(200, {"commitUrl": f"{hub.url}/{repo_id}/commit/{sha}", "commitOid": sha,
                             "pullRequestUrl": None})  # fmt: skip

        def _branch(self, repo_id: str, branch: str) -> None:
            repo = self._repo(repo_id)
            if repo is None:
                return
            if branch in repo.branches:
                return self._json(409, {"error": "Reference already exists"})
            start = repo.resolve(json.loads(self._body() or b"{}").get("startingPoint") or "main")
            repo.branches[branch] = start
            self._json(200, {})

        def _repo_info(self, repo_id: str, revision: str) -> None:
            repo = self._repo(repo_id)
            if repo is None:
                return
            sha = repo.resolve(revision)
            if sha is None:
                return self._json(404, {"error": f"Invalid rev id: {revision}"}, "RevisionNotFound")
            self._json(200, {"id": repo_id, "sha": sha, "private": repo.private,
                             "siblings": [{"rfilename": p} for p in sorted(repo.commits[sha])]})  # fmt: skip

        def _resolve(self, repo_id: str, revision: str, path: str) -> None:
            repo = self._repo(repo_id)
            if repo is None:
                return
            sha = repo.resolve(revision)
            if sha is None:
                return self._json(404, {"error": f"Invalid rev id: {revision}"}, "RevisionNotFound")
            blob = repo.commits[sha].get(path)
            if blob is None:
                return self._json(404, {"error": "Entry not found"}, "EntryNotFound")
            data = hub.read_blob(blob)
            start = 0
            range_header = self.headers.get("Range", "")
            if range_header.startswith("bytes=") and range_header.endswith("-"):  # resumed download
                start = int(range_header[len("bytes="):-1])
            headers = {"X-Repo-Commit": sha, "ETag": f'"{blob}"', "Content-Length": str(len(data) - start),
                       "Content-Type": "application/octet-stream"}  # fmt: skip
            self._send(206 if start else 200, data[start:], headers)

    return Handler
