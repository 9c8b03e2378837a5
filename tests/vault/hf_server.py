"""A local Hugging Face Hub-compatible server for the vault tests (aiohttp, 127.0.0.1).

It implements the endpoints the real ``huggingface_hub`` client calls for small-file
commits, downloads, listings and existence checks: preupload, commit (ndjson, base64,
``parentCommit``), revision info, paths-info, tree, and ``HEAD``/``GET`` resolve with
``ETag`` (git blob sha1) and ``X-Repo-Commit``. Knobs for tests: ``rate_limit_next_commits``
answers commits with 429 + ``Retry-After``; ``lose_next_commit_answers`` applies commits and
then answers 500 (the answer lost after the Hub applied it); ``corrupt(path)`` changes stored bytes
while keeping the recorded ETag; ``token`` makes every request need that bearer token.
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

    @property
    def head(self) -> str:
        return self.commits[-1]


class HubServer:
    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.rate_limit_next_commits = 0
        self.retry_after = "1"
        self.lose_next_commit_answers = 0
        self.commit_requests = 0
        self.rejected_commits = 0
        self.commit_sizes: list[int] = []
        self.seen_authorization: list[str] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def create_repo(self, repo_id: str) -> Repo:
        return self.repos.setdefault(repo_id, Repo())

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

    def _entry(self, repo: Repo, path: str) -> dict[str, object]:
        return {
            "type": "file",
            "path": path,
            "size": len(repo.files[path]),
            "oid": repo.etags[path],
        }

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
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent is not None and parent != repo.head:
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
        siblings = [{"rfilename": p} for p in sorted(repo.files)]
        return web.json_response(
            {"id": repo_id, "sha": repo.head, "private": False, "siblings": siblings}
        )

    async def paths_info(self, request: web.Request) -> web.Response:
        _, repo = self._repo(request)
        form = await request.post()
        wanted = [str(p) for p in form.getall("paths", [])]
        return web.json_response([self._entry(repo, p) for p in wanted if p in repo.files])

    async def tree(self, request: web.Request) -> web.Response:
        _, repo = self._repo(request)
        folder = request.match_info.get("path", "").strip("/")
        recursive = request.query.get("recursive", "false").lower() in ("1", "true")
        head = f"{folder}/" if folder else ""
        found = [p for p in sorted(repo.files) if p.startswith(head)]
        if folder and not found:
            return web.json_response(
                {"error": "Entry not found"}, status=404, headers={"X-Error-Code": "EntryNotFound"}
            )
        if not recursive:
            found = [p for p in found if "/" not in p[len(head) :]]
        return web.json_response([self._entry(repo, p) for p in found])

    async def resolve(self, request: web.Request) -> web.Response:
        _, repo = self._repo(request)
        path = request.match_info["path"]
        if path not in repo.files:
            return web.json_response(
                {"error": "Entry not found"}, status=404, headers={"X-Error-Code": "EntryNotFound"}
            )
        data = repo.files[path]
        headers = {
            "ETag": f'"{repo.etags[path]}"',
            "X-Repo-Commit": repo.head,
            "Content-Type": "application/octet-stream",
        }
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(data))
            return web.Response(status=200, headers=headers)
        return web.Response(body=data, headers=headers)
