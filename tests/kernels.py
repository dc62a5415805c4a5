"""The tests that compare two code paths, run again under other BLAS kernels and SIMD levels.

OpenBLAS picks its kernels by CPU, and a machine may force one with ``OPENBLAS_CORETYPE``;
numpy picks its SIMD loops by CPU too (``NPY_DISABLE_CPU_FEATURES`` turns them off). A test
that passes on one CPU only proves nothing about the next, so ``make test`` reruns the tests
marked ``numerics`` under each kernel this CPU can run (never one it lacks: forcing an
AVX-512 kernel on a CPU without it crashes) and with numpy's dispatched SIMD off.

Run as ``python tests/kernels.py [pytest args]``; exits non-zero when any run fails.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

# OpenBLAS kernels and the CPU flags they need (Prescott: SSE3, which every x86-64 CPU has).
# Haswell is the kernel whose sums depend on the batch (as Zen's do); Prescott's do not.
_X86_KERNELS = (("Prescott", {"pni"}), ("Haswell", {"avx2", "fma"}))


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            line = next((line for line in cpuinfo if line.startswith("flags")), "")
    except OSError:
        return set()
    return set(line.partition(":")[2].split())


def environments() -> list[dict[str, str]]:
    """Settings to run under besides the machine's own: each OpenBLAS kernel this CPU can
    run, and numpy without its dispatched SIMD loops."""
    from numpy._core import _multiarray_umath as umath

    envs = []
    if platform.machine() in ("x86_64", "AMD64"):
        flags = _cpu_flags()
        envs += [{"OPENBLAS_CORETYPE": name} for name, needs in _X86_KERNELS
                 if needs <= flags]
    if umath.__cpu_dispatch__:
        envs.append({"NPY_DISABLE_CPU_FEATURES": " ".join(umath.__cpu_dispatch__)})
    return envs


def main(argv: list[str]) -> int:
    failed = []
    for env in environments():
        shown = " ".join(f"{k}='{v}'" for k, v in env.items())
        print(f"== numerics tests with {shown}", flush=True)
        run = subprocess.run([sys.executable, "-m", "pytest", "-m", "numerics", "-q",
                              "-p", "no:cacheprovider", *argv],
                             env={**os.environ, **env}, check=False)
        if run.returncode != 0:
            failed.append(shown)
    if failed:
        print(f"numerics tests failed with: {'; '.join(failed)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
