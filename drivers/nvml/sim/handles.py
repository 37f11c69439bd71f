"""Handle encoding and ctypes helpers for the simulated library.

pynvml's handles are ctypes pointers (``c_nvmlDevice_t`` etc.) that the simulator never
dereferences; their *address value* encodes what they refer to::

    bits 48-63  0x51A7 (marker, so a stray pointer is never mistaken for a handle)
    bits 40-47  kind: 1 GPU, 2 MIG device, 3 GPU instance, 4 compute instance, 5 event set
    bits 24-39  GPU index (event sets: the event-set id in bits 0-39)
    bits 12-23  GPU-instance id
    bits  0-11  compute-instance id

Out-parameters (``byref(c_nvmlDevice_t())``) are filled by writing that value into the pointer's
storage with ``ctypes.memmove``.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

from drivers.nvml.sim.codes import INVALID_ARGUMENT, NvmlFail

MARKER = 0x51A7
GPU, MIG, GI, CI, EVENT_SET = 1, 2, 3, 4, 5


@dataclass(frozen=True)
class Handle:
    kind: int
    gpu: int = 0
    gi: int = 0
    ci: int = 0

    def encode(self) -> int:
        return (MARKER << 48) | (self.kind << 40) | (self.gpu << 24) | (self.gi << 12) | self.ci


def event_set_value(set_id: int) -> int:
    return (MARKER << 48) | (EVENT_SET << 40) | set_id


def pointer_value(obj: Any) -> int | None:
    if obj is None:
        return None
    if isinstance(obj, int):
        return obj
    target = getattr(obj, "_obj", obj)  # byref(handle) passed by mistake still works
    return ctypes.cast(target, ctypes.c_void_p).value


def decode(obj: Any, *kinds: int) -> Handle:
    v = pointer_value(obj)
    if v is None or v >> 48 != MARKER:
        raise NvmlFail(INVALID_ARGUMENT)
    kind = (v >> 40) & 0xFF
    if kinds and kind not in kinds:
        raise NvmlFail(INVALID_ARGUMENT)
    if kind == EVENT_SET:
        return Handle(kind, gpu=v & 0xFF_FFFF_FFFF)
    return Handle(kind, (v >> 24) & 0xFFFF, (v >> 12) & 0xFFF, v & 0xFFF)


def target(ref: Any) -> Any:
    """The ctypes object behind ``byref(x)``, ``pointer(x)`` or ``x`` itself."""
    if ref is None:
        raise NvmlFail(INVALID_ARGUMENT)
    if hasattr(ref, "_obj"):
        return ref._obj
    if isinstance(ref, ctypes._Pointer):
        return ref.contents
    return ref


def write_pointer_at(address: int, value: int) -> None:
    ctypes.memmove(address, ctypes.byref(ctypes.c_uint64(value)), ctypes.sizeof(ctypes.c_void_p))


def write_pointer(ref: Any, value: int) -> None:
    write_pointer_at(ctypes.addressof(target(ref)), value)


def write_pointer_field(struct: Any, field: str, value: int) -> None:
    write_pointer_at(ctypes.addressof(struct) + getattr(type(struct), field).offset, value)


def write_pointer_array(array: Any, index: int, value: int) -> None:
    arr = target(array)
    write_pointer_at(ctypes.addressof(arr) + index * ctypes.sizeof(ctypes.c_void_p), value)


def set_value(ref: Any, value: int) -> None:
    target(ref).value = value


def as_int(x: Any) -> int:
    if isinstance(x, int):
        return x
    t = target(x)
    return int(t.value)


def as_bytes(x: Any) -> bytes:
    if isinstance(x, bytes):
        return x
    if isinstance(x, str):
        return x.encode()
    v = getattr(x, "value", None)
    if isinstance(v, bytes):
        return v
    raise NvmlFail(INVALID_ARGUMENT)


def is_null(x: Any) -> bool:
    return x is None or (isinstance(x, int) and x == 0)
