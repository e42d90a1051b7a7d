"""The layout's rules, read from the source (ast), so a change that breaks one fails here: no module imports
train.py, no module uses another's private names, the project's imports form no cycle, and the README's
file map names every top-level module."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = {p.stem: p for p in ROOT.glob("*.py")}
SCRIPTS = {p: p for p in (ROOT / "benchmarks").glob("*.py")}


def project_imports(path):
    """(imported project modules, [(module, attribute)] of every `module.attr` use) of one source file."""
    tree = ast.parse(path.read_text())
    names = {}  # local name -> project module
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update({(a.asname or a.name): a.name for a in node.names if a.name in MODULES})
        elif isinstance(node, ast.ImportFrom) and node.module in MODULES:
            names.setdefault(f"<from {node.module}>", node.module)
            for a in node.names:
                if a.name.startswith("_"):
                    names[f"<private {node.module}.{a.name}>"] = node.module
    attrs = [(names[n.value.id], n.attr) for n in ast.walk(tree)
             if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in names]
    attrs += [(m, k.split(".", 1)[1][:-1]) for k, m in names.items() if k.startswith("<private")]
    return set(names.values()), attrs


def test_no_file_imports_train_and_no_private_names_cross_modules():
    for path in [*MODULES.values(), *SCRIPTS]:
        mods, attrs = project_imports(path)
        assert "train" not in mods or path.stem == "train", f"{path.name} imports train.py"
        private = [f"{m}.{a}" for m, a in attrs if a.startswith("_") and m != path.stem]
        assert not private, f"{path.name} uses private names {private}"


def test_imports_form_no_cycle():
    graph = {m: project_imports(p)[0] - {m} for m, p in MODULES.items()}
    state = {}

    def visit(m, stack):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", f"import cycle: {' -> '.join(stack + [m])}"
        state[m] = "open"
        for n in sorted(graph[m]):
            visit(n, stack + [m])
        state[m] = "done"
    for m in sorted(graph):
        visit(m, [])


def test_readme_file_map_names_every_module():
    readme = (ROOT / "README.md").read_text()
    missing = [f"{m}.py" for m in MODULES if f"| `{m}.py` |" not in readme]
    assert not missing, f"README's file map lacks {missing}"
    assert not [m for m in MODULES if m not in ast.literal_eval(
        (ROOT / "pyproject.toml").read_text().split("py-modules = ", 1)[1].splitlines()[0])], "pyproject py-modules"


def test_one_function_rounds_updated_weights():
    """Every train step (step.py's unfused and LoRA steps, fused.py's parts) changes the weights through
    rounding.apply_update: no other module calls the rounding functions themselves."""
    rounders = {"round_like", "round_tree", "round_leaf", "stochastic_round", "nearest_round"}
    for path in [*MODULES.values(), *SCRIPTS]:
        if path.stem == "rounding" or path.parent.name == "benchmarks":  # benchmarks time rounding on its own
            continue
        used = {a for m, a in project_imports(path)[1] if m == "rounding"}
        assert not used & rounders, f"{path.name} rounds with {used & rounders}, not rounding.apply_update"
    users = {p.stem for p in MODULES.values() if ("rounding", "apply_update") in project_imports(p)[1]}
    assert users == {"step", "fused"}, users
