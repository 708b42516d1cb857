"""The public surface of both packages, pinned: one error tree, and an exact ``__all__`` in
every public module."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path
from types import ModuleType

import pytest

import audit
import guardrails
from guardrails import exceptions
from guardrails.exceptions import GuardrailsError


def _module_names(package: ModuleType) -> list[str]:
    names = [package.__name__]
    names += [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
    return sorted(names)


ALL_MODULES = _module_names(guardrails) + _module_names(audit)
PUBLIC_MODULES = [
    name for name in ALL_MODULES if not any(p.startswith("_") for p in name.split("."))
]


def _exception_classes() -> dict[str, type[BaseException]]:
    """Every public exception class defined anywhere in the guardrails package, by name."""
    found: dict[str, type[BaseException]] = {}
    for name in _module_names(guardrails):
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == name
                and not attr.startswith("_")
            ):
                assert found.get(attr, value) is value, f"two exception classes named {attr}"
                found[attr] = value
    return found


def _drawn_tree() -> list[tuple[int, str]]:
    """(depth, name) of each class in the tree drawn in ``guardrails/exceptions.py``."""
    doc = exceptions.__doc__ or ""
    drawing = doc.split("```")[1]
    rows = []
    for line in drawing.splitlines():
        match = re.match(r"^([│ ]*)(?:[├└]── )?([A-Z]\w+)\s", line + " ")
        if match and (line.startswith("GuardrailsError") or "──" in line):
            rows.append((len(match.group(1)) // 4 + (1 if "──" in line else 0), match.group(2)))
    return rows


def test_every_error_derives_from_guardrails_error_and_is_drawn():
    """Each public exception class in guardrails derives from GuardrailsError (or is a
    BaseException signal named as such) and sits in the drawn tree under its real parent."""
    classes = _exception_classes()
    tree = _drawn_tree()
    assert tree[0] == (0, "GuardrailsError")
    drawn = {name for _, name in tree}
    errors = {n for n, c in classes.items() if issubclass(c, Exception)}
    signals = {n for n, c in classes.items() if not issubclass(c, Exception)}
    assert {n for n in errors if not issubclass(classes[n], GuardrailsError)} == set()
    assert drawn == errors
    doc = exceptions.__doc__ or ""
    for name in signals:
        assert f"`guardrails.{classes[name].__module__.split('.', 1)[1]}.{name}`" in doc, name
    parents: list[str] = []
    for depth, name in tree:
        parents[depth:] = [name]
        if depth:
            parent = classes[parents[depth - 1]]
            assert parent in classes[name].__bases__, f"{name} is drawn under {parent.__name__}"


def test_the_audit_errors_have_their_own_root():
    """Every public exception class in audit derives from audit.AuditError."""
    for name in _module_names(audit):
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, Exception) and value.__module__ == name:
                assert issubclass(value, audit.AuditError) or attr.startswith("_"), attr


#: Calls whose result is bound at module level but is not API: loggers and type variables.
_NOT_API_CALLS = frozenset({"get_logger", "getLogger", "TypeVar", "ParamSpec"})


def _call_name(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Call):
        func = node.func
        return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return None


def public_names(source: str) -> tuple[set[str], set[str]]:
    """``(defined, imported)``: the public names a module's ``source`` binds at top level by
    ``def``, ``class`` or assignment, and those it imports from ``guardrails`` or ``audit``
    (which its ``__all__`` may re-export). Names starting with ``_``, ``if TYPE_CHECKING:``
    blocks, loggers and type variables do not count."""
    defined: set[str] = set()
    imported: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                defined.add(node.name)
            elif isinstance(node, ast.Assign):
                if _call_name(node.value) in _NOT_API_CALLS:
                    continue
                for target in node.targets:
                    defined.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                if _call_name(node.value) not in _NOT_API_CALLS:
                    defined.add(node.target.id)
            elif isinstance(node, ast.ImportFrom):
                origin = node.module or ""
                if node.level or origin.split(".")[0] in ("guardrails", "audit"):
                    imported.update(a.asname or a.name for a in node.names)
            elif isinstance(node, ast.If):
                if ast.unparse(node.test) not in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                    visit(node.body)
                    visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)

    visit(ast.parse(source).body)
    public = {n for n in defined if not n.startswith("_")}
    return public, {n for n in imported if not n.startswith("_")} - public


def _ruff_order(name: str) -> tuple[int, str]:
    """The order ruff's RUF022 keeps: CONSTANTS, then Classes, then everything else."""
    if name.isupper() or (name.upper() == name and "_" in name):
        return (0, name)
    return (1 if name[:1].isupper() else 2, name)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_exactly_the_public_names(name):
    """Each public module's ``__all__`` is sorted and exact: it lists every public name the
    module defines, and nothing but those and names it re-exports from guardrails or audit."""
    module = importlib.import_module(name)
    declared = getattr(module, "__all__", None)
    assert declared is not None, f"{name} has no __all__"
    assert list(declared) in (sorted(declared), sorted(declared, key=_ruff_order)), (
        f"{name}.__all__ is not sorted"
    )
    assert len(set(declared)) == len(declared), f"{name}.__all__ repeats a name"
    source = Path(inspect.getfile(module)).read_text(encoding="utf-8")
    defined, imported = public_names(source)
    listed = set(declared)
    assert defined <= listed, f"{name}: defined but not in __all__: {sorted(defined - listed)}"
    assert listed <= defined | imported | {"__version__"}, (
        f"{name}: in __all__ but neither defined nor imported: "
        f"{sorted(listed - defined - imported)}"
    )
    for attr in declared:
        assert hasattr(module, attr), f"{name}.__all__ names missing {attr}"
