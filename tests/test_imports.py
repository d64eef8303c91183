"""No import cycle in the product packages: every module imports in a fresh
interpreter, in one order and in the reverse order (a cycle of module-level
imports makes one of them fail), and no cycle hides behind imports inside
functions (the graph of every import statement has none)."""

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("secure_meanshift", "coordinator", "party_node", "meanshift_cli", "meanshift_rpc")
# Known cycles (none left: bandwidth<->estimator was broken by moving data_bounds
# to data.py); a new one fails the test.
KNOWN_CYCLES: list = []


def _modules() -> dict:
    """{dotted module name: file} for every module of PACKAGES (no __main__)."""
    out = {}
    for pkg in PACKAGES:
        for folder, dirs, names in os.walk(os.path.join(ROOT, pkg)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for n in names:
                if n.endswith(".py") and n != "__main__.py":
                    rel = os.path.relpath(os.path.join(folder, n), ROOT)[:-3]
                    name = rel.replace(os.sep, ".").removesuffix(".__init__")
                    out[name] = os.path.join(folder, n)
    return out


def _targets(mods: dict, name: str, node) -> set:
    """The product modules an import statement of module ``name`` loads."""
    if isinstance(node, ast.Import):
        wanted = [a.name for a in node.names]
    else:
        base = name.split(".") if mods[name].endswith("__init__.py") else name.split(".")[:-1]
        if node.level:
            base = base[:len(base) - node.level + 1]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module
        wanted = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in mods else prefix
                  for a in node.names]
    found = set()
    for w in wanted:
        while w and w not in mods:
            w = w.rpartition(".")[0]
        if w and w != name:
            found.add(w)
    return found


def _graph(mods: dict) -> dict:
    """Module -> modules it imports anywhere (inside functions too; imports for
    type checking only are left out)."""
    graph = {}
    for name, path in mods.items():
        with open(path) as f:
            tree = ast.parse(f.read())
        typing_only = {id(sub) for node in ast.walk(tree)
                       if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                       for sub in ast.walk(node)}
        graph[name] = set().union(*[_targets(mods, name, n) for n in ast.walk(tree)
                                    if isinstance(n, (ast.Import, ast.ImportFrom))
                                    and id(n) not in typing_only])
    return graph


def _cycles(graph: dict) -> list:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_even_through_imports_inside_functions():
    cycles = _cycles(_graph(_modules()))
    assert [c for c in cycles if c not in KNOWN_CYCLES] == [], cycles


def test_the_mpc_runtime_imports_only_itself_and_the_error_types():
    graph = _graph(_modules())
    outside = {m: sorted(t for t in targets if not t.startswith("secure_meanshift.mpc")
                         and t != "secure_meanshift.errors")
               for m, targets in graph.items() if m.startswith("secure_meanshift.mpc")}
    assert {m: t for m, t in outside.items() if t} == {}


@pytest.mark.parametrize("order", ["sorted", "reversed"])
def test_every_module_imports_in_a_fresh_interpreter(order):
    names = sorted(_modules())
    if order == "reversed":
        names.reverse()
    code = ("import importlib, sys\n"
            "for name in sys.argv[1:]:\n"
            "    try:\n"
            "        importlib.import_module(name)\n"
            "    except Exception as exc:\n"
            "        sys.exit(f'{name}: {type(exc).__name__}: {exc}')\n")
    r = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True,
                       cwd=ROOT, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]


def test_the_simulator_cli_imports_without_torch():
    """The CLI's caller starts the fork server (which imports the engine) before
    it loads torch itself: the simulator's modules, the package and the twin
    import without torch, CrypTen or scipy (their imports then overlap)."""
    code = ("import sys\n"
            "import meanshift_cli.simulate, secure_meanshift.simulate, secure_meanshift.plaintext\n"
            "print(sorted(m for m in ('torch', 'crypten', 'scipy') if m in sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"


def test_simulator_caller_never_loads_torch():
    """The simulator's caller (CLI and estimator) builds configs and unpickles
    the outcomes without torch or CrypTen: only the ranks load them (importing
    torch took the caller 1.5 s of CPU from the ranks, its teardown at exit 0.5 s)."""
    code = (
        "import sys\n"
        "from meanshift_cli.simulate import main\n"
        "rc = main(['--points', '120', '--parties', '2', '--centers', '3', '--bandwidth', '0.1',"
        " '--no-sklearn', '--quiet'])\n"
        "from secure_meanshift import SecureMeanShift\n"
        "from secure_meanshift.data import synthetic_blobs\n"
        "x, _ = synthetic_blobs(80, 2, 2, 0.03, 0)\n"
        "m = SecureMeanShift(bandwidth=0.1).fit([x[:40], x[40:]])\n"
        "loaded = sorted(k for k in ('torch', 'crypten') if k in sys.modules)\n"
        "print('rc', rc, 'centres', len(m.cluster_centers_), 'loaded', loaded)\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "rc 0 centres 2 loaded []" in res.stdout, res.stdout[-1000:]


def test_ranks_load_torch_without_its_meta_registrations():
    """The fork server's ranks load torch with a stand-in for its Python meta
    kernels (mpc/_compat.stand_in_meta_registrations: 0.23 s of every run's
    start-up); the engine's CPU ops work there; this process keeps the real one."""
    import torch  # noqa: F401  (the caller's own torch: the real module)
    from mpc_jobs import meta_registrations_job

    from secure_meanshift.simulate import run_mpc_function

    # TLS links: the ranks come from the fork server (run_local forks this process)
    for real, ok in run_mpc_function(meta_registrations_job, 2):
        assert not real and ok
    assert hasattr(sys.modules["torch._meta_registrations"], "meta_index_Tensor")
