"""Work-arounds for torch defects that break Mobile Zoo's users' paths; :mod:`zoo.contract` (the base of every zoo
model, so the first module that builds one with torch) applies them when it is imported; ``import zoo`` itself
stays free of torch.

torch.jit's table of builtins (``torch.jit._builtins._builtin_table``) is keyed by ``id()`` and does not hold the
objects it names. Every operator looked up through ``torch.ops`` is registered there; when the
``torch.library.Library`` that defined it is destroyed (a scoped library closing, a library garbage-collected),
the operator is freed and its address can be given to the next object of the same size, such as a Conv2d's
4-int padding tuple. ``torch.jit.script`` (and the module inference under ``torch.jit.trace``, which the Core ML
and ncnn exporters use) then takes that object for an aten builtin: scripting a zoo model fails with "builtin
cannot be used as a value" in a process where such a library came and went. Seen in torch 2.14, in this test
suite under xdist (which test destroyed the library depended on the order; tests/zoo/test_torch_fixes.py
reproduces it directly).

:func:`keep_jit_builtins_alive` makes the table hold what it names, so a registered id is never reused. The cost
is one small function object per operator ever looked up, however many libraries come and go.
"""

from __future__ import annotations

from typing import Any

import torch
import torch._ops
import torch.jit._builtins

_KEPT: list[Any] = []
_MARK = "_mzoo_keeps_registered_builtins_alive"


def keep_jit_builtins_alive() -> None:
    """Make ``torch.jit._builtins._register_builtin`` keep a reference to each function it registers (idempotent).

    Operators registered before this is applied are kept too: those reachable through ``torch.ops`` now.
    """
    builtins = torch.jit._builtins
    if getattr(builtins._register_builtin, _MARK, False):
        return
    original = builtins._register_builtin

    def _register_builtin(fn: Any, op: str) -> None:
        _KEPT.append(fn)
        original(fn, op)

    setattr(_register_builtin, _MARK, True)
    for namespace in list(vars(torch.ops).values()):
        if isinstance(namespace, torch._ops._OpNamespace):
            _KEPT.extend(packet._op for packet in list(vars(namespace).values())
                         if isinstance(packet, torch._ops.OpOverloadPacket))
    builtins._register_builtin = _register_builtin
