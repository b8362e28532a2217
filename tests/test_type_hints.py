"""Every public function of ferstudy/ is annotated (arguments and return), so mypy checks it.

mypy (run by .ci/run) checks annotated functions; this test checks that the public ones are.
Public: a module-level function or a method of a module-level class whose name has no leading
underscore, in a module whose path has none either (dunder methods other than __init__ count).
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ferstudy"


def is_public(name: str) -> bool:
    return not name.startswith("_") or name == "__init__" or (name.startswith("__") and name.endswith("__"))


def missing(func: ast.FunctionDef | ast.AsyncFunctionDef, method: bool) -> list[str]:
    args = func.args
    every = args.posonlyargs + args.args + args.kwonlyargs
    if method and every and every[0].arg in ("self", "cls"):
        every = every[1:]
    gaps = [a.arg for a in every if a.annotation is None]
    gaps += [f"*{a.arg}" for a in (args.vararg, args.kwarg) if a is not None and a.annotation is None]
    if func.returns is None and func.name != "__init__":
        gaps.append("return")
    return gaps


def public_functions(tree: ast.Module):
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and is_public(node.name):
            yield node.name, node, False
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and is_public(item.name):
                    yield f"{node.name}.{item.name}", item, True


def test_every_public_function_is_annotated():
    gaps = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent)
        if any(part.startswith("_") and part != "__init__.py" and part != "__main__.py" for part in rel.parts):
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for name, func, method in public_functions(tree):
            if holes := missing(func, method):
                gaps.append(f"{rel}:{func.lineno} {name}: {', '.join(holes)}")
    assert not gaps, f"{len(gaps)} public functions lack type hints:\n" + "\n".join(gaps)
