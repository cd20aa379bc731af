"""The layout rules of docs/architecture.md, checked so they cannot drift."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "channels_tuning"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_module(node: ast.ImportFrom, path: Path) -> str:
    """The absolute name of what ``from ... import`` names, relative imports resolved."""
    if not node.level:
        return node.module or ""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    base = package.split(".")
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def module_level_imports(path: Path) -> set[str]:
    """channels_tuning modules imported at module level (not inside functions, not
    under ``if TYPE_CHECKING``)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            target = imported_module(node, path)
            if target.startswith("channels_tuning"):
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("channels_tuning"))
    return found


def package_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {target for target in module_level_imports(path) if target in modules} - {name}
        for name, path in modules.items()
    }


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first walk of ``graph`` meets, as the path that closes it."""
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_a_cycle_is_found():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_in_the_package():
    graph = package_graph()
    # A package's __init__ re-exporting its own submodules is not a cycle of code.
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    assert find_cycles(graph) == []


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("channels_tuning.core", ("channels_tuning.consumers", "channels_tuning.servers")),
        ("channels_tuning.wire", ("channels_tuning.core", "channels_tuning.consumers")),
        ("channels_tuning.compat", ("channels_tuning.consumers", "channels_tuning.layers")),
        ("channels_tuning.observability", ("channels_tuning.consumers",)),
        ("channels_tuning.layers", ("channels_tuning.consumers",)),
        ("channels_tuning.client", ("channels_tuning.consumers", "channels_tuning.layers")),
    ],
)
def test_imports_go_one_way(package, forbidden):
    graph = package_graph()
    offending = {
        (name, target)
        for name, targets in graph.items()
        if name.startswith(package)
        for target in targets
        if target.startswith(forbidden)
    }
    assert offending == set()


def loaded_modules(statement: str) -> list[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    return out.stdout.split()


def test_the_python_client_loads_no_django_channels_or_redis():
    modules = loaded_modules("import channels_tuning.client")
    heavy = [m for m in modules if m.split(".")[0] in ("django", "channels", "redis", "daphne")]
    assert heavy == []
    # websockets, protobuf (for the protobuf codec) and the standard library.
    print(f"import channels_tuning.client loads {len(modules)} modules")


#: Test modules live here; what they share lives in tests/support (helpers the
#: benchmarks import too), tests/conftest.py (fixtures) and tests/e2e_asgi.py.
TEST_FOLDERS = ("tests.unit", "tests.e2e", "tests.project")


def test_tests_do_not_import_each_other_and_benchmarks_not_the_conftest():
    test_modules = [p for p in (REPO / "tests").rglob("test_*.py") if "upstream" not in p.parts]
    assert len(test_modules) > 40
    for path in test_modules:
        assert module_name(path).startswith(TEST_FOLDERS), path  # no test at the top
        for target in module_level_imports_any(path):
            assert not within(target, (*TEST_FOLDERS, "tests.conftest")), (path, target)
    for path in (REPO / "benchmarks").glob("*.py"):
        for target in module_level_imports_any(path):
            assert not within(target, ("tests.conftest", *TEST_FOLDERS)), (path, target)


def test_importing_the_benchmarks_leaves_their_folder_off_the_import_path():
    """benchmarks/codecs.py would shadow the standard library's codecs (Python 3.10
    imports it from the path at start-up), in every server process a test starts
    with the test's import path (channels_tuning.testing.live): a benchmark the tests
    import must not put its own folder on sys.path."""
    modules = [
        f"benchmarks.{path.stem}"
        for path in sorted((REPO / "benchmarks").glob("*.py"))
        if path.stem not in ("__init__", "plots")  # plots needs matplotlib, not in tox
    ]
    script = f"import importlib, sys; [importlib.import_module(m) for m in {modules!r}]; "
    script += "print(repr(sys.path))"
    found = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert found.returncode == 0, found.stderr[-2000:]
    folder = str(REPO / "benchmarks")
    assert folder not in ast.literal_eval(found.stdout.strip().splitlines()[-1])


def within(module: str, packages: tuple[str, ...]) -> bool:
    """``module`` is one of ``packages`` or inside one (tests.e2e_asgi is not in tests.e2e)."""
    return any(module == package or module.startswith(package + ".") for package in packages)


def test_the_tests_mirror_the_package():
    """A unit test folder per package it tests (tests/unit/<package>/)."""
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and any(p.glob("*.py"))}
    folders = {p.name for p in (REPO / "tests" / "unit").iterdir() if p.is_dir()} - {"__pycache__"}
    assert folders and folders <= packages, folders - packages


def module_level_imports_any(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                found.add("tests." + (node.module or ""))
            elif node.module:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_close_codes_are_named_only_in_closecodes():
    """1006 and 1012 (and the other codes the package sends) come from wire.closecodes."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "closecodes.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in (1006, 1012, 1013, 4000, 4001):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


def test_the_version_is_defined_once():
    import re

    import channels_tuning

    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^dynamic = \["version"\]$', pyproject, re.M)
    assert not re.search(r'^version = "', pyproject, re.M)
    assert 'version = { attr = "channels_tuning.__version__" }' in pyproject

    assert channels_tuning.__version__.count(".") == 2


def test_browser_reconnect_table_is_generated_from_python():
    from channels_tuning.wire.reconnect import JS_PATH, render_js

    assert JS_PATH.read_text() == render_js(), "stale: run python -m channels_tuning.wire.reconnect"


# ------------------------------------------------------------- the package graph


def unit_of(module: str) -> str:
    """The unit of the package graph a module belongs to: its subpackage
    (``layers``), or the top-level module itself (``checks``)."""
    parts = module.split(".")
    return "channels_tuning" if len(parts) == 1 else parts[1]


def all_imports(path: Path) -> set[str]:
    """channels_tuning modules imported anywhere in a module (functions included: an
    import hidden in a function is still a dependency), except under TYPE_CHECKING."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            target = imported_module(node, path)
            if target == "channels_tuning":  # "from .. import compat": the names are units
                found.update(f"{target}.{alias.name}" for alias in node.names)
            elif target.startswith("channels_tuning"):
                found.add(target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("channels_tuning"))
    return found


def package_dependencies() -> dict[str, set[str]]:
    """Unit -> the units it imports (generated protobuf code aside)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name.endswith("_pb2.py"):
            continue
        unit = unit_of(module_name(path))
        targets = {unit_of(target) for target in all_imports(path)} - {unit, "channels_tuning"}
        graph.setdefault(unit, set()).update(targets)
    graph.pop("channels_tuning", None)  # the public namespace re-exports, lazily
    return graph


def test_no_two_way_dependency_between_packages():
    """No subpackage (or top-level module) imports one that imports it back, even
    through others and even inside a function: the graph has no cycle."""
    assert find_cycles(package_dependencies()) == []


GRAPH_BEGIN, GRAPH_END = "<!-- package-graph:begin -->", "<!-- package-graph:end -->"


def rendered_graph() -> str:
    graph = package_dependencies()
    rows = [
        f"| `{unit}` | {', '.join(f'`{t}`' for t in sorted(graph[unit])) or '—'} |"
        for unit in sorted(graph, key=lambda u: (len(closure(graph, u)), u))
    ]
    return "\n".join(["| package | imports |", "|---|---|", *rows])


def closure(graph: dict[str, set[str]], unit: str) -> set[str]:
    seen: set[str] = set()
    todo = [unit]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_the_architecture_page_shows_the_package_graph_as_it_is():
    page = (REPO / "docs" / "architecture.md").read_text()
    shown = page[page.index(GRAPH_BEGIN) + len(GRAPH_BEGIN) : page.index(GRAPH_END)].strip()
    assert shown == rendered_graph(), "paste this between the markers:\n" + rendered_graph()


def test_no_file_of_the_package_is_over_400_lines():
    long = {
        str(path.relative_to(REPO)): n
        for path in PACKAGE.rglob("*.py")
        if not path.name.endswith(("_pb2.py", "_pb2.pyi"))
        and (n := len(path.read_text().splitlines())) > 400
    }
    assert long == {}


def test_layer_capabilities_are_found_in_one_place():
    """Only layers/capabilities.py looks at a layer object for what it can do (and
    compat/, which adapts other libraries' internals); everything else asks it."""
    import re

    probe = re.compile(r"\b(?:getattr|hasattr)\((?:self\.)?[\w.]*layer\b")
    found = [
        f"{path.relative_to(REPO)}:{number}"
        for path in PACKAGE.rglob("*.py")
        if path.name != "capabilities.py" and "compat" not in path.parts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if probe.search(line)
    ]
    assert found == []


def test_the_consumer_has_no_branch_on_the_server():
    """The consumer writes through its transport: no server kind is tested in it."""
    consumers = PACKAGE / "consumers"
    text = "\n".join(path.read_text() for path in consumers.glob("*.py"))
    for name in ("ServerKind", "detect.FLOW", "detect.DAPHNE", "detect.GENERIC", "_send_mode"):
        assert name not in text, name
