"""The benchmark's page (docs/benchmarks.md): one table row per figure, each with its own caveat, then the notes."""

from __future__ import annotations

from bundle.benchmarks.time_to_f1 import render_row
from bundle.benchmarks.training import render_rows

SECTIONS = ("volume", "training", "time_to_f1", "mining", "deid")


def render(records: dict) -> str:
    """The markdown page from each section's record (bundle/benchmarks/run.py: results, options, command, machine).

    A section that failed or never ran: its row says so. Sections may come from different runs (a GPU session that
    measured only the volume section keeps the CPU run's other rows), so every row names the run it came from."""
    runs: list[tuple[str, str]] = []
    for s in SECTIONS:
        r = records.get(s)
        if r and (r["command"], r["machine"]) not in runs:
            runs.append((r["command"], r["machine"]))

    def part(section: str) -> tuple[dict, dict, str]:
        r = records.get(section) or {"results": {"error": "not run"}, "options": {}}
        tag = f" [run {runs.index((r['command'], r['machine'])) + 1}]" if "command" in r else ""
        return r["results"], r["options"], tag

    (v, vo, vt), (tr, to, tt), (tf, fo, ft), (m, mo, mt), (d, do, dt) = (part(s) for s in SECTIONS)
    rows = ["| what | new vs previous (ratio, > 1 = faster) | detail | peak RSS (MiB) |", "|---|---|---|---|"]
    vrows = _volume_rows(v, _gpu(vo)) if "ratio" in v else [f"| volume inference | not measured | {v.get('error', '')} | - |"]
    rows += _tagged(vrows, vt) + _tagged(render_rows(tr, _gpu(to)), tt) + _tagged([render_row(tf, _gpu(fo))], ft)
    rows += _tagged([_mining_row(m, mo.get("mining_source", ""))], mt) + _tagged([_deid_row(d, _gpu(do))], dt)
    return "\n".join(_head(runs, records) + rows) + "\n\n" + NOTES


def _gpu(options: dict) -> bool:
    return options.get("device") == "cuda"


def _tagged(rows: list[str], tag: str) -> list[str]:
    """Each row's first cell ends with the run it came from."""
    return [r.replace(" | ", f"{tag} | ", 1) if tag else r for r in rows]


def _volume_rows(v: dict, gpu: bool) -> list[str]:
    """Volume inference: the two paths' speed and boxes, start-up, the canonical grid's cost, the network alone."""
    detail = (
        f"{v['slices']} slices in {v['volumes']} volumes; identical boxes: {'yes' if v['identical_boxes'] else 'NO'} ({v['n_boxes']} boxes"
    )
    if not v["identical_boxes"] and "max_box_diff" in v:
        detail += f"; {v['count_mismatches']} volume(s) with another count, max |box diff| {v['max_box_diff']:.2g}, max |score diff| {v['max_score_diff']:.2g}"
    detail += ")"
    if gpu:
        detail += f"; fp32 (TF32 off) {v['new_slices_per_s']:.0f} vs {v['old_slices_per_s']:.0f} slices/s, {v['volume_s']:.3f} s per volume"
        if "amp_slices_per_s" in v:
            detail += f"; AMP {v['amp_slices_per_s']:.0f} slices/s, {v['amp_volume_s']:.3f} s per volume ({v['amp_n_boxes']} boxes)"
    rows = [
        f"| volume inference, slices/s (batched channels-last slices + batch-wise box selection + vectorised scaling vs list of slices + per-slice MONAI scaling) | {v['ratio']:.2f}x | {detail} | {v['peak_rss_mib']:.0f} |"
    ]
    su = f"start-up (imports, config, detector) = {v['startup_in_volumes']:.1f} volumes of inference" + (
        f" ({v['startup_s']:.1f} s)" if gpu else ""
    )
    rows.append(f"| process start-up, reported apart | - | {su} | - |")
    g = v.get("grid")
    if g:
        rows.append(
            f"| volume inference cost, 1 mm 3D volume on the canonical grid {g['grid_spacing']} mm vs the demo volume "
            f"on its own grid (s per volume, < 1 = cheaper) | {g['ratio_iso1mm_over_demo']:.2f}x | "
            f"{g['s_per_volume']['iso1mm_canonical']:.2f} s vs {g['s_per_volume']['demo_native']:.2f} s per volume; "
            f"{g['slices_per_volume']['iso1mm_canonical']} vs {g['slices_per_volume']['demo_native']} slices per volume "
            "(file reading, resampling and detection) | - |"
        )
    ps = v["per_slice"]
    line = f"TorchScript / eager fp32 speed {ps['torchscript_over_fp32']:.2f}x"
    if gpu:
        line += (
            f"; ms per 512x512 slice: fp32 (TF32 off) {ps['fp32_ms']:.2f}, AMP {ps['amp_ms']:.2f}, TorchScript {ps['torchscript_ms']:.2f}"
        )
    rows.append(f"| network on 512x512 slices (batch 16) | {ps['torchscript_over_fp32']:.2f}x | {line} | - |")
    return rows


def _mining_row(m: dict, mining_source: str) -> str:
    """Mining: the lean command against monai.bundle run, whole-command wall time with a cold page cache."""
    if "lean" not in m:
        return f"| mining | not measured in this run | {m.get('skipped') or m.get('error', '')} | - |"
    lean, full = m["lean"], m["monai_bundle_run"]
    detail = (
        f"{m['objects']} objects ({mining_source or 'the generated export'}); lean command: {lean['objects_per_s_cold']:.0f} objects/s "
        f"cold, {lean['objects_per_s_warm']:.0f} warm, whole command {lean['command_wall_s_cold']:.1f} s cold / "
        f"{lean['command_wall_s_warm']:.1f} s warm (start-up {lean['startup_s']:.1f} s); monai.bundle run: "
        f"{full['command_wall_s_cold']:.1f} s cold (start-up {full['startup_s']:.1f} s); page cache dropped: "
        f"{'yes' if lean['cache_dropped'] else 'no'}; same files: {'yes' if m.get('outputs_identical') else 'NO'}; "
        f"load average {m['load_average_before'][0]:.1f} before, {m['load_average'][0]:.1f} after"
    )
    return (
        f"| mining, whole command wall, cold cache (lean `python -m bundle.mining` vs `python -m monai.bundle run`, same config) | "
        f"{full['command_wall_s_cold'] / lean['command_wall_s_cold']:.2f}x | {detail} | {m.get('peak_rss_mib', 0):.0f} |"
    )


def _deid_row(d: dict, gpu: bool) -> str:
    if "ratio" not in d:
        return f"| de-identification | not measured | {d.get('error', '')} | - |"
    detail = f"{d['files']} files" + (f"; {d['deid_files_per_s']:.0f} files/s" if gpu else "")
    return f"| de-identification, files/s (vs a plain pydicom read + write of the same files) | {d['ratio']:.2f}x | {detail} | {d['peak_rss_mib']:.0f} |"


def _head(runs: list[tuple[str, str]], records: dict) -> list[str]:
    lines = [
        "# Benchmarks",
        "",
        "Written by `scripts/benchmark.py` from the section records beside it (`benchmarks.json`); do not edit by hand.",
        "Every ratio was measured side by side in one run (the two paths interleaved, same data, same process; medians",
        "of the timed rounds). Absolute times are given only on a GPU: on the shared 2-core CPU they follow the",
        "neighbours' load, ratios much less so. A run that measured some sections replaces only those rows.",
        "",
    ]
    for i, (command, machine) in enumerate(runs, 1):
        sections = [s for s in SECTIONS if records.get(s) and (records[s]["command"], records[s]["machine"]) == (command, machine)]
        o = records[sections[0]]["options"]
        lines.append(f"- Run {i} ({', '.join(sections)}; {records[sections[0]].get('when', '')}): `{command}`.")
        lines.append(f"  Machine: {machine}. Data: `--size {o.get('size', '?')}` demo generated into a temp dir.")
        if "volume" in sections:
            model = o.get("model") or ""
            lines.append(
                "  Volume inference uses "
                + (
                    f"the weights in {model}"
                    if model
                    else "a seeded untrained network (speed depends on the weights only through the slices with a candidate box)"
                )
                + f"{_volume_setting(records['volume']['results'])}."
            )
    return lines + [""]


def _volume_setting(v: dict) -> str:
    if "context_slices" not in v:
        return ""
    return f", {v['context_slices']} input slice(s), score threshold {v['score_threshold']:.4g}"


NOTES = """Notes
- Time to a validation F1 (bundle/benchmarks/time_to_f1.py): two whole trainings, one per arm, the same seed; on one
  machine both draw the same batches, so the row says whether their F1 curves agreed (then the ratio is the pipeline's).
- Training (bundle/benchmarks/training.py): a step can fall short of the network alone without waiting for data
  when the loader workers and the network share too few cores (the 2-core machine, busy with other jobs);
  with cores to spare the workers take nothing from the network and the waiting share is the whole gap.
- Peak RSS is each section's own subprocess (`resource.getrusage` max RSS), start-up included.
- GPU figures (ms per 512x512 slice with fp32, AMP and TorchScript) appear only with `--device cuda`.
  Run on a GPU machine: `python scripts/benchmark.py --size default --device cuda` (none was lent to a run
  unless its machine line above names one); `scripts/gpu_figures.sh` runs it there with a default-size
  self-training demo. GPU runs so far (an H200, two sessions): docs/benchmarks_gpu.md (the second) and docs/training.md, "On a GPU".
"""
