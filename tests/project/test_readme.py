"""The README's quickstart runs as written (unit level; the end-to-end burst through
the same code path is in the group-send tests)."""

from __future__ import annotations

import re
from pathlib import Path

from channels.testing import WebsocketCommunicator
from django.test import override_settings

README = Path(__file__).resolve().parents[2] / "README.md"


def quickstart() -> tuple[dict, str]:
    text = README.read_text()
    section = text[text.index("## Quickstart") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    settings_part, consumers_part = code.split("# consumers.py")
    tuning = re.search(r"CHANNELS_TUNING = (\{.*\})", settings_part).group(1)
    return eval(tuning), consumers_part  # the README's own literal


async def test_quickstart_consumer_chats_as_written():
    tuning, source = quickstart()
    namespace: dict = {}
    exec(compile(source, "README.md#quickstart", "exec"), namespace)
    chat = namespace["ChatConsumer"]
    with override_settings(CHANNELS_TUNING={**tuning, "STATS_BACKEND": None}):
        alice = WebsocketCommunicator(chat.as_asgi(), "/ws/chat/")
        bob = WebsocketCommunicator(chat.as_asgi(), "/ws/chat/")
        assert (await alice.connect())[0] and (await bob.connect())[0]
        await alice.send_json_to({"text": "hello"})
        assert await alice.receive_json_from(timeout=2) == {"text": "hello"}
        assert await bob.receive_json_from(timeout=2) == {"text": "hello"}
        await alice.disconnect()
        await bob.disconnect()


def test_server_guarantee_table_is_the_code_and_each_row_has_its_test():
    from channels_tuning.servers.guarantees import GUARANTEES, markdown_table

    assert markdown_table() in README.read_text()
    tests = (README.parent / "tests" / "e2e" / "test_servers.py").read_text()
    # The module is parametrized over every server, so each row's test runs on each.
    assert 'pytest.mark.parametrize("server", SERVERS)' in tests
    for guarantee in GUARANTEES:
        assert f"async def {guarantee.test}(" in tests, guarantee.title


#: Import names whose distribution is named otherwise.
IMPORT_NAMES = {"google": "protobuf", "zope": "zope.interface", "yaml": "pyyaml"}


def set_up_line() -> str:
    text = README.read_text()
    return next(
        line for line in text.splitlines() if line.endswith("# set up (apt and extras: tests only)")
    )


def test_the_set_up_line_installs_what_the_tests_and_benchmarks_need():
    """What tests/ and benchmarks/ import comes with the extras the README's set-up line
    installs (or their dependencies); the executables they look for come with those
    extras or with its apt-get line. A fresh clone then passes the test command."""
    import ast
    import contextlib
    import importlib.metadata as metadata
    import sys

    line = set_up_line()
    extras = set(re.search(r"pip install -e '\.\[([\w,]+)\]'", line).group(1).split(","))
    apt = set(re.search(r"apt-get install -y ([\w\s.-]+?) &&", line).group(1).split())

    def requirements(dist: str, extras: set[str] = frozenset()) -> set[str]:
        names = set()
        for requirement in metadata.requires(dist) or []:
            name, _, marker = requirement.partition(";")
            wanted = re.findall(r'extra == "([\w-]+)"', marker)
            if wanted and not set(wanted) & extras:
                continue
            names.add(re.split(r"[\s<>=!~\[(]", name.strip(), maxsplit=1)[0].lower())
        return names

    try:
        import tomllib
    except ImportError:  # Python 3.10: pytest's own TOML parser
        import tomli as tomllib
    project = tomllib.loads((README.parent / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in extras:
        declared += project["optional-dependencies"][extra]

    installed = set()
    todo = [re.split(r"[\s<>=!~\[(;]", r.strip(), maxsplit=1)[0].lower() for r in declared]
    while todo:
        dist = todo.pop().replace("_", "-")
        if dist in installed or dist == "channels-tuning":
            continue
        installed.add(dist)
        with contextlib.suppress(metadata.PackageNotFoundError):  # another platform's
            todo.extend(requirements(dist))

    providers = metadata.packages_distributions()
    repo = README.parent
    local = {"tests", "benchmarks", "channels_tuning", "example_project"}
    local |= {path.stem for path in repo.glob("benchmarks/*.py")}  # run as scripts
    local |= {"tomli", "tomllib"}  # this test's TOML parser: stdlib, or pytest's on 3.10
    missing = set()
    for path in [*repo.glob("tests/**/*.py"), *repo.glob("benchmarks/*.py")]:
        if "published" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top in local:
                    continue
                # Where this environment lacks the distribution (tox installs only the
                # test extra), its import name stands for it.
                names = providers.get(top) or [IMPORT_NAMES.get(top, top)]
                dists = {d.lower().replace("_", "-") for d in names}
                if not dists & installed:
                    missing.add(f"{top} ({path.relative_to(repo)})")
    assert missing == set()

    for executable, source in {
        "uv": "uv",
        "py-spy": "py-spy",
        "redis-server": "redis-server",
        "chromium": "chromium",
        "node": "nodejs",
        "haproxy": "haproxy",
        "nginx": "nginx-light",
    }.items():
        assert source in installed | apt, executable


DOCS = README.parent / "docs"
MAX_README_LINES = 150


def docs_pages() -> list[Path]:
    return [p for p in DOCS.rglob("*.md") if "_build" not in p.parts]


def prose(page: Path) -> str:
    """A page without its code blocks and HTML comments: what a reader reads as text."""
    text = re.sub(r"^(```|~~~).*?^\1\s*$", "", page.read_text(), flags=re.S | re.M)
    return re.sub(r"<!--.*?-->", "", text, flags=re.S)


def test_readme_is_short_and_the_docs_are_the_source():
    """The README introduces and links; the pages in docs/ are the documentation and
    none of them includes the README (which would make it the source again)."""
    assert len(README.read_text().splitlines()) <= MAX_README_LINES
    assert [p.name for p in docs_pages() if "README.md" in p.read_text()] == []
    for link in re.findall(r"\]\(((?:docs/|CHANGELOG|CONTRIBUTING)[^)#]*)\)", README.read_text()):
        assert (README.parent / link).exists(), link


#: Upstream projects whose issue numbers a page may cite ("daphne #170").
UPSTREAM = ("daphne", "channels_redis", "channels", "uvicorn", "hypercorn", "autobahn")


def test_docs_pages_stand_alone():
    """A page of the site is read on its own: no "above"/"below" (the reader may have
    arrived from a search), no issue number of this project's tracker, no path outside
    the repository."""
    findings = []
    for page in docs_pages():
        text = prose(page)
        name = page.relative_to(DOCS)
        findings += [f"{name}: {m}" for m in re.findall(r"\b(?:above|below)\b", text, re.I)]
        for match in re.finditer(r"(\S*)\s?#(\d+)\b", text):
            if not match.group(1).lower().lstrip("([").startswith(UPSTREAM):
                findings.append(f"{name}: {match.group(0)}")
        findings += [f"{name}: {m}" for m in re.findall(r"\.\./shared\S*", text)]
    assert findings == []


def test_readme_tables_are_the_docs_tables():
    """The two tables the README shows are the pages' own: the guarantees by server
    (written from the code) and the differences from Channels."""
    from channels_tuning.servers.guarantees import markdown_table

    deployment = (DOCS / "topics" / "deployment.md").read_text()
    assert markdown_table() in deployment

    def differences(text: str) -> str:
        start = text.index("| Channels | channels-tuning | why |")
        return text[start : text.index("\n\n", start)]

    assert differences(README.read_text()) == differences((DOCS / "differences.md").read_text())


def test_the_site_can_be_published_as_built():
    """Read the Docs builds what the tests build: this configuration, warnings as errors,
    with the docs extra; the package's metadata points at the site."""
    rtd = (README.parent / ".readthedocs.yaml").read_text()
    assert re.search(r"^  configuration: docs/conf\.py$", rtd, re.M)
    assert re.search(r"^  fail_on_warning: true$", rtd, re.M)
    assert re.search(r"^        - docs$", rtd, re.M)
    pyproject = (README.parent / "pyproject.toml").read_text()
    assert '\ndocs = ["sphinx' in pyproject
    urls = pyproject[pyproject.index("[project.urls]") :].split("\n\n")[0]
    assert "Documentation = " in urls and "Changelog = " in urls
