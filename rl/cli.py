"""`unigrpo`: the command line.

    unigrpo train [CONFIG.yaml] [key=value ...]       start a run (default config: configs/demo.yaml)
    unigrpo train --resume runs/NAME [key=value ...]  continue a run from its latest checkpoint
    unigrpo rewards check --input rollouts.jsonl       score a dump of rollouts with the reward functions
    unigrpo eval CHECKPOINT_OR_POLICY_DIR --data FILE  held-out evaluation of a saved policy, no training
    unigrpo dashboard RUN_DIR [RUN_DIR ...]            live web view of runs (http://127.0.0.1:8300)
    unigrpo plan CONFIG.yaml --gpus N [key=value ...]  predicted step time of colocated vs disaggregated, memory
    unigrpo export RUN_OR_CHECKPOINT OUT               a merged from_pretrained policy directory (LoRA runs too)

Exit codes: 0 finished; 2 bad config, data or arguments (nothing was started); 1 the run failed;
130 stopped by SIGINT/SIGTERM after checkpointing (resume with --resume).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import traceback
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _train_parser() -> argparse.ArgumentParser:
    from rl.config import SECTIONS

    sections = "\n".join(f"  {name:<11} {desc}" for name, desc in SECTIONS.items())
    return argparse.ArgumentParser(
        prog="unigrpo train",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run UniGRPO: Ray rollout actors, Ray reward actors and a DeepSpeed learner.",
        epilog=(
            "config sections (override any key as section.key=value, e.g. learner.lr=1e-6):\n" + sections
            + "\n\nexamples:\n  unigrpo train\n  unigrpo train configs/mmada_8b_math.yaml data.files=[gsm8k.parquet]"
            "\n  unigrpo train --resume runs/demo\n\nexit codes: 0 done, 1 failed, 2 bad config/data, "
            "130 interrupted (checkpointed)"
        ),
    )


def _fresh_run_dir(base: Path) -> Path:
    """`make demo` twice must not clobber the first run: demo, demo-1, demo-2, ..."""
    if not base.exists():
        return base
    n = 1
    while base.with_name(f"{base.name}-{n}").exists():
        n += 1
    return base.with_name(f"{base.name}-{n}")


def _stop_while_starting(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _never_started(driver) -> bool:
    """A new run that stopped before completing a step, with nothing checkpointed: nothing worth keeping."""
    ckpts = driver.checkpoints
    return driver.step == 0 and (ckpts is None or ckpts.latest() is None)


def train_main(argv: list[str]) -> int:
    from rl.config import ConfigError, load_config
    from rl.data import DataError

    parser = _train_parser()
    parser.add_argument("config", nargs="?", help="YAML config (default: configs/demo.yaml, the held-out arithmetic demo)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides key=value")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    config_path = args.config
    if config_path and "=" in config_path and not config_path.endswith((".yaml", ".yml")):
        overrides.insert(0, config_path)  # `unigrpo train learner.lr=1e-3` without a config file
        config_path = None

    try:
        if args.resume:
            run_dir = Path(args.resume)
            saved = run_dir / "config.yaml"
            if not saved.is_file():
                raise ConfigError(f"--resume {run_dir}: no config.yaml there (not a unigrpo run directory)")
            cfg = load_config(config_path or saved, overrides)
            from rl.checkpoints import CheckpointStore

            store = CheckpointStore(run_dir)
            if store.latest_valid(quiet=True) is None:  # each candidate and why it was rejected, in the message
                raise ConfigError(f"--resume {run_dir}: no checkpoint there that verifies ({store.why_none_valid()}): "
                                  "start a new run, or restore a checkpoint into that folder")
        else:
            cfg = load_config(config_path, overrides)
            run_dir = _fresh_run_dir(cfg.run_dir)
        from rl.preflight import preflight

        preflight(cfg, run_dir)  # files, data, plugins, run dir: before any actor starts, nothing created
    except (ConfigError, DataError, FileNotFoundError) as err:
        print(f"unigrpo: {err}", file=sys.stderr)
        return EXIT_USAGE

    from policy.placement import PlacementError
    from rl.checkpoints import CheckpointSpaceError, CheckpointStore
    from rl.driver import Driver, TrainingDiverged

    driver = Driver(cfg, run_dir=run_dir, resume=bool(args.resume))
    from rl.builders import describe_groups

    print(f"unigrpo: run directory {run_dir}; {describe_groups(cfg)}", flush=True)
    for sig in (signal.SIGINT, signal.SIGTERM):  # while starting; training installs its graceful stop
        signal.signal(sig, _stop_while_starting)
    import ray

    if not ray.is_initialized():  # this process will own a cluster: nothing of it may outlive us
        from rl.reaper import start_reaper

        start_reaper()
    dashboard = None
    if cfg.run.dashboard:
        from rl.dashboard.server import Background

        run_dir.parent.mkdir(parents=True, exist_ok=True)
        dashboard = Background(run_dir, cfg.run.dashboard_port)
        print(f"unigrpo: dashboard at {dashboard.url}" if dashboard.url else
              "unigrpo: the dashboard did not start (see above); training goes on", flush=True)
    try:
        driver.setup()
        summary = driver.train()
    except (ConfigError, DataError) as err:
        print(f"unigrpo: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (PlacementError, CheckpointSpaceError, TrainingDiverged) as err:
        # the cluster cannot hold a group / the disk is full / the updates went NaN: a message, no traceback
        print(f"unigrpo: {err}", file=sys.stderr)
        _say_resumable(run_dir, CheckpointStore)
        return EXIT_FAILED
    except (KeyboardInterrupt, SystemExit) as err:
        # SystemExit(15): a SIGTERM while ray.init runs meets Ray's own handler, which exits with the signal
        if isinstance(err, SystemExit) and err.code not in (signal.SIGTERM, signal.SIGINT):
            raise
        print(f"unigrpo: interrupted {'while starting' if driver.step == 0 else f'at step {driver.step}'}: "
              "every actor stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:  # noqa: BLE001 - report, then a trustworthy exit code
        traceback.print_exc()
        _say_resumable(run_dir, CheckpointStore)
        return EXIT_FAILED
    finally:
        driver.shutdown()
        if dashboard is not None:
            dashboard.stop()
        if not args.resume and _never_started(driver):
            shutil.rmtree(run_dir, ignore_errors=True)  # the next start takes the same name
            print(f"unigrpo: no step completed; removed {run_dir}", file=sys.stderr)
    print(json.dumps({k: summary[k] for k in ("steps", "wall_s", "reward_first10", "reward_last10")}))
    print(f"unigrpo: summary in {run_dir / 'summary.json'}, reward curve in {run_dir / 'reward_curve.png'}")
    print(f"unigrpo: look at the run with: unigrpo dashboard {run_dir}")
    return EXIT_INTERRUPTED if summary.get("interrupted") else EXIT_OK


def eval_main(argv: list[str]) -> int:
    """`unigrpo eval POLICY --data FILE`: one held-out evaluation of a saved policy, no training."""
    from rl.config import ConfigError, load_config
    from rl.data import DataError

    parser = argparse.ArgumentParser(
        prog="unigrpo eval",
        description="Evaluate a saved policy (a checkpoint directory, its policy/ folder, or any policy "
                    "directory) on held-out prompts with the rollout workers and reward actors of a run config.")
    parser.add_argument("policy", help="checkpoint directory (runs/NAME/checkpoints/step_N) or policy directory")
    parser.add_argument("--data", action="append", default=[], help="Parquet/JSONL prompt file (repeatable); "
                        "default: the config's eval.files, or the built-in task's held-out split")
    parser.add_argument("--config", help="run config (default: the run's config.yaml next to the checkpoint, "
                        "else configs/demo.yaml)")
    parser.add_argument("--out", help="directory to store the evaluated rollouts in (evals/step=0/)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides key=value, e.g. eval.k=8")
    args = parser.parse_args(argv)
    try:
        policy = Path(args.policy)
        if (policy / "policy" / "config.json").is_file():
            policy = policy / "policy"  # a checkpoint directory
        if not (policy / "config.json").is_file():
            raise ConfigError(f"{args.policy}: neither a policy directory nor a checkpoint (no config.json)")
        config = args.config
        if config is None:
            run_cfg = next((p / "config.yaml" for p in policy.resolve().parents if (p / "config.yaml").is_file()),
                           None)
            config = run_cfg
        overrides = [*args.overrides, f"model.path={policy.resolve()}"]
        if args.data:
            overrides.append("eval.files=[" + ",".join(str(Path(f).resolve()) for f in args.data) + "]")
        cfg = load_config(config, overrides)
        from rl.evaluation import build_eval_prompts

        prompts = build_eval_prompts(cfg)
        if not prompts:
            raise ConfigError("no evaluation prompts: pass --data FILE (or set eval.files)")
    except (ConfigError, DataError, FileNotFoundError) as err:
        print(f"unigrpo: {err}", file=sys.stderr)
        return EXIT_USAGE
    from rl.evaluation import evaluate_policy

    try:
        result = evaluate_policy(cfg, prompts, Path(args.out) if args.out else None)
    except Exception:  # noqa: BLE001 - report, then a trustworthy exit code
        traceback.print_exc()
        return EXIT_FAILED
    print(json.dumps(result))
    return EXIT_OK


def _say_resumable(run_dir: Path, store_cls) -> None:
    ckpt = store_cls(run_dir).latest_valid(quiet=True) if run_dir.is_dir() else None
    if ckpt is not None:
        print(f"unigrpo: the run is resumable from {ckpt.name}: unigrpo train --resume {run_dir}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: unigrpo {train,eval,rewards check,dashboard,plan,export} ...  (unigrpo train --help)"
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() if argv else usage)
        return EXIT_OK if argv else EXIT_USAGE
    command, rest = argv[0], argv[1:]
    if command == "train":
        return train_main(rest)
    if command == "eval":
        return eval_main(rest)
    if command == "rewards" and rest[:1] == ["check"]:
        from rewards.cli import check_main

        return check_main(rest[1:])
    if command == "plan":
        from rl.plan import plan_main

        return plan_main(rest)
    if command == "export":
        from rl.export import export_main

        return export_main(rest)
    if command == "dashboard":
        from rl.dashboard.server import main as dashboard_main

        return dashboard_main(rest)
    print(f"unigrpo: unknown command {' '.join(argv[:2])!r}\n{usage}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
