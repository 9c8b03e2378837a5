"""A local Hugging Face Hub-compatible server for the vault tests (aiohttp, 127.0.0.1).

It implements the endpoints the real ``huggingface_hub`` client calls for small-file
commits, downloads, listings and existence checks: preupload, commit (ndjson, base64,
``parentCommit``: 412 "A commit has happened since" when the branch moved, as the Hub
answers), revision info, paths-info, tree, and ``HEAD``/``GET`` resolve with ``ETag`` (git
blob sha1) and ``X-Repo-Commit``; reads at a commit sha see that commit's files.

Knobs for tests: ``rate_limit_next_commits`` answers commits with 429 + ``Retry-After``;
``lose_next_commit_answers`` applies commits and then answers 500 (the answer lost after the
Hub applied it); ``corrupt(path)`` changes stored bytes while keeping the recorded ETag;
``token`` makes every request need that bearer token; ``requests`` logs every request,
``rejected_commits`` counts 429s and ``stale_parent_commits`` 412s;
``before_next_commit`` runs (as a concurrent writer would, e.g. with ``commit_directly``)
just before the next commit request is checked.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from prefect_atlas.vault.integrity import git_blob_sha1


@dataclass
class Repo:
    files: dict[str, bytes] = field(default_factory=dict)
    etags: dict[str, str] = field(default_factory=dict)
    commits: list[str] = field(default_factory=lambda: [secrets.token_hex(20)])
    # Every commit's tree (files, etags), so reads at a commit sha see that commit.
    snapshots: dict[str, tuple[dict[str, bytes], dict[str, str]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.snapshots.setdefault(self.head, ({}, {}))

    @property
    def head(self) -> str:
        return self.commits[-1]

    def tree_at(self, rev: str) -> tuple[dict[str, bytes], dict[str, str]]:
        """The files and etags at branch ``main`` (the live state) or at a commit sha."""
        if rev == "main" or rev == self.head:
            return self.files, self.etags
        return self.snapshots[rev]


class HubServer:
    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.rate_limit_next_commits = 0
        self.retry_after = "1"
        self.lose_next_commit_answers = 0
        self.commit_requests = 0
        self.rejected_commits = 0  # answered 429 (rate limited)
        self.stale_parent_commits = 0  # answered 412 (the branch moved past parentCommit)
        self.commit_sizes: list[int] = []
        self.seen_authorization: list[str] = []
        # (method, path) of every request, for tests counting downloads and lookups.
        self.requests: list[tuple[str, str]] = []
        # Called with (repo_id, repo) when the next commit request arrives, before its
        # parent is checked: a test commits there as a concurrent writer would.
        self.before_next_commit: Callable[[str, Repo], object] | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def create_repo(self, repo_id: str) -> Repo:
        return self.repos.setdefault(repo_id, Repo())

    def commit_directly(self, repo_id: str, files: dict[str, bytes]) -> str:
        """Commit ``files`` on the branch as another writer would; the new head."""
        repo = self.repos[repo_id]
        repo.files = {**repo.files, **files}
        repo.etags = {**repo.etags, **{p: git_blob_sha1(d) for p, d in files.items()}}
        sha = secrets.token_hex(20)
        repo.commits.append(sha)
        repo.snapshots[sha] = (repo.files, repo.etags)
        return sha

    def corrupt(self, repo_id: str, path: str) -> None:
        data = bytearray(self.repos[repo_id].files[path])
        data[len(data) // 2] ^= 0xFF
        self.repos[repo_id].files[path] = bytes(data)

    async def start(self) -> None:
        app = web.Application(client_max_size=1024**3, middlewares=[self._auth])
        r = app.router
        r.add_post("/api/datasets/{ns}/{name}/preupload/{rev}", self.preupload)
        r.add_post("/api/datasets/{ns}/{name}/commit/{rev}", self.commit)
        r.add_get("/api/datasets/{ns}/{name}/revision/{rev}", self.revision)
        r.add_post("/api/datasets/{ns}/{name}/paths-info/{rev}", self.paths_info)
        r.add_get("/api/datasets/{ns}/{name}/tree/{rev}", self.tree)
        r.add_get("/api/datasets/{ns}/{name}/tree/{rev}/{path:.*}", self.tree)
        r.add_route("HEAD", "/datasets/{ns}/{name}/resolve/{rev}/{path:.*}", self.resolve)
        r.add_get("/datasets/{ns}/{name}/resolve/{rev}/{path:.*}", self.resolve, allow_head=False)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ helpers

    @web.middleware
    async def _auth(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        auth = request.headers.get("Authorization", "")
        self.seen_authorization.append(auth)
        if self.token is not None and auth != f"Bearer {self.token}":
            return web.json_response(
                {"error": "Invalid credentials in Authorization header"}, status=401
            )
        return await handler(request)

    def _repo(self, request: web.Request) -> tuple[str, Repo]:
        repo_id = f"{request.match_info['ns']}/{request.match_info['name']}"
        repo = self.repos.get(repo_id)
        if repo is None:
            raise web.HTTPNotFound(
                text=json.dumps({"error": "Repository not found"}),
                headers={"X-Error-Code": "RepoNotFound", "Content-Type": "application/json"},
            )
        rev = request.match_info["rev"]
        if rev != "main" and rev not in repo.commits:
            raise web.HTTPNotFound(
                text=json.dumps({"error": f"Invalid rev id: {rev}"}),
                headers={"X-Error-Code": "RevisionNotFound", "Content-Type": "application/json"},
            )
        return repo_id, repo

    def _entry(
        self, files: dict[str, bytes], etags: dict[str, str], path: str
    ) -> dict[str, object]:
        return {"type": "file", "path": path, "size": len(files[path]), "oid": etags[path]}

    # ------------------------------------------------------------------ endpoints

    async def preupload(self, request: web.Request) -> web.Response:
        self._repo(request)
        body = await request.json()
        files = [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
            for f in body["files"]
        ]
        return web.json_response({"files": files, "commitOid": None})

    async def commit(self, request: web.Request) -> web.Response:
        repo_id, repo = self._repo(request)
        self.commit_requests += 1
        if self.rate_limit_next_commits > 0:
            self.rate_limit_next_commits -= 1
            self.rejected_commits += 1
            return web.json_response(
                {"error": "You have exceeded our hourly quotas for action: commit"},
                status=429,
                headers={"Retry-After": self.retry_after},
            )
        lines = [json.loads(line) for line in (await request.read()).splitlines() if line.strip()]
        hook, self.before_next_commit = self.before_next_commit, None
        if hook is not None:
            hook(repo_id, repo)
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent is not None and parent != repo.head:
            # The Hub's answer when the branch moved past parent_commit (412, this message).
            self.stale_parent_commits += 1
            return web.json_response(
                {"error": "A commit has happened since. Please refresh and try again."}, status=412
            )
        files = dict(repo.files)
        changed: set[str] = set()
        for line in lines[1:]:
            value = line["value"]
            if line["key"] == "file":
                content = base64.b64decode(value["content"])
                files[value["path"]] = content
                changed.add(value["path"])
            elif line["key"] == "deletedFile":
                if value["path"] not in files:
                    return web.json_response(
                        {"error": "A file with this name doesn't exist"},
                        status=404,
                        headers={"X-Error-Code": "EntryNotFound"},
                    )
                del files[value["path"]]
            else:
                return web.json_response(
                    {"error": f"operation {line['key']} not supported here"}, status=400
                )
        self.commit_sizes.append(len(lines) - 1)
        repo.files = files
        # The ETag is recorded from the committed bytes; corrupt() later changes only the bytes.
        repo.etags = {
            p: git_blob_sha1(d) if p in changed else repo.etags[p] for p, d in files.items()
        }
        sha = secrets.token_hex(20)
        repo.commits.append(sha)
        repo.snapshots[sha] = (repo.files, repo.etags)
        if self.lose_next_commit_answers > 0:
            self.lose_next_commit_answers -= 1
            return web.json_response(
                {"error": "Internal Error - We're working hard to fix this"}, status=500
            )
        return web.json_response(
            {
                "commitUrl": f"{self.endpoint}/datasets/{repo_id}/commit/{sha}",
                "commitOid": sha,
                "success": True,
            }
        )

    async def revision(self, request: web.Request) -> web.Response:
        repo_id, repo = self._repo(request)
        rev = request.match_info["rev"]
        files, _ = repo.tree_at(rev)
        siblings = [{"rfilename": p} for p in sorted(files)]
        sha = repo.head if rev == "main" else rev
        body = {"id": repo_id, "sha": sha, "private": False, "siblings": siblings}
        return web.json_response(body)

    async def paths_info(self, request: web.Request) -> web.Response:
        _, repo = self._repo(request)
        files, etags = repo.tree_at(request.match_info["rev"])
        form = await request.post()
        wanted = [str(p) for p in form.getall("paths", [])]
        return web.json_response([self._entry(files, etags, p) for p in wanted if p in files])

    async def tree(self, request: web.Request) -> web.Response:
        _, repo = self._repo(request)
        files, etags = repo.tree_at(request.match_info["rev"])
        folder = request.match_info.get("path", "").strip("/")
        recursive = request.query.get("recursive", "false").lower() in ("1", "true")
        head = f"{folder}/" if folder else ""
        found = [p for p in sorted(files) if p.startswith(head)]
        if folder and not found:
            return web.json_response(
                {"error": "Entry not found"}, status=404, headers={"X-Error-Code": "EntryNotFound"}
            )
        if not recursive:
            found = [p for p in found if "/" not in p[len(head) :]]
        return web.json_response([self._entry(files, etags, p) for p in found])

    async def resolve(self, request: web.Request) -> web.Response:
        _, repo = self._repo(request)
        rev = request.match_info["rev"]
        files, etags = repo.tree_at(rev)
        path = request.match_info["path"]
        if path not in files:
            return web.json_response(
                {"error": "Entry not found"}, status=404, headers={"X-Error-Code": "EntryNotFound"}
            )
        data = files[path]
        headers = {
            "ETag": f'"{etags[path]}"',
            "X-Repo-Commit": repo.head if rev == "main" else rev,
            "Content-Type": "application/octet-stream",
        }
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(data))
            return web.Response(status=200, headers=headers)
        return web.Response(body=data, headers=headers)
