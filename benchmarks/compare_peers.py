"""fvae's f-VAE, VAE and Glow against normflows' Glow and pythae's VAE and VAE_IAF, each trained
for the same wall-clock budget on the same data, then evaluated and scored alike.

    pip install -e ".[bench]"
    python benchmarks/compare_peers.py [--data embedded|fashion-mnist] [--budget 8m] [--models ...]
                                       [--curve-points 8]

Every model sees the same images (the embedded split, 4,000 training and 1,000 test digits, or
Fashion-MNIST's 60,000 and 10,000) and the same uniform dequantization ``x = (k + U) / 256``;
fvae's models train as ``fvae train`` trains them (their presets' batch size, learning rate,
warm-up and EMA; the ``mnist`` presets on the digits, ``fashion-mnist`` on clothes), the peers
with Adam at --lr and batch --batch on their own libraries' objectives. All are scored
with one formula, ``bpd = (nats + D ln 256) / (D ln 2)``, on the whole test split: exact for
flows, the importance-weighted bound (K = --iw-samples) and the ELBO for VAEs. Samples are scored
by fvae's sample score (fvae.scoring.score: FID, precision, recall, recognizable, sharpness, in
the features of the dataset's shipped judge) at each model's own temperature (fvae's models:
their preset's; the peers: 1, what their samplers draw) and at every temperature of the sweep.

Training is cut into --curve-points equal pieces of training time (fvae's models resume their
run exactly; the peers keep their optimizer), and after each piece 1,000 samples are scored, so
that the result holds each model's score against training time (the time-to-quality curves).

Writes benchmarks/results/NAME.{md,json}, NAME_curves.png and NAME_samples_MODEL.png, with NAME
``peers``, plus ``_fashion`` on Fashion-MNIST and ``_30m`` (the budget) for budgets other than 8m.

``--conditional`` trains fvae's models class-conditional (``model.num_classes=10``): samples are
drawn for every class alike and scored with ``class_accuracy`` too, the bounds are the conditional
``-log p(x|y)`` beside the marginal ``-log sum_y p(x|y) p(y)`` (``marginal_bpd``: exact for Glow,
else the IW bound with --marginal-samples a class on the first --marginal-images test images), and
the unconditional rows of the same data and budget, where they exist, are shown beside them.
NAME is then ``conditional[_fashion][_BUDGET]``.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torchvision.utils import save_image

sys.path.insert(0, str(Path(__file__).parent))
from peers import FvaeAdapter, build, count_parameters  # noqa: E402
from report import markdown_table, parser, write_report  # noqa: E402

import fvae  # noqa: E402
from fvae.commands.reporting import plot_curves as plot  # noqa: E402
from fvae.commands.values import duration  # noqa: E402
from fvae.config import DataConfig, apply_overrides  # noqa: E402
from fvae.data import dequantize, load_dataset  # noqa: E402
from fvae.presets import run_config  # noqa: E402
from fvae.scoring.metrics import bits_per_dim_summary  # noqa: E402
from fvae.scoring.score import CLASS_SCORE_KEYS, SCORE_KEYS, scorer_for  # noqa: E402

MODELS = ("fvae", "vae", "glow", "normflows_glow", "pythae_vae", "pythae_vae_iaf")
FVAE_MODELS = ("fvae", "vae", "glow", "composite")
SWEEP = (1.0, 0.8, 0.6)
MILESTONES = (0.1, 0.3, 0.5)


def result_name(data: str, budget: float, conditional: bool = False) -> str:
    """``peers``, ``peers_fashion``, ``peers_30m``, ``peers_fashion_30m``, ``conditional_fashion`` ..."""
    name = ("conditional" if conditional else "peers") + ("_fashion" if data == "fashion-mnist" else "")
    if budget != 480:
        name += f"_{budget / 60:g}m" if budget % 60 == 0 else f"_{budget:g}s"
    return name


def class_labels(adapter, num: int) -> torch.Tensor | None:
    """Every class alike for a class-conditional adapter (``0, 1, ..., 9, 0, ...``), else None."""
    classes = getattr(adapter, "num_classes", 0)
    return torch.arange(num) % classes if classes else None


def batches_forever(images: torch.Tensor, batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(images), generator=g)
        for i in range(0, len(order) - batch + 1, batch):
            yield dequantize(images[order[i:i + batch]], g)


class FvaeRun:
    """One of fvae's models trained as ``fvae train`` trains it, piece by piece: each call of
    :meth:`train_until` resumes the run (exactly) to a total of ``seconds`` of training time."""

    def __init__(self, name: str, preset: str, data: DataConfig, seed: int, out: Path, overrides: list[str],
                 marginal_samples: int = 10):
        config = apply_overrides(run_config(name, preset), overrides)
        self.config = dataclasses.replace(config, data=data, train=dataclasses.replace(
            config.train, seed=seed, max_steps=10 ** 9, checkpoint_every=10 ** 9,
            sample_every=10 ** 9, log_every=10 ** 9, score_samples=0, eval_batches=1))
        self.out, self.started = out, False
        self.adapter, self.summary = FvaeAdapter(self.config.model, marginal_samples), {}

    def train_until(self, seconds: float) -> dict:
        config = dataclasses.replace(self.config, train=dataclasses.replace(self.config.train, max_time=seconds))
        model, self.summary = fvae.train(config=config, out=self.out, resume=self.started, progress=False)
        self.started, self.adapter.model = True, model
        return {"steps": self.summary["steps"], "skipped_steps": self.summary["skipped_steps"],
                "train_seconds": self.summary["wall_time"], "batch": config.train.batch_size, "lr": config.train.lr,
                "ema": config.train.ema_decay}


class PeerRun:
    """A peer trained with Adam on its own objective; :meth:`train_until` continues to a total
    of ``seconds`` of training time with the same optimizer and data stream."""

    def __init__(self, adapter, images: torch.Tensor, batch: int, lr: float, seed: int):
        self.adapter, self.batch, self.lr = adapter, batch, lr
        self.data = batches_forever(images, batch, seed)
        with torch.no_grad():
            adapter.train_loss(next(self.data))  # data-dependent initialisation (ActNorm), not timed
        self.optimizer = torch.optim.Adam(adapter.parameters(), lr=lr, fused=True)
        self.steps, self.skipped, self.seconds = 0, 0, 0.0

    def train_until(self, seconds: float) -> dict:
        start = time.perf_counter() - self.seconds
        while time.perf_counter() - start < seconds:
            loss = self.adapter.train_loss(next(self.data))
            self.optimizer.zero_grad(set_to_none=True)
            if torch.isfinite(loss):
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.adapter.parameters(), 10.0)
                self.optimizer.step()
            else:
                self.skipped += 1
            self.steps += 1
        self.seconds = time.perf_counter() - start
        return {"steps": self.steps, "skipped_steps": self.skipped, "train_seconds": round(self.seconds, 1),
                "batch": self.batch, "lr": self.lr}


def evaluate(adapter, test_images, test_labels, num_samples: int, seed: int, marginal_images: int) -> dict:
    """Mean bits/dim of each bound the adapter gives, and for each its median and largest per image;
    a class-conditional adapter's marginal bound on the first ``marginal_images`` images."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    nats = {}
    for i in range(0, len(test_images), 50):
        x = dequantize(test_images[i:i + 50], g)
        for key, value in adapter.nll(x, num_samples, test_labels[i:i + 50], marginal=i < marginal_images).items():
            nats.setdefault(key, []).append(value)
    return {k: round(v, 4) for key, parts in nats.items()
            for k, v in bits_per_dim_summary(key, torch.cat(parts), x[0].numel()).items()}


def draw(adapter, num: int, seed: int, temperature: float) -> tuple[torch.Tensor, float]:
    """``num`` samples at ``temperature`` (of every class alike, for a class-conditional adapter) and
    the seconds they took."""
    torch.manual_seed(seed)
    labels = class_labels(adapter, num)
    start = time.perf_counter()
    samples = torch.cat([adapter.sample(min(250, num - i), temperature, None if labels is None else labels[i:i + 250])
                         for i in range(0, num, 250)])
    return samples, time.perf_counter() - start


def score(scorer, samples: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
    """The sample score, rounded (with ``class_accuracy`` where ``labels`` say what each sample was
    drawn for); samples that are not finite are counted and scored as blank."""
    result = scorer.score(samples, labels)
    return {**{k: round(result[k], 4) for k in SCORE_KEYS + CLASS_SCORE_KEYS if k in result},
            "nonfinite_samples": result["nonfinite"]}


def own_temperature(name: str, preset: str, overrides: list[str]) -> float:
    """The temperature a model is sampled at by default: its preset's for fvae's models (after
    ``--set``), 1 for the peers."""
    if name not in FVAE_MODELS:
        return 1.0
    return apply_overrides(run_config(name, preset), overrides).train.score_temperature


def seconds_to(curve: list[dict], share: float) -> float | None:
    """Training seconds at the first curve point with at least ``share`` recognizable samples."""
    return next((p["train_seconds"] for p in curve if p["recognizable"] >= share), None)


class Contestant:
    """One model of the comparison, ``label`` its row's name: trained piece by piece (:meth:`piece`,
    a scored curve point after each), then evaluated (:meth:`finish`)."""

    def __init__(self, label: str, kind: str, overrides: list[str], args, train_images, data: DataConfig,
                 work: Path):
        torch.manual_seed(args.seed)
        self.label, self.kind, self.args, self.train_images = label, kind, args, train_images
        preset = "fashion-mnist" if args.data == "fashion-mnist" else "mnist"
        self.run = (FvaeRun(kind, preset, data, args.seed, work / label, overrides, args.marginal_samples)
                    if kind in FVAE_MODELS else PeerRun(build(kind), train_images, args.batch, args.lr, args.seed))
        self.labels = class_labels(self.run.adapter, args.score_samples)
        self.temperature, self.curve = own_temperature(kind, preset, overrides), []
        self.row = {"model": label, "parameters": count_parameters(self.run.adapter)}
        if label != kind:
            self.row |= {"kind": kind, "overrides": overrides}
        print(f"== {label}: {self.row['parameters']:,} parameters, training for {args.budget:.0f} s", flush=True)

    def piece(self, number: int, scorer) -> None:
        """Train to ``number`` / curve points of the budget, then score samples."""
        args = self.args
        self.trained = self.run.train_until(args.budget * number / args.curve_points)
        samples, _ = draw(self.run.adapter, args.score_samples, args.seed, self.temperature)
        self.curve.append({"train_seconds": self.trained["train_seconds"], "steps": self.trained["steps"],
                           **score(scorer, samples, self.labels)})
        print(f"   {self.label} {self.curve[-1]}", flush=True)

    def finish(self, test_images, test_labels, scorer) -> dict:
        """The row: training figures, bounds on the test split, the sample score at each temperature."""
        args, adapter, row, trained = self.args, self.run.adapter, self.row, self.trained
        row |= trained
        row["train_images_per_s"] = round(trained["steps"] * trained["batch"] / trained["train_seconds"], 1)
        if hasattr(adapter, "fit_sigma"):
            g = torch.Generator().manual_seed(args.seed)
            adapter.fit_sigma(dequantize(self.train_images[i:i + 200], g) for i in range(0, 2000, 200))
        row |= evaluate(adapter, test_images, test_labels, args.iw_samples, args.seed, args.marginal_images)
        samples, seconds = draw(adapter, args.score_samples, args.seed, self.temperature)
        row |= {"sample_images_per_s": round(args.score_samples / seconds, 1), "temperature": self.temperature,
                **score(scorer, samples, self.labels)}
        row["by_temperature"] = {f"{t:g}": {k: v for k, v in score(scorer, draw(adapter, args.score_samples,
                                                                                 args.seed, t)[0], self.labels).items()
                                            if k in SCORE_KEYS + CLASS_SCORE_KEYS}
                                 for t in SWEEP}
        row["curve"] = self.curve
        row |= {f"seconds_to_{share:g}_recognizable": seconds_to(self.curve, share) for share in MILESTONES}
        save_image(samples[:64].nan_to_num(0.0).clamp(0, 1), args.out / f"{args.name}_samples_{self.label}.png",
                   nrow=8)
        return row


def plot_curves(rows: list[dict], path: Path) -> None:
    """Recognizable, FID and sharpness against training time, one line per model."""
    plot(
        {f"{r['model']} (T={r['temperature']:g})": r["curve"] for r in rows},
        (("recognizable", "recognizable", "linear"), ("fid", "FID (judge features)", "log"),
         ("sharpness", "sharpness", "linear")),
        (("train_seconds", "training seconds"),), path, dpi=110)


def glow_speedups(rows: list[dict]) -> dict[str, float]:
    """fvae's Glow's training and sampling images/s over normflows' (same architecture), where both ran."""
    by_name = {r["model"]: r for r in rows}
    if "glow" not in by_name or "normflows_glow" not in by_name:
        return {}
    return {f"glow_vs_normflows_{key}": round(by_name["glow"][key] / by_name["normflows_glow"][key], 2)
            for key in ("train_images_per_s", "sample_images_per_s")}


MAIN_COLUMNS = ["model", "parameters", "batch", "steps", "train_images_per_s", "sample_images_per_s", "exact_bpd",
                "iw_bpd", "elbo_bpd", "marginal_bpd", "temperature", *SCORE_KEYS, *CLASS_SCORE_KEYS,
                "nonfinite_samples"]


def main_table(rows: list[dict]) -> str:
    """The rows' numbers at each model's own temperature, in the columns some row has."""
    return markdown_table(rows, [c for c in MAIN_COLUMNS if c in ("model", "exact_bpd", "iw_bpd", "elbo_bpd")
                                 or any(c in r for r in rows)])


def score_cell(scores: dict, key: str, fmt: str) -> str:
    """One score formatted, or "–" where the row lacks it (an unconditional row among conditional ones)."""
    return f"{scores[key]:{fmt}}" if key in scores else "–"


def tables(rows: list[dict]) -> str:
    main = main_table(rows)
    sweep_keys = [("fid", ".1f"), ("recognizable", ".3f"), ("sharpness", ".2f")]
    if any("class_accuracy" in r for r in rows):
        sweep_keys.append(("class_accuracy", ".3f"))
    sweep_rows = [{"model": r["model"], **{f"T={t:g}": " / ".join(
        score_cell(r["by_temperature"][f"{t:g}"], k, fmt) for k, fmt in sweep_keys) for t in SWEEP}}
                  for r in rows]
    sweep = markdown_table(sweep_rows, ["model", *(f"T={t:g}" for t in SWEEP)],
                           headers={f"T={t:g}": f"T={t:g}: " + " / ".join(k for k, _ in sweep_keys) for t in SWEEP})
    keys = [f"seconds_to_{s:g}_recognizable" for s in MILESTONES]
    milestones = markdown_table(rows, ["model", *keys], formats={k: ".0f" for k in keys},
                                headers={k: f"{float(k.split('_')[2]):.0%} recognizable after (s)" for k in keys})
    return f"{main}\n\n{sweep}\n\n{milestones}"


def kept_rows(args) -> list[dict]:
    """With ``--keep``: the rows of an earlier report of the same name, data, budget and K, in ``--models`` order."""
    path = args.out / f"{args.name}.json"
    if not args.keep or not path.exists():
        return []
    old = json.loads(path.read_text())
    if (old["data"], old["budget_s"], old["iw_samples"]) != (args.data, args.budget, args.iw_samples):
        raise SystemExit(f"{path} was made with other settings (data, budget, K): {old['data']}, {old['budget_s']}, "
                         f"{old['iw_samples']}; drop --keep or pick another --name")
    by_model = {r["model"]: r for r in old["rows"]}
    kept = [by_model[label] for label, _, _ in entries(args) if label in by_model]
    print(f"kept from {path}: {', '.join(r['model'] for r in kept) or 'nothing'}", flush=True)
    return kept


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--data", default="embedded", choices=("embedded", "fashion-mnist"))
    p.add_argument("--data-root", help="where Fashion-MNIST's idx files are (default: found as fvae train finds them)")
    p.add_argument("--budget", type=duration, default=480.0, help="training wall time per model")
    p.add_argument("--batch", type=int, default=64, help="the peers' batch size (fvae's models use their presets')")
    p.add_argument("--lr", type=float, default=1e-3, help="the peers' learning rate (fvae's models use their presets')")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--iw-samples", type=int, help="K of the IW bound (default: 100 on the embedded digits' 1,000 test "
                                                  "images, 10 on Fashion-MNIST's 10,000)")
    p.add_argument("--score-samples", type=int, default=1000)
    p.add_argument("--curve-points", type=int, default=8, help="scored points along training")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", help="result name (default: peers[_fashion][_BUDGET])")
    p.add_argument("--runs", type=Path, help="keep the run folders of fvae's models here, for fvae eval, sample, "
                                            "... (default: a temporary folder)")
    p.add_argument("--set", nargs="+", default=[], metavar="SECTION.FIELD=VALUE",
                   help="overrides of fvae's models' configs, as fvae train takes them (model.flow_levels=3 ...)")
    p.add_argument("--keep", action="store_true",
                   help="keep the rows of models that NAME.json already holds (same data, budget and K); run the rest")
    p.add_argument("--variant", action="append", nargs="+", metavar="ARG",
                   help="a row LABEL: fvae's model KIND with these overrides (after --set); repeat for each; "
                        "replaces --models")
    p.add_argument("--interleave", action="store_true",
                   help="train the models piece by piece in turn (each its n-th curve piece before any its "
                        "(n+1)-th), so that drifting machine speed hits all alike")
    p.add_argument("--conditional", action="store_true",
                   help="fvae's models class-conditional (model.num_classes=10), scored with class_accuracy")
    p.add_argument("--marginal-samples", type=int, default=10,
                   help="--conditional: IW samples a class for the marginal bound of the VAE and the f-VAE")
    p.add_argument("--marginal-images", type=int, default=1000,
                   help="--conditional: the marginal bound on the first N test images")
    args = p.parse_args()
    for variant in args.variant or []:
        if len(variant) < 2 or variant[1] not in FVAE_MODELS:
            p.error(f"--variant {' '.join(variant)}: expected LABEL KIND [SECTION.FIELD=VALUE ...], KIND one of "
                    f"{FVAE_MODELS}")
    if args.conditional:
        peers = [m for m in args.models if m not in FVAE_MODELS]
        if peers and "--models" in sys.argv:
            p.error(f"--conditional trains fvae's models only, not {peers}")
        args.models = [m for m in args.models if m in FVAE_MODELS]
        args.set = ["model.num_classes=10", *args.set]
    args.name = args.name or result_name(args.data, args.budget, args.conditional)
    args.iw_samples = args.iw_samples or (100 if args.data == "embedded" else 10)
    torch.set_num_threads(args.threads)
    data = DataConfig(args.data, args.data_root, download=False)
    train_set, test_set = (load_dataset(data, split, (1, 28, 28)) for split in ("train", "test"))
    train_images, (test_images, test_labels) = train_set.tensors[0], test_set.tensors
    scorer = scorer_for(args.data, None, test_set, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, work = kept_rows(args), args.runs or Path(tempfile.mkdtemp(prefix="fvae-peers-"))
    kept = [r["model"] for r in rows]
    entrants = [e for e in entries(args) if e[0] not in kept]
    if args.interleave:  # every model's n-th piece before any model's (n+1)-th: all see the same machine
        contestants = [Contestant(*entry, args, train_images, data, work) for entry in entrants]
        for number in range(1, args.curve_points + 1):
            for contestant in contestants:
                contestant.piece(number, scorer)
        finished = (c.finish(test_images, test_labels, scorer) for c in contestants)
    else:
        finished = (run_to_end(Contestant(*entry, args, train_images, data, work), args, test_images, test_labels,
                               scorer) for entry in entrants)
    for row in finished:
        rows.append(row)
        report(args, rows, kept, scorer, len(train_images), len(test_images))
    if len(kept) == len(rows):  # nothing ran: the kept rows, in --models order
        report(args, rows, kept, scorer, len(train_images), len(test_images))


def run_to_end(contestant: Contestant, args, test_images, test_labels, scorer) -> dict:
    for number in range(1, args.curve_points + 1):
        contestant.piece(number, scorer)
    return contestant.finish(test_images, test_labels, scorer)


def entries(args) -> list[tuple[str, str, list[str]]]:
    """``(label, kind, overrides)`` of each model to train: ``--models`` with ``--set``, or the ``--variant``s."""
    if args.variant:
        return [(label, kind, [*args.set, *overrides]) for label, kind, *overrides in args.variant]
    return [(name, name, args.set) for name in args.models]


def report(args, rows: list[dict], kept: list[str], scorer, num_train: int, num_test: int) -> None:
    """Write NAME.md, NAME.json and NAME_curves.png for the rows so far."""
    plot_curves(rows, args.out / f"{args.name}_curves.png")
    note = (f"\n\nbudget {args.budget:.0f} s per model, {args.threads} threads; the peers: batch {args.batch}, "
            f"Adam {args.lr}; fvae's models: their presets'; {args.data}: {num_train:,} training images, "
            f"bits/dim on all {num_test:,} test images (exact for flows; IW bound with "
            f"K = {args.iw_samples} and ELBO for VAEs); sample score "
            f"({scorer.name}, recognizable by rule '{scorer.judge.recognizable_rule}') of {args.score_samples} "
            f"samples at each model's own temperature, then at every temperature of the sweep; the last table "
            f"from {args.curve_points} scored points along training ({args.name}_curves.png)."
            + (f" The rows of {', '.join(kept)} are kept from an earlier run (--keep)." if kept else "") + "\n")
    speedups = glow_speedups(rows)
    record = {"rows": rows, "speedups": speedups, "data": args.data, "budget_s": args.budget,
              "iw_samples": args.iw_samples, "features": scorer.name}
    beside = ""
    if args.conditional:
        note = note.rstrip() + (f" Conditional bounds are -log p(x|y) at each test image's label; marginal_bpd "
                                f"bounds -log sum_y p(x|y) p(y) (exact for Glow; IW with K = "
                                f"{args.marginal_samples} a class otherwise) on the first {args.marginal_images:,} "
                                f"test images; samples drawn for every class alike.\n")
        unconditional = args.out / f"{result_name(args.data, args.budget)}.json"
        if unconditional.exists():
            record["unconditional"] = [r for r in json.loads(unconditional.read_text())["rows"]
                                       if r["model"] in args.models]
            beside = (f"\n\nThe same models unconditional ({unconditional.name}):\n\n"
                      + main_table(record["unconditional"]))
    write_report(args.out, args.name, f"`python benchmarks/compare_peers.py {' '.join(sys.argv[1:])}`\n\n"
                 + tables(rows) + "".join(f"\n- {k}: {v}x" for k, v in speedups.items()) + beside + note, record)


if __name__ == "__main__":
    main()
