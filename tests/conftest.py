"""Shared pytest options and fixtures for the simulation benches.

--sim icarus|verilator|both   which simulators the cocotb benches run on (default both; a missing one is skipped
                              with the reason)
--waves                       write an FST wave file for every cocotb bench run (path printed in the test output)
"""

import importlib.util
from pathlib import Path

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("bsnn-hw simulation")
    group.addoption("--sim", action="store", default="both", choices=("icarus", "verilator", "both"),
                    help="simulator(s) for the cocotb benches (default: both)")
    group.addoption("--waves", action="store_true", default=False, help="write FST waves for every cocotb bench run")


def pytest_collection_modifyitems(config, items):
    """`slow` tests run only when asked for (`-m slow`, as `make test-slow` does): the default suite stays lean."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow regression: run with `pytest -m slow` (make test-slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_generate_tests(metafunc):
    if "sim" in metafunc.fixturenames:
        choice = metafunc.config.getoption("--sim")
        sims = ["icarus", "verilator"] if choice == "both" else [choice]
        metafunc.parametrize("sim", sims, indirect=True)


@pytest.fixture
def sim(request):
    from bsnn_hw.sim.runner import simulator_missing
    name = request.param
    reason = simulator_missing(name)
    if reason:
        pytest.skip(f"{name}: {reason}")
    return name


@pytest.fixture(scope="session")
def sim_cache():
    """Build cache of the cocotb benches: the product's own (bsnn_hw.io.cache_dir: $BSNN_HW_CACHE/sim, else
    ~/.cache/bsnn-hw/sim), kept between runs so a rerun does not rebuild; per xdist worker inside."""
    from bsnn_hw.io import cache_dir
    return cache_dir("sim")


@pytest.fixture
def waves(request):
    return request.config.getoption("--waves")


@pytest.fixture
def in_forked_child():
    """``run(target, *args)``: call ``target(*args, queue)`` in a forked child process (as a multiprocessing worker
    is made) and return what it put on ``queue``; a child that hangs fails the test after 60 s and is killed."""
    import multiprocessing

    def run(target, *args, timeout=60):
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=target, args=(*args, queue))
        child.start()
        try:
            return queue.get(timeout=timeout)
        finally:
            child.join(timeout=5)
            if child.is_alive():
                child.kill()
    return run


@pytest.fixture
def load_bench():
    """A script of bench/ as a module (bench/ is not a package): ``load_bench("decision_bound")``."""
    def load(name: str):
        path = Path(__file__).resolve().parent.parent / "bench" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load
