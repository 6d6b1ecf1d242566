"""The README's client examples, run as written against a real proxy in front of the fake,
so the docs stay honest: each block marked `<!-- example: NAME -->` is extracted, its
`http://localhost:8080` (or `http://127.0.0.1:8080`) pointed at the live proxy, and run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest

from tests.conftest import ProxyFactory
from tests.fake_openrouter import (
    COMPLETIONS_PATH,
    DEFAULT_CONTENT,
    EMBEDDINGS_PATH,
    MESSAGES_PATH,
    RESPONSES_PATH,
    FakeOpenRouter,
)
from tests.live_server import LiveServer

README = Path(__file__).resolve().parent.parent / "README.md"
EXAMPLE = re.compile(r"<!-- example: ([\w-]+) -->\s*```(\w+)\n(.*?)```", re.DOTALL)
DOCUMENTED_URL = re.compile(r"http://(?:localhost|127\.0\.0\.1):8080")
ADMIN_KEY = "sk-admin-readme-examples"
HI = {"type": "input_text", "text": "hi"}
# Where each Python example's requests must arrive, and what it prints from the answers.
PYTHON_EXAMPLES = {
    "responses": (RESPONSES_PATH, DEFAULT_CONTENT),
    "messages": (MESSAGES_PATH, DEFAULT_CONTENT),
    "embeddings": (EMBEDDINGS_PATH, "2 vectors of"),
    "completions": (COMPLETIONS_PATH, DEFAULT_CONTENT),
}


def examples() -> dict[str, tuple[str, str]]:
    """{name: (language, code)} of every marked block in the README."""
    return {m[1]: (m[2], m[3]) for m in EXAMPLE.finditer(README.read_text(encoding="utf-8"))}


def pointed_at(code: str, proxy: LiveServer) -> str:
    assert DOCUMENTED_URL.search(code), "the example does not name the proxy's URL"
    return DOCUMENTED_URL.sub(proxy.url, code)


def client_env(**extra: str) -> dict[str, str]:
    """This environment without any client or proxy settings the examples would pick up."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OPENAI_", "ANTHROPIC_")) and not name.lower().endswith("_proxy")
    }
    return {**env, **extra}


def run(code: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = cwd / "example.py"
    script.write_text(code, encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_every_api_section_has_its_marked_examples():
    found = examples()
    assert {name for name, (lang, _) in found.items() if lang == "python"} >= set(PYTHON_EXAMPLES)
    assert found["codex"][0] == "toml" and found["claude-code"][0] == "sh"


@pytest.mark.parametrize("name", sorted(PYTHON_EXAMPLES))
def test_python_example_runs_against_the_proxy(
    name: str, start_proxy: ProxyFactory, fake: FakeOpenRouter, tmp_path: Path
):
    with start_proxy() as proxy:
        done = run(pointed_at(examples()[name][1], proxy), tmp_path, client_env())

    path, printed = PYTHON_EXAMPLES[name]
    assert done.returncode == 0, done.stderr
    assert fake.requests_to(path), "the example never reached the fake"
    assert printed in done.stdout, done.stdout


def test_codex_provider_reaches_the_responses_route(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
):
    """What Codex does with the documented provider: POST <base_url>/responses, streaming,
    the key from `env_key` as a bearer token (openrouter-api.md §11.1, §15)."""
    config = tomllib.loads(examples()["codex"][1])
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
):
    """The anthropic SDK reads the same variables as Claude Code: the documented ones, with a
    real proxy key, must reach /v1/messages (key mode, so a wrong variable would be 401)."""
    exports = dict(re.findall(r"^export (\w+)=(\S*)", examples()["claude-code"][1], re.M))
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
