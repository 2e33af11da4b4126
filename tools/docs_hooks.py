"""mkdocs hooks for the documentation site (`mkdocs.yml` → `hooks:`): the site is built from the repository as it is.

- Home is README.md; `docs/` holds the hand-written pages (COMPUTE_RESOURCES.md).
- Every notebook in nbs/ is a page, rendered by mkdocs-jupyter with its stored outputs (never executed): the
  landing notebook, then the components in notebook order, then the experiments (nbs/9*).
- Every module of the package gets an API page (`::: routenlp.x`, rendered by mkdocstrings from the docstrings).

Nothing is copied into `docs/`: the pages are mkdocs `File`s pointing at the sources (or generated in memory), and
the nav is written here from the same lists, so a new notebook or module appears without editing mkdocs.yml.
"""
import json, re
from pathlib import Path

import mkdocs.plugins
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
PKG = 'routenlp'
HAND_WRITTEN = {'COMPUTE_RESOURCES.md': 'Compute resources'}


def notebooks(root: Path = ROOT) -> dict[str, list[Path]]:
    "nbs/ notebooks by section: `index` (the landing notebook), `components` (00-89), `experiments` (90+)."
    nbs = sorted((root / 'nbs').glob('*.ipynb'))
    numbered = [p for p in nbs if re.match(r'\d+_', p.name)]
    return {'index': [p for p in nbs if p.name == 'index.ipynb'],
            'components': [p for p in numbered if int(p.name.split('_')[0]) < 90],
            'experiments': [p for p in numbered if int(p.name.split('_')[0]) >= 90]}


def modules(root: Path = ROOT) -> list[str]:
    "Dotted names of the package's public modules (`_modidx` and other `_*` files skipped), subpackages included."
    return sorted('.'.join((PKG,) + p.relative_to(root / PKG).with_suffix('').parts).removesuffix('.__init__')
                  for p in (root / PKG).rglob('*.py') if not p.stem.startswith('_') or p.stem == '__init__')


def notebook_title(path: Path) -> str:
    "`NN name: first heading` of a notebook (the heading of its first markdown cell), or its file stem."
    cells = json.loads(path.read_text())['cells']
    heading = next((line[2:].strip() for c in cells if c['cell_type'] == 'markdown'
                    for line in ''.join(c['source']).splitlines() if line.startswith('# ')), None)
    stem = path.stem.replace('_', ' ', 1)
    return f'{stem}: {heading}' if heading and heading != path.stem.split('_', 1)[-1] else stem


def results(nb: Path, root: Path = ROOT) -> tuple[list[Path], list[Path]]:
    "The committed tables (papers/tables/*.md) and figures (figures/*.png) an experiment notebook writes, in its order."
    names = dict.fromkeys(re.findall(r"([A-Za-z0-9_]+\.(?:md|png))['\"]", nb.read_text()))
    tables = [root / 'papers' / 'tables' / n for n in names if n.endswith('.md')]
    figures = [root / 'figures' / n for n in names if n.endswith('.png')]
    return [p for p in tables if p.exists()], [p for p in figures if p.exists()]


def results_page(nb: Path, root: Path = ROOT) -> str:
    "An experiment's results page: its tables and figures as committed (what `make reproduce` last wrote)."
    tables, figures = results(nb, root)
    parts = [f'# Results: {notebook_title(nb)}\n',
             f'What `nbs/{nb.name}` wrote at its last `make reproduce` run (`papers/tables/`, `figures/`); '
             f'[the notebook](../{nb.relative_to(root).as_posix()}) holds the code and the prose.\n']
    parts += [f'![{p.stem}](../figures/{p.name})\n' for p in figures]
    for p in tables:
        body = re.sub(r'^#', '##', p.read_text(), flags=re.M)   # the table's own headings sit below the page title
        parts.append(f'## `papers/tables/{p.name}`\n\n{body}\n')
    if not tables and not figures:
        parts.append('No table or figure of this experiment is committed yet (run `make reproduce`).\n')
    return '\n'.join(parts)


def api_page(module: str) -> str:
    return f'# `{module}`\n\n::: {module}\n'


def nav(root: Path = ROOT) -> list:
    "The site's navigation, from the same lists the pages come from."
    nbs = notebooks(root)
    rel = lambda p: p.relative_to(root).as_posix()
    return [{'Home': 'index.md'},
            {'Notebooks': [{'Overview': rel(p)} for p in nbs['index']]
                          + [{notebook_title(p): rel(p)} for p in nbs['components']]},
            {'Experiments': [{notebook_title(p): rel(p)} for p in nbs['experiments']]},
            {'Results': [{notebook_title(p): f'results/{p.stem}.md'} for p in nbs['experiments']]},
            {'API reference': [{m.removeprefix(PKG + '.') or PKG: f'api/{m}.md'} for m in modules(root)]},
            *({title: name} for name, title in HAND_WRITTEN.items() if (root / 'docs' / name).exists())]


def on_config(config, **kw):
    config['nav'] = nav()
    return config


@mkdocs.plugins.event_priority(100)   # before mkdocs-jupyter's on_files, which wraps the .ipynb pages it renders
def on_files(files, config, **kw):
    site, urls = config['site_dir'], config['use_directory_urls']
    for section in notebooks().values():
        for p in section:
            files.append(File(p.relative_to(ROOT).as_posix(), str(ROOT), site, urls))
    files.append(File.generated(config, 'index.md', content=(ROOT / 'README.md').read_text()))
    for nb in notebooks()['experiments']:
        files.append(File.generated(config, f'results/{nb.stem}.md', content=results_page(nb)))
    for p in sorted((ROOT / 'figures').glob('*.png')):
        files.append(File(p.relative_to(ROOT).as_posix(), str(ROOT), site, urls))
    for m in modules():
        files.append(File.generated(config, f'api/{m}.md', content=api_page(m)))
    return files
