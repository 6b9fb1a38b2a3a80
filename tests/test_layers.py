"""The layers of api/ as rules: what each may import, read from the source (every import statement,
those inside functions too), so a deferred import cannot hide a wrong dependency.

Top to bottom (api/__init__.py and docs/architecture.md draw the same):

    cli > http | files > web > queue > serving > metrics > protocols | batching | runtime | training > model > process
        > settings | errors | logs | version

A module imports only from layers below its own, or from its own subpackage. On top of that:
HTTP and the demo page never import numpy or TensorFlow; process code (gunicorn's master and worker
hooks, nginx's config, the supervisor) never imports Flask or TensorFlow; protocols, batching and the
model types never import TensorFlow; the queue (broker backends, the job worker) never imports Flask
or TensorFlow itself (its worker loads the model through api.serving); the batch job over files
never imports Flask. tests/test_workers.py shows
what gunicorn's master really loads.
"""
import ast
from pathlib import Path

import pytest

API = Path(__file__).resolve().parent.parent / "api"

LAYERS = [  # bottom first
    {"api.settings", "api.errors", "api.logs", "api.version"},
    {"api.process"},
    {"api.model"},
    {"api.protocols", "api.batching", "api.runtime", "api.training"},
    {"api.metrics"},
    {"api.serving"},
    {"api.queue"},  # a front beside http (the worker), below it because http's job routes submit through it
    {"api.web"},  # a front beside http, below it only because http's app factory mounts the page
    {"api.http", "api.files"},  # files: the batch job over files, a front beside http (only cli imports it)
    {"api.cli"},
]
TENSORFLOW = {"tensorflow", "keras", "tf_keras"}
FLASK = {"flask", "flask_restful", "werkzeug"}
FORBIDDEN = {
    "api.http": TENSORFLOW | {"numpy"},
    "api.web": TENSORFLOW | {"numpy"},
    "api.queue": TENSORFLOW | FLASK,
    "api.files": FLASK,
    "api.process": TENSORFLOW | FLASK,
    "api.protocols": TENSORFLOW,
    "api.batching": TENSORFLOW,
    "api.model": TENSORFLOW,
    "api.settings": TENSORFLOW | FLASK,
    "api.logs": TENSORFLOW | FLASK,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(API.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module an import statement in the file names, absolute (`from . import x` resolved)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            if base.startswith("api"):  # `from api.x import y`: y may be a module
                found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def unit(module: str) -> str:
    """The layer entry a module belongs to: its subpackage (api.http) or itself (api.batching)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def rank(module: str) -> int:
    for level, units in enumerate(LAYERS):
        if unit(module) in units:
            return level
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and to docs/architecture.md")


MODULES = sorted(API.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_each_module_imports_only_downwards(path):
    module = module_name(path)
    if module == "api":
        assert imports(path) == set(), "the package face imports nothing"
        return
    upward = [target for target in imports(path) if target.startswith("api.") and unit(target) != unit(module)
              and rank(target) >= rank(module)]
    assert not upward, f"{module} (layer {rank(module)}) imports {upward} from its own layer or above"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_layer_imports_what_it_must_not(path):
    forbidden = FORBIDDEN.get(unit(module_name(path)), set())
    found = {target for target in imports(path) if target.split(".")[0] in forbidden}
    assert not found, f"{module_name(path)} imports {sorted(found)}"


def test_the_rules_can_fail(tmp_path):
    """The checker sees a deferred import inside a function, and a relative one."""
    (tmp_path / "api" / "http").mkdir(parents=True)
    sample = tmp_path / "api" / "http" / "sample.py"
    sample.write_text("def f():\n    import tensorflow as tf\n    from ..serving import registry\n")
    global API
    saved, API = API, tmp_path / "api"
    try:
        assert imports(sample) == {"tensorflow", "api.serving", "api.serving.registry"}
    finally:
        API = saved
