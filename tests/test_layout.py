"""The package's layers: a module imports only from its own layer and the layers below."""

import ast
from pathlib import Path

import icl_toy

PACKAGE = Path(icl_toy.__file__).parent
# Lowest first; `experiments` is the repository's experiments/ folder (icl_toy.experiments).
LAYERS = ("core", "training", "analysis", "runs", "experiments")


def _layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "icl_toy" and parts[1] in LAYERS else None


def _imports(path: Path) -> set[str]:
    """Every icl_toy module a file imports, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n.split(".")[0] in ("icl_toy", "experiments")}


def _layer_files():
    for layer in LAYERS[:-1]:
        for path in sorted((PACKAGE / layer).rglob("*.py")):
            yield layer, path
    for path in sorted((PACKAGE.parent / "experiments").glob("*.py")):
        yield "experiments", path


def test_no_module_imports_a_higher_layer():
    violations = []
    for layer, path in _layer_files():
        for module in _imports(path):
            if module == "icl_toy" or module.split(".")[0] == "experiments":
                violations.append(f"{path.name} imports {module} (use the full module path)")
                continue
            target = _layer_of(module)
            if target is None:
                violations.append(f"{path.name} imports {module}, which is in no layer")
            elif LAYERS.index(target) > LAYERS.index(layer):
                violations.append(f"{layer}/{path.name} imports {module} from a higher layer")
    assert not violations, "\n".join(violations)


def test_experiments_import_no_other_study():
    for layer, path in _layer_files():
        if layer == "experiments":
            studies = [m for m in _imports(path) if _layer_of(m) == "experiments"]
            assert not studies, (
                f"{path.name} imports the studies {studies}; share through the library"
            )


def test_no_flat_modules_left_at_the_top():
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py"]


def test_top_level_names_resolve():
    for name in icl_toy.__all__:
        assert getattr(icl_toy, name) is not None


def test_license_and_citation_name_this_version():
    import tomllib

    import yaml  # PyYAML comes with flax and orbax

    root = PACKAGE.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    citation = yaml.safe_load((root / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0"
    assert citation["version"] == project["version"]
    assert citation["license"] == "MIT" and project["license"] == {"file": "LICENSE"}
    assert (root / "LICENSE").read_text().startswith("MIT License")
    assert {"title", "authors", "message"} <= set(citation)


def _pins(path) -> dict[str, str]:
    """name -> version of every `name==version` line of a constraints file."""
    pins = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version.strip()
    return pins


def test_constraints_pin_every_dependency_at_the_versions_of_the_committed_runs():
    import json
    import re
    import tomllib

    root = PACKAGE.parent
    pins = _pins(root / "constraints.txt")
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["test"]
    for requirement in declared:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group().lower().replace("_", "-")
        assert name in pins, f"{name} is not pinned in constraints.txt"
    # The CI command (the README's) installs with them.
    assert 'pip install -c constraints.txt -e ".[test]"' in (root / ".ci" / "run").read_text()
    # Committed results record their environment (results from before it was recorded do
    # not; a rerun adds it).
    for path in sorted((root / "figures").glob("*.json")):
        environment = json.loads(path.read_text()).get("environment")
        if environment is None:
            continue
        assert environment["device_kind"] and environment["device_count"] >= 1, path.name
        for package in ("jax", "jaxlib", "flax", "optax", "numpy", "scipy"):
            assert environment["versions"][package] == pins[package], (path.name, package)
