"""README's Configuration table names every environment variable the code reads, and nothing else.

The code is parsed, not imported: every name ``kodori/settings.py`` reads (``env.str("NAME")``,
``env.int``, ``env.db_url``..., ``os.environ``, and the ``_REQUIRED_IN_PRODUCTION`` names), and every
``KODORI_*``, ``BLOB_*`` or ``AUDIT_*`` name that other code outside ``tests/`` reads from the environment
(``os.environ.get("NAME")``, ``os.environ["NAME"]``, ``os.getenv``, or a mapping called ``env`` or
``environ``, such as the emulators' ``EmulatorControl.env``, which is ``os.environ`` unless given).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]
SETTINGS = BASE_DIR / "kodori" / "settings.py"
README = BASE_DIR / "README.md"
PREFIXES = ("KODORI_", "BLOB_", "AUDIT_")
SKIPPED_DIRS = {".venv", "build", "node_modules", "static", "tests", ".kodori"}
VARIABLE = re.compile(r"`([A-Z][A-Z0-9_]*)`")


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _is_environment(node: ast.expr) -> bool:
    """``os.environ``, ``environ``, ``env`` or ``self.env``: the mappings (and django-environ's ``Env``)."""
    return _dotted(node).split(".")[-1] in {"environ", "env"}


def _first_name(call: ast.Call) -> str | None:
    if call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str):
        return call.args[0].value
    return None


def environment_reads(tree: ast.AST) -> Iterator[str]:
    """Names read from the environment in ``tree``; assignments to ``os.environ[...]`` are not reads."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            reads = (
                # env("NAME"), the django-environ shortcut
                (isinstance(func, ast.Name) and func.id == "env")
                # os.getenv("NAME")
                or _dotted(func) == "os.getenv"
                # os.environ.get("NAME"), env.str("NAME"), env.db_url("NAME"), self.env.get("NAME")...
                or (
                    isinstance(func, ast.Attribute)
                    and _is_environment(func.value)
                    and func.attr not in {"setdefault", "update", "pop", "read_env"}
                )
            )
            name = _first_name(node) if reads else None
            if name:
                yield name
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and _is_environment(node.value)
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)
        ):
            yield node.slice.value


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _python_files(*, tests: bool) -> Iterator[Path]:
    for path in BASE_DIR.rglob("*.py"):
        parts = path.relative_to(BASE_DIR).parts
        in_tests = parts[0] == "tests"
        if in_tests == tests and not SKIPPED_DIRS.intersection(parts[int(in_tests) :]):
            yield path


def settings_reads() -> set[str]:
    tree = _parse(SETTINGS)
    names = set(environment_reads(tree))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and any(_dotted(target) == "_REQUIRED_IN_PRODUCTION" for target in node.targets)
            and isinstance(node.value, ast.Tuple)
        ):
            names.update(
                elt.value
                for elt in node.value.elts
                if isinstance(elt, ast.Constant) and isinstance(elt.value, str)
            )
    return names


def code_reads() -> set[str]:
    """Everything that must be documented: settings.py's names and the prefixed names other code reads."""
    names = settings_reads()
    for path in _python_files(tests=False):
        if path != SETTINGS:
            names.update(name for name in environment_reads(_parse(path)) if name.startswith(PREFIXES))
    return names


def test_reads_are_found() -> None:
    """A guard on the parser itself: reads of each kind, in settings.py and elsewhere."""
    names = code_reads()
    assert {"DJANGO_ENV", "DATABASE_URL", "ALLOWED_HOSTS", "BLOB_S3_BUCKET", "AUDIT_SIGNING_KEY"} <= names
    assert {"KODORI_PORT", "KODORI_STATE_DIR", "KODORI_PG_BIN", "KODORI_DEMO_PASSWORD"} <= names
    assert {"KODORI_EMULATOR_GCP_ADMIN_URL"} <= names  # EmulatorControl's self.env
    assert not {"DJANGO_SETTINGS_MODULE", "CI"} & names  # written or unprefixed outside settings.py


def documented() -> set[str]:
    """The backticked names in the first column of README's Configuration table."""
    section = README.read_text(encoding="utf-8").split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows, "README.md has no Configuration table"
    return {name for row in rows for name in VARIABLE.findall(row.split("|")[1])}


def test_every_variable_the_code_reads_is_in_the_readme() -> None:
    missing = sorted(code_reads() - documented())
    assert not missing, f"add to README.md's Configuration table: {', '.join(missing)}"


def test_every_variable_in_the_readme_is_read() -> None:
    read_anywhere = code_reads()
    for path in _python_files(tests=True):
        read_anywhere.update(environment_reads(_parse(path)))
    stale = sorted(documented() - read_anywhere)
    assert not stale, f"no code reads these; remove them from README.md: {', '.join(stale)}"
