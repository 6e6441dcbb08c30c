# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Files and the command line under real faults: permissions kept, read-only folders, a write that
runs out of space, broken pipes, wrong arguments, missing extras, and the README's install lines
run in a fresh virtual environment (the console of the demo: tests/test_end_to_end.py).

Faults are real where the platform allows it without root-only tricks: a folder without write
permission (simulated at ``os.open`` where the tests run as root, whom permissions do not stop),
the file size limit ``RLIMIT_FSIZE`` for a write that fails half-way in a subprocess, pipes closed
under a running command. A full disk inside the test process is a file whose ``write`` raises
``ENOSPC`` after a few bytes, as a full filesystem does.
"""
import argparse
import ast
import builtins
import errno
import io
import os
import re
import resource
import shutil
import subprocess
import sys

import pytest

import nnabla_lutq
from nnabla_lutq import cli
from nnabla_lutq.cli.commands import cmd_plot
from nnabla_lutq.cli.main import BROKEN_PIPE_STATUS
from nnabla_lutq.io.nnp import read_nnp, write_nnp
from nnabla_lutq.io.packed import pack, unpack
from nnabla_lutq.io.quantize import quantize_nnp
from test_deployment import _exported, _float_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = [sys.executable, '-m', 'nnabla_lutq.cli']


def _cli(*argv, **kw):
    """Run the ``nnabla-lutq`` command in a subprocess (from the repository root)."""
    return subprocess.run(CLI + list(argv), capture_output=True, text=True, cwd=ROOT, **kw)


def _mode(path):
    return os.stat(path).st_mode & 0o777


def _writers(tmp_path, rng):
    """``name -> (write(dest), suffix)`` for every writer that goes through atomic_output."""
    x, y, model = _exported(tmp_path, rng)
    packed = tmp_path / 'src.lutq'
    pack(str(model), str(packed))
    (tmp_path / 'float').mkdir()
    _, _, fmodel = _float_model(tmp_path / 'float', rng)

    def plot(dest):
        cmd_plot(argparse.Namespace(model=str(model), output=dest, dpi=40))
    writers = {
        'export_nnp': (lambda d: nnabla_lutq.export_nnp(d, {'x': x}, {'y': y}), '.nnp'),
        'write_nnp': (lambda d: write_nnp(d, read_nnp(str(model))), '.nnp'),
        'pack': (lambda d: pack(str(model), d), '.lutq'),
        'unpack': (lambda d: unpack(str(packed), d), '.nnp'),
        'quantize_nnp': (lambda d: quantize_nnp(str(fmodel), d, n_values=4), '.nnp'),
        'plot': (plot, '.png'),
    }
    try:
        import nnabla.utils.converter.onnx  # noqa: F401
        from nnabla_lutq.io.onnx import export_onnx
        writers['export_onnx'] = (lambda d: export_onnx(str(model), d), '.onnx')
    except ImportError:
        pass
    return writers


@pytest.fixture
def umask():
    """Set the process umask for a test (restored afterwards)."""
    before = os.umask(0o022)
    os.umask(before)
    yield os.umask
    os.umask(before)


# --- permissions of the files written ---------------------------------------------------------

def test_outputs_keep_the_mode_of_the_file_they_replace_and_new_ones_follow_the_umask(
        tmp_path, rng, umask):
    for name, (write, suffix) in _writers(tmp_path, rng).items():
        umask(0o022)
        new = str(tmp_path / f'new_{name}{suffix}')
        write(new)
        assert _mode(new) == 0o644, name
        old = str(tmp_path / f'old_{name}{suffix}')
        with open(old, 'wb') as f:
            f.write(b'old')
        os.chmod(old, 0o640)
        write(old)
        assert _mode(old) == 0o640 and os.path.getsize(old) > 3, name
        umask(0o077)
        private = str(tmp_path / f'private_{name}{suffix}')
        write(private)
        assert _mode(private) == 0o600, name
    assert not [n for n in os.listdir(tmp_path) if n.startswith('tmp')]


# --- a read-only folder -----------------------------------------------------------------------

#: the suffixes of the files the writers make
KEPT = ('.nnp', '.lutq', '.png', '.onnx')


@pytest.fixture
def read_only(tmp_path, monkeypatch):
    """A folder without write permission holding ``kept.*`` files; where the tests run as root
    (whom permissions do not stop), creating a file in it fails at ``os.open`` as it does for
    every other user."""
    folder = tmp_path / 'ro'
    folder.mkdir()
    for suffix in KEPT:
        (folder / f'kept{suffix}').write_bytes(b'old')
    folder.chmod(0o555)
    try:
        with open(folder / 'probe', 'wb'):
            pass
    except PermissionError:
        pass
    else:
        os.remove(folder / 'probe')
        real_open = os.open

        def denied(path, flags, *args, **kw):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and \
                    os.path.dirname(os.path.abspath(os.fsdecode(path))) == str(folder):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))
            return real_open(path, flags, *args, **kw)
        monkeypatch.setattr(os, 'open', denied)
    yield folder
    folder.chmod(0o755)


def test_a_read_only_folder_is_an_error_naming_the_file_asked_for(tmp_path, rng, read_only):
    for name, (write, suffix) in _writers(tmp_path, rng).items():
        for dest in (str(read_only / f'new{suffix}'), str(read_only / f'kept{suffix}')):
            with pytest.raises(PermissionError) as e:
                write(dest)
            assert str(e.value) == f"[Errno 13] Permission denied: '{dest}'", name
    assert sorted(os.listdir(read_only)) == sorted(f'kept{s}' for s in KEPT)
    assert all((read_only / f'kept{s}').read_bytes() == b'old' for s in KEPT)


def test_cli_in_a_read_only_folder_prints_one_line_naming_the_file(tmp_path, rng, read_only,
                                                                    capsys):
    _, _, model = _exported(tmp_path, rng)
    for argv in (['pack', str(model), str(read_only / 'm.lutq')],
                 ['plot', str(model), '-o', str(read_only / 'p.png')],
                 ['plot', str(model), '-o', str(read_only / 'noext')]):
        capsys.readouterr()
        assert cli.main(argv) == 1
        shown = argv[-1] + ('.png' if argv[-1].endswith('noext') else '')
        assert capsys.readouterr().err.splitlines() == [
            f"nnabla-lutq: error: [Errno 13] Permission denied: '{shown}'"]
    assert sorted(os.listdir(read_only)) == sorted(f'kept{s}' for s in KEPT)


# --- a write that runs out of space -----------------------------------------------------------

class _FullDisk:
    """Files opened for writing in ``folder`` take ``room`` bytes, then raise ENOSPC."""

    def __init__(self, folder, room):
        self.folder, self.room = str(folder), room
        self.real = builtins.open

    def open(self, file, mode='r', *args, **kw):
        f = self.real(file, mode, *args, **kw)
        if isinstance(file, (str, os.PathLike)) and set(mode) & set('wax+') and \
                os.path.dirname(os.path.abspath(file)) == self.folder:
            return _Filling(f, self)
        return f


class _Filling:
    def __init__(self, f, disk):
        self._f, self._disk = f, disk

    def write(self, data):
        if len(data) > self._disk.room:
            self._f.write(data[:self._disk.room])
            self._disk.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._disk.room -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __iter__(self):
        return iter(self._f)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


def test_a_full_disk_leaves_the_old_file_and_names_the_file_asked_for(tmp_path, rng,
                                                                       monkeypatch):
    writers = _writers(tmp_path, rng)
    out = tmp_path / 'out'
    out.mkdir()
    disk = _FullDisk(out, 0)
    monkeypatch.setattr(builtins, 'open', disk.open)
    monkeypatch.setattr(io, 'open', disk.open)
    for name, (write, suffix) in writers.items():
        for target, before in ((f'new_{name}{suffix}', None), (f'old_{name}{suffix}', b'old')):
            dest = str(out / target)
            if before is not None:
                with disk.real(dest, 'wb') as f:
                    f.write(before)
            disk.room = 700
            with pytest.raises(OSError) as e:
                write(dest)
            assert e.value.errno == errno.ENOSPC and e.value.filename == dest, (name, e.value)
            if before is None:
                assert not os.path.exists(dest), name
            else:
                with disk.real(dest, 'rb') as f:
                    assert f.read() == before, name
    assert sorted(os.listdir(out)) == sorted(f'old_{n}{s}' for n, (_, s) in writers.items())


def _file_size_limit(limit):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_commands_stopped_by_the_file_size_limit_leave_no_partial_files(tmp_path, rng):
    _, _, model = _exported(tmp_path, rng)
    pack(str(model), str(tmp_path / 'm.lutq'))
    png = tmp_path / 'kept.png'
    png.write_bytes(b'old')
    for argv in (['plot', str(model), '-o', str(png)],
                 ['plot', str(model), '-o', str(tmp_path / 'new.png')],
                 ['unpack', str(tmp_path / 'm.lutq'), str(tmp_path / 'u.nnp')]):
        r = _cli(*argv, preexec_fn=_file_size_limit(2048))
        assert r.returncode == 1, r.stderr
        assert r.stderr.splitlines() == [
            f"nnabla-lutq: error: [Errno 27] File too large: '{argv[-1]}'"], r.stderr
    assert png.read_bytes() == b'old'
    assert sorted(os.listdir(tmp_path)) == ['kept.png', 'm.lutq', 'm.nnp']


# --- plot names -------------------------------------------------------------------------------

def test_plot_without_an_extension_writes_and_reports_a_png(tmp_path, rng, capsys):
    _, _, model = _exported(tmp_path, rng)
    capsys.readouterr()
    assert cli.main(['plot', str(model), '-o', str(tmp_path / 'noext')]) == 0
    assert capsys.readouterr().out == f"wrote {tmp_path / 'noext.png'} (4 layers)\n"
    assert (tmp_path / 'noext.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert cli.main(['plot', str(model), '-o', str(tmp_path / 'p.xyz')]) == 1
    assert 'cannot write .xyz images; use one of' in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ['m.nnp', 'noext.png']


# --- the command line -------------------------------------------------------------------------

def test_packing_a_model_without_tables_warns_why(tmp_path, rng):
    _, _, fmodel = _float_model(tmp_path, rng)
    with pytest.warns(UserWarning, match=r'no look-up tables to pack .* saves nothing on the '
                                         r'weights'):
        pack(str(fmodel), str(tmp_path / 'f.lutq'))
    r = _cli('pack', str(fmodel), str(tmp_path / 'g.lutq'))
    assert r.returncode == 0
    warning, = r.stderr.splitlines()
    size = os.path.getsize(tmp_path / 'g.lutq')
    assert warning.startswith(f"nnabla-lutq: warning: {fmodel}: no look-up tables to pack")
    assert f"({size:,} bytes; the .nnp has {os.path.getsize(fmodel):,})" in warning
    (tmp_path / 'lutq').mkdir()
    _, _, model = _exported(tmp_path / 'lutq', rng)
    r = _cli('pack', str(model), str(tmp_path / 'm.lutq'))
    assert r.returncode == 0 and r.stderr == ''


def test_wrong_numbers_are_usage_errors(tmp_path, rng):
    _, _, fmodel = _float_model(tmp_path, rng)
    for argv, what in ((['convert', str(fmodel), str(tmp_path / 'c.nnp'), '--iters', '-3'],
                        "argument --iters: expected an integer >= 0, got -3"),
                       (['convert', str(fmodel), str(tmp_path / 'c.nnp'), '--iters', 'x'],
                        "argument --iters: expected an integer >= 0, got 'x'"),
                       (['plot', str(fmodel), '-o', str(tmp_path / 'p.png'), '--dpi', '0'],
                        "argument --dpi: expected an integer from 1 to 1200, got 0")):
        r = _cli(*argv)
        assert r.returncode == 2 and r.stderr.splitlines()[-1].endswith(what), r.stderr
    with pytest.raises(ValueError, match='iters must be None or an integer >= 0'):
        quantize_nnp(str(fmodel), str(tmp_path / 'c.nnp'), iters=-3)
    assert sorted(os.listdir(tmp_path)) == ['float.nnp']


def test_a_closed_pipe_ends_the_command_quietly(tmp_path, rng):
    _, _, model = _exported(tmp_path, rng)
    for argv in (['info', '--json', str(model)], ['info', str(model)]):
        p = subprocess.Popen(CLI + argv, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        p.stdout.close()  # before the command has written anything
        err = p.stderr.read()
        p.stderr.close()
        assert p.wait() == BROKEN_PIPE_STATUS == 141
        assert err == b''
    r = subprocess.run(f"{' '.join(CLI)} info --json {model} | head -n 1", shell=True,
                       cwd=ROOT, capture_output=True, text=True)
    assert r.stdout == '{\n' and r.stderr == ''


def test_version(tmp_path):
    r = _cli('--version')
    assert r.returncode == 0 and r.stderr == ''
    assert re.fullmatch(rf"nnabla-lutq {re.escape(nnabla_lutq.__version__)} \(nnabla 1\.39\.\S+, "
                        r"Python 3\.\d+\.\d+\)\n", r.stdout), r.stdout


def test_a_file_with_indices_outside_its_table_is_a_one_line_error(tmp_path, rng):
    _, _, model = _exported(tmp_path, rng)
    m = read_nnp(str(model))
    a = 'net/fc/lutq_affine/A'
    m.params[a] = m.params[a] + 4  # K = 4
    write_nnp(str(tmp_path / 'bad.nnp'), m)
    r = _cli('info', str(tmp_path / 'bad.nnp'))
    assert r.returncode == 1 and r.stdout == ''
    assert r.stderr.splitlines() == [
        "nnabla-lutq: error: net/fc/lutq_affine: A holds indices outside [0, 4) (min 4, max 7), "
        "not a valid look-up table; re-fit it with nnabla_lutq.initialize() and export the model "
        "again"]


# --- missing extras ---------------------------------------------------------------------------

def _install_block():
    """The code block of the README's 'Install for users' section."""
    with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
        text = f.read()
    section = text.split('## Install for users\n', 1)[1].split('\n## ', 1)[0]
    return section.split('```bash\n', 1)[1].split('```', 1)[0]


def _install_commands():
    return [line.split('#', 1)[0].strip() for line in _install_block().splitlines()
            if line.strip()]


def test_missing_onnx_packages_name_the_two_commands_of_the_readme(tmp_path, rng, monkeypatch,
                                                                   capsys):
    from nnabla_lutq.io.onnx import INSTALL_HINT, export_onnx
    _, _, model = _exported(tmp_path, rng)
    monkeypatch.setitem(sys.modules, 'nnabla.utils.converter.nnabla', None)
    with pytest.raises(ImportError, match='ONNX export needs nnabla-converter and onnx') as e:
        export_onnx(str(model), str(tmp_path / 'm.onnx'))
    assert str(e.value).endswith('install them in the nnabla-lutq clone with: pip install '
                                 '".[onnx]" && pip install --no-deps "nnabla-converter==1.39.*"')
    commands = _install_commands()
    assert all(c in commands for c in INSTALL_HINT.split(' && ')), commands
    assert 'make onnx-env' not in str(e.value)
    capsys.readouterr()
    assert cli.main(['onnx', str(model), str(tmp_path / 'm.onnx')]) == 1
    assert capsys.readouterr().err.splitlines() == [f"nnabla-lutq: error: {e.value}"]
    assert sorted(os.listdir(tmp_path)) == ['m.nnp']


def test_missing_matplotlib_names_the_extra(tmp_path, rng, monkeypatch, capsys):
    _, _, model = _exported(tmp_path, rng)
    monkeypatch.setitem(sys.modules, 'matplotlib', None)
    capsys.readouterr()
    assert cli.main(['plot', str(model), '-o', str(tmp_path / 'p.png')]) == 1
    err, = capsys.readouterr().err.splitlines()
    assert err.startswith("nnabla-lutq: error: `nnabla-lutq plot` needs matplotlib (")
    assert err.endswith('install the [examples] extra in the nnabla-lutq clone with '
                        '`pip install ".[examples]"` (or `pip install matplotlib`)')
    assert 'pip install ".[examples]"' in _install_commands()
    assert sorted(os.listdir(tmp_path)) == ['m.nnp']


def test_missing_scikit_learn_names_the_extra(monkeypatch):
    from examples.digits import data
    monkeypatch.setitem(sys.modules, 'sklearn', None)
    monkeypatch.setitem(sys.modules, 'sklearn.datasets', None)
    with pytest.raises(ImportError) as e:
        data.load_digits_data()
    assert str(e.value) == ("the digits data comes with scikit-learn: pip install scikit-learn (in "
                            "a clone: pip install '.[demo]')")
    assert 'pip install ".[demo]"' in _install_commands()


# --- the README's install section -------------------------------------------------------------

def _setup_extras():
    with open(os.path.join(ROOT, 'setup.py'), encoding='utf-8') as f:
        tree = ast.parse(f.read())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and
                getattr(n.func, 'id', None) == 'setup')
    extras = next(k.value for k in call.keywords if k.arg == 'extras_require')
    return {ast.literal_eval(k) for k in extras.keys}


def test_readme_installs_from_a_clone_with_exactly_the_extras_of_setup_py():
    commands = _install_commands()
    assert 'pip install .' in commands and not any('nnabla-lutq' in c for c in commands)
    listed = set()
    for c in commands:
        for group in re.findall(r'\.\[([\w,-]+)\]', c):
            listed.update(group.split(','))
    assert listed == _setup_extras()


# --- the install lines in a fresh virtual environment -----------------------------------------

def _offline_pip(python):
    """Why pip in the environment of ``python`` cannot install this package offline, or None.

    ``pip install --no-build-isolation`` builds with the environment's own setuptools: pip
    before 23.1 runs ``setup.py install`` without ``wheel``; later pips need ``wheel`` (or
    setuptools >= 70.1, which builds wheels itself).
    """
    probe = ("import importlib.metadata as m, importlib.util as u\n"
             "pip, tools = m.version('pip'), m.version('setuptools')\n"
             "v = lambda s: tuple(int(p) for p in s.split('.')[:2])\n"
             "ok = u.find_spec('wheel') or v(pip) < (23, 1) or v(tools) >= (70, 1)\n"
             "print('ok' if ok else f'pip {pip} and setuptools {tools} need the wheel package')\n")
    r = subprocess.run([python, '-c', probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"no pip/setuptools in the new environment ({r.stderr.strip()[-200:]})"
    return None if r.stdout.strip() == 'ok' else r.stdout.strip()


def _copy_of_the_repository(dest):
    skip = {'.git', '.venv', 'build', 'dist', 'demo_output', '__pycache__', '.pytest_cache',
            '.hypothesis', '.gpu', 'runs'}
    shutil.copytree(ROOT, dest, ignore=lambda folder, names: [
        n for n in names if n in skip or n.endswith(('.egg-info', '.nnp', '.h5'))])


@pytest.mark.slow
def test_readme_install_lines_work_in_a_fresh_virtual_environment(tmp_path):
    """``pip install .`` and ``pip install -e .`` from a copy of the repository, in a new venv that
    sees this environment's packages (nnabla is not downloaded again), then ``nnabla-lutq
    --version`` from elsewhere; pip runs with ``--no-index``, so nothing is downloaded."""
    commands = _install_commands()
    assert 'pip install .' in commands and '`pip install -e .`' in _install_block()
    site_packages = [p for p in sys.path if p.endswith('site-packages') and os.path.isdir(
        os.path.join(p, 'nnabla'))]
    assert site_packages, 'nnabla is not installed in a site-packages folder'
    src = tmp_path / 'clone'
    _copy_of_the_repository(src)
    for editable in (False, True):
        env_dir = tmp_path / ('venv-e' if editable else 'venv')
        made = subprocess.run([sys.executable, '-m', 'venv', '--system-site-packages',
                               str(env_dir)], capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"cannot create a virtual environment with pip: {made.stderr[-300:]}")
        python = str(env_dir / 'bin' / 'python')
        # the new environment's base is the interpreter, not this venv: point it at nnabla here
        purelib = subprocess.run([python, '-c', 'import sysconfig; '
                                  'print(sysconfig.get_paths()["purelib"])'],
                                 capture_output=True, text=True, check=True).stdout.strip()
        with open(os.path.join(purelib, 'nnabla_lutq_test_base.pth'), 'w') as f:
            f.write('\n'.join(site_packages) + '\n')
        why = _offline_pip(python)
        if why:
            pytest.skip(f"pip cannot install offline here: {why}")
        install = [python, '-m', 'pip', 'install', '--no-deps', '--no-build-isolation',
                   '--no-index', '-q'] + (['-e', '.'] if editable else ['.'])
        env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK='1', PIP_NO_INPUT='1')
        r = subprocess.run(install, cwd=src, capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        r = subprocess.run([str(env_dir / 'bin' / 'nnabla-lutq'), '--version'],
                           cwd=tmp_path, capture_output=True, text=True)
        assert r.returncode == 0 and r.stderr == '', r.stderr
        assert r.stdout.startswith(f"nnabla-lutq {nnabla_lutq.__version__} (nnabla 1.39.")
        r = subprocess.run([python, '-c', 'import nnabla_lutq; print(nnabla_lutq.__file__)'],
                           cwd=tmp_path, capture_output=True, text=True)
        expected = str(src) if editable else purelib
        assert r.stdout.strip().startswith(expected), r.stdout
        r = subprocess.run([python, '-c', 'from nnabla_lutq.kmeans import fused; '
                            'print(open(fused.PTX_PATH).read().count(".entry") == '
                            'len(fused.KERNELS) == 7, open(fused.SOURCE_PATH).read().count('
                            '"__global__") == 7)'], cwd=tmp_path, capture_output=True, text=True)
        assert r.stdout.split() == ['True', 'True'], r.stdout + r.stderr  # the kernels installed
