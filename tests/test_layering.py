# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The package's house of modules: imports point down the layers only, and no module imports
another module's private names (read from the source with ``ast``, so nothing is imported)."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: each subpackage may import those of the same or a lower rank
RANKS = {'core': 0, 'nn': 1, 'kmeans': 2, 'training': 3, 'io': 4, 'analysis': 5, 'integer': 5,
         'cli': 6}


def _imports(path):
    """``(module imported from, names)`` of every import in a file, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding='utf-8'), str(path))
    package = list(path.relative_to(ROOT).with_suffix('').parts)[:-1]  # the file's package
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                mod = '.'.join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ''
            out.append((mod, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
    return out


def _files(*folders):
    return sorted(p for f in folders for p in (ROOT / f).rglob('*.py'))


@pytest.mark.parametrize('path', _files('nnabla_lutq'), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down_the_layers(path):
    parts = path.relative_to(ROOT).parts
    if len(parts) < 3:  # the package's __init__ gathers the API from every layer
        return
    own = RANKS[parts[1]]
    for mod, _ in _imports(path):
        if mod.startswith('nnabla_lutq.'):
            target = mod.split('.')[1]
            assert target in RANKS, f"{path}: imports {mod}"
            assert RANKS[target] <= own, f"{path} ({parts[1]}) imports {mod} from a higher layer"
        assert not mod.startswith('examples'), f"{path}: the package imports the examples"


@pytest.mark.parametrize('path', _files('nnabla_lutq', 'examples', 'benchmarks'),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_another_modules_private_names(path):
    for mod, names in _imports(path):
        private = [n for n in names if n.startswith('_') and not n.startswith('__')]
        assert not private, f"{path}: imports {private} from {mod}"


def test_the_walk_resolves_relative_imports():
    """Relative imports are resolved to the modules they name (so a wrong one would be seen)."""
    f = ROOT / 'nnabla_lutq' / 'core' / 'kinds.py'
    mods = {m for m, _ in _imports(f)}
    assert mods == {'dataclasses', 'typing'}
    g = ROOT / 'nnabla_lutq' / 'io' / 'quantize.py'
    mods = {m for m, _ in _imports(g)}
    assert {'nnabla_lutq.nn.convert', 'nnabla_lutq.training.initialization',
            'nnabla_lutq.io.export'} <= mods


def test_every_source_file_carries_the_license_header():
    """Apache-2.0 (LICENSE), as nnabla and nnabla-examples; each source file says so in its first
    lines: ``# Copyright ... The nnabla-lutq authors.`` and ``# SPDX-License-Identifier:
    Apache-2.0`` (after a ``#!`` line)."""
    import subprocess
    files = subprocess.run(['git', 'ls-files', '*.py', '*.sh', '.ci/run', 'Makefile'], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    assert len(files) > 100
    missing = [f for f in files if (ROOT / f).exists() and '# SPDX-License-Identifier: Apache-2.0'
               not in (ROOT / f).read_text(encoding='utf-8').split('\n')[:3]]
    assert not missing, f"no license header in {missing}"
    assert 'Apache License' in (ROOT / 'LICENSE').read_text(encoding='utf-8')
