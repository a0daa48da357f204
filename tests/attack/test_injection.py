"""Hostile names, branches, refs, shas, URLs and paths, from every entry point that takes them.

Each entry point either refuses such a value with a clear 4xx or configuration error, or stores
it without ever handing it to a shell or building a path outside the data folder from it. The
proof is a canary: values like ``$(touch CANARY)`` go through the real code (git, the runner,
recipe hooks, the SSH command line), and no CANARY file may exist afterwards, neither at its
absolute path nor in the working directory. Text from upstream (commit titles and authors, hook
output, refs) shows on the dashboard as text. What touches the database runs on SQLite and on
PostgreSQL, which cannot store a NUL byte in text: a NUL is refused or replaced, never a 500.
"""

from __future__ import annotations

import ast
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from certifier.api.app import create_app
from certifier.db import models
from certifier.db.session import session_scope
from certifier.domain.clock import FakeClock
from certifier.domain.results import Check, SuiteResult
from certifier.pipeline import components, tokens
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.settings import ComponentConfig, ConfigError, Settings, parse_config_text
from certifier.tracking import deliveries, polling
from certifier.tracking.sources import GitSource, SourceError, SourceSpec, source_factory
from tests.conftest import fresh_postgres_database
from tests.factories import World
from tests.recipes.helpers import git_repo, harness, write_hook
from tests.requirements import needs_binary
from tests.tracking.fakes import FakeForge, FakeGerrit, FakeGitHub, FakeGitLab
from tests.tracking.payloads import (
    body_of,
    gerrit_ref_updated,
    github_headers,
    github_push,
    gitlab_headers,
    gitlab_push,
)
from workers import checkout
from workers.recipes import Deployable, Recipes, RunInfo
from workers.testbed.base import InfraError, TestbedSpec
from workers.testbed.factory import create_testbed
from workers.testbed.ssh import remote_command

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {"gitlab": "gl-attack-secret", "github": "gh-attack-secret",
           "gerrit": "gr-attack-secret"}
EVIL = '<script>alert("owned")</script>'
ESCAPED = "&lt;script&gt;alert(&#34;owned&#34;)&lt;/script&gt;"

pytestmark = needs_binary("git")


# The canary --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Canary:
    """A file that only a shell running one of our hostile strings would create."""

    path: Path  # absolute, for ``touch /…/CANARY``
    cwd: Path  # the test's working directory, for a relative ``touch CANARY``

    def commands(self) -> list[str]:
        """Command substitutions, separators and options, each of which creates the canary if
        any shell (or git option parser) ever interprets it."""
        return [f"$(touch {self.path})", f"`touch {self.path}`", f";touch {self.path}",
                f"|touch {self.path}", f"&& touch {self.path}", f"--upload-pack=touch {self.path}",
                f"--output={self.path}", "$(touch CANARY)", ";touch CANARY;"]

    def assert_untouched(self) -> None:
        assert not self.path.exists(), f"a shell ran a hostile string: {self.path} exists"
        assert not (self.cwd / "CANARY").exists(), "a shell ran a hostile string in the cwd"


@pytest.fixture
def canary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Canary]:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    bird = Canary(tmp_path / "CANARY", cwd)
    yield bird
    bird.assert_untouched()


# Hostile values that no name, branch or sha of ours can be; NUL and newline included.
# Python's ``$`` also matches before a final newline: "nova\n" must fail every check too.
BAD_NAMES = ["../etc", "a/b", "-rf", "$(id)", "a;b", "a b", "a\x00b", "a\nb", "nova\n", "Nova", ""]
BAD_BRANCHES = ["--upload-pack=touch /tmp/x", ";rm -rf ~", "$(id)", "`id`", "a..b", "../etc",
                "/abs", "a//b", "main\x00evil", "main\nx", "main\n", "a b", "x.lock/",
                "refs/heads/a:b"]
BAD_SHAS = ["--output=/tmp/x", "$(touch CANARY)", "HEAD", "main", "../../etc/passwd",
            "a" * 39, "g" * 40, "a" * 40 + "\x00", "a" * 40 + ";id"]
# Forges' shas are stripped of white space first (a tidy-up); what reaches git never is.
UNSTRIPPED_SHAS = [*BAD_SHAS, "a" * 40 + "\n", " " + "a" * 40]


# No shell anywhere -------------------------------------------------------------------------------


SHELL_CALLS = {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"),
               ("subprocess", "getstatusoutput"), ("asyncio", "create_subprocess_shell")}
PROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output"}


def _python_files() -> list[Path]:
    return sorted(p for top in ("certifier", "workers") for p in (ROOT / top).rglob("*.py"))


def _dotted(node: ast.expr) -> tuple[str, str] | None:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.value.id, node.attr
    return None


def test_no_code_in_certifier_or_workers_runs_a_shell() -> None:
    """Every subprocess gets an argument list: no ``shell=``, no os.system, no command string."""
    found: list[str] = []
    process_calls = 0
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            for keyword in node.keywords:
                if keyword.arg == "shell" and not (isinstance(keyword.value, ast.Constant)
                                                   and keyword.value.value is False):
                    found.append(f"{where}: shell={ast.unparse(keyword.value)}")
            name = _dotted(node.func)
            if name in SHELL_CALLS:
                found.append(f"{where}: {'.'.join(name)}() runs a shell")
            if name and name[0] == "subprocess" and name[1] in PROCESS_CALLS:
                process_calls += 1
                command = node.args[0] if node.args else None
                if isinstance(command, (ast.Constant, ast.JoinedStr, ast.BinOp)):
                    found.append(f"{where}: a command string, not an argument list")
    assert process_calls >= 10, "the scan found too few subprocess calls to mean anything"
    assert not found, "\n".join(found)


# Component registration: the API --------------------------------------------------------------



@pytest.fixture
def client(tmp_path: Path, session_factory: sessionmaker[Session], clock: FakeClock,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    for forge, secret in SECRETS.items():
        monkeypatch.setenv(f"CERTIFIER_{forge.upper()}_WEBHOOK_SECRET", secret)
    app = create_app(Settings(data_dir=tmp_path / "data"), dispatcher=RecordingDispatcher(),
                     clock=clock, session_factory=session_factory)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def operator(session_factory: sessionmaker[Session], clock: FakeClock) -> dict[str, str]:
    with session_scope(session_factory) as session:
        _, secret = tokens.create(session, clock, "attacker-tests", tokens.Scope.ADMIN)
    return {"Authorization": f"Bearer {secret}"}


def _component_count(factory: sessionmaker[Session]) -> int:
    with session_scope(factory) as session:
        return len(components.list_components(session))


GOOD = {"name": "nova", "url": "https://git.example/nova.git"}
HOSTILE_COMPONENTS = [
    *[("name", {**GOOD, "name": n}) for n in BAD_NAMES],
    *[("branch", {**GOOD, "branch": b}) for b in BAD_BRANCHES],
    ("url", {**GOOD, "url": "--upload-pack=touch /tmp/x"}),
    ("url", {**GOOD, "url": "ext::sh -c touch% /tmp/x"}),  # git's remote helper runs a command
    ("url", {**GOOD, "url": "fd::17"}),
    ("url", {**GOOD, "url": "https://git.example/x\x00.git"}),
    ("url", {**GOOD, "url": "https://git.example/x.git\n--upload-pack=id"}),
    ("url", {**GOOD, "url": "https://bot:hunter2@git.example/x.git"}),  # a password in the URL
    ("project", {**GOOD, "source": "gitlab", "project": "../../etc"}),
    ("project", {**GOOD, "source": "gitlab", "project": "grp/$(id)"}),
    ("api_url", {**GOOD, "source": "github", "api_url": "file:///etc/passwd"}),
    ("token_env", {**GOOD, "token_env": "CERTIFIER_DATABASE_URL"}),
    ("recipe", {**GOOD, "recipe": "../../etc"}),  # the API never names what runs as root
    ("recipe", {**GOOD, "recipe": "/usr/sbin"}),
    ("recipe", {**GOOD, "recipe": "recipes/nova"}),
    ("token_env", {**GOOD, "source": "github", "api_url": "https://evil.example",
                   "token_env": "GITHUB_TOKEN"}),  # would send the forge token elsewhere
]


@pytest.mark.parametrize(("field", "body"), HOSTILE_COMPONENTS,
                         ids=[f"{f}-{i}" for i, (f, _) in enumerate(HOSTILE_COMPONENTS)])
def test_the_api_refuses_a_hostile_component_with_a_422_naming_the_field(
    client: TestClient, session_factory: sessionmaker[Session], field: str, body: dict[str, str],
    operator: dict[str, str],
) -> None:
    answer = client.post("/api/v1/components", json=body, headers=operator)
    assert answer.status_code == 422, answer.text
    errors = answer.json()["errors"]
    assert any(field in str(error["loc"]) or field in error["msg"] for error in errors), errors
    assert _component_count(session_factory) == 0


def test_a_component_name_with_markup_never_exists_so_never_reaches_the_dashboard(
    client: TestClient, operator: dict[str, str],
) -> None:
    assert client.post("/api/v1/components", json={**GOOD, "name": EVIL},
                       headers=operator).status_code == 422
    assert client.get("/components").status_code == 200
    assert EVIL not in client.get("/components").text


# Component registration: the config file ------------------------------------------------------


def _config(component: dict[str, Any], testbed: str = "{name: gate1}") -> str:
    fields = ", ".join(f"{k}: {_yaml(v)}" for k, v in component.items())
    return f"components:\n  - {{{fields}}}\ntestbeds:\n  - {testbed}\n"


def _yaml(value: Any) -> str:
    """A YAML double-quoted scalar (escapes NUL and newline)."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\x00", "\\0").replace("\n", "\\n") + '"'


HOSTILE_CONFIGS = [
    *[("components.0.name", {**GOOD, "name": n}) for n in BAD_NAMES],
    *[("components.0.branch", {**GOOD, "branch": b}) for b in BAD_BRANCHES],
    ("components.0.url", {**GOOD, "url": "ext::sh -c touch% /tmp/x"}),
    ("components.0.url", {**GOOD, "url": "-oProxyCommand=touch /tmp/x"}),
    ("components.0.url", {**GOOD, "url": "https://bot:hunter2@git.example/x.git"}),
    ("components.0.recipe", {**GOOD, "recipe": "recipes/a\x00b"}),
    ("components.0.recipe", {**GOOD, "recipe": "recipes/a\nb"}),
]


@pytest.mark.parametrize(("key", "component"), HOSTILE_CONFIGS,
                         ids=[f"{k}-{i}" for i, (k, _) in enumerate(HOSTILE_CONFIGS)])
def test_the_config_file_refuses_a_hostile_component_naming_the_key(
    key: str, component: dict[str, str],
) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config_text(_config(component), "certifier.yaml")
    assert f"certifier.yaml: {key}" in str(refused.value)
    assert "hunter2" not in str(refused.value)  # a refused password is not echoed to the log


@pytest.mark.parametrize("testbed", [
    '{name: "../gate"}', '{name: "$(id)"}', '{name: gate1, hosts: ["h1", "$(id)"]}',
    '{name: gate1, hosts: ["h1", "../h2"]}', '{name: "gate\\0"}'])
def test_the_config_file_refuses_hostile_testbed_and_host_names(testbed: str) -> None:
    with pytest.raises(ConfigError, match=r"certifier\.yaml: testbeds\.0"):
        parse_config_text(_config(GOOD, testbed), "certifier.yaml")


# Holds (autohold) --------------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    {"component": "../../etc"}, {"component": "$(touch CANARY)"}, {"component": "a\x00"},
    {"reason": "stuck\x00"}, {"duration": "$(id)"}, {"duration": "1h\x00"}])
def test_a_hold_with_a_hostile_component_or_reason_is_a_422(
    client: TestClient, operator: dict[str, str], body: dict[str, str], canary: Canary,
) -> None:
    answer = client.post("/api/v1/holds", json=body, headers=operator)
    assert answer.status_code == 422, answer.text
    assert client.get("/api/v1/holds").json()["items"] == []


# Webhooks ----------------------------------------------------------------------------------------


def _send(client: TestClient, forge: str, payload: dict[str, Any] | bytes) -> Any:
    body = payload if isinstance(payload, bytes) else body_of(payload)
    if forge == "gitlab":
        return client.post("/api/v1/webhooks/gitlab", content=body,
                           headers=gitlab_headers(SECRETS["gitlab"]))
    if forge == "github":
        return client.post("/api/v1/webhooks/github", content=body,
                           headers=github_headers(SECRETS["github"], body))
    return client.post("/api/v1/webhooks/gerrit", content=body,
                       headers={"X-Gerrit-Token": SECRETS["gerrit"],
                                "Content-Type": "application/json"})


def _push(forge: str, project: str, after: str, ref: str) -> dict[str, Any]:
    if forge == "gitlab":
        return gitlab_push(project, after, ref=ref)
    if forge == "github":
        return github_push(project, after, ref=ref)
    return gerrit_ref_updated(project, after, ref=ref)


@pytest.fixture
def tracked(session_factory: sessionmaker[Session], clock: FakeClock) -> None:
    """One component per forge, all on project grp/comp, branch main."""
    with session_scope(session_factory) as session:
        for name, source in (("lab", "gitlab"), ("hub", "github"), ("rev", "gerrit")):
            components.create_component(session, ComponentConfig(
                name=name, source=source, url=f"https://{source}.example/grp/comp"), clock)


def _hostile_pushes(canary: Canary) -> list[tuple[str, str, str]]:
    """(project, after, ref) triples, each hostile in one place."""
    sha = "c" * 40
    refs = [f"refs/heads/{b}" for b in dict.fromkeys((*BAD_BRANCHES, *canary.commands()))]
    shas = dict.fromkeys((*BAD_SHAS, *canary.commands()))
    return ([("grp/comp", sha, ref) for ref in refs]
            + [("grp/comp", bad, "refs/heads/main") for bad in shas]
            + [(project, sha, "refs/heads/main") for project in
               ("../../etc", "grp/comp\x00", "grp/$(touch CANARY)", f"grp/{EVIL}", "-grp/comp")])


@pytest.mark.parametrize("forge", ["gitlab", "github", "gerrit"])
def test_a_hostile_webhook_is_stored_as_ignored_and_never_becomes_a_commit(
    client: TestClient, session_factory: sessionmaker[Session], tracked: None, forge: str,
    canary: Canary,
) -> None:
    for project, after, ref in _hostile_pushes(canary):
        answer = _send(client, forge, _push(forge, project, after, ref))
        assert answer.status_code in (202, 400), (project, after, ref, answer.text)
        if answer.status_code == 202:
            assert answer.json()["status"].startswith("ignored: "), (project, after, ref)
    with session_scope(session_factory) as session:
        assert session.scalars(select(models.Commit)).all() == []
        stored = session.scalars(select(models.Delivery)).all()
        assert stored and all(d.state == "processed" and d.component_id is None for d in stored)
        assert all("\x00" not in (d.ref or "") + (d.project or "") for d in stored)


@pytest.mark.parametrize(("forge", "payload"), [
    ("gitlab", b'{"object_kind": "push\\u0000"}'),
    ("gerrit", b'{"type": "ref-updated\\u0000"}'),
    ("github", b'{"ref": "refs/heads/\\u0000", "after": "x"}'),
])
def test_a_nul_in_an_event_name_is_stored_as_text_not_a_500(
    client: TestClient, tracked: None, forge: str, payload: bytes,
) -> None:
    answer = _send(client, forge, payload)
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"].startswith("ignored: ")


def test_a_pushed_commit_with_nul_and_markup_is_stored_with_the_nul_replaced(
    client: TestClient, session_factory: sessionmaker[Session], clock: FakeClock, tracked: None,
) -> None:
    sha = "d" * 40
    payload = gitlab_push("grp/comp", sha, commits=[(sha, f"fix\x00 {EVIL}")])
    payload["commits"][0]["author"]["name"] = f"Mal\x00lory {EVIL}"
    answer = _send(client, "gitlab", payload)
    assert answer.json()["status"] == "accepted"
    outcome = deliveries.process(session_factory, answer.json()["delivery"], None, clock,
                                 RecordingDispatcher()).outcome
    assert outcome.startswith("1 new commits"), outcome
    with session_scope(session_factory) as session:
        commit = session.scalars(select(models.Commit)).one()
        assert (commit.sha, commit.title) == (sha, f"fix\ufffd {EVIL}")
        assert commit.author == f"Mal\ufffdlory {EVIL}"


def test_a_commit_report_with_a_nul_is_a_422(client: TestClient, tracked: None) -> None:
    for body in ({"sha": "e" * 40, "title": "a\x00"}, {"sha": "e" * 40, "author": "\x00"}):
        answer = client.post("/api/v1/components/lab/commits", json=body)
        assert answer.status_code == 422, answer.text
    assert client.post("/api/v1/components/lab/commits",
                       json={"sha": f"$(touch {'e' * 34})"}).status_code == 422


# Polling: a forge answering hostile shas and text ------------------------------------------------


class _Hostile:
    """Mixin: the branch head the fake forge reports is ``head`` (a hostile string)."""

    head = ""

    def _branch(self) -> Any:
        raise NotImplementedError

    def route(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any, dict[str, str]]:
        if "/branches/" in path and self.head:
            return 200, self._branch(), {}
        return super().route(path, query)  # type: ignore[misc, no-any-return]


class HostileGitLab(_Hostile, FakeGitLab):
    def _branch(self) -> Any:
        return {"name": "main", "commit": {"id": self.head}}


class HostileGitHub(_Hostile, FakeGitHub):
    def _branch(self) -> Any:
        return {"name": "main", "commit": {"sha": self.head}}


class HostileGerrit(_Hostile, FakeGerrit):
    def _branch(self) -> Any:
        return self._json({"ref": "refs/heads/main", "revision": self.head})


FORGE_FAKES: dict[str, type[FakeForge]] = {"gitlab": HostileGitLab, "github": HostileGitHub,
                                           "gerrit": HostileGerrit}


def _poll(factory: sessionmaker[Session], cid: int, clock: FakeClock,
          tmp_path: Path) -> polling.PollResult:
    return polling.poll(factory, cid, source_factory(tmp_path / "data" / "tracking", 5, 30),
                        clock, RecordingDispatcher())


def _add(factory: sessionmaker[Session], clock: FakeClock, **config: Any) -> int:
    with session_scope(factory) as session:
        return components.create_component(
            session, ComponentConfig.model_validate({"name": "comp", **config}), clock).id


@pytest.mark.parametrize("forge", ["gitlab", "github", "gerrit"])
def test_a_forge_answering_hostile_shas_fails_the_poll_and_stores_nothing(
    session_factory: sessionmaker[Session], clock: FakeClock, tmp_path: Path, forge: str,
    canary: Canary,
) -> None:
    with FORGE_FAKES[forge]() as fake:
        assert isinstance(fake, _Hostile)
        fake.repo("grp/comp").commit()
        cid = _add(session_factory, clock, source=forge, url=f"{fake.url}/grp/comp")
        for hostile in (*BAD_SHAS, *canary.commands()):
            fake.head = hostile
            result = _poll(session_factory, cid, clock, tmp_path)
            assert not result.ok and "not a sha" in result.outcome, (hostile, result)
        assert fake.requests, "the fake forge was never asked"
    with session_scope(session_factory) as session:
        assert session.scalars(select(models.Commit)).all() == []
        state = session.scalars(select(models.TrackingState)).one()
        assert "\x00" not in state.last_error and state.head_sha is None


@pytest.mark.parametrize("forge", ["gitlab", "github", "gerrit"])
def test_a_forges_commit_title_with_nul_and_markup_is_stored_as_text(
    session_factory: sessionmaker[Session], clock: FakeClock, tmp_path: Path, forge: str,
) -> None:
    with FORGE_FAKES[forge]() as fake:
        sha = fake.repo("grp/comp").commit(title=f"evil\x00 {EVIL}")
        cid = _add(session_factory, clock, source=forge, url=f"{fake.url}/grp/comp")
        result = _poll(session_factory, cid, clock, tmp_path)
    assert result.ok and result.new_commits == [sha], result
    with session_scope(session_factory) as session:
        assert session.scalars(select(models.Commit.title)).one() == f"evil\ufffd {EVIL}"


class NulErrors(FakeGitLab):
    def route(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any, dict[str, str]]:
        return 404, {"message": "404 \x00 Not Found"}, {}


def test_a_forge_error_message_with_a_nul_is_recorded_as_the_polls_error_without_its_body(
    session_factory: sessionmaker[Session], clock: FakeClock, tmp_path: Path,
) -> None:
    """The failure is counted, and what the forge said (NUL and all) stays in the worker's
    log: an answer body is never shown through the API (docs/tracking.md, Polling)."""
    with NulErrors() as fake:
        cid = _add(session_factory, clock, source="gitlab", url=f"{fake.url}/grp/comp")
        result = _poll(session_factory, cid, clock, tmp_path)
    assert not result.ok and "HTTP 404" in result.outcome
    with session_scope(session_factory) as session:
        state = session.scalars(select(models.TrackingState)).one()
        assert state.poll_failures == 1
        assert state.last_error == "GitLab project grp/comp: HTTP 404 (details in the worker log)"


# The git source and checkouts --------------------------------------------------------------------


@pytest.mark.parametrize("branch", BAD_BRANCHES)
def test_the_git_source_refuses_a_hostile_branch_before_running_git(
    tmp_path: Path, branch: str, canary: Canary,
) -> None:
    with pytest.raises(SourceError, match="refusing unsafe"):
        GitSource(SourceSpec("comp", "git", str(tmp_path), branch), tmp_path / "mirrors")


def test_a_remote_helper_url_never_runs_its_command(tmp_path: Path, canary: Canary) -> None:
    """``ext::`` is refused by the config; git itself is told to refuse it too (defence in
    depth: a row stored before the validation existed, or an /etc/gitconfig that allows it)."""
    url = f"ext::sh -c touch% {canary.path}"
    source = GitSource(SourceSpec("comp", "git", url, "main"), tmp_path / "mirrors")
    with pytest.raises(SourceError):
        source.head()
    with pytest.raises(SourceError):
        source.commit("a" * 40)
    with pytest.raises(InfraError, match="cannot clone"):
        checkout.ensure_commit(tmp_path / "repos", "comp", url, "a" * 40)


@pytest.mark.parametrize(("name", "sha"), [*[(n, "a" * 40) for n in BAD_NAMES],
                                           *[("comp", s) for s in UNSTRIPPED_SHAS]])
def test_checkout_refuses_a_hostile_name_or_sha_before_touching_the_disk(
    tmp_path: Path, name: str, sha: str, canary: Canary,
) -> None:
    repos = tmp_path / "data" / "repos"
    with pytest.raises(InfraError, match="refusing unsafe"):
        checkout.checkout(repos, name, str(tmp_path), sha, tmp_path / "data" / "src" / "comp")
    assert not repos.exists() and not (tmp_path / "data" / "src").exists()


@pytest.mark.parametrize("sha", [*UNSTRIPPED_SHAS, "--remote=ext::sh -c touch% CANARY"])
def test_extracting_refuses_a_hostile_sha_even_without_the_mirror_check(
    tmp_path: Path, sha: str, canary: Canary,
) -> None:
    repo, _ = git_repo(tmp_path / "upstream", {"a.txt": "a\n"})
    with pytest.raises(InfraError, match="refusing unsafe sha"):
        checkout.extract(repo / ".git", sha, tmp_path / "tree")
    assert not (tmp_path / "tree").exists()


@pytest.mark.parametrize("target", ["../../../../outside", "/etc/passwd"])
def test_an_upstream_symlink_out_of_the_tree_is_never_extracted(
    tmp_path: Path, target: str,
) -> None:
    repo, _ = git_repo(tmp_path / "upstream", {"a.txt": "a\n"})
    (repo / "escape").symlink_to(target)
    subprocess.run(["git", "-C", str(repo), "add", "escape"], check=True, timeout=30)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-qm", "symlink out"], check=True, timeout=30)
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, timeout=30,
                         capture_output=True, text=True).stdout.strip()
    dest = tmp_path / "data" / "runs" / "run-1" / "src" / "comp"
    with pytest.raises(InfraError, match="cannot extract"):
        checkout.checkout(tmp_path / "data" / "repos", "comp", str(repo), sha, dest)
    assert not (dest / "escape").is_symlink()


# A whole run with shell syntax in every path and in the hook's output ---------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def run_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Settings for the runner harness on a database of its own (its runs commit for real)."""
    if request.param == "sqlite":
        yield {}
        return
    with fresh_postgres_database(f"certifier_attack_{abs(hash(tmp_path)) % 10**8}") as url:
        yield {"database_url": url}


def test_shell_syntax_in_repository_and_recipe_paths_is_only_ever_a_path(
    tmp_path: Path, canary: Canary, run_database: dict[str, Any],
) -> None:
    """The upstream repository and the recipe folder live at paths full of shell syntax; the
    real runner tracks, checks out, deploys and records the run, and no shell ever sees them.
    The hook prints NUL bytes and markup, which the run log keeps as text."""
    weird = tmp_path / "up $(touch CANARY) ;touch CANARY; `touch CANARY`"
    repo, sha = git_repo(weird / "repo", {"app.conf": "x = 1\n"})
    recipe = weird / "recipe"
    write_hook(recipe, "deploy", 'printf "deployed from %s\\n" "$PWD"\n'
                                 "printf 'not ok port: \\000 %s\\n' '" + EVIL + "'\nexit 1")
    h = harness(tmp_path, {"app": (repo, recipe)}, **run_database)
    h.report("app", sha)
    run = h.execute(h.gate_run())
    assert run.verdict == "failed", run.log
    assert f"deployed from {h.settings.runs_dir.resolve() / f'run-{run.id}' / 'src' / 'app'}" \
        in run.log
    assert "\x00" not in run.log and f"\ufffd {EVIL}" in run.log
    [check] = [c for c in run.checks if c.name == "app/port"]
    assert check.message == f"\ufffd {EVIL}"


def test_a_hook_in_a_folder_named_like_a_command_runs_as_itself(
    tmp_path: Path, canary: Canary,
) -> None:
    bed = create_testbed(TestbedSpec(name="t", driver="local"), tag=f"ra{id(tmp_path) % 10**6}",
                         state_dir=tmp_path / "state", records_dir=tmp_path / "records")
    try:
        recipe = tmp_path / f"$(touch {canary.path})"
        write_hook(recipe, "deploy", 'echo "ran $CERTIFIER_COMPONENT"')
        tree = tmp_path / "src;touch CANARY"
        tree.mkdir()
        comp = Deployable("app", "a" * 40, tree, recipe)
        log: list[str] = []
        [outcome] = Recipes(bed, RunInfo(1, "gate", 1), 10, log.append).call(
            comp, "deploy", suite="deploy", check="app")
    finally:
        bed.teardown()
    assert outcome.passed and "ran app" in outcome.result.log


# The SSH driver's remote command line ------------------------------------------------------------


def test_the_ssh_command_line_quotes_every_word_for_the_remote_shell(
    tmp_path: Path, canary: Canary,
) -> None:
    """The remote side always runs a shell; run the very line it would get through ``sh -c``."""
    words = [*canary.commands(), "a b", "'", '"', "\\", "*", "~", "$HOME", "\n"]
    folder = tmp_path / "cd $(touch CANARY)"
    folder.mkdir()
    line = remote_command(["printf", "%s\\0", *words], env={"CERTIFIER_X": words[0]},
                          cwd=str(folder))
    done = subprocess.run(["sh", "-c", line], capture_output=True, timeout=30, check=True,
                          cwd=canary.cwd)
    assert done.stdout.decode().split("\x00")[:-1] == words
    with pytest.raises(ValueError, match="not an environment variable name"):
        remote_command(["true"], env={"A;touch CANARY": "1"})


# The dashboard shows upstream text as text -------------------------------------------------------


def _fail_until_rejected(world: World, results: list[SuiteResult]) -> int:
    """Fail every run of the newest candidate until it is rejected (rechecks included)."""
    report = world.reconcile()
    for _ in range(6):
        for run_id in report.runs_created:
            world.claim(run_id)
            world.finish(run_id, results)
        report = world.reconcile()
        if report.rejected:
            return report.rejected[0]
    raise AssertionError("the candidate was never rejected")


def test_upstream_and_operator_text_is_escaped_on_every_page(
    client: TestClient, session_factory: sessionmaker[Session], clock: FakeClock,
    operator: dict[str, str],
) -> None:
    world = World(session_factory, clock)
    world.component("nova")
    world.testbed("gate1")
    with session_scope(session_factory) as session:
        components.report_commit(session, "nova", "f" * 40, clock, title="harmless",
                                 author=f"Mallory {EVIL}", seen_via="api")
    failing = [SuiteResult("deploy", checks=[Check("deploy", "nova/port", False, EVIL)])]
    rejected = _fail_until_rejected(world, failing)
    world.commit("nova", "n2")
    queued = world.reconcile().formed[-1]
    answer = client.post(f"/api/v1/candidates/{queued}/cancel", json={"reason": EVIL},
                         headers=operator)
    assert answer.status_code == 200, answer.text
    _send(client, "gitlab", gitlab_push("grp/comp", "c" * 40, ref=f"refs/heads/{EVIL}"))
    pages = {f"/candidates/{rejected}": "excuse", "/components/nova": "author",
             "/audit": "cancel reason", "/deliveries": "ref of an ignored push", "/": "excuse"}
    for path, what in pages.items():
        page = client.get(path)
        assert page.status_code == 200, path
        assert EVIL not in page.text, f"{what} unescaped on {path}"
        assert ESCAPED in page.text or EVIL.replace('"', "&#34;") in page.text \
            or "&lt;script&gt;" in page.text, f"{what} missing on {path}"


def test_static_files_are_named_not_looked_up_on_disk(client: TestClient) -> None:
    for path in ("/static/..%2F..%2Fsettings.py", "/static/../../certifier/settings.py",
                 "/static/%2Fetc%2Fpasswd", "/static/dashboard.css%00.py"):
        answer = client.get(path)
        assert answer.status_code in (404, 422), path
        assert "BaseSettings" not in answer.text and "root:" not in answer.text
