"""`rnn_jax.keep_freed_memory`: a block freed and allocated again reuses its pages instead of
faulting fresh ones in (what each XLA execution on a CPU does with its buffers)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

# in a fresh process: the setting is process-wide, and the default behaviour is measured first
SCRIPT = """
import ctypes, ctypes.util, json, resource
from rnn_jax.host import keep_freed_memory

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
SIZE = 64 << 20  # above the largest size glibc ever keeps in its heap by default (32 MiB)

def faults_of_reuse(rounds=3):
    def use():
        block = libc.malloc(SIZE)
        ctypes.memset(block, 1, SIZE)
        libc.free(block)
    use()  # the first use may grow the heap
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        use()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

default = faults_of_reuse()
kept = keep_freed_memory()
print(json.dumps({"default": default, "kept": kept, "after": faults_of_reuse(), "pages": 3 * SIZE // 4096}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_reused_without_page_faults():
    result = json.loads(
        subprocess.run(
            [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1]
        ).stdout
    )
    assert result["kept"]
    # by default every use faults its 64 MiB in again (unless the kernel backs it with huge pages)
    assert result["after"] < 0.05 * result["pages"], result


def test_returns_false_where_it_cannot_apply(monkeypatch):
    from rnn_jax import host

    monkeypatch.setattr(host.sys, "platform", "darwin")
    assert host.keep_freed_memory() is False
