"""What the bench parts share: timing (wall and CPU), memory probes, the machine's load,
pool resizing, the environment of the subprocesses it starts, and a project copy (which
the tests use too)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import yaml

from igds.core.artifacts import atomic_file, write_json
from igds.core.data import Record
from igds.params import dump_params, read_params

ROOT = Path(__file__).resolve().parents[1]  # the project: bench/ sits beside igds/ and pipelines/


@contextlib.contextmanager
def stopwatch() -> Iterator[dict]:
    """Yield a dict that gets `wall_s` and `cpu_s` (CPU time of every thread of this process).

    cpu_s / (wall_s x torch threads) below 1 means the threads waited: for the CPU (another
    job on the machine) or for Python between kernels.
    """
    out: dict = {}
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield out
    finally:
        out["wall_s"] = round(time.perf_counter() - wall, 4)
        out["cpu_s"] = round(time.process_time() - cpu, 4)


def machine() -> str:
    """The machine a bench result was measured on, for its report's heading."""
    import platform  # noqa: PLC0415

    return f"{os.cpu_count()} CPU cores, {platform.machine()}"


def interleaved(run, names: Sequence, repeats: int) -> dict:
    """{name: [the wall seconds `run(name)` returned, per repeat]}, the order of `names` reversed
    every other repeat, so a drift of the machine's speed falls on each alike."""
    walls: dict = {name: [] for name in names}
    for r in range(repeats):
        for name in (list(names) if r % 2 == 0 else list(names)[::-1]):
            walls[name].append(run(name))
    return walls


def file_hash(path: Path) -> str:
    """A short content hash of a file: what a bench's resume record keys its inputs by."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def write_report(out: Path, doc: dict, markdown) -> None:
    """`doc` to `out` (JSON) and `markdown(doc)` beside it (.md), each atomically; the markdown printed."""
    write_json(out, doc)
    text = markdown(doc)
    with atomic_file(out.with_suffix(".md")) as f:
        f.write(text)
    print(text)


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages (runnable processes, all users)."""
    return [round(x, 2) for x in os.getloadavg()]


def peak_rss_bytes() -> int:
    """ru_maxrss of this process: its resident-memory high-water mark since it started."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def proc_status() -> dict[str, int]:
    """VmRSS (now) and VmHWM (the high-water mark, resettable) of this process in bytes; {} off Linux."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0: write 5 to clear_refs).

    ru_maxrss is not reset; VmHWM read afterwards is the peak since this call.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def resize_pool(pool: Sequence[Record], n: int) -> list[Record]:
    """The first n records of the pool (prepare already mixed it); beyond its size the pool is
    repeated, each copy with distinct ids (`<id>~<copy>`), so the token lengths keep the
    pool's distribution."""
    if not pool:
        raise ValueError("the pool is empty")
    if n <= len(pool):
        return list(pool[:n])
    out = list(pool)
    for i in range(len(pool), n):
        rec = pool[i % len(pool)]
        out.append(replace(rec, id=f"{rec.id}~{i // len(pool)}"))
    return out


def subprocess_env() -> dict[str, str]:
    """Offline (no hub, no DVC analytics) and this interpreter's scripts (dvc) first on PATH. Subprocesses run
    `python -m ...` from the project folder they measure, which puts that folder first on
    sys.path."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "DVC_NO_ANALYTICS": "1", "PATH": path}


def project_copy(work: Path, params: Path, env: dict[str, str] | None = None,
                 files: dict[str, str] | None = None) -> Path:
    """The project's code and stage graph in a fresh git + DVC repo at `work`, with `params` (a
    whole params file, or a profile of overrides: configs/<name>.yaml) as its params.yaml and
    that file's run list as its graph.yaml, computed by the copy's own code after `files`
    ({relative path: text}, e.g. a new selector's module) are written (git and dvc run with `env`,
    default: this process's environment)."""
    work.mkdir(parents=True)
    for item in ("igds", "pipelines", "baselines", "dvc.yaml", ".dvcignore"):
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, work / item, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy(src, work / item)
    if "include" not in (yaml.safe_load(params.read_text(encoding="utf-8")) or {}):  # whole params: its text as it is
        shutil.copy(params, work / "params.yaml")
    else:  # a profile: its whole params (its overrides on what it includes)
        (work / "params.yaml").write_text(dump_params(read_params(params)), encoding="utf-8")
    for name, text in (files or {}).items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text, encoding="utf-8")
    runs = subprocess.run([sys.executable, "-m", "pipelines.graph"], cwd=work, capture_output=True, text=True,
                          env={**(env or os.environ), "PYTHONPATH": str(work)})  # its stage graph, from its params
    if runs.returncode != 0:
        raise RuntimeError(f"python -m pipelines.graph in {work}: {runs.stderr.strip()}")
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=work, check=True, capture_output=True, env=env)
    if (ROOT / ".dvc" / "plots").is_dir():  # the plot templates dvc.yaml names
        shutil.copytree(ROOT / ".dvc" / "plots", work / ".dvc" / "plots", dirs_exist_ok=True)
    return work


def mb(n_bytes: float | None) -> float | None:
    return None if n_bytes is None else round(n_bytes / 2**20, 1)


def _cpu_now() -> tuple[float, float, float]:
    """(wall clock, CPU seconds every process on the machine spent busy, CPU seconds of this
    process and its waited-for children)."""
    busy = float("nan")
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        busy = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # user..steal; guest is inside user
    t = os.times()
    return time.perf_counter(), busy, t.user + t.system + t.children_user + t.children_system


class CpuShare:
    """How much of the machine's CPU went to other processes while a block ran.

    other_cores = (busy CPU seconds of the whole machine - this process's and its children's)
    / wall seconds: 0 on an idle machine, ~1 when another job kept one core busy.
    """

    def __init__(self) -> None:
        self.start = _cpu_now()
        self.loadavg_start = loadavg()

    def summary(self) -> dict:
        wall, busy, own = (b - a for a, b in zip(self.start, _cpu_now()))
        other = max(busy - own, 0.0)
        return {"wall_s": round(wall, 2), "machine_busy_core_s": round(busy, 1), "own_core_s": round(own, 1),
                "other_core_s": round(other, 1), "other_cores": round(other / wall, 2) if wall > 0 else None,
                "loadavg_start": self.loadavg_start, "loadavg_end": loadavg()}
