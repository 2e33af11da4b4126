"""`make test` check of the house rules (DESIGN.md §6, issue #8).

1. Notebook order is dependency order: parses every module of the package (nested and function-level imports
   included, `importlib.import_module('routenlp.x')` calls too), maps each module to the notebook it is exported
   from (the `File to edit` header nbdev writes), and fails on an import cycle or on a module importing one exported
   from a later-numbered notebook. The body of an `if __name__ == '__main__':` block is an entry point (what
   `python -m routenlp.x` runs), not a dependency of the module, and is not counted: no module imports it.
2. Sizes: no module over MAX_MODULE_LINES lines, no `#| export` cell over MAX_CELL_LINES lines.
3. No undefined name in the package (pyflakes), which notebook tests can miss when a branch is not exercised.
4. Every module docstring (the notebook's one-line `>` summary) is a whole sentence: it ends with a full stop."""
import ast, json, re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = 'routenlp'


def notebook_of(path: Path) -> str | None:
    m = re.search(r'File to edit: (?:\.\./)+nbs/(\S+?)\.ipynb', path.read_text()[:600])
    return m.group(1) if m else None


def modules(root: Path = ROOT) -> dict[str, Path]:
    "{dotted name below the package: path} of every module, subpackages included (`serving.core`); `_*` files skipped."
    return {'.'.join(p.relative_to(root / PKG).with_suffix('').parts): p
            for p in sorted((root / PKG).rglob('*.py')) if not p.stem.startswith('_')}


def _is_main_guard(node) -> bool:
    "`if __name__ == '__main__'` (alone or as one operand of an `and`)."
    if not isinstance(node, ast.If): return False
    tests = node.test.values if isinstance(node.test, ast.BoolOp) and isinstance(node.test.op, ast.And) else [node.test]
    return any(isinstance(t, ast.Compare) and isinstance(t.left, ast.Name) and t.left.id == '__name__'
               and any(isinstance(c, ast.Constant) and c.value == '__main__' for c in t.comparators) for t in tests)


def _nodes(tree):
    "Every node of `tree` except those inside a `__main__` guard."
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(c for c in ast.iter_child_nodes(node) if not _is_main_guard(c))


def imports_of(path: Path, module: str) -> set[str]:
    "Every `routenlp.*` module (dotted below the package) that `path` imports anywhere outside a `__main__` guard."
    found, package = set(), [PKG] + module.split('.')[:-1]
    for node in _nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = '.'.join(package[:len(package) - node.level + 1] + [node.module] if node.module else
                            package[:len(package) - node.level + 1]) if node.level else node.module
            if base:   # `from x import y`: x, and x.y in case y is a submodule (kept only if it is one)
                found |= {base} | {f'{base}.{a.name}' for a in node.names}
        elif (isinstance(node, ast.Call) and getattr(node.func, 'attr', getattr(node.func, 'id', None)) == 'import_module'
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.add(node.args[0].value)
    return {m[len(PKG) + 1:] for m in found if m.startswith(PKG + '.')} - {module}


def graph(root: Path = ROOT):
    mods = modules(root)
    return {m: imports_of(p, m) & set(mods) for m, p in mods.items()}, {m: notebook_of(p) for m, p in mods.items()}


def cycles(edges: dict) -> list[list[str]]:
    "Strongly connected components with more than one module (Tarjan)."
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]
    def visit(v):
        index[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
        for w in sorted(edges[v]):
            if w not in index: visit(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: out.append(sorted(comp))
    for v in sorted(edges):
        if v not in index: visit(v)
    return out


def upward(edges: dict, nbs: dict) -> list[str]:
    bad = []
    for m, deps in sorted(edges.items()):
        for d in sorted(deps):
            if nbs.get(m) and nbs.get(d) and nbs[d] > nbs[m]:
                bad.append(f'{nbs[m]} ({m}) imports {nbs[d]} ({d})')
    return bad


MAX_MODULE_LINES, MAX_CELL_LINES = 460, 60


def sizes(root: Path = ROOT) -> tuple[list[str], list[str], str, str]:
    "(modules over the limit, export cells over the limit, largest module, largest export cell)."
    mods = {f'{m}.py': len(p.read_text().splitlines()) for m, p in modules(root).items()}
    cells = {}
    for nb in sorted((root / 'nbs').glob('*.ipynb')):
        for c in json.loads(nb.read_text())['cells']:
            src = ''.join(c['source'])
            if c['cell_type'] == 'code' and src.lstrip().startswith('#| export'):
                cells[f"{nb.name} cell {c.get('id')}"] = len(src.splitlines())
    big_mods = [f'{m}: {n} lines' for m, n in sorted(mods.items()) if n > MAX_MODULE_LINES]
    big_cells = [f'{c}: {n} lines' for c, n in sorted(cells.items()) if n > MAX_CELL_LINES]
    top_mod, top_cell = max(mods.items(), key=lambda kv: kv[1]), max(cells.items(), key=lambda kv: kv[1])
    return big_mods, big_cells, f'{top_mod[0]} ({top_mod[1]})', f'{top_cell[0]} ({top_cell[1]})'


def undefined_names(root: Path = ROOT) -> list[str]:
    files = [str(p) for p in modules(root).values()]
    out = subprocess.run([sys.executable, '-m', 'pyflakes', *files], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if 'undefined name' in line]


def docstrings(root: Path = ROOT) -> list[str]:
    "Modules whose docstring is missing or is not a whole sentence (nbdev keeps only the summary's first line)."
    bad = []
    for m, p in modules(root).items():
        doc = ast.get_docstring(ast.parse(p.read_text())) or ''
        if not doc.rstrip().endswith(('.', '.)', '."')): bad.append(f'{m}.py: {doc[:70]!r}')
    return bad


def main() -> int:
    edges, nbs = graph()
    cyc, up = cycles(edges), upward(edges, nbs)
    big_mods, big_cells, top_mod, top_cell = sizes()
    undefined = undefined_names()
    partial_docs = docstrings()
    for c in cyc: print('cycle: ' + ' <-> '.join(c), file=sys.stderr)
    for u in up: print('upward import: ' + u, file=sys.stderr)
    for m in big_mods: print(f'module over {MAX_MODULE_LINES} lines: {m}', file=sys.stderr)
    for c in big_cells: print(f'export cell over {MAX_CELL_LINES} lines: {c}', file=sys.stderr)
    for u in undefined: print(u, file=sys.stderr)
    for d in partial_docs: print(f'module docstring is not a whole sentence: {d}', file=sys.stderr)
    print(f'house check: {len(edges)} modules, {len(cyc)} cycles, {len(up)} upward imports; largest module {top_mod}, '
          f'largest export cell {top_cell}; {len(undefined)} undefined names; {len(partial_docs)} partial docstrings')
    return 1 if cyc or up or big_mods or big_cells or undefined or partial_docs else 0


if __name__ == '__main__':
    sys.exit(main())
