"""Turn trained runs into the models that ship with fvae (fvae/models/pretrained/NAME), with their numbers.

    python benchmarks/ship_models.py --runs DIR --data embedded|fashion-mnist [--models fvae glow vae]

``DIR/MODEL`` is a run folder (``compare_peers.py --runs DIR`` leaves them). Each run's EMA weights
are stored in float16 (half the size; the model computes in float32 as always), loaded back, and
measured as a user would get them: bits/dim on the test split (IW bound with K = --iw-samples,
or exact for Glow) and the sample score of --score-samples samples at the run's score temperature,
from seed 0. Those numbers go into the model card (README.md), ``card.json`` and the table printed.
The shipped name is ``MODEL-mnist`` for the embedded digits and ``MODEL-fashion-mnist``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import fvae
from fvae.data import load_dataset
from fvae.models.hub import SHIPPED, WEIGHTS_FILE
from fvae.scoring.evaluate import evaluate
from fvae.scoring.score import CLASS_SCORE_KEYS, SCORE_KEYS, scorer_for
from fvae.training.checkpoint import load_model

sys.path.insert(0, str(Path(__file__).parent))
from report import markdown_table, parser, write_report  # noqa: E402

NAMES = {"embedded": "mnist", "fashion-mnist": "fashion-mnist"}


def to_half(folder: Path) -> None:
    """Store the floating-point weights of ``folder/model.safetensors`` as float16."""
    path = folder / WEIGHTS_FILE
    tensors = {k: v.half() if v.is_floating_point() else v for k, v in load_file(path).items()}
    save_file(tensors, path, metadata={"format": "pt"})


def ship(kind: str, run: Path, args, scorer, test_set) -> dict:
    """Export ``run`` as ``KIND-DATA``, measure the exported model, write its card; return its row."""
    model, config, checkpoint = load_model(run)
    name = f"{kind}-{NAMES[args.data]}"
    folder = args.into / name
    model.save_pretrained(folder, preset=config.preset)
    config.save_yaml(folder / "config.yaml")
    to_half(folder)
    shipped = fvae.from_pretrained(folder)
    temperature = config.train.score_temperature
    metrics = evaluate(shipped, test_set, num_samples=args.iw_samples, scorer=scorer, score_samples=args.score_samples,
                       temperature=temperature, seed=0, progress=False)
    bound = "exact_bpd" if "exact_bpd" in metrics else "iw_bpd"
    card = {"name": name, "model": kind, "data": args.data, "run": str(run), "step": int(checkpoint.name[5:]),
            "temperature": temperature, "bound": bound, "test_bpd": round(metrics[bound], 4),
            **{k: round(metrics[k], 4) for k in SCORE_KEYS + CLASS_SCORE_KEYS if k in metrics},
            "score_samples": args.score_samples, "iw_samples": args.iw_samples,
            "size_bytes": (folder / WEIGHTS_FILE).stat().st_size}
    shipped.save_pretrained(folder, preset=config.preset,
                            metrics={k: v for k, v in card.items() if k not in ("name", "run", "size_bytes")})
    to_half(folder)  # save_pretrained wrote float32 weights again
    (folder / "card.json").write_text(json.dumps(card, indent=2))
    print(card, flush=True)
    return card


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--runs", type=Path, required=True, help="a folder of run folders named after their model")
    p.add_argument("--data", default="embedded", choices=tuple(NAMES))
    p.add_argument("--models", nargs="+", default=["fvae", "glow", "vae"], choices=("fvae", "glow", "vae"))
    p.add_argument("--into", type=Path, default=SHIPPED, help="where the shipped folders go")
    p.add_argument("--iw-samples", type=int, default=10)
    p.add_argument("--score-samples", type=int, default=1000)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    config = fvae.RunConfig.load_yaml(next((args.runs / args.models[0]).glob("checkpoints/*/config.yaml")))
    test_set = load_dataset(config.data, "test", config.model.image_shape)
    scorer = scorer_for(args.data, None, test_set, 1)
    rows = [ship(kind, args.runs / kind, args, scorer, test_set) for kind in args.models]
    table = markdown_table(rows, ["name", "step", "bound", "test_bpd", "temperature", *SCORE_KEYS, "size_bytes"])
    write_report(args.out, f"shipped_{NAMES[args.data]}", f"`python benchmarks/ship_models.py "
                 f"{' '.join(sys.argv[1:])}`\n\n{table}\n", {"rows": rows})


if __name__ == "__main__":
    main()
