"""The benchmark stage: baseline and compressed files timed together on LiteRT."""

import os

from tfprune.pipeline.stage import Stage
from tfprune.pipeline.stages.baseline import BASELINE
from tfprune.pipeline.stages.export import compared, tflite_files
from tfprune.pipeline.stages.shrink import SHRINK


def _benchmark(context):
    from tfprune import bench

    config = context.config
    # Every file of the run, interleaved: the report chooses the file to ship on these.
    names = compared(config)
    timed = (*names, *(n for n in tflite_files(config) if n not in names))
    comparison = bench.compare(*(str(context.folder / name) for name in timed),
                               threads=config.bench_threads, batch_size=config.bench_batch_size,
                               runs=config.bench_runs, warmup=config.bench_warmup,
                               delegates=("xnnpack",))
    base, comp = comparison.timing(0), comparison.timing(1)
    # The per-round ratio's median: slow spells of a shared machine cancel out.
    speedup = comp.speedup
    conditions = {"threads": config.bench_threads, "batch_size": config.bench_batch_size,
               "rounds": config.bench_runs, "cpu_count": os.cpu_count(),
               "load_average": list(os.getloadavg())}
    files = {names[0]: {"latency_us": base.median_us, "delegate": base.delegate_used},
             names[1]: {"latency_us": comp.median_us, "delegate": comp.delegate_used,
                        "speedup": speedup, "speedup_over": names[0], **conditions}}
    for i, name in enumerate(timed[2:], start=2):
        t = comparison.timing(i)
        files[name] = {"latency_us": t.median_us, "delegate": t.delegate_used,
                       "speedup": t.speedup, "speedup_over": names[0], **conditions}
    ratio = f"{speedup:.1f}x faster"
    if speedup < 1:  # reported as slower, with what the files show
        macs = tuple(context.results.get(s.name, {}).get("macs") for s in (BASELINE, SHRINK))
        why = bench.slower.reason(base, comp, macs if None not in macs else None)
        files[names[1]].update(slower=True, slower_reason=why)
        ratio = f"{1 / speedup:.1f}x SLOWER: {why}"
    return [], {"files": files, "comparison": comparison.to_dict()}, (
        f"latency {base.median_us:.1f} -> {comp.median_us:.1f} us "
        f"({ratio}, {config.bench_threads} thread(s), {comp.delegate_used})")


BENCHMARK = Stage("benchmark", _benchmark, reads=lambda config: tuple(tflite_files(config)),
                  keys=("bench_threads", "bench_runs", "bench_warmup", "bench_batch_size"))
