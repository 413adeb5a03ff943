"""HPL through the HPC Challenge benchmark (`hpcc`): the evaluation's compute probe.

One small HPL problem (order PROBLEM_SIZE, block BLOCK_SIZE) on the cores of one
node, one MPI rank per core on a P x Q grid (P * Q = cores, P <= Q, as square as
possible). `job_script` writes the `hpccinf.txt` and runs hpcc (`mpirun -np <cores>`
for more than one core); `parse_hpccoutf` reads the figures from the summary
section of the `hpccoutf.txt` it writes.

hpcc runs its other kernels too (DGEMM, STREAM, PTRANS, RandomAccess, FFT, the
network tests); it sizes them from the HPL problem, so they stay small, and the
input file asks for no extra PTRANS problems. On a 2-core machine (Debian's hpcc
1.5.0 with the reference BLAS, 2 ranks) N=2000 takes about 2.5 s in all, of which HPL
about 0.65 s (~8 GFLOP/s); N=1000 0.75 s (HPL 0.09 s), 2500 4.7 s, 3000 9.4 s, 4000 17 s.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from adapters.base import JobState
from adapters.transport.framing import quote
from gateway.centers.config import CpuHardware
from gateway.centers.evaluation.burst import _blocker_cores, _node_partition
from gateway.centers.evaluation.context import CheckFailed, Context, Evidence, bounded
from gateway.centers.evaluation.jobs import Job, cancel_unfinished, run_to_end, submit
from gateway.centers.evaluation.models import Figures
from gateway.centers.evaluation.verdict import num, threshold_failures

#: HPL's problem order N and block size NB (the matrix is N x N doubles, 32 MB at 2000).
PROBLEM_SIZE = 2000
BLOCK_SIZE = 128
#: How the job starts one rank per core. `--oversubscribe`: the slots Open MPI reads
#: from the batch system (e.g. Slurm's one task of a `--cpus-per-task` job) may be fewer
#: than the cores the job holds; `--mca plm isolated` does not work in a Slurm job whose
#: node name is not the host's (Open MPI then sees no local node).
MPIRUN = ("mpirun", "--oversubscribe")
#: Where the job script's own lines print what it decided (parsed beside the summary).
MARK = "HPCFED_HPL"
OUTPUT_FILE = "hpccoutf.txt"
INPUT_FILE = "hpccinf.txt"


def process_grid(cores: int) -> tuple[int, int]:
    """(P, Q) with P * Q = cores, P <= Q, P as large as can be (the squarest grid)."""
    if cores < 1:
        raise ValueError(f"cores must be at least 1, got {cores}")
    p = math.isqrt(cores)
    while cores % p:
        p -= 1
    return p, cores // p


def hpccinf(n: int, nb: int, p: int, q: int) -> str:
    """The `hpccinf.txt` of one HPL problem: order `n`, block `nb`, grid `p` x `q`;
    the rest as HPCC's example input (/usr/share/doc/hpcc/examples/_hpccinf.txt), with
    no additional PTRANS problem sizes or block sizes."""
    return _HPCCINF.format(n=n, nb=nb, p=p, q=q)


_HPCCINF = """\
HPLinpack benchmark input file
Innovative Computing Laboratory, University of Tennessee
HPL.out      output file name (if any)
8            device out (6=stdout,7=stderr,file)
1            # of problems sizes (N)
{n:<13}Ns
1            # of NBs
{nb:<13}NBs
0            PMAP process mapping (0=Row-,1=Column-major)
1            # of process grids (P x Q)
{p:<13}Ps
{q:<13}Qs
16.0         threshold
1            # of panel fact
2            PFACTs (0=left, 1=Crout, 2=Right)
1            # of recursive stopping criterium
4            NBMINs (>= 1)
1            # of panels in recursion
2            NDIVs
1            # of recursive panel fact.
1            RFACTs (0=left, 1=Crout, 2=Right)
1            # of broadcast
1            BCASTs (0=1rg,1=1rM,2=2rg,3=2rM,4=Lng,5=LnM)
1            # of lookahead depth
1            DEPTHs (>=0)
2            SWAP (0=bin-exch,1=long,2=mix)
64           swapping threshold
0            L1 in (0=transposed,1=no-transposed) form
0            U  in (0=transposed,1=no-transposed) form
1            Equilibration (0=no,1=yes)
8            memory alignment in double (> 0)
##### This line (no. 32) is ignored (it serves as a separator). ######
0                               Number of additional problem sizes for PTRANS
1200 10000 30000                values of N
0                               number of additional blocking sizes for PTRANS
40 9 8 13 13 20 16 32 64        values of NB
"""


def job_script(
    cores: int,
    *,
    setup: Sequence[str] = (),
    executable: str = "hpcc",
    n: int = PROBLEM_SIZE,
    nb: int = BLOCK_SIZE,
) -> str:
    """The batch script of the probe: the binding's `setup` lines (modules, PATH, ...),
    then HPL on `cores` ranks, or on as many cores as the node shows the job when that
    is fewer (`nproc`: its affinity; a scheduler may count more CPUs than the machine
    has). It prints a `HPCFED_HPL` line (what it ran), then the summary section of
    hpccoutf.txt (all of its last 40 lines when there is none); its exit status is
    hpcc's (or mpirun's)."""
    if cores < 1:
        raise ValueError(f"cores must be at least 1, got {cores}")
    grids = [
        f"  {c}) hpcfed_p={p} hpcfed_q={q} ;;"
        for c in range(1, cores + 1)
        for p, q in [process_grid(c)]
    ]
    run = quote(executable)
    mpirun = " ".join(quote(word) for word in MPIRUN)
    # An unquoted here-document: the shell fills in the grid it chose, nothing else.
    inf = _HPCCINF.format(n=n, nb=nb, p="$hpcfed_p", q="$hpcfed_q")
    said = (
        f"{MARK} requested=$hpcfed_requested node=$hpcfed_node cores=$hpcfed_cores "
        f"grid=${{hpcfed_p}}x$hpcfed_q n={n} nb={nb}"
    )
    lines = [
        "# The access evaluation's compute probe: HPL through hpcc, on one node.",
        *setup,
        f"hpcfed_requested={cores}",
        "hpcfed_cores=$hpcfed_requested",
        "hpcfed_node=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc 2>/dev/null)",
        'if [ "$hpcfed_node" -ge 1 ] 2>/dev/null && [ "$hpcfed_node" -lt "$hpcfed_cores" ]; then',
        "  hpcfed_cores=$hpcfed_node",
        "fi",
        "export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1",
        'case "$hpcfed_cores" in',
        *grids,
        "esac",
        f"rm -f {OUTPUT_FILE}",
        f"cat > {INPUT_FILE} <<HPCFED_HPCCINF",
        inf + "HPCFED_HPCCINF",
        f'echo "{said}"',
        'if [ "$hpcfed_cores" -gt 1 ]; then',
        f'  {mpirun} -np "$hpcfed_cores" {run}',
        "else",
        f"  {run}",
        "fi",
        "hpcfed_status=$?",
        f"if grep -q '^Begin of Summary section' {OUTPUT_FILE} 2>/dev/null; then",
        f"  sed -n '/^Begin of Summary section/,/^End of Summary section/p' {OUTPUT_FILE}",
        f"elif [ -f {OUTPUT_FILE} ]; then",
        f"  tail -n 40 {OUTPUT_FILE}",
        "fi",
        'exit "$hpcfed_status"',
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class HplResult:
    """HPL's figures from hpcc's summary section."""

    gflops: float
    n: int
    nb: int
    nprow: int
    npcol: int
    seconds: float

    @property
    def cores(self) -> int:
        return self.nprow * self.npcol


_PAIR = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(\S*)\s*$")


def summary(text: str) -> dict[str, str]:
    """The `name=value` lines of the last summary section in `text` (hpcc appends to
    an existing hpccoutf.txt, so a file may hold several runs); empty when none."""
    start = text.rfind("Begin of Summary section")
    if start < 0:
        return {}
    pairs: dict[str, str] = {}
    for line in text[start:].splitlines()[1:]:
        if line.startswith("End of Summary section"):
            break
        match = _PAIR.match(line)
        if match:
            pairs[match[1]] = match[2]
    return pairs


def parse_hpccoutf(text: str) -> HplResult:
    """HPL's result from hpccoutf.txt (or the job's output that holds its summary
    section); CheckFailed with the tail of `text` when it has no HPL result."""
    pairs = summary(text)
    try:
        result = HplResult(
            gflops=float(pairs["HPL_Tflops"]) * 1000,
            n=int(pairs["HPL_N"]),
            nb=int(pairs["HPL_NB"]),
            nprow=int(pairs["HPL_nprow"]),
            npcol=int(pairs["HPL_npcol"]),
            seconds=float(pairs["HPL_time"]),
        )
    except (KeyError, ValueError):
        result = None
    if result is None or not (result.gflops > 0 and result.seconds > 0 and result.cores > 0):
        tail = "\n".join(text.strip().splitlines()[-15:])
        why = "no HPL result" if pairs else "no summary section"
        raise CheckFailed(f"hpcc printed {why}; its output ends: {tail[-800:]!r}")
    return result


# ------------------------------------------------------------------ the check


def _hpcc_environment(ctx: Context, partition: str | None = None) -> tuple[list[str], str]:
    """The setup lines and the executable of the center's binding of the application
    `hpcc` (Lmod init, `module use`, `module load`, PATH, environment, the admin's
    lines); ([], "hpcc") where the center binds none: hpcc is then looked for on the
    job's PATH."""
    try:
        from gateway.apps.render import find_binding, setup_lines
    except ImportError:  # a gateway without published applications
        return [], "hpcc"
    config = ctx.center.config
    binding = find_binding(config, "hpcc", None, partition)
    if binding is None:
        return [], "hpcc"
    return setup_lines(config, binding), binding.executable or "hpcc"


def script_said(stdout: str) -> dict[str, str]:
    """The job script's own line, `HPCFED_HPL requested=8 node=2 cores=2 grid=1x2 ...`,
    as a dict; empty when it printed none."""
    for line in stdout.splitlines():
        if line.startswith(MARK + " "):
            return dict(word.split("=", 1) for word in line.split()[1:] if "=" in word)
    return {}


def expect_asked(result: HplResult, said: Mapping[str, str], n: int, nb: int) -> None:
    """CheckFailed when hpcc ran another problem than the one written for it: given an
    input it cannot run (e.g. a grid larger than its ranks) it runs a default of its own."""
    ran = said.get("cores")
    if (result.n, result.nb) == (n, nb) and (ran is None or ran == str(result.cores)):
        return
    raise CheckFailed(
        f"hpcc ran N={result.n} NB={result.nb} on a {result.nprow}x{result.npcol} grid, not "
        f"the problem written for it (N={n} NB={nb} on {ran or '?'} cores, grid "
        f"{said.get('grid', '?')}): it did not take that hpccinf.txt"
    )


def record_figures(figures: Figures, result: HplResult, cpu: CpuHardware | None) -> None:
    """HPL's figures, the peak of the cores it ran on (cores x clock x FLOP per cycle of
    the partition's CPU figures; None without them) and the efficiency against it."""
    figures.kernel = "hpl"
    figures.hpl_gflops = round(result.gflops, 4)
    figures.hpl_cores, figures.hpl_n, figures.hpl_nb = result.cores, result.n, result.nb
    figures.hpl_seconds = round(result.seconds, 4)
    figures.gflops_per_core = round(result.gflops / result.cores, 4)
    peak = result.cores * cpu.clock_ghz * cpu.flops_per_cycle if cpu is not None else None
    figures.peak_gflops = round(peak, 3) if peak is not None else None
    figures.efficiency = round(result.gflops / peak, 4) if peak else None


async def _read(ctx: Context, job: Job, stream: str) -> str:
    chunk = await bounded(
        ctx.adapter.read_output(job.native_id, job.gateway_id, stream), f"reading the {stream}"
    )
    return chunk.data.decode(errors="replace")


async def compute_hpl(ctx: Context, ev: Evidence) -> str:
    """HPL (hpcc) on the cores of one node of the default partition, one rank per core
    (as many as the service login may hold at once, and as the node shows the job);
    its GFLOP/s beside the theoretical peak of those cores."""
    load = await bounded(ctx.power.load(ctx.center_id), "the scheduler's load query")
    partition = _node_partition(
        load.partitions, getattr(ctx.center.config.settings, "default_queue", None)
    )
    cores = await _blocker_cores(ctx, partition, max(60, int(ctx.admission.job_timeout)))
    setup, executable = _hpcc_environment(ctx, partition.name)
    ev.update(
        partition=partition.name,
        cores_per_node=partition.cores_per_node,
        cores_requested=cores,
        executable=executable,
        setup=setup,
    )
    jobs: list[Job] = []
    try:
        job = await submit(
            ctx,
            ev,
            jobs,
            "hpl",
            script=job_script(cores, setup=setup, executable=executable),
            tasks_per_node=cores,  # one rank per core: the slots mpirun reads from the scheduler
            queue=partition.name,
        )
        await run_to_end(ctx, ev, [job])
    finally:
        await cancel_unfinished(ctx, jobs)
    stdout = await _read(ctx, job, "stdout")
    said = script_said(stdout)
    ev["script_said"] = said
    status = job.status
    if status is None or (status.state, status.exit_code) != (JobState.COMPLETED, 0):
        stderr = await _read(ctx, job, "stderr")
        ev.update(stdout=stdout[-2000:], stderr=stderr[-2000:])
        got = f"{status.state.value}/{status.exit_code}" if status else "no status"
        last = (stderr.strip() or stdout.strip())[-600:]
        raise CheckFailed(f"the HPL job ended {got}: {last!r}")
    try:
        result = parse_hpccoutf(stdout)
    except CheckFailed:
        ev["stdout"] = stdout[-2000:]
        raise
    ev["hpl"] = {
        "gflops": result.gflops,
        "n": result.n,
        "nb": result.nb,
        "grid": f"{result.nprow}x{result.npcol}",
        "seconds": result.seconds,
    }
    expect_asked(result, said, PROBLEM_SIZE, BLOCK_SIZE)
    cpu = ctx.center.config.hardware.cpu_of(partition.name)
    figures = ctx.figures
    record_figures(figures, result, cpu)
    ev.update(
        peak_gflops=figures.peak_gflops,
        peak=(
            f"{result.cores} cores x {cpu.clock_ghz:g} GHz x {cpu.flops_per_cycle:g} FLOP/cycle"
            if cpu is not None
            else f"no hardware figures for partition {partition.name}"
        ),
        efficiency=figures.efficiency,
        gflops_per_core=figures.gflops_per_core,
    )
    unmet = threshold_failures(figures, ctx.admission).get("compute.hpl")
    if unmet:
        raise CheckFailed("; ".join(unmet))
    where = f"{result.cores} core(s) ({result.nprow}x{result.npcol})"
    if result.cores < partition.cores_per_node:
        where += f" of a {partition.name} node's {partition.cores_per_node}"
        if said.get("node") == str(result.cores) and cores > result.cores:
            where += f" (the job sees {result.cores})"
    done = (
        f"HPL N={result.n} NB={result.nb} on {where}: {num(figures.hpl_gflops or 0)} GFLOP/s "
        f"in {num(result.seconds)} s"
    )
    if figures.peak_gflops is not None and figures.efficiency is not None:
        done += f", {figures.efficiency:.1%} of their {num(figures.peak_gflops)} GFLOP/s peak"
    return done
