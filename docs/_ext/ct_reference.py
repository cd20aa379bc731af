"""Sphinx directives that write the reference pages from the code, so they cannot drift.

- ``ct-settings``: every key of ``channels_tuning.conf.DEFAULTS``, its default, the
  comment above it in ``conf.py``, its constraint and the system checks that name it;
- ``ct-close-codes``: ``CloseCode`` with each member's ``#:`` comment, log level and
  what the package's clients do after it;
- ``ct-checks``: the check table of ``channels_tuning/checks.py``'s docstring; a check
  id used in the code but missing from that table fails the build;
- ``ct-metrics``: what ``ChannelsTuningCollector.describe()`` exports;
- ``ct-command``: a management command's options, from its argument parser.

A key without a comment, or a close code without one, fails the build too.
"""

from __future__ import annotations

import ast
import inspect
import logging
import re
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import Directive
from sphinx.errors import ExtensionError


def setting_anchor(key: str) -> str:
    """The id of a setting's row: ``settings.html#setting-heartbeat-interval``."""
    return "setting-" + key.lower().replace("_", "-")


def _table(
    headers: list[str],
    rows: list[list[str]],
    widths: list[int],
    anchors: list[str] | None = None,
) -> nodes.table:
    table = nodes.table()
    group = nodes.tgroup(cols=len(headers))
    table += group
    for width in widths:
        group += nodes.colspec(colwidth=width)
    head = nodes.thead()
    group += head
    head += _row(headers)
    body = nodes.tbody()
    group += body
    for index, row in enumerate(rows):
        body += _row(row, anchors[index] if anchors else None)
    return table


def _row(cells: list[str], anchor: str | None = None) -> nodes.row:
    row = nodes.row()
    for column, text in enumerate(cells):
        entry = nodes.entry()
        paragraph = nodes.paragraph()
        if anchor and column == 0:
            paragraph["ids"].append(anchor)  # a link to this row
        # ``code`` spans in cells, the rest as text.
        for i, part in enumerate(re.split(r"``(.+?)``", text)):
            if part:
                paragraph += nodes.literal(part, part) if i % 2 else nodes.Text(part)
        entry += paragraph
        row += entry
    return row


def setting_comments() -> dict[str, str]:
    """The comment lines above each key of DEFAULTS in conf.py."""
    from channels_tuning import conf

    source = Path(inspect.getfile(conf)).read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    comments: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "DEFAULTS":
            assert isinstance(node.value, ast.Dict)
            for key in node.value.keys:
                assert isinstance(key, ast.Constant)
                above, index = [], key.lineno - 2
                while index >= 0 and lines[index].strip().startswith("#"):
                    above.insert(0, lines[index].strip().lstrip("#").strip())
                    index -= 1
                comments[key.value] = " ".join(above)
    return comments


def check_table() -> list[tuple[str, str]]:
    from channels_tuning.checks import documented_checks

    return documented_checks()


def check_ids_in_code() -> set[str]:
    from channels_tuning.checks import check_ids_in_code

    return check_ids_in_code()


class SettingsDirective(Directive):
    def run(self) -> list[nodes.Node]:
        from channels_tuning.conf import DEFAULTS, POSITIVE_KEYS, REQUIRED_KEYS

        comments = setting_comments()
        mentioned: dict[str, list[str]] = {}
        for check_id, problem in check_table():
            for key in DEFAULTS:
                if f"``{key}``" in problem:
                    mentioned.setdefault(key, []).append(check_id.split(".")[1])
        rows = []
        for key, default in DEFAULTS.items():
            if not comments.get(key):
                raise ExtensionError(f"CHANNELS_TUNING[{key!r}] has no comment in conf.py")
            if key in POSITIVE_KEYS:
                constraint = "a number > 0" + ("" if key in REQUIRED_KEYS else ", or None")
            else:
                constraint = type(default).__name__ if default is not None else "any"
            rows.append(
                [
                    f"``{key}``",
                    f"``{default!r}``",
                    comments[key],
                    constraint,
                    ", ".join(mentioned.get(key, [])) or "E001, W001",
                ]
            )
        anchors = [setting_anchor(key) for key in DEFAULTS]
        headers = ["key", "default", "meaning", "type", "checks"]
        return [_table(headers, rows, [18, 14, 48, 10, 10], anchors)]


class CloseCodesDirective(Directive):
    def run(self) -> list[nodes.Node]:
        from channels_tuning.wire import closecodes
        from channels_tuning.wire.closecodes import LOG_LEVELS, CloseCode
        from channels_tuning.wire.reconnect import policy_for

        lines = inspect.getsource(closecodes).splitlines()
        rows = []
        for member in CloseCode:
            at = next(
                i for i, line in enumerate(lines) if line.strip().startswith(f"{member.name} =")
            )
            above, index = [], at - 1
            while lines[index].strip().startswith("#:"):
                above.insert(0, lines[index].strip()[2:].strip())
                index -= 1
            if not above:
                raise ExtensionError(f"CloseCode.{member.name} has no #: comment")
            rows.append(
                [
                    str(int(member)),
                    f"``{member.name}``",
                    " ".join(above),
                    logging.getLevelName(LOG_LEVELS.get(member, logging.INFO)),
                    policy_for(int(member)).value,
                ]
            )
        return [
            _table(["code", "name", "meaning", "logged at", "clients"], rows, [6, 18, 52, 10, 10])
        ]


class ChecksDirective(Directive):
    def run(self) -> list[nodes.Node]:
        rows = check_table()
        missing = check_ids_in_code() - {check_id for check_id, _ in rows}
        if missing:
            raise ExtensionError(f"checks missing from checks.py's table: {sorted(missing)}")
        rows.sort(key=lambda row: (("EWI".index(row[0][16]), row[0])))
        return [_table(["id", "problem"], [[f"``{i}``", p] for i, p in rows], [24, 76])]


def metric_rows() -> list[list[str]]:
    from channels_tuning.observability.prometheus import ChannelsTuningCollector

    suffix = {"counter": "_total", "info": "_info"}
    rows = []
    for family in ChannelsTuningCollector().describe():
        labels = sorted({k for sample in family.samples for k in sample.labels} - {"le"})
        name = family.name + suffix.get(family.type, "")
        rows.append([f"``{name}``", family.type, ", ".join(labels) or "-", family.documentation])
    return rows


class MetricsDirective(Directive):
    def run(self) -> list[nodes.Node]:
        return [_table(["metric", "type", "labels", "meaning"], metric_rows(), [34, 10, 14, 42])]


class CommandDirective(Directive):
    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        from django.core.management import load_command_class

        command = load_command_class("channels_tuning", self.arguments[0])
        parser = command.create_parser("manage.py", self.arguments[0])
        base = {"--version", "-v", "--settings", "--pythonpath", "--traceback", "--no-color"}
        base |= {"--force-color", "--skip-checks", "-h"}
        rows: list[list[str]] = []
        for action in parser._actions:  # argparse has no public list of its options
            flags = [flag for flag in action.option_strings if flag not in base]
            if not flags or set(action.option_strings) & base:
                continue
            metavar = f" {action.metavar}" if action.metavar else ""
            rows.append([f"``{', '.join(flags)}{metavar}``", action.help or ""])
        return [_table(["option", "meaning"], rows, [30, 70])]


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("ct-settings", SettingsDirective)
    app.add_directive("ct-close-codes", CloseCodesDirective)
    app.add_directive("ct-checks", ChecksDirective)
    app.add_directive("ct-metrics", MetricsDirective)
    app.add_directive("ct-command", CommandDirective)
    return {"parallel_read_safe": True, "version": "1"}
