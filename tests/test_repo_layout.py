"""The shape of app/ that later work keeps (issue 24): the folders are the pipeline's
stages, and no import runs from a lower stage back up to a higher one; no import circle,
type-only and in-function imports included; no function over 60 lines, no module over
300. Read from the source with `ast`, so nothing is imported or run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 300

# Bottom to top. A module may import from its own stage and the ones below it. A name
# stands for a module or a package (every module under it), and the longest name that
# fits a module decides its stage, so the status page's state (fed by the stages below
# the API) can sit lower than the page itself.
STAGES: list[tuple[str, ...]] = [
    ("app",),  # the package's own docstring and version
    ("errors",),  # the exception tree: imports nothing of the package
    ("config_toml",),
    ("config", "rewrite", "free_tier", "request_log", "header_text", "descriptors", "sse"),
    ("body_budget",),  # bodies held before commit: raises errors' ProxyOutOfResources
    (
        "redaction",
        "request",
        "tallies",
    ),  # the parsed request and the Dialect seam every stage reads
    ("metrics",),
    ("upstream",),  # transport, client, deadlines, relay
    ("routing",),  # catalogue, candidates, cooldowns, the fallback walk
    ("team",),  # keys, quotas, free budget, usage, the gate
    ("cache",),
    ("status.activity", "status.board", "status.sessions"),  # state the stages feed
    ("shared",),  # the same stores on Redis, and the switch to memory while it is away
    ("state",),  # which stores this process uses: memory, or Redis
    ("deps",),  # the services every route reaches
    ("api",),  # the dialects, the pipeline, the routes
    ("status",),  # the status page and its routes
    ("server",),  # the HTTP frame: browser guard, head limits, shutdown
    ("main",),
    ("cli", "__main__"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(APP.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(APP.rglob("*.py"))}


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Every app module `path` imports, wherever the import stands (type-only and
    in-function ones too); `from app.x import y` names the module app.x.y when it is one."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module not in known:
                continue
            submodules = {f"{node.module}.{alias.name}" for alias in node.names}
            named = submodules & known.keys()
            found.update(named)
            if len(named) < len(submodules):  # some names are the module's own
                found.add(node.module)
    found.discard(module_name(path))
    return found


def stage_of(module: str) -> int:
    best, stage = -1, -1
    for index, names in enumerate(STAGES):
        for name in names:
            full = "app" if name == "app" else f"app.{name}"
            fits = module == full or (name != "app" and module.startswith(full + "."))
            if fits and len(full) > best:
                best, stage = len(full), index
    return stage


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) for name, path in known.items()}


def test_every_module_has_a_stage():
    assert [m for m in modules() if stage_of(m) < 0] == []


def test_no_import_runs_from_a_lower_stage_up():
    upward = [
        f"{module} (stage {stage_of(module)}) imports {target} (stage {stage_of(target)})"
        for module, targets in graph().items()
        for target in sorted(targets)
        if stage_of(target) > stage_of(module)
    ]
    assert upward == []


def test_no_import_circle():
    edges = graph()
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                circles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert circles == []


def functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def test_no_function_longer_than_60_lines():
    long = [
        f"{module}.{function.name}: {function.end_lineno - function.lineno + 1} lines"
        for module, path in modules().items()
        for function in functions(ast.parse(path.read_text()))
        if function.end_lineno is not None
        and function.end_lineno - function.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []


def test_no_module_longer_than_300_lines():
    long = [
        f"{module}: {lines} lines"
        for module, path in modules().items()
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert long == []
