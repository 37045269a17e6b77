"""`bsnn-hw verify`: the full-network RTL against the golden model on real or random inputs (bsnn_hw.sim.verify)."""
from __future__ import annotations

import click

from bsnn_hw.cli import SEED, UserError, emit_json, load_model, progress_printer
from bsnn_hw.hdl.cli import config_option, decision_options, make_config, map_only_option, select_network


@click.command("verify")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", default=None, metavar="digits|fashion-mnist|PATH",
              help="Test split to run: a data set name or a directory of IDX files. Default: random inputs.")
@click.option("--samples", "-n", default=20, show_default=True, type=click.IntRange(min=1), help="Samples to simulate.")
@click.option("--offset", default=0, show_default=True, type=click.IntRange(min=0), help="First test sample (with --data).")
@click.option("--sim", type=click.Choice(["icarus", "verilator"]), default="verilator", show_default=True)
@click.option("--parallel", "-P", default=None, help="P per layer, e.g. 1,1 (default 1 everywhere).")
@click.option("--width", "-W", default=None, help="W per layer, e.g. 16,16 (default min(16, n_in)).")
@click.option("--stalls", is_flag=True, help="Random valid/ready stalls on every stream (seeded by --seed).")
@click.option("--waves", is_flag=True, help="Write an FST wave file (path in the report).")
@click.option("--seed", default=0, show_default=True, type=SEED, help="Seed of random inputs and stalls.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--plot", "plot_path", default=None, type=click.Path(dir_okay=False),
              help="Write a PNG of hardware against software spike counts per layer.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=0), help="Samples listed in the table.")
@decision_options
@map_only_option
@config_option
@click.pass_context
def verify(ctx, model, data, samples, offset, sim, parallel, width, stalls, waves, seed, as_json, plot_path, limit,
           early_exit, skip_zero, encoder, encoder_lanes, logic_rom_bits, spram, map_only, config_file, events):
    """Run the generated RTL of MODEL on test images (or random inputs) in Icarus or Verilator and compare it bit
    for bit with the golden model: every dense layer's spikes and every conv/pool layer's spike count at every step,
    counts, membranes, class.

    Exits with status 1 if any sample disagrees (the report names the first mismatch: sample, layer, neuron,
    step)."""
    from bsnn_hw.sim import runner, verify as vmod
    net = select_network(load_model(model), map_only)
    if plot_path:
        from bsnn_hw.io import check_output
        check_output(plot_path, "--plot")
    missing = runner.simulator_missing(sim)
    if missing:
        raise UserError(f"--sim {sim}: {missing}")
    try:
        runner.check_cache_path(runner.default_cache_dir(), sim)
    except runner.SimulatorMissing as e:
        raise UserError(str(e)) from None
    cfg = make_config(net, parallel, width, early_exit, skip_zero, encoder, encoder_lanes, config_file, logic_rom_bits,
                      spram, events)
    x, spikes, labels, what = vmod.load_inputs(net, data, samples, seed, offset)
    if not as_json:
        click.echo(f"verify {model}: {'-'.join(map(str, net.sizes))}, T={net.timesteps}, readout={net.readout}, "
                   f"encoding={net.encoding}" + (f", an ensemble of {len(net.ensemble)}" if net.ensemble else "")
                   + f"; {what}; {sim}" + (" with stalls" if stalls else ""), err=True)
    try:
        report = vmod.verify(net, spikes, labels, sim=sim, config=cfg, waves=waves, stalls=stalls, seed=seed, pixels=x,
                             data=data, offset=offset, progress=None if as_json else progress_printer())
    except runner.SimulatorMissing as e:
        raise UserError(str(e)) from None
    report["model"] = str(model)
    report["inputs"] = what
    if plot_path:
        vmod.plot(report, plot_path)
        report["plot"] = str(plot_path)
    if as_json:
        emit_json(report)
    else:
        _print(report, net, limit)
    if report["mismatches"] or report["checked"] < report["samples"]:
        ctx.exit(1)


def _pct(v):
    return "-" if v is None else f"{100 * v:.2f}%"


def _print(r: dict, net, limit: int) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    console = Console(width=max(Console().width, 110))
    nl = len(net.layers)
    ens = f", an ensemble of {r['members']} members (spikes: all members; class: the ensemble's)" \
        if r.get("members", 0) > 1 else ""
    table = Table(title=f"RTL ({r['simulator']}) against the golden model, per sample{ens}")
    for col in ["sample", "label", "hw class", "golden class"] + [f"L{i} spikes hw/sw" for i in range(nl)] + \
               ["cycles", "bit-exact"]:
        table.add_column(col, justify="right")
    for s in r["per_sample"][:limit]:
        table.add_row(str(s["sample"]), "-" if s["label"] is None else str(s["label"]), str(s["hw_class"]),
                      str(s["golden_class"]),
                      *[f"{h}/{g}" for h, g in zip(s["hw_spikes"], s["golden_spikes"])], str(s["cycles"]),
                      "[green]yes[/]" if s["agree"] else f"[red]no ({s['mismatches']})[/]")
    if len(r["per_sample"]) > limit:
        table.caption = f"{len(r['per_sample']) - limit} more samples not listed (--limit)"
    console.print(table)
    lt = Table(title="spikes per sample, by layer (mean)")
    for col in ("layer", "hardware", "software", "equal"):
        lt.add_column(col, justify="right")
    sp = r["spikes_per_layer"]
    for name, h, g in zip(sp["layers"], sp["hardware"], sp["golden"]):
        lt.add_row(name, f"{h:.2f}", f"{g:.2f}", "yes" if h == g else "[red]no[/]")
    console.print(lt)
    acc = r["accuracy"]
    if "hardware" in acc:
        console.print(f"accuracy on {r['checked']} samples: hardware {_pct(acc['hardware'])}, golden model "
                      f"{_pct(acc['golden'])}; float (PyTorch) {_pct(acc['float'])} {escape('[' + acc['float_source'] + ']')}")
    else:
        console.print("no labels (random inputs): no accuracy")
    c = r["cycles_per_inference"]
    dd = c.get("data_dependent")
    if dd:
        console.print(f"cycles per inference (data dependent): median {dd['measured_median']:,.0f}, range "
                      f"{dd['measured_min']:,}..{dd['measured_max']:,}; equal to the per-sample formula on "
                      f"{dd['formula_equal']}/{dd['samples']} samples; worst case {dd['worst_case']:,}; median "
                      f"decision step {dd['decision_step_median']:g}, median input beats dropped after it "
                      f"{dd['drain_median']:g}")
    else:
        console.print(f"cycles per inference: measured {c['measured']}, manifest formula {c['manifest']} "
                      f"({c['note']})")
    sp = r["speed"]
    cps = "-" if sp["cycles_per_second"] is None else f"{sp['cycles_per_second']:,}"
    console.print(f"simulation: {sp['sim_cycles']:,} cycles in {sp['sim_seconds']:.2f} s = {cps} cycles/s; build "
                  f"{'%.1f s' % sp['build_seconds'] if sp['built'] else 'cached'}; total {sp['total_seconds']:.1f} s")
    if r.get("waves"):
        console.print(f"waves: {r['waves']}")
    if r.get("plot"):
        console.print(f"plot: {r['plot']}")
    if r["mismatches"] or r["checked"] < r["samples"]:
        console.print(f"[bold red]MISMATCH[/]: {r['mismatching_samples']} of {r['checked']} samples disagree "
                      f"({r['mismatches']} mismatches); first: {escape(str(r['first_mismatch_text']))}")
        if r["checked"] < r["samples"]:
            console.print(f"[red]{r['samples'] - r['checked']} samples produced no result[/]")
    else:
        console.print(f"[bold green]bit-exact[/]: {r['agree']}/{r['samples']} samples agree with the golden model "
                      f"(every dense layer's spikes and every conv/pool layer's spike count at every step, counts, "
                      f"membranes, class)")
