#!/usr/bin/env python3
"""Turns the JSON written by `kernattn_compare` into SVG plots.

Usage:
    python3 bench/plot_comparison.py RESULTS.json OUTPUT_DIR

Writes into OUTPUT_DIR (created if missing):
  compare_throughput.svg      GFLOP/s of the exact-kernel rows against N, one line per
                              (kernel, magnitude), one panel per mask, for the most common
                              (scalar, d, threads) of those rows (named in the title);
  compare_linear_speedup.svg  the speed-up of each linear-engine row over the exact softmax
                              row (magnitude none) with the same N, d, scalar, mask and threads,
                              against N, one panel per mask, with a dashed line at 1;
  compare_error_vs_m.svg      the relative error of each (estimator, inputs) of the "accuracy"
                              list against M, with a line proportional to M^(-1/2), and its
                              time per call against M beside the exact softmax's.

A plot whose rows are absent is skipped with a note on stderr. It prints the paths written.
Exit status: 0; 2 (with a one-line message on stderr) for a bad command line, a file it cannot
read or JSON that is not what `kernattn_compare` writes. matplotlib is optional: without it the
script says so on stderr and exits 0 (on Debian, `apt-get install python3-matplotlib` installs it
for /usr/bin/python3). Regenerating from the same JSON gives byte-identical SVG files.
"""
import json
import os
import statistics
import sys
from collections import Counter

PROG = "plot_comparison.py"
NO_MATPLOTLIB = (f"{PROG}: matplotlib is not installed (apt-get install python3-matplotlib): "
                 "no plots written")

# kernattn_compare writes null for a measurement that is not finite: that point is not drawn.
TYPES = {"string": str, "number": (int, float), "number or null": (int, float, type(None))}
ROW_FIELDS = {"family": "string", "kernel": "string", "magnitude": "string", "mask": "string",
              "scalar": "string", "n": "number", "d": "number", "m": "number", "threads": "number",
              "time_ms": "number or null", "gflops": "number or null"}
ACCURACY_FIELDS = {"estimator": "string", "inputs": "string", "m": "number", "n": "number",
                   "d": "number", "relative_error": "number or null", "time_ms": "number or null",
                   "exact_time_ms": "number or null"}
SETUP = ("scalar", "d", "threads")

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
MARKERS = "osD^vP*"
DASHES = ("--", ":", "-.")
REFERENCE_STYLE = {"color": "0.25", "linewidth": 1.5, "zorder": 1}
PANEL_SIZE = (3.8, 3.4)
LEGEND_ROWS = 12


class Skipped(Exception):
    """A plot whose data are absent from the results."""


def note(message):
    print(f"{PROG}: {message}", file=sys.stderr)


def checked(data, name, fields):
    """The list `name` of the results (empty when absent), each record checked for `fields`."""
    records = data.get(name, [])
    if not isinstance(records, list):
        raise ValueError(f"'{name}' is not a list")
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"{name}[{index}] is not an object")
        for key, kind in fields.items():
            value = record.get(key)
            if isinstance(value, bool) or not isinstance(value, TYPES[kind]):
                raise ValueError(f"{name}[{index}]: '{key}' is missing or not a {kind}")
    return records


def load(path):
    """The "rows" and "accuracy" lists of the results file."""
    with open(path, encoding="utf-8") as file:
        data = json.load(file)
    if not isinstance(data, dict):
        raise ValueError("the top level is not an object")
    return checked(data, "rows", ROW_FIELDS), checked(data, "accuracy", ACCURACY_FIELDS)


def positive(value):
    """Whether a measurement can be drawn (on a log axis too): not null, above 0."""
    return value is not None and value > 0


def first_seen(values):
    """The distinct values, in order of first appearance."""
    return list(dict.fromkeys(values))


def most_common(records, fields):
    """The most frequent tuple of `fields` among `records` (the first seen on a tie)."""
    return Counter(tuple(r[f] for f in fields) for r in records).most_common(1)[0][0]


def with_setup(records, setup):
    return [r for r in records if tuple(r[f] for f in SETUP) == setup]


def setup_text(setup):
    scalar, d, threads = setup
    if threads == 0:
        return f"{scalar}, d = {d}, OpenMP default threads"
    return f"{scalar}, d = {d}, {threads} thread{'s' if threads != 1 else ''}"


def mask_order(mask):
    """Sort key of the masks: none, causal, the windows by width, then anything else."""
    if mask in ("none", "causal"):
        return (0 if mask == "none" else 1, 0)
    try:
        return (2, float(mask.removeprefix("window:")))
    except ValueError:
        return (3, mask)


def line_styles(keys, solid):
    """matplotlib keywords of each line key (a tuple of strings): a colour and marker per key
    less its last element, solid when that last element is `solid`, dashed otherwise. The keys
    come back sorted by colour, then solid first."""
    colours = first_seen(k[:-1] for k in keys)
    dashes = [v for v in first_seen(k[-1] for k in keys) if v != solid]

    def style(key):
        index = colours.index(key[:-1])
        dash = "-" if key[-1] == solid else DASHES[dashes.index(key[-1]) % len(DASHES)]
        return {"color": COLOURS[index % len(COLOURS)], "marker": MARKERS[index % len(MARKERS)],
                "linestyle": dash, "linewidth": 1.5, "markersize": 4.5}

    def rank(key):
        return colours.index(key[:-1]), -1 if key[-1] == solid else dashes.index(key[-1])

    return {key: style(key) for key in sorted(keys, key=rank)}


def plot_lines(axis, records, line_key, x, y, styles):
    """One line of y against x per line key that `records` hold."""
    for key, style in styles.items():
        points = sorted((r[x], r[y]) for r in records if line_key(r) == key and positive(r[y]))
        if points:
            xs, ys = zip(*points)
            axis.plot(xs, ys, label=", ".join(key), **style)


def log2_axis(axis, values, label):
    """A log2 x axis ticked at `values`, written as integers."""
    from matplotlib import ticker
    axis.set_xscale("log", base=2)
    axis.set_xticks(values, [f"{v:g}" for v in values])
    axis.xaxis.set_minor_locator(ticker.NullLocator())
    axis.set_xlabel(label)


def new_figure(panels, title, sharey):
    from matplotlib import pyplot
    figure, axes = pyplot.subplots(1, panels, squeeze=False, sharey=sharey,
                                   figsize=(PANEL_SIZE[0] * panels, PANEL_SIZE[1]))
    figure.suptitle(title)
    return figure, list(axes[0])


def log_y_axis(axis):
    """A log y axis ticked at 1, 2 and 5 times the powers of ten, written as plain numbers."""
    from matplotlib import ticker
    axis.set_yscale("log")
    axis.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1, 2, 5)))
    axis.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.yaxis.set_minor_formatter(ticker.NullFormatter())


def add_legend(figure, axes, title):
    """One legend for all panels, right of them so that it covers no data (in columns of at
    most LEGEND_ROWS entries)."""
    handles = {}
    for axis in axes:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    figure.tight_layout()
    figure.legend(handles.values(), handles.keys(), loc="center left",
                  bbox_to_anchor=(1.0, 0.5), frameon=False, title=title,
                  ncol=-(-len(handles) // LEGEND_ROWS))


def panels_by_mask(records, line_key, solid, y, title):
    """A figure with one panel per mask of `records`, y against N per line key."""
    masks = sorted(first_seen(r["mask"] for r in records), key=mask_order)
    ns = sorted(first_seen(r["n"] for r in records))
    styles = line_styles(first_seen(line_key(r) for r in records), solid)
    figure, axes = new_figure(len(masks), title, sharey=True)
    for axis, mask in zip(axes, masks):
        plot_lines(axis, [r for r in records if r["mask"] == mask], line_key, "n", y, styles)
        log2_axis(axis, ns, "N (tokens)")
        axis.set_title(f"mask: {mask}", fontsize="medium")
        axis.grid(True, which="both", alpha=0.3)
    return figure, axes


def throughput_figure(rows):
    exact = [r for r in rows if r["family"] == "exact"]
    if not exact:
        raise Skipped("no exact-kernel rows")
    setup = most_common(exact, SETUP)
    figure, axes = panels_by_mask(
        with_setup(exact, setup), lambda r: (r["kernel"], r["magnitude"]), "none", "gflops",
        f"Exact kernels: throughput ({setup_text(setup)})")
    axes[0].set_ylabel("GFLOP/s")
    axes[0].set_ylim(bottom=0)
    add_legend(figure, axes, "kernel, magnitude")
    return figure


def softmax_key(row):
    return (row["n"], row["d"], row["scalar"], row["mask"], row["threads"])


def speedup_rows(rows):
    """The linear-engine rows that have an exact softmax row to compare with, each with
    "speedup": the time of that softmax row over the row's own."""
    linear = [r for r in rows if r["family"] == "linear"]
    if not linear:
        raise Skipped("no linear-engine rows")
    softmax = {softmax_key(r): r["time_ms"] for r in rows
               if r["family"] == "exact" and r["kernel"] == "softmax" and r["magnitude"] == "none"
               and positive(r["time_ms"])}
    paired = [dict(r, speedup=softmax[softmax_key(r)] / r["time_ms"])
              for r in linear if softmax_key(r) in softmax and positive(r["time_ms"])]
    if len(paired) < len(linear):
        note(f"{len(linear) - len(paired)} linear-engine rows have no time or no timed exact "
             "softmax row with the same n, d, scalar, mask and threads: left out of the speed-up "
             "plot")
    if not paired:
        raise Skipped("no linear-engine row has an exact softmax row to compare with")
    return paired


def speedup_figure(rows):
    paired = speedup_rows(rows)
    setup = most_common(paired, SETUP)
    figure, axes = panels_by_mask(
        with_setup(paired, setup), lambda r: (r["kernel"], str(r["m"]), r["magnitude"]),
        "none", "speedup", f"Linear engine: speed-up over exact softmax ({setup_text(setup)})")
    for axis in axes:
        axis.axhline(1, linestyle="--", label="exact softmax (= 1)", **REFERENCE_STYLE)
    log_y_axis(axes[0])
    axes[0].set_ylabel("speed-up (exact softmax time / time)")
    add_legend(figure, axes, "kernel, M, magnitude")
    return figure


def error_reference(axis, records):
    """A line ∝ M^(-1/2), starting below the smallest error at the smallest M."""
    measured = [r for r in records if positive(r["relative_error"])]
    if not measured:
        return
    ms = sorted(first_seen(r["m"] for r in measured))
    anchor = min(r["relative_error"] for r in measured if r["m"] == ms[0]) / 1.5
    axis.plot(ms, [anchor * (ms[0] / m) ** 0.5 for m in ms], linestyle="--",
              label=r"$\propto M^{-1/2}$", **REFERENCE_STYLE)


def equal_weights(axis, records):
    """Dotted lines at the error of equal weights on every key, per input distribution: an
    estimate above its line says nothing about the kernel."""
    for dashes, inputs in zip(DASHES[1:] + DASHES, first_seen(r["inputs"] for r in records)):
        errors = [r.get("uniform_error") for r in records if r["inputs"] == inputs]
        errors = [e for e in errors if positive(e)]
        if errors:
            axis.axhline(statistics.median(errors), linestyle=dashes, color="0.55", linewidth=1,
                         label=f"equal weights ({inputs}, median)", zorder=1)


def estimator_key(record):
    return (record["estimator"], record["inputs"])


def error_figure(accuracy):
    if not accuracy:
        raise Skipped("no accuracy rows")
    n, d = most_common(accuracy, ("n", "d"))
    records = [r for r in accuracy if (r["n"], r["d"]) == (n, d)]
    styles = line_styles(first_seen(estimator_key(r) for r in records), "unit")
    ms = sorted(first_seen(r["m"] for r in records))
    figure, axes = new_figure(2, f"Random-feature estimators (N = {n}, d = {d})", sharey=False)
    plot_lines(axes[0], records, estimator_key, "m", "relative_error", styles)
    error_reference(axes[0], records)
    equal_weights(axes[0], records)
    axes[0].set_title("error against the exact attention estimated", fontsize="medium")
    axes[0].set_ylabel("relative error ‖out − exact‖/‖exact‖")
    plot_lines(axes[1], records, estimator_key, "m", "time_ms", styles)
    exact_times = [r["exact_time_ms"] for r in records if positive(r["exact_time_ms"])]
    if exact_times:
        axes[1].axhline(statistics.median(exact_times), linestyle=":",
                        label="exact softmax (median)", **REFERENCE_STYLE)
    axes[1].set_title("cost", fontsize="medium")
    axes[1].set_ylabel("time per call (ms)")
    for axis in axes:
        log2_axis(axis, ms, "M (random frequencies)")
        log_y_axis(axis)
        axis.grid(True, which="both", alpha=0.3)
    add_legend(figure, axes, "estimator, inputs")
    return figure


def setup_matplotlib():
    """Whether matplotlib is installed; if so, set up for deterministic SVG output."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("svg")
    matplotlib.rcParams.update({"svg.hashsalt": "kernattn", "svg.fonttype": "none"})
    return True


def save(figure, path):
    from matplotlib import pyplot
    figure.savefig(path, format="svg", bbox_inches="tight", metadata={"Date": None})
    pyplot.close(figure)


def main(argv):
    if len(argv) != 3:
        print(f"usage: {PROG} RESULTS.json OUTPUT_DIR", file=sys.stderr)
        return 2
    results, output_dir = argv[1:]
    try:
        rows, accuracy = load(results)
    except OSError as error:
        note(f"cannot read {results}: {error.strerror}")
        return 2
    except json.JSONDecodeError as error:
        note(f"{results} is not valid JSON: {error}")
        return 2
    except ValueError as error:
        note(f"{results}: {error}")
        return 2
    if not setup_matplotlib():
        print(NO_MATPLOTLIB, file=sys.stderr)
        return 0
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as error:
        note(f"cannot create {output_dir}: {error.strerror}")
        return 2
    plots = (("compare_throughput.svg", throughput_figure, rows),
             ("compare_linear_speedup.svg", speedup_figure, rows),
             ("compare_error_vs_m.svg", error_figure, accuracy))
    for name, make, records in plots:
        try:
            figure = make(records)
        except Skipped as reason:
            note(f"{name} not written: {reason}")
            continue
        path = os.path.join(output_dir, name)
        save(figure, path)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
