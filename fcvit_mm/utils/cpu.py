# Copyright (c) fcvit-mm contributors. Licensed under the Apache License 2.0.
"""What this CPU can do in bfloat16.

A CPU runs bf16 natively when it has the AVX-512 bf16 dot products
(``avx512_bf16``) or the AMX matrix engine (``amx_bf16``, 4th-generation
Xeon and later); oneDNN and OpenVINO then use them for convolutions and
matrix products. Without either, bf16 is emulated with float32 arithmetic
and conversions, slower than float32 itself, so mixed precision and bf16
deployment fall back to float32 there (:func:`bf16_support`).

``FCVIT_MM_CPU_BF16=0`` makes this process behave as on a CPU without bf16
(e.g. to compare, or to keep float32 on a bf16 CPU); ``=1`` claims support.
"""
import os
from typing import FrozenSet, NamedTuple, Optional

#: the flags (of /proc/cpuinfo) that give native bf16
BF16_FLAGS = ('amx_bf16', 'avx512_bf16')
#: the flags that the tools print
SHOWN_FLAGS = ('amx_tile', 'amx_bf16', 'amx_int8', 'avx512_bf16',
               'avx512f')
ENV = 'FCVIT_MM_CPU_BF16'


def cpu_flags(cpuinfo: Optional[str] = None) -> FrozenSet[str]:
    """The CPU's feature flags: those of the first ``flags`` line of
    ``cpuinfo`` (the text of /proc/cpuinfo; read from there by default, an
    empty set where it does not exist)."""
    if cpuinfo is None:
        try:
            with open('/proc/cpuinfo') as f:
                cpuinfo = f.read()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(':')
        if key.strip() == 'flags':
            return frozenset(value.split())
    return frozenset()


class Bf16Support(NamedTuple):
    """Whether bf16 runs natively here (``native``) and, in words, why
    (``reason``: the flags found, or what is missing)."""
    native: bool
    reason: str


def bf16_support(cpuinfo: Optional[str] = None) -> Bf16Support:
    """Whether this CPU runs bf16 natively (see the module doc); the
    ``FCVIT_MM_CPU_BF16`` environment variable overrides the flags."""
    forced = os.environ.get(ENV)
    if forced in ('0', '1'):
        return Bf16Support(forced == '1', f'{ENV}={forced}')
    flags = cpu_flags(cpuinfo)
    found = [f for f in BF16_FLAGS if f in flags]
    if found:
        return Bf16Support(True, 'the CPU has ' + ' and '.join(found))
    return Bf16Support(
        False, 'the CPU has neither ' + ' nor '.join(BF16_FLAGS) +
        ' (bf16 would be emulated, slower than float32)')


def describe_cpu(cpuinfo: Optional[str] = None) -> str:
    """One line for a benchmark's header: the bf16-related flags present
    and absent, and the verdict of :func:`bf16_support`."""
    flags = cpu_flags(cpuinfo)
    marks = ' '.join(f + ('+' if f in flags else '-') for f in SHOWN_FLAGS)
    support = bf16_support(cpuinfo)
    verdict = 'native bf16' if support.native else 'no native bf16'
    return f'CPU flags: {marks}; {verdict} ({support.reason})'
