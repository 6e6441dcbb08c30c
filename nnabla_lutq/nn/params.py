# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""nnabla's parameter tree seen from its root: the one place that names, finds and moves parameters.

nnabla names parameters relative to the current parameter scope (``nn.get_parameters()``); LUT-Q
records, conversion and export need names that do not depend on where they are called from, and
conversion moves a float layer's parameters to the LUT-Q layer's scope. Everything here goes
through nnabla's public API (``nn.parameter_scope`` with an explicit scope,
``nn.get_parameters``, ``nn.parameter.get_parameter``, ``set_parameter``, ``pop_parameter``); a
scope is looked up without creating it (``parameter_scope`` creates the scopes it enters).
"""
import contextlib

import nnabla as nn

__all__ = ['at_root', 'isolated', 'all_parameters', 'names_by_array', 'scope_at', 'scope_path',
           'current_path', 'relative_name', 'get', 'move', 'pop', 'to_end', 'snapshot',
           'restore']


@contextlib.contextmanager
def at_root():
    """A block in which nnabla's current parameter scope is its root scope.

    Yields:
        OrderedDict: the root scope.
    """
    with nn.parameter_scope('', nn.parameter.root_scope) as scope:
        yield scope


@contextlib.contextmanager
def isolated(parameters=None):
    """A block in which nnabla's parameter tree holds only ``parameters``, at the root scope.

    The registered parameters are set aside (the root scope's entries, not copies) and put back
    when the block ends, whatever happens in it; what the block registers is dropped. Used to
    save exactly the parameters of one graph under chosen names, and to load a file's network
    without touching the user's parameters.

    Args:
        parameters (dict or None): full name -> Variable to register for the block.

    Yields:
        OrderedDict: the (temporary) root scope, current in the block.
    """
    root = nn.parameter.root_scope
    kept = list(root.items())
    root.clear()
    try:
        with at_root():
            for name, var in (parameters or {}).items():
                nn.parameter.set_parameter(name, var)
            yield root
    finally:
        root.clear()
        root.update(kept)


def snapshot():
    """The structure of nnabla's parameter tree, to :func:`restore` after a failed change.

    Returns:
        list: ``(scope dict, its entries)`` for the root and every scope (the dicts and the
        variables themselves, not copies: records that hold a scope stay valid).
    """
    root = nn.parameter.root_scope
    return [(root, list(root.items()))] + [(d, list(d.items())) for _, d in _walk(root)]


def restore(snap):
    """Put every scope of a :func:`snapshot` back as it was (entries, order); scopes created
    since are dropped with their parents' entries."""
    for scope, items in snap:
        scope.clear()
        scope.update(items)


def all_parameters(grad_only=False):
    """Every parameter registered in nnabla, named by its full path from the root scope.

    Unlike ``nn.get_parameters()``, the result does not depend on the current parameter scope.

    Args:
        grad_only (bool): only parameters with ``need_grad=True``.

    Returns:
        OrderedDict: full name -> Variable, in registration order.
    """
    with at_root():
        return nn.get_parameters(grad_only=grad_only)


def names_by_array():
    """dict: NdArray -> the full names of the registered parameters holding it (aliases
    included), in registration order."""
    names = {}
    for name, v in all_parameters().items():
        names.setdefault(v.data, []).append(name)
    return names


def _walk(scope, path=()):
    """``(path, scope dict)`` of every scope under ``scope``, depth first.

    A module-level generator on purpose: a nested function that calls itself is a reference cycle
    that holds whole parameter scopes until the cyclic garbage collector runs.
    """
    for k, v in scope.items():
        if isinstance(v, dict):
            yield path + (k,), v
            yield from _walk(v, path + (k,))


def scope_at(path):
    """The parameter-scope dict at the '/'-joined ``path`` from the root, or None (nothing is
    created).

    Args:
        path (str): e.g. ``'net/conv1/lutq_conv'``; ``''`` is the root scope.

    Returns:
        OrderedDict or None.
    """
    node = nn.parameter.root_scope
    for part in path.split('/') if path else []:
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def scope_path(scope):
    """The '/'-joined path from the root of a parameter-scope dict, or None if it is not (or no
    longer) part of nnabla's tree.

    Args:
        scope (dict): a scope dict, e.g. ``nn.parameter.get_current_parameter_scope()``.

    Returns:
        str or None: ``''`` for the root scope.
    """
    if scope is nn.parameter.root_scope:
        return ''
    return next(('/'.join(p) for p, v in _walk(nn.parameter.root_scope) if v is scope), None)


def current_path():
    """str: the path of the current parameter scope from the root (``''`` at the root; a scope
    detached from the tree counts as the root)."""
    return scope_path(nn.parameter.get_current_parameter_scope()) or ''


def relative_name(full, prefix=None):
    """A full name as ``nn.get_parameters()`` shows it inside the scope ``prefix``.

    Args:
        full (str): a name from the root.
        prefix (str or None): a scope path (default: the current scope's).

    Returns:
        str: ``full`` without ``prefix/``; a name outside ``prefix`` stays full.
    """
    prefix = current_path() if prefix is None else prefix
    return full[len(prefix) + 1:] if prefix and full.startswith(prefix + '/') else full


def get(name):
    """The parameter registered under the full ``name``, or None (nothing is created)."""
    scope, _, last = name.rpartition('/')
    node = scope_at(scope)
    value = None if node is None else node.get(last)
    return value if isinstance(value, nn.Variable) else None


def pop(name):
    """Unregister the parameter at the full ``name`` and drop the scopes it leaves empty.

    Args:
        name (str): a full name; a name that is not registered is ignored.

    Returns:
        ~nnabla.Variable or None: the removed parameter.
    """
    if get(name) is None:
        return None
    with at_root():
        var = nn.parameter.pop_parameter(name)
        scope = name.rpartition('/')[0]
        while scope and not scope_at(scope):
            nn.parameter.pop_parameter(scope)
            scope = scope.rpartition('/')[0]
    return var


def move(array, new_name):
    """Register the parameter holding ``array`` under the full ``new_name`` and under no other
    name.

    The registered variable itself is moved, not copied: every function reading it reads it at
    its new name. Aliases (other names registering the same array) are removed, and the scopes
    they leave empty; the scopes the old and the new name share keep their place in the tree.

    Args:
        array (~nnabla.NdArray): the array of a registered parameter (``variable.data``).
        new_name (str): full name.

    Raises:
        KeyError: if no registered parameter holds ``array``.
    """
    names = names_by_array().get(array, [])
    if not names:
        raise KeyError(f"no registered parameter holds this array (to move to {new_name})")
    current = get(new_name)
    var = current if current is not None and current.data == array else get(names[0])
    if current is not var:  # register first: the scopes shared by the old and the new name
        with at_root():     # stay where they are in the tree's order
            nn.parameter.set_parameter(new_name, var)
    for name in names:
        if name != new_name:
            pop(name)


def to_end(name):
    """Move the parameter at the full ``name`` to the end of its scope's order (as if it were
    created now); its scope is kept (not emptied and created again)."""
    var = get(name)
    if var is not None:
        with at_root():
            nn.parameter.pop_parameter(name)
            nn.parameter.set_parameter(name, var)
