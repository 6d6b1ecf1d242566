"""Every README block a user would copy, run as written against a real proxy in front of
the fake, so the docs stay honest. A block is named by its `<!-- example: NAME -->` marker,
else by its section's heading (`Docker #2` for the section's second); its
`http://localhost:8080` (or `http://127.0.0.1:8080`) is pointed at the live proxy. A new
Python or shell block fails `test_every_block_a_user_would_copy_is_run_or_says_why_not`
until it is run here or said why not."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.team.db import open_database
from app.team.keys import KeyTable
from app.team.store import Team
from tests.conftest import ProxyFactory
from tests.fake_openrouter import (
    COMPLETIONS_PATH,
    DEFAULT_CONTENT,
    EMBEDDINGS_PATH,
    FAKE_KEY,
    MESSAGES_PATH,
    RESPONSES_PATH,
    FakeOpenRouter,
    Received,
)
from tests.live_server import LiveServer
from tests.polling import wait_until

CHAT_PATH = "/api/v1/chat/completions"
README = Path(__file__).resolve().parent.parent / "README.md"
ROOT = README.parent
MARKER = re.compile(r"<!-- example: ([\w-]+) -->")
OPENING = re.compile(r"^\s*```\s*([\w+-]*)")  # the info string's first word is the language
CLOSING = re.compile(r"^\s*```\s*$")
DOCUMENTED_URL = re.compile(r"http://(?:localhost|127\.0\.0\.1):8080")
RUNNABLE = {"python", "sh", "bash", "shell", "console"}  # what a user pastes and runs
ADMIN_KEY = "sk-admin-readme-examples"
HI = {"type": "input_text", "text": "hi"}
# The smallest JPEG (1x1 grey), the `photo.jpg` the image example reads.
PHOTO = base64.b64decode(
    "/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAP//////////////////////////////////////////////////"
    "////////////////////////////////////wgALCAABAAEBAREA/8QAFBABAAAAAAAAAAAAAAAAAAAAAP/aAAgB"
    "AQABPxA="
)


@dataclass(frozen=True)
class Block:
    lang: str
    code: str


def examples() -> dict[str, Block]:
    """{name: block} of every fenced block in the README."""
    found: dict[str, Block] = {}
    heading, marker, per_heading = "", None, 0
    lines = iter(README.read_text(encoding="utf-8").splitlines())
    for line in lines:
        if fence := OPENING.match(line):
            body = []
            for inner in lines:
                if CLOSING.match(inner):
                    break
                body.append(inner)
            per_heading += 1
            name = marker or (heading if per_heading == 1 else f"{heading} #{per_heading}")
            assert name not in found, f"two README blocks are both named {name!r}"
            found[name] = Block(fence[1], textwrap.dedent("\n".join(body) + "\n"))
            marker = None
        elif line.startswith("#"):
            heading, per_heading = line.lstrip("#").strip(), 0
        elif match := MARKER.search(line):
            marker = match[1]
    return found


def pointed_at(code: str, proxy: LiveServer) -> str:
    assert DOCUMENTED_URL.search(code), "the example does not name the proxy's URL"
    return DOCUMENTED_URL.sub(proxy.url, code)


def client_env(**extra: str) -> dict[str, str]:
    """This environment without any client or proxy settings the examples would pick up."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OPENAI_", "ANTHROPIC_", "PROXY_", "OPENROUTER_"))
        and not name.lower().endswith("_proxy")
    }
    return {**env, **extra}


def run(code: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = cwd / "example.py"
    script.write_text(code, encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def run_shell(code: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """As pasted into bash, but stopping at the first failing command."""
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- which blocks are run, and which are not (and why) ---------------------------------------


def _photo_sent(fake: FakeOpenRouter, request: Received) -> bool:
    """photo.jpg went up as a data URL, to a model that takes images."""
    part = request.json["messages"][0]["content"][1]
    data_url = "data:image/jpeg;base64," + base64.b64encode(PHOTO).decode()
    model = next(m for m in fake.models if m["id"] == request.model)
    takes_images = "image" in model["architecture"]["input_modalities"]
    return bool(part["image_url"]["url"] == data_url and takes_images)


def _attributed(fake: FakeOpenRouter, request: Received) -> bool:
    """The client's attribution goes up, its key does not (the proxy's own does)."""
    headers = request.headers
    return (
        headers["http-referer"] == "https://my-site.example"
        and headers["x-title"] == headers["x-openrouter-title"] == "My Site"
        and headers["authorization"] == f"Bearer {FAKE_KEY}"
    )


@dataclass(frozen=True)
class Expect:
    path: str  # where the example's requests must arrive
    printed: tuple[str, ...]  # what it prints from the answers
    sent: Callable[[FakeOpenRouter, Received], bool] | None = None  # one request must pass


PYTHON_EXAMPLES = {
    "openai Python SDK": Expect(
        CHAT_PATH, (f"{DEFAULT_CONTENT} answered by", "meta-llama/llama-4-scout:free")
    ),
    "OpenRouter's `requests` example, unchanged but for the URL": Expect(
        CHAT_PATH, (DEFAULT_CONTENT,), _attributed
    ),
    "An image, as base64": Expect(CHAT_PATH, (DEFAULT_CONTENT,), _photo_sent),
    "responses": Expect(RESPONSES_PATH, (f"{DEFAULT_CONTENT} answered by",)),
    "messages": Expect(MESSAGES_PATH, (f"{DEFAULT_CONTENT} answered by",)),
    "embeddings": Expect(EMBEDDINGS_PATH, ("2 vectors of",)),
    "completions": Expect(COMPLETIONS_PATH, (f"{DEFAULT_CONTENT} answered by",)),
}
SHELL_EXAMPLES = {"curl", "Team keys, quotas and usage", "Running several replicas"}
# (each has its test below)
RUN_THROUGH_ITS_CLIENT = {"claude-code"}  # the variables, read by the anthropic SDK
NOT_RUN_HERE = {
    "Quick start": "installs into a new venv and needs a real OpenRouter key; .ci/run runs "
    "the test command, test_cli.py runs `serve`",
    "Docker": "needs a Docker daemon; test_docker.py replays the image and checks compose",
    "Docker #2": "needs a Docker daemon; test_docker.py runs the image's command",
    "Development": "the commands .ci/run runs",
}


def test_every_block_a_user_would_copy_is_run_or_says_why_not() -> None:
    found = examples()
    runnable = {name for name, block in found.items() if block.lang in RUNNABLE}
    handled = {*PYTHON_EXAMPLES, *SHELL_EXAMPLES, *RUN_THROUGH_ITS_CLIENT, *NOT_RUN_HERE}
    assert all(block.lang for block in found.values()), "a README block without a language"
    assert runnable - handled == set(), "README blocks nobody runs: name them above"
    assert handled - runnable == set(), "names no README block has any more"
    assert {found[name].lang for name in PYTHON_EXAMPLES} == {"python"}
    assert {found[name].lang for name in SHELL_EXAMPLES} <= {"sh", "bash"}
    assert found["codex"].lang == "toml"


@pytest.mark.parametrize("name", sorted(PYTHON_EXAMPLES))
def test_python_example_runs_against_the_proxy(
    name: str, start_proxy: ProxyFactory, fake: FakeOpenRouter, tmp_path: Path
) -> None:
    (tmp_path / "photo.jpg").write_bytes(PHOTO)
    with start_proxy() as proxy:
        done = run(pointed_at(examples()[name].code, proxy), tmp_path, client_env())

    expect = PYTHON_EXAMPLES[name]
    assert done.returncode == 0, done.stderr
    sent = fake.requests_to(expect.path)
    assert sent, "the example never reached the fake"
    if expect.sent is not None:
        assert any(expect.sent(fake, request) for request in sent), [r.headers for r in sent]
    for printed in expect.printed:
        assert printed in done.stdout, done.stdout


def test_curl_example_shows_the_answer_and_the_proxy_headers(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, tmp_path: Path
) -> None:
    if shutil.which("curl") is None:
        pytest.skip("needs curl: apt-get install curl")
    with start_proxy() as proxy:
        done = run_shell(pointed_at(examples()["curl"].code, proxy), tmp_path, client_env())

    assert done.returncode == 0, done.stderr
    head, _, body = done.stdout.partition("\n\n")  # text mode turned CRLF into LF
    assert head.startswith("HTTP/1.1 200"), done.stdout
    headers = {line.split(":")[0].lower() for line in head.splitlines()[1:]}
    assert {"x-proxy-model", "x-proxy-attempts", "x-request-id"} <= headers, head
    assert json.loads(body)["choices"][0]["message"]["content"] == DEFAULT_CONTENT
    assert fake.requests_to(CHAT_PATH)


def test_team_keys_commands_run_on_a_running_servers_database(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, tmp_path: Path
) -> None:
    """The commands as documented, `[--json]`-style options given; then alice's key, made
    by the first line and revoked by the fourth, is refused by the running server."""
    code = examples()["Team keys, quotas and usage"].code
    code = re.sub(r"\[(-[^\]]*)\]", r"\1", code) + 'echo "KEY=$KEY"\n'
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    command = bin_dir / "openrouter-proxy"
    command.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m app "$@"\n')
    command.chmod(0o755)
    with start_proxy() as proxy:
        db = proxy.app.state.services.settings.db_path
        path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
        env = client_env(PATH=path, PYTHONPATH=str(ROOT), PROXY_DB_PATH=str(db))
        done = run_shell(code, tmp_path, env)
        assert done.returncode == 0, done.stderr
        printed, _, key = done.stdout.rpartition("KEY=")
        key = key.strip()

        def refusal() -> str:
            answer = httpx.get(f"{proxy.url}/v1/usage", headers={"Authorization": f"Bearer {key}"})
            return str(answer.json()["error"]["message"]) if answer.status_code == 401 else ""

        message = wait_until(refusal, message="alice's revoked key refused")
    assert "'alice' was revoked" in message
    assert key.startswith("sk-proxy-") and key not in printed  # `keys list`: never the secret
    team = Team(db)
    alice, bob = team.keys.get("alice"), team.keys.get("bob")
    assert alice.limits == {"rpm": 10, "rpd": 500, "tpd": 200000, "concurrency": 2}
    assert alice.revoked is not None and bob.revoked is None
    assert bob.models == ("*:free", "openai/*") and bob.paid


def test_codex_provider_reaches_the_responses_route(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
) -> None:
    """What Codex does with the documented provider: POST <base_url>/responses, streaming,
    the key from `env_key` as a bearer token (openrouter-api.md §11.1, §15)."""
    config = tomllib.loads(examples()["codex"].code)
    provider = config["model_providers"][config["model_provider"]]
    assert provider["wire_api"] == "responses"
    with start_proxy(admin_key=ADMIN_KEY) as proxy:
        key = create_key(proxy)
        body = {
            "model": config["model"],
            "input": [{"type": "message", "role": "user", "content": [HI]}],
            "store": False,
            "stream": True,
            "include": ["reasoning.encrypted_content"],
        }
        headers = {"Authorization": f"Bearer {key}", "Accept": "text/event-stream"}
        url = pointed_at(provider["base_url"], proxy) + "/responses"
        answer = httpx.post(url, json=body, headers=headers, timeout=30)

    events = [json.loads(line[6:]) for line in answer.text.splitlines() if line[6:7] == "{"]
    assert answer.status_code == 200, answer.text
    assert events[-1]["type"] == "response.completed"
    assert fake.requests_to(RESPONSES_PATH)


def test_claude_code_variables_authenticate_with_a_proxy_key(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, tmp_path: Path
) -> None:
    """The anthropic SDK reads the same variables as Claude Code: the documented ones, with a
    real proxy key, must reach /v1/messages (key mode, so a wrong variable would be 401)."""
    exports = dict(re.findall(r"^export (\w+)=(\S*)", examples()["claude-code"].code, re.M))
    assert exports["ANTHROPIC_API_KEY"] == '""'
    with start_proxy(admin_key=ADMIN_KEY) as proxy:
        env = client_env(
            ANTHROPIC_BASE_URL=pointed_at(exports["ANTHROPIC_BASE_URL"], proxy),
            ANTHROPIC_AUTH_TOKEN=create_key(proxy),
            ANTHROPIC_API_KEY="",
        )
        code = (
            "import anthropic\n"
            "message = anthropic.Anthropic().messages.create(\n"
            f"    model={exports['ANTHROPIC_DEFAULT_HAIKU_MODEL']!r}, max_tokens=64,\n"
            "    messages=[{'role': 'user', 'content': 'hi'}])\n"
            "print(message.content[0].text)\n"
        )
        done = run(code, tmp_path, env)

    assert done.returncode == 0, done.stderr
    assert DEFAULT_CONTENT in done.stdout
    (sent,) = fake.requests_to(MESSAGES_PATH)
    assert "x-api-key" not in sent.headers


def create_key(proxy: LiveServer) -> str:
    """A client key made through the admin API: the proxy leaves open mode."""
    made = httpx.post(
        f"{proxy.url}/admin/keys",
        json={"name": "readme"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=10,
    )
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    assert isinstance(key, str)
    return key


def test_db_copy_moves_keys_and_usage_from_sqlite_to_postgres(
    start_proxy: ProxyFactory, pg_url: str, tmp_path: Path
) -> None:
    """ "Running several replicas": the documented `db copy`, from the SQLite file in the
    current folder to an empty Postgres database; a key made before works against the copy."""
    code = examples()["Running several replicas"].code
    documented = re.search(r"postgresql://\S+", code)
    assert documented and "sqlite:///openrouter-proxy.db" in code
    code = code.replace(documented[0], pg_url)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    command = bin_dir / "openrouter-proxy"
    command.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m app "$@"\n')
    command.chmod(0o755)
    keys = KeyTable(open_database(tmp_path / "openrouter-proxy.db"))
    secret = keys.create("carol", rpm=5)
    keys.close()
    env = client_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(ROOT))
    done = run_shell(code, tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert re.search(r"copied 1 keys?, 0 usage records", done.stdout), done.stdout
    with start_proxy(database_url=pg_url) as proxy:
        answer = httpx.get(f"{proxy.url}/v1/usage", headers={"Authorization": f"Bearer {secret}"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["key"] == "carol"
