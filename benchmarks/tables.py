"""Every results table in README.md and docs/, rendered from the JSON the benchmarks wrote.

    python -m benchmarks.tables            # rewrite the tables in place
    python -m benchmarks.tables --check    # exit 1, naming them, where a committed table differs

A table lives in a Markdown file between ``<!-- table: NAME -->`` and ``<!-- /table -->``; NAME
is a key of :data:`TABLES`, whose function renders it from ``benchmarks/results/*.json``. Nothing
between the markers is written by hand: change the JSON (rerun the benchmark) or the renderer.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).parent))
from report import RESULTS, markdown_table  # noqa: E402

ROOT = Path(__file__).parents[1]
DOCUMENTS = ("README.md", "docs/*.md")
MARKED = re.compile(r"(<!-- table: ([\w-]+) -->\n)(.*?)(<!-- /table -->)", re.S)

PEER_NAMES = {"fvae": "**fvae f-VAE**", "vae": "fvae VAE", "glow": "fvae Glow", "composite": "fvae composite",
              "normflows_glow": "normflows Glow", "pythae_vae": "pythae VAE", "pythae_vae_iaf": "pythae VAE_IAF"}


def load(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def _bound(row: dict) -> str:
    if row.get("exact_bpd") is not None:
        return f"exact {row['exact_bpd']:.3f}"
    return f"IW {row['iw_bpd']:.3f}" if row.get("iw_bpd") is not None else f"ELBO {row['elbo_bpd']:.3f}"


def _other_temperatures(row: dict) -> str:
    sweep = row.get("by_temperature") or {}
    return "; ".join(f"T={t}: {s['fid']:.1f} / {s['recognizable']:.3f} / {s['sharpness']:.2f}"
                     for t, s in sweep.items() if float(t) != row.get("temperature"))


def peers(name: str) -> Callable[[], str]:
    """A peer comparison (``compare_peers.py``): one row a model, at its own temperature."""
    def render() -> str:
        record = load(name)
        rows = [{"model": PEER_NAMES.get(r["model"], r["model"]), "parameters": r["parameters"],
                 "steps": r["steps"], "images_per_s": r["train_images_per_s"], "bound": _bound(r),
                 "marginal": r.get("marginal_bpd"), "T": r["temperature"], "fid": r["fid"],
                 "recognizable": r["recognizable"], "sharpness": r["sharpness"],
                 "class_accuracy": r.get("class_accuracy"), "sweep": _other_temperatures(r)} for r in record["rows"]]
        columns = ["model", "parameters", "steps", "images_per_s", "bound", "marginal", "T", "fid", "recognizable",
                   "sharpness", "class_accuracy", "sweep"]
        table = markdown_table(rows, [c for c in columns if any(r[c] is not None for r in rows)],
                               {"parameters": ",", "steps": ",", "images_per_s": ",.0f", "marginal": ".3f", "T": "g",
                                "fid": ".1f", "recognizable": ".3f", "sharpness": ".2f", "class_accuracy": ".3f"},
                               {"images_per_s": "train images/s", "bound": "test bits/dim", "fid": "FID",
                                "marginal": "marginal bits/dim", "class_accuracy": "class accuracy",
                                "sweep": "other T: FID / recognizable / sharpness"})
        meta = record.get("meta", {})
        return (f"{table}\n\n({record['budget_s'] / 60:.0f} minutes each on {record['data']}; bits/dim on the whole "
                f"test split, the IW bound with K = {record['iw_samples']}; 1,000 samples scored at each model's "
                f"temperature T. `{meta.get('command', '')}` on {meta.get('cpu', 'a CPU')}"
                + ("; the rows of models it did not train are kept from the earlier run of the same settings"
                   if "--keep" in meta.get("command", "") else "") + ".)\n")
    return render


def ood() -> str:
    record = load("ood")
    rows = [{**r, "model": PEER_NAMES.get(r["model"], r["model"]).strip("*"),
             "bound": "exact" if r["bound"] == "exact" else f"IW, K = {record['iw_samples']}",
             "fashion": f"{r['in_bpd']:.3f} ({r['in_bpd_median']:.3f})",
             "digits": f"{r['out_bpd']:.3f} ({r['out_bpd_median']:.3f})"} for r in record["rows"]]
    return markdown_table(rows, ["model", "bound", "fashion", "digits", "auroc"], {"auroc": ".3f"},
                          {"model": "model, trained on Fashion-MNIST", "fashion": "Fashion-MNIST bits/dim (median)",
                           "digits": "digits bits/dim (median)", "auroc": "AUROC, digits out"}) + "\n"


def shipped() -> str:
    rows = [r for name in ("shipped_mnist", "shipped_fashion-mnist") for r in load(name)["rows"]]
    return markdown_table(
        [{**r, "name": f"`{r['name']}`", "bound": f"{r['bound']} {r['test_bpd']:.3f}",
          "size": f"{r['size_bytes'] / 1e6:.1f} MB"} for r in rows],
        ["name", "step", "bound", "temperature", "fid", "recognizable", "sharpness", "size"],
        {"step": ",", "temperature": "g", "fid": ".1f", "recognizable": ".3f", "sharpness": ".2f"},
        {"step": "steps", "bound": "test bits/dim", "temperature": "T", "fid": "FID", "size": "weights"}) + "\n"


def latent_edits() -> str:
    record = load("latent_edits")
    transfer = markdown_table(record["transfer"], ["temperature", "transfers", "class_read", "thickness_r", "slant_r"],
                              {"temperature": "g", "class_read": ".3f", "thickness_r": ".2f", "slant_r": ".2f"},
                              {"temperature": "T", "class_read": "read as the target class",
                               "thickness_r": "thickness r", "slant_r": "slant r"})
    edit = markdown_table(record["edit"], ["strength", "ink_mass", "thickness"],
                          {"strength": "g", "ink_mass": ".3f", "thickness": ".2f"},
                          {"ink_mass": "ink mass", "thickness": "stroke thickness (px)"})
    return f"{transfer}\n\n{edit}\n"


def edits_summary() -> str:
    """One sentence of the latent-edit and context figures, for the README."""
    transfer = load("latent_edits")["transfer"][0]
    return (f"Measured: {transfer['class_read']:.0%} of the transfers (T = {transfer['temperature']:g}) are read as "
            f"their new class while stroke thickness and slant follow the source (r = {transfer['thickness_r']:.2f}, "
            f"{transfer['slant_r']:.2f}); the drawn ink mass follows the asked one at r = {load('context')['r']:.2f}.\n")


def context() -> str:
    record = load("context")
    table = markdown_table(record["rows"], ["asked", "drawn_mean", "drawn_std"],
                           {"asked": ".3f", "drawn_mean": ".3f", "drawn_std": ".3f"},
                           {"asked": "asked ink mass", "drawn_mean": "drawn: mean", "drawn_std": "drawn: std"})
    return f"{table}\n\nr = {record['r']:.3f} between the asked and the drawn ink mass (T = {record['temperature']:g}).\n"


def train_speed(name: str) -> Callable[[], str]:
    """The default run beside an earlier fvae (``train_speed.py``), on the machine it names."""
    def render() -> str:
        record = load(name)
        machine = record["meta"]
        return markdown_table(record["rows"], ["version", "steps", "images_per_s", "train_s", "test_bpd"],
                              {"steps": ",", "images_per_s": ".1f", "train_s": ".1f", "test_bpd": ".4f"},
                              {"images_per_s": "train images/s", "train_s": "training s", "test_bpd": "test bits/dim"}
                              ) + (f"\n\nSpeed-up: {record['speedup']:.2f}x; test bits/dim gap {record['test_bpd_gap']:.4f} "
                                   f"({machine['cpu']}, {machine['cores']} cores; `{machine['command']}`).\n")
    return render


def score_graded() -> str:
    rows = load("score_validation")["graded"]
    return markdown_table(rows, ["degradation", "strength", "fid", "precision", "recall", "recognizable", "sharpness"],
                          {"strength": "g", "fid": ".1f", "precision": ".3f", "recall": ".3f", "recognizable": ".3f",
                           "sharpness": ".3f"}) + "\n"


def score_spread() -> str:
    spread = load("score_validation")["spread_over_seeds"]
    keys = ["fid", "precision", "recall", "recognizable", "sharpness"]
    rows = [{"of": name, **{k: f"{v[k]['mean']:.3g} ± {v[k]['std']:.2g}" for k in keys}} for name, v in spread.items()]
    return markdown_table(rows, ["of", *keys], headers={"of": "1,000 images of"}) + "\n"


def data_speed() -> str:
    rows = load("data_speed")["rows"]
    return markdown_table(
        rows, ["preset", "folder_images_per_s_w0", "folder_images_per_s_w2", "prepared_images_per_s_w0",
               "prepared_images_per_s_w2", "prepare_images_per_s", "cpu_train_images_per_s", "gflop_per_image"],
        {k: ",.1f" for k in ("folder_images_per_s_w0", "folder_images_per_s_w2", "prepared_images_per_s_w0",
                             "prepared_images_per_s_w2", "prepare_images_per_s", "cpu_train_images_per_s",
                             "gflop_per_image")},
        {"folder_images_per_s_w0": "raw folder, 0 workers", "folder_images_per_s_w2": "raw folder, 2 workers",
         "prepared_images_per_s_w0": "prepared, 0 workers", "prepared_images_per_s_w2": "prepared, 2 workers",
         "prepare_images_per_s": "`fvae prepare`", "cpu_train_images_per_s": "f-VAE training, this CPU",
         "gflop_per_image": "f-VAE GFLOP per image (train step)"}) + "\n"


def own_shapes() -> str:
    record = load("own_shapes")
    return markdown_table(record["rows"], ["size", "pad_to", "flow_levels", "flow_steps", "steps", "test_bpd"],
                          {"steps": ",", "test_bpd": ".3f"},
                          {"pad_to": "padded to", "flow_levels": "F's levels", "flow_steps": "F's steps",
                           "test_bpd": "test bits/dim (ELBO)"}) + (
        f"\n\n(`{record['meta']['command']}`: {record['budget_s']:.0f} s of training each.)\n")


def step_ops() -> str:
    record = load("step_ops")
    rows = record["rows"]
    columns = ["version", "preset", "kind", "batch", "ops_per_step", "cpu_ops_per_step", "read_backs_per_step",
               "parameters"]
    return markdown_table(rows, columns, {"parameters": ",", "ops_per_step": ",.0f", "cpu_ops_per_step": ",.0f",
                                          "read_backs_per_step": ".2f"},
                          {"ops_per_step": "ATen ops a step", "cpu_ops_per_step": "on a CPU",
                           "read_backs_per_step": "host read-backs a step"}) + (
        f"\n\n(`{record['meta']['command']}`: counted over {record['steps']} steps after a warm-up step, "
        f"between two log steps.)\n")


def permutation_path() -> str:
    record = load("permutation_path")
    return markdown_table(record["rows"], ["preset", "model", "batch", "dense (GPU's)", "gathered (CPU's)",
                                           "dense / gathered"],
                          {"dense (GPU's)": ".3f", "gathered (CPU's)": ".3f", "dense / gathered": ".2f"},
                          {"dense (GPU's)": "dense, s a step", "gathered (CPU's)": "gathered, s a step"}) + (
        f"\n\n(`{record['meta']['command']}`: fp32, {record['threads']} threads, median of {record['rounds']} "
        f"steps a path.)\n")


TABLES: dict[str, Callable[[], str]] = {
    "peers": peers("peers"), "peers_fashion": peers("peers_fashion"), "peers_30m": peers("peers_30m"),
    "peers_fashion_30m": peers("peers_fashion_30m"), "shipped": shipped, "latent_edits": latent_edits,
    "context": context, "train_speed": train_speed("train_speed"),
    "train_speed_zen4": train_speed("epyc_zen4/train_speed"), "ood": ood, "conditional": peers("conditional"),
    "edits_summary": edits_summary, "score_graded": score_graded, "score_spread": score_spread,
    "data_speed": data_speed, "step_ops": step_ops, "own_shapes": own_shapes,
    "permutation_path": permutation_path,
}


def documents() -> list[Path]:
    return sorted({p for pattern in DOCUMENTS for p in ROOT.glob(pattern)})


def render(text: str) -> str:
    """``text`` with every marked table rendered afresh; an unknown NAME is a ``KeyError`` naming it."""
    def table(match: re.Match) -> str:
        name = match.group(2)
        if name not in TABLES:
            raise KeyError(f"unknown table {name!r}; known: {sorted(TABLES)}")
        return match.group(1) + TABLES[name]() + match.group(4)
    return MARKED.sub(table, text)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 where a table differs")
    args = p.parse_args()
    stale = []
    for path in documents():
        text = path.read_text()
        fresh = render(text)
        if fresh != text:
            stale.append(str(path.relative_to(ROOT)))
            if not args.check:
                path.write_text(fresh)
    if stale:
        print(("stale tables in: " if args.check else "rewrote tables in: ") + ", ".join(stale))
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
