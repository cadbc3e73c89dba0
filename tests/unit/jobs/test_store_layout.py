"""The store is split by aggregate and each module owns its part of the schema (issue 20).

Every store module declares `TABLES` (the tables it owns: creates rows in, changes, answers for) and `USES`
(other aggregates' tables its SQL names, each explained in its docstring: a join, a count, a cross-aggregate
erasure). This reads the SQL text of each module (every string literal but docstrings) and checks that it names
no other table, that every table of the migrations has exactly one owner, and that no claim is stale.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
MIGRATIONS = ROOT / "bot" / "jobs" / "migrations"

# The aggregate modules: everything that runs SQL on the job database.
STORE_MODULES = (
    "bot.jobs.store.jobs",
    "bot.jobs.store.rules",
    "bot.jobs.store.identity",
    "bot.jobs.store.meta",
    "bot.jobs.store.money",
    "bot.jobs.story.store",
    "bot.jobs.privacy.store",
    "bot.jobs.reports.store",
    "bot.jobs.uploads",
)
FACADE = "bot.jobs.store"
# Tables whose SQL is still in the facade while the split is under way; empty once every aggregate has moved.
STILL_IN_FACADE: frozenset[str] = frozenset()
# ...and the other aggregates' tables its SQL still names.
FACADE_USES: frozenset[str] = frozenset()
ENGINE_TABLES = frozenset({"sqlite_master"})

_NAMED = re.compile(r"\b(?:FROM|JOIN|INTO|UPDATE)\s+\"?([a-z_][a-z0-9_]*)")


def _path(module: str) -> Path:
    relative = Path(*module.split("."))
    package = ROOT / relative / "__init__.py"
    return package if package.exists() else (ROOT / relative).with_suffix(".py")


def _sql_text(source: str) -> str:
    """Every string literal of the source but its docstrings (f-strings: their literal parts)."""
    tree = ast.parse(source)
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return "\n".join(
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    )


def _named_tables(module: str) -> set[str]:
    return set(_NAMED.findall(_sql_text(_path(module).read_text()))) - ENGINE_TABLES


def _migrated_tables() -> set[str]:
    created = re.compile(r"CREATE TABLE (?:IF NOT EXISTS )?([a-z_]+)", re.IGNORECASE)
    return {name for path in MIGRATIONS.glob("*.sql") for name in created.findall(path.read_text())}


def _declared(module: str, name: str) -> frozenset[str]:
    value = getattr(importlib.import_module(module), name)
    assert isinstance(value, frozenset), f"{module}.{name}"
    return value


@pytest.mark.parametrize("module", STORE_MODULES)
def test_a_store_module_names_only_its_own_tables_and_the_ones_it_documents(module: str) -> None:
    owned, used = _declared(module, "TABLES"), _declared(module, "USES")
    named = _named_tables(module)
    assert named <= owned | used, f"{module} names tables it neither owns nor documents: {named - owned - used}"
    assert not owned & used, module
    # No stale claim: its SQL names every table it says it owns or uses.
    assert owned | used <= named, f"{module} declares tables its SQL never names: {(owned | used) - named}"


def test_every_table_has_exactly_one_owner() -> None:
    owners: dict[str, list[str]] = {}
    for module in STORE_MODULES:
        for table in _declared(module, "TABLES"):
            owners.setdefault(table, []).append(module)
    shared = {table: names for table, names in owners.items() if len(names) > 1}
    assert shared == {}
    assert set(owners) | STILL_IN_FACADE == _migrated_tables()
    assert not set(owners) & STILL_IN_FACADE


def test_the_facade_composes_and_names_only_tables_not_yet_moved() -> None:
    assert _named_tables(FACADE) <= STILL_IN_FACADE | FACADE_USES


def test_no_sql_outside_the_store_modules_and_the_db_layer() -> None:
    """Services, the worker, the Discord layer and the cogs ask a store; they never name a table themselves."""
    allowed = {_path(module) for module in (*STORE_MODULES, FACADE)} | set(ROOT.glob("bot/jobs/db/*.py"))
    checked = [p for p in (*ROOT.glob("bot/**/*.py"), *ROOT.glob("cogs/**/*.py")) if p not in allowed]
    assert len(checked) > 30
    found = {
        str(p.relative_to(ROOT)): names for p in checked if (names := set(_NAMED.findall(_sql_text(p.read_text()))))
    }
    assert found == {}


def test_the_reader_sees_f_strings_and_skips_docstrings() -> None:
    """The check has teeth: a statement on a table is seen inside an f-string; prose in a docstring is not SQL."""
    source = '''"""Only the caller whose UPDATE changed a row goes ahead."""
def spend(db, marks):
    """Reads FROM nowhere."""
    return db.fetch_all(f"SELECT * FROM ledger WHERE id IN ({marks})")
'''
    assert set(_NAMED.findall(_sql_text(source))) == {"ledger"}
