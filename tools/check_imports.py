"""`make test` check: notebook order is dependency order.

Parses every module of the package (nested and function-level imports included, `importlib.import_module('routenlp.x')`
calls too), maps each module to the notebook it is exported from (the `File to edit` header nbdev writes), and fails
on an import cycle or on a module importing one exported from a later-numbered notebook."""
import ast, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = 'routenlp'


def notebook_of(path: Path) -> str | None:
    m = re.search(r'File to edit: \.\./nbs/(\S+?)\.ipynb', path.read_text()[:600])
    return m.group(1) if m else None


def imports_of(path: Path, module: str) -> set[str]:
    "Every `routenlp.*` module that `path` imports anywhere in its body."
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:   # relative: .x -> routenlp.x ; from . import x -> routenlp.x
                base = PKG + ('.' + node.module if node.module else '')
                found |= {base} if node.module else {f'{PKG}.{a.name}' for a in node.names}
            elif node.module:
                found.add(node.module)
                if node.module == PKG: found |= {f'{PKG}.{a.name}' for a in node.names}
        elif (isinstance(node, ast.Call) and getattr(node.func, 'attr', getattr(node.func, 'id', None)) == 'import_module'
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.add(node.args[0].value)
    return {m.split('.')[1] for m in found if m.startswith(PKG + '.') and m.count('.') >= 1} - {module}


def graph(root: Path = ROOT):
    mods = {p.stem: p for p in (root / PKG).glob('*.py') if not p.stem.startswith('_')}
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


def main() -> int:
    edges, nbs = graph()
    cyc, up = cycles(edges), upward(edges, nbs)
    for c in cyc: print('cycle: ' + ' <-> '.join(c), file=sys.stderr)
    for u in up: print('upward import: ' + u, file=sys.stderr)
    print(f'import check: {len(edges)} modules, {len(cyc)} cycles, {len(up)} upward imports')
    return 1 if cyc or up else 0


if __name__ == '__main__':
    sys.exit(main())
