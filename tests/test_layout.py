"""The layout rules: entry scripts stand on the library modules and never import each other,
library modules never import an entry script, and no function grows past about 60 lines."""
import ast
import glob
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY = {"train", "train_cuda", "pred", "pred_cuda", "eval_linear"}
LIBRARY = {"cfg", "errors", "dataset", "models", "clustering", "engine", "checkpoint", "distributed", "metrics",
           "report", "collection", "curves", "output_folder", "thumbnails"}
# a *_cuda.py script is its CPU script's main() on another device: the one import allowed between entry scripts
WRAPS = {"train_cuda": "train", "pred_cuda": "pred"}


def sources():
    files = glob.glob(os.path.join(ROOT, "*.py")) + glob.glob(os.path.join(ROOT, "models", "*.py"))
    files += glob.glob(os.path.join(ROOT, "clustering", "*.py"))
    files += glob.glob(os.path.join(ROOT, "bench", "*.py")) + glob.glob(os.path.join(ROOT, "tools", "*.py"))
    return sorted(files)


def imported_modules(path):
    tree = ast.parse(open(path, encoding="utf-8").read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def module_name(path):
    rel = os.path.relpath(path, ROOT)
    return rel[:-3].replace(os.sep, ".")


@pytest.mark.parametrize("path", sources(), ids=module_name)
def test_imports_follow_the_layout(path):
    name = module_name(path)
    own = {m for m in imported_modules(path) if m in ENTRY | LIBRARY}
    if name.startswith(("models.", "clustering.")) or name in LIBRARY:
        assert not own & ENTRY, f"library module {name} imports entry scripts {own & ENTRY}"
    else:
        allowed = {WRAPS[name]} if name in WRAPS else set()
        assert own & ENTRY <= allowed, f"{name} imports entry scripts {own & ENTRY - allowed}"


@pytest.mark.parametrize("path", sources(), ids=module_name)
def test_no_function_is_longer_than_sixty_lines(path):
    tree = ast.parse(open(path, encoding="utf-8").read())
    long = [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60]
    assert not long, f"{module_name(path)}: {long}"


def test_user_errors_are_one_family():
    """Every one-line error class is an errors.UserError, and nothing raises a bare SystemExit string."""
    import errors
    for cls in (errors.ConfigError, errors.DataError, errors.CheckpointError, errors.PredError):
        assert issubclass(cls, errors.UserError) and str(cls("x").code) == f"{cls.kind} error: x"
    for path in sources():
        text = open(path, encoding="utf-8").read()
        assert 'SystemExit(f"' not in text and "SystemExit(\"config" not in text, module_name(path)
