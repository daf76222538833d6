"""Every public function and method in connector/ is annotated (STYLE: every function annotated).

Read with ``ast`` (no mypy run): a function or method whose name does not start with ``_``
needs an annotation on every parameter (but the ``self``/``cls`` of a method) and on its return.
Functions nested inside another function are not public and are not checked.
"""

from __future__ import annotations

import ast
from pathlib import Path

import connector

ROOT = Path(connector.__file__).parent


def _missing(fn: ast.FunctionDef | ast.AsyncFunctionDef, *, method: bool) -> list[str]:
    args = [*fn.args.posonlyargs, *fn.args.args]
    static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in fn.decorator_list)
    if method and not static:
        args = args[1:]
    args += fn.args.kwonlyargs
    args += [a for a in (fn.args.vararg, fn.args.kwarg) if a is not None]
    missing = [a.arg for a in args if a.annotation is None]
    return missing + (["return"] if fn.returns is None else [])


def _unannotated(body: list[ast.stmt], where: str, *, in_class: bool) -> list[str]:
    found = []
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            missing = _missing(node, method=in_class)
            if missing:
                found.append(f"{where}{node.name} (line {node.lineno}): {', '.join(missing)}")
        elif isinstance(node, ast.ClassDef):
            found += _unannotated(node.body, f"{where}{node.name}.", in_class=True)
        elif isinstance(node, (ast.If, ast.Try)):  # if TYPE_CHECKING / try: import ... definitions
            found += _unannotated([*node.body, *node.orelse], where, in_class=in_class)
    return found


def unannotated_public_functions(root: Path = ROOT) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found += _unannotated(tree.body, f"{path.relative_to(root.parent)}: ", in_class=False)
    return found


def test_every_public_function_in_connector_is_annotated() -> None:
    found = unannotated_public_functions()
    assert not found, "annotate the parameters and return of:\n" + "\n".join(found)


def test_the_check_finds_a_missing_parameter_or_return_annotation(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(
        "def ok(a: int, *rest: str, k: int = 0, **kw: str) -> None: ...\n"
        "def _private(a): ...\n"
        "def no_return(a: int): ...\n"
        "def no_param(a, b: int) -> int: ...\n"
        "class C:\n"
        "    def method(self, x: int) -> None: ...\n"
        "    def untyped(self, x): ...\n"
        "    @staticmethod\n"
        "    def static(x) -> None: ...\n"
        "    def __init__(self, y): ...\n"
        "def outer() -> None:\n"
        "    def inner(z): ...\n"
    )
    found = unannotated_public_functions(tmp_path / "pkg")
    assert [f.partition(": ")[2] for f in found] == [
        "no_return (line 3): return",
        "no_param (line 4): a",
        "C.untyped (line 7): x, return",
        "C.static (line 9): x",
    ]


def test_step_context_state_is_the_state_store() -> None:
    from connector.state.store import StateStore
    from connector.steps import StepContext

    hint: object = StepContext.__annotations__["state"]
    while isinstance(hint, str):  # "'StateStore'": a name imported under TYPE_CHECKING
        hint = eval(hint, {"StateStore": StateStore})  # noqa: S307 - our own annotation text
    assert hint is StateStore
