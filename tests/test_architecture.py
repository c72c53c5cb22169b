"""The import rules of docs/architecture.md, checked on the source where `make lint`'s contracts cannot.

The code is parsed, not imported. `lint-imports` (pyproject's ``[tool.importlinter]``) counts every import,
function-local ones included; these tests add what its contracts cannot say: an app's *module-level* import
graph (what runs when a module is first imported: no ``if TYPE_CHECKING:`` block, no function body) has no
cycle, with no exception; no app imports ``kodori`` in any way; the blob format needs nothing but the standard
library and ``cryptography``; and the contract that keeps the dev tools out of production code names every
production module of ``kodori``.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[1]
APPS = ("tenants", "audit", "encryption", "blobs", "emulators")
PROJECT = ("kodori", *APPS)
FORMAT = "encryption.format"


def _module_name(path: Path) -> str:
    parts = path.relative_to(BASE_DIR).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(package: str) -> dict[str, Path]:
    return {_module_name(path): path for path in sorted((BASE_DIR / package).rglob("*.py"))}


ALL_MODULES: dict[str, Path] = {name: path for package in PROJECT for name, path in _modules(package).items()}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(body: list[ast.stmt], *, module_level: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements of ``body``; with ``module_level``, only those that run when the module loads."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif module_level and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        elif module_level and isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _import_nodes(node.orelse, module_level=module_level)
        else:
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                children = getattr(node, field, None)
                if isinstance(children, list):
                    statements = [child for child in children if isinstance(child, ast.stmt)]
                    for child in children:
                        if isinstance(child, ast.ExceptHandler | ast.match_case):
                            statements.extend(child.body)
                    yield from _import_nodes(statements, module_level=module_level)


def _imported(module: str, path: Path, *, module_level: bool) -> set[str]:
    """The names ``module`` imports: a project module when the name is one, otherwise the name as written."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path)).body, module_level=module_level):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            package = module.split(".")
            package = package if is_package else package[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, *([base] if base else [])])
        for alias in node.names:
            candidate = f"{base}.{alias.name}"
            found.add(candidate if candidate in ALL_MODULES else base)
    return found


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_it_finds_every_app_and_the_blob_format() -> None:
    assert {name.split(".")[0] for name in ALL_MODULES} == set(PROJECT)
    assert f"{FORMAT}.envelope" in ALL_MODULES


def test_no_app_has_a_module_level_import_cycle() -> None:
    cycles = {}
    for app in PROJECT:
        modules = _modules(app)
        graph = {
            name: {target for target in _imported(name, path, module_level=True) if target in modules}
            for name, path in modules.items()
        }
        if cycle := _find_cycle(graph):
            cycles[app] = " -> ".join(cycle)
    assert cycles == {}


def test_no_app_imports_the_project_package() -> None:
    offenders = sorted(
        f"{name} imports {target}"
        for app in APPS
        for name, path in _modules(app).items()
        for target in _imported(name, path, module_level=False)
        if target == "kodori" or target.startswith("kodori.")
    )
    assert offenders == []


def test_the_blob_format_needs_only_the_standard_library_and_cryptography() -> None:
    offenders = sorted(
        f"{name} imports {target}"
        for name, path in ALL_MODULES.items()
        if name == FORMAT or name.startswith(f"{FORMAT}.")
        for target in _imported(name, path, module_level=False)
        if not (
            target == FORMAT
            or target.startswith(f"{FORMAT}.")
            or target.split(".")[0] in sys.stdlib_module_names
            or target.split(".")[0] == "cryptography"
        )
    )
    assert offenders == []


def test_the_dev_tools_contract_names_every_production_module_of_kodori() -> None:
    config = tomllib.loads((BASE_DIR / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["id"] == "production-without-dev-tools"]
    production = {
        name
        for name in _modules("kodori")
        if name.count(".") == 1 and name not in ("kodori.devtools", "kodori.testing")
    }
    assert production - set(contract["source_modules"]) == set()
    forbidden = tuple(contract["forbidden_modules"])
    package_imports = _imported("kodori", BASE_DIR / "kodori" / "__init__.py", module_level=False)
    assert [name for name in package_imports if name.startswith(forbidden)] == []
    assert set(APPS) - {"emulators"} <= set(contract["source_modules"])
