"""torch.jit's builtin table must not take a new object for an operator that a destroyed torch.library freed.

torch.jit keys its table of builtins by ``id()`` without holding the object. An operator defined by a
``torch.library.Library`` is registered there when first looked up through ``torch.ops``; destroying the library
frees it, and the next object at that address (a Conv2d's padding
tuple, say) is taken for an aten builtin: ``torch.jit.script`` then fails with "builtin cannot be used as a value"
on a model it scripts in a fresh process. The suite hit this under xdist, depending on which test ran first.
"""

from __future__ import annotations

import gc
import itertools

import torch
import torch.jit._builtins

import zoo.contract  # noqa: F401  (the base of every zoo model applies the fix)

_names = itertools.count()


def _define_look_up_and_destroy_an_op() -> None:
    namespace = f"mzoo_test_freed_{next(_names)}"
    lib = torch.library.Library(namespace, "DEF")
    lib.define("f(Tensor x) -> Tensor")
    lib.impl("f", lambda x: x.clone(), "CompositeExplicitAutograd")
    assert getattr(torch.ops, namespace).f(torch.ones(1)).item() == 1.0  # registers the op in torch.jit's table
    lib._destroy()
    del lib
    gc.collect()


def test_objects_allocated_after_a_library_is_destroyed_are_not_builtins() -> None:
    torch.jit._builtins._get_builtin_table()
    for _ in range(20):
        _define_look_up_and_destroy_an_op()
        # the freed op is a 72-byte object; so are these (and Conv2d's 4-int padding tuple)
        fresh = [tuple(range(4)) for _ in range(200)] + [[].append for _ in range(200)]
        taken = [obj for obj in fresh if torch.jit._builtins._find_builtin(obj) is not None]
        assert not taken, f"torch.jit takes {taken[0]!r} for the builtin {torch.jit._builtins._find_builtin(taken[0])}"


def test_a_conv_scripts_after_libraries_are_destroyed() -> None:
    for _ in range(20):
        _define_look_up_and_destroy_an_op()
        convs = torch.nn.Sequential(*(torch.nn.Conv2d(2, 2, 3, padding=1) for _ in range(20)))
        scripted = torch.jit.script(convs)
        x = torch.randn(1, 2, 5, 5)
        torch.testing.assert_close(scripted(x), convs(x))
