"""Strict JAX for every test: implicit rank promotion is an error (STYLE.md).

Compiled programs go to a persistent compilation cache in a temporary folder that lives for
one pytest run and is shared by its xdist workers: most tests are compile-bound, and many
compile a program another test (or another worker) already compiled. The cache is set here,
in pytest's configuration, so runs outside the tests never see it.

The suite compiles hundreds of small programs and runs each briefly, so XLA's backend
optimisations cost more than they save: the tests compile at optimisation level 0 (same
semantics, no fast-math; about 30% less time for the suite). Set before JAX starts its
backend; subprocesses of the tests inherit it through `XLA_FLAGS`.
"""

import os
import shutil
import tempfile

SUITE_XLA_FLAGS = (
    "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    " --xla_cpu_use_fusion_emitters=false"
)
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {SUITE_XLA_FLAGS}".strip()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

_CACHE_DIR_KEY = "jax_compilation_cache_dir"
_cache_dir = pytest.StashKey[str]()


def pytest_configure(config):
    worker_input = getattr(config, "workerinput", None)
    if worker_input is None:  # the xdist controller, or a run without xdist: make the folder
        cache_dir = config.stash[_cache_dir] = tempfile.mkdtemp(prefix="icl-toy-jax-cache-")
    else:
        cache_dir = worker_input[_CACHE_DIR_KEY]
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    # Cache every program, however small or quick to compile: the suite's are small.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def pytest_collection_modifyitems(config, items):
    """The tests marked `long` first (a stable sort keeps the rest in order): xdist hands
    out tests in this order, and a long test near the end keeps one worker busy while the
    other idles."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist: every worker of this run shares the controller's cache folder."""
    node.workerinput[_CACHE_DIR_KEY] = node.config.stash[_cache_dir]


def pytest_unconfigure(config):
    if _cache_dir in config.stash:
        shutil.rmtree(config.stash[_cache_dir], ignore_errors=True)


@pytest.fixture
def x64():
    """Run the test body in float64 (jax_enable_x64) for round-off-level comparisons."""
    with jax.enable_x64(True):
        yield
