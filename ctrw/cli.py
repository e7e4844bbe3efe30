"""Command line: ``ctrw train CONFIG``, ``ctrw evaluate CHECKPOINT CONFIG``, ``ctrw sigma-stats CHECKPOINT``.

Configs are YAML or JSON, validated by pydantic; a bad field is reported by its path and the
command exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ctrw.config import ConfigError, EvalConfig, TrainConfig, load_config_file
from ctrw.render import to_percent

__all__ = ["main"]


class _TqdmHooks:
    """Progress bars for the CLI; results are collected for the final table."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self._bar: Any = None
        self._key: tuple[str, int, str] | None = None
        self.rows: list[dict[str, Any]] = []

    def on_progress(self, p: Any) -> None:
        key = (p.phase, p.epoch, p.detail)
        if key != self._key:
            if self._bar is not None:
                self._bar.close()
            desc = f"epoch {p.epoch}/{p.epochs} {p.phase}" if p.epoch else f"{p.phase} {p.detail}"
            self._bar = self._tqdm(total=p.batches, desc=desc, leave=False, file=sys.stderr)
            self._key = key
        self._bar.n = p.batch
        self._bar.refresh()

    def on_epoch(self, r: dict[str, Any]) -> None:
        def pct(k: str) -> str:
            return "-" if r.get(k) is None else f"{to_percent(r[k]):.1f}"

        sig = "-" if r.get("sigma_sum") is None else f"{r['sigma_sum']:.1f}"
        print(
            f"epoch {r['epoch']}: loss {r['train_loss']:.3f} adv {pct('train_adv_acc')} "
            f"val clean {pct('val_clean_acc')} val pgd {pct('val_pgd_acc')} sum(sigma) {sig} "
            f"lr {r['lr']:.4g} {r['seconds']:.1f}s" + (" *" if r.get("is_best") else ""),
            file=sys.stderr,
        )

    def on_result(self, row: dict[str, Any]) -> None:
        self.rows.append(row)

    def should_cancel(self) -> bool:
        return False

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _print_results(result: dict[str, Any], label: dict[str, Any], out: Path | None) -> None:
    from ctrw.render import job_table, render_table

    # The table (percent) with the diagnostics' verdicts under it, as the service prints it.
    table = job_table(result["rows"], labels=label, diagnostics=result.get("diagnostics"), source="this run")
    print(render_table(table, "markdown"))
    if out is not None:
        out.write_text(json.dumps({"table": table.model_dump(mode="json"), **result}, indent=1))
        print(f"results written to {out}", file=sys.stderr)


def cmd_train(args: argparse.Namespace) -> int:
    from ctrw.jobs import run_evaluation, run_sigma_stats, run_training

    cfg = load_config_file(args.config, TrainConfig)
    assert isinstance(cfg, TrainConfig)
    run_dir = Path(args.run_dir or Path("runs") / cfg.name)
    hooks = _TqdmHooks()
    summary = run_training(cfg, run_dir=run_dir, hooks=hooks)
    hooks.close()
    print(
        f"trained {summary['epochs_done']} epochs; best epoch {summary['best_epoch']}; checkpoints in {run_dir}"
    )
    if cfg.evaluation is not None and not args.no_eval:
        ckpt = Path(summary["best_checkpoint" if cfg.evaluation.checkpoint == "best" else "last_checkpoint"])
        result = run_evaluation(ckpt, cfg.evaluation, cfg, hooks=hooks)
        hooks.close()
        _print_results(result, {"model": cfg.model.name, "variant": cfg.variant}, run_dir / "results.json")
        stats = run_sigma_stats(ckpt, cfg, n_pairs=args.pairs)
        (run_dir / "sigma.json").write_text(json.dumps(stats, indent=1))
    return 0


def _checkpoint_config(args: argparse.Namespace) -> TrainConfig:
    """The training config stored in the checkpoint, with its data found under ``--data-root``
    when given (a downloaded checkpoint names the data directory of the machine that trained it)."""
    from ctrw.checkpoint import read_meta

    cfg = TrainConfig.model_validate(read_meta(Path(args.checkpoint))["config"])
    if args.data_root:
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"root": args.data_root})})
    return cfg


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ctrw.jobs import run_evaluation

    ev = load_config_file(args.config, EvalConfig)
    assert isinstance(ev, EvalConfig)
    cfg = _checkpoint_config(args)
    hooks = _TqdmHooks()
    result = run_evaluation(Path(args.checkpoint), ev, cfg, hooks=hooks)
    hooks.close()
    _print_results(
        result, {"model": cfg.model.name, "variant": cfg.variant}, Path(args.out) if args.out else None
    )
    return 0


def cmd_sigma_stats(args: argparse.Namespace) -> int:
    from ctrw.jobs import run_sigma_stats

    stats = run_sigma_stats(Path(args.checkpoint), _checkpoint_config(args), n_pairs=args.pairs)
    for layer in stats["layers"]:
        t6 = layer["table6"]
        print(
            f"{layer['name']}: N={layer['numel']} sum(sigma)={layer['sigma_sum']:.2f} "
            f"[A={layer['bound_lower']}, B={layer['bound_upper']}] min/mean/max sigma="
            f"{layer['sigma_min']:.4f}/{layer['sigma_mean']:.4f}/{layer['sigma_max']:.4f}; "
            f"Table 6: PS {t6['positive']}/{t6['n_pairs']} ({t6['ratio']:.4f}), min cos {t6['min_cos']:.4f}; "
            f"grad cos mean {layer['grad_cos']['mean']:.4f}"
        )
        if "lemma1" in t6:
            print(f"  {t6['lemma1']['verdict']}")
    for rec in stats.get("epochs", []):
        for event in rec.get("bound_events") or []:
            print(f"bound event: {event}")
    if not stats["layers"]:
        print("no random layer (baseline model)")
    if args.out:
        Path(args.out).write_text(json.dumps(stats, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ctrw", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="adversarially train a model (Algorithm 1), then evaluate it")
    t.add_argument(
        "config", help="YAML/JSON training config (set 'preset: published' for the published code)"
    )
    t.add_argument("--run-dir", help="checkpoint directory (default runs/<name>); an existing run resumes")
    t.add_argument("--no-eval", action="store_true", help="skip the evaluation in the config")
    t.add_argument("--pairs", type=int, default=100_000, help="draw pairs for the Table 6 statistic")
    t.set_defaults(func=cmd_train)
    e = sub.add_parser("evaluate", help="attack a checkpoint (paper and/or adaptive protocol)")
    e.add_argument("checkpoint")
    e.add_argument("config", help="YAML/JSON evaluation config (attacks, protocol, n_examples, ...)")
    e.add_argument("--out", help="write the results as JSON here")
    e.add_argument("--data-root", help="data directory on this machine (default: the one in the checkpoint)")
    e.set_defaults(func=cmd_evaluate)
    s = sub.add_parser("sigma-stats", help="sigma statistics of a checkpoint")
    s.add_argument("checkpoint")
    s.add_argument("--pairs", type=int, default=100_000)
    s.add_argument("--out")
    s.add_argument("--data-root", help="data directory on this machine (default: the one in the checkpoint)")
    s.set_defaults(func=cmd_sigma_stats)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    from ctrw.checkpoint import CheckpointError
    from ctrw.data import DataNotFoundError
    from ctrw.threads import set_torch_threads, threads_from_env

    try:
        # One CLI process: CTRW_TORCH_THREADS, or every usable core (ctrw.threads).
        set_torch_threads(threads_from_env())
        return int(args.func(args))
    except (ConfigError, DataNotFoundError, CheckpointError, ValueError) as e:
        print(f"ctrw: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
