"""host_memory.tune: XLA CPU's per-step temporaries stop page-faulting once it is applied."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = r"""
import resource, sys
from rnnjax import host_memory
tuned = host_memory.tune()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.sort((x @ x.T).reshape(-1))[::7].sum())  # 2048 x 2048 f32 temporaries (16 MB)
x = jnp.ones((2048, 8)) * jnp.arange(2048.0)[:, None]
for _ in range(3):
    f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    f(x).block_until_ready()
print(tuned, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


def _probe(malloc: str | None) -> tuple[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["JAX_PLATFORMS"] = "cpu"
    if malloc is not None:
        env["RNNJAX_MALLOC"] = malloc
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    tuned, faults = out.stdout.split()
    return tuned, float(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_tuned_process_reuses_heap_pages():
    tuned, faults = _probe(None)
    default, default_faults = _probe("default")
    assert (tuned, default) == ("True", "False")
    assert default_faults > 4000  # over 16 MB of fresh pages per call under glibc's defaults
    assert faults < default_faults / 3  # (the sort keeps a few scratch pages of its own)
