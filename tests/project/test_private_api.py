"""No `_`-prefixed attribute of a dependency anywhere in the runtime (bot/, cogs/): a minor release of
discord.py, aiohttp or any other library may rename or drop one without notice.

The check reads the code (ast). An access `x._name` (not a dunder) is a dependency's when `x` is rooted at:
- a name imported from a third-party module (`discord._x`, `web.Request._y`, `app_commands.Command._z`);
- a parameter or variable annotated with a third-party type (`command: app_commands.Command[...]`), or assigned
  from a call into a third-party module (`menu = app_commands.ContextMenu(...)`);
- `getattr`/`setattr`/`hasattr` on such an object with a literal `_name`, or a variable assigned one.
Our own private names on `self`, `cls` and our own objects stay allowed.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ("bot", "cogs")
OURS = {"bot", "cogs", "sandbox", "tests", "bench", "__future__"}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _root(node: ast.expr) -> ast.expr:
    while isinstance(node, ast.Attribute | ast.Subscript | ast.Call):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node


class _Finder(ast.NodeVisitor):
    """Private attribute accesses on third-party objects in one module."""

    def __init__(self) -> None:
        self.third_party: set[str] = set()  # names bound to third-party modules or their members
        self.tainted: set[str] = set()  # local names holding third-party objects (by annotation or assignment)
        self.private_names: set[str] = set()  # local names holding a literal "_name" (for getattr)
        self.found: list[tuple[int, str]] = []

    def _is_third_party(self, node: ast.expr | None) -> bool:
        """Whether the expression (or type annotation) is rooted at a third-party import."""
        if node is None:
            return False
        for part in ast.walk(node):
            if isinstance(part, ast.Name) and part.id in self.third_party:
                return True
            if isinstance(part, ast.Constant) and isinstance(part.value, str):  # "discord.Interaction[...]"
                try:
                    parsed = ast.parse(part.value, mode="eval")
                except SyntaxError:
                    continue
                if any(isinstance(p, ast.Name) and p.id in self.third_party for p in ast.walk(parsed)):
                    return True
        return False

    def _holds_dependency(self, node: ast.expr) -> bool:
        root = _root(node)
        return isinstance(root, ast.Name) and (root.id in self.third_party or root.id in self.tainted)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            top = alias.name.split(".")[0]
            if top not in OURS and top not in sys.stdlib_module_names:
                self.third_party.add(alias.asname or top)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        top = (node.module or "").split(".")[0]
        if node.level == 0 and top not in OURS and top not in sys.stdlib_module_names:
            for alias in node.names:
                self.third_party.add(alias.asname or alias.name)
                if _private(alias.name):
                    self.found.append((node.lineno, f"from {node.module} import {alias.name}"))

    def _arguments(self, args: ast.arguments) -> None:
        for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if arg is not None and arg.arg not in ("self", "cls") and self._is_third_party(arg.annotation):
                self.tainted.add(arg.arg)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._arguments(node.args)
        self.generic_visit(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._arguments(node.args)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if isinstance(node.target, ast.Name) and self._is_third_party(node.annotation):
            self.tainted.add(node.target.id)
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
        if self._holds_dependency(node.value):
            self.tainted.update(targets)
        elif not any(isinstance(n, ast.Call) for n in ast.walk(node.value)) and self._is_third_party(node.value):
            self.third_party.update(targets)  # a type alias: `Listed = app_commands.Command[...] | ...`
        if any(
            isinstance(c, ast.Constant) and isinstance(c.value, str) and _private(c.value) for c in ast.walk(node.value)
        ):
            self.private_names.update(targets)
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if _private(node.attr) and self._holds_dependency(node.value):
            self.found.append((node.lineno, f"{ast.unparse(node.value)}.{node.attr}"))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        is_reflection = isinstance(node.func, ast.Name) and node.func.id in ("getattr", "setattr", "hasattr")
        if is_reflection and len(node.args) >= 2:
            target, name = node.args[0], node.args[1]
            literal = isinstance(name, ast.Constant) and isinstance(name.value, str) and _private(name.value)
            named = isinstance(name, ast.Name) and name.id in self.private_names
            if (literal or named) and self._holds_dependency(target):
                self.found.append((node.lineno, ast.unparse(node)))
        self.generic_visit(node)


def private_uses(source: str) -> list[tuple[int, str]]:
    finder = _Finder()
    tree = ast.parse(source)
    # Imports first (wherever they are in the module), then everything else in order.
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            finder.visit(node)
    finder.found.clear()
    finder.visit(tree)
    return sorted(set(finder.found))


def test_the_detector_tells_a_dependencys_private_names_from_ours() -> None:
    flagged = private_uses(
        "from discord import app_commands\n"
        "import aiohttp\n"
        "from typing import Any\n"
        "def a(command: app_commands.Command[Any, ..., Any]) -> None:\n"
        "    command._params['x'] = 1\n"
        "def b(session: 'aiohttp.ClientSession') -> None:\n"
        "    session._connector.close()\n"
        "def c() -> None:\n"
        "    menu = app_commands.ContextMenu(name='x', callback=c)\n"
        "    getattr(menu, '_locale_name')\n"
        "    aiohttp.helpers._x()\n"
        "def d(command: app_commands.Command[Any, ..., Any] | app_commands.ContextMenu) -> None:\n"
        "    attribute = '_locale_name' if command else '_locale_description'\n"
        "    getattr(command, attribute, None)\n"
        "Listed = app_commands.Command[Any, ..., Any] | app_commands.Group\n"
        "def e(command: Listed) -> None:\n"
        "    command._locale_description\n"
    )
    assert [line for line, _ in flagged] == [5, 7, 10, 11, 14, 17], flagged
    allowed = private_uses(
        "import discord\n"
        "class Mine:\n"
        "    def __init__(self, client: discord.Client) -> None:\n"
        "        self._client = client\n"
        "        self._cache: dict[str, int] = {}\n"
        "    def size(self, other: 'Mine') -> int:\n"
        "        return len(self._cache) + len(other._cache) + client_count(self)\n"
        "def client_count(mine: Mine) -> int:\n"
        "    return mine._client.__class__.__name__.__len__()\n"
    )
    assert allowed == [], allowed


def test_no_private_attribute_of_a_dependency_in_the_runtime() -> None:
    found = {
        f"{path.relative_to(ROOT)}:{line}": text
        for top in RUNTIME
        for path in sorted((ROOT / top).rglob("*.py"))
        for line, text in private_uses(path.read_text(encoding="utf-8"))
    }
    assert found == {}, f"private attributes of dependencies: {found}"
