"""Command line: ``meanfield-jax run CONFIG --out DIR``, ``meanfield-jax list``, ``meanfield-jax bench``.

Errors in configs or arguments, and a config asking for more memory than the machine has, print one message
and exit with status 2 (no traceback); a run whose checks fail exits with status 1, as does one that fails
on the way (one line says why; ``--traceback`` shows the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from .config import ConfigError, apply_overrides, load_config

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # exit 2 with one line, as argparse does, but without the usage dump
        print(f"meanfield-jax: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="meanfield-jax", description="Mean-field descriptions of residual networks.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run an experiment from its YAML config")
    run.add_argument("config", type=Path)
    run.add_argument("--out", type=Path, required=True, help="output folder (must be new or empty)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="override a config value (repeatable), e.g. --set solver.cells=800")
    run.add_argument("--overwrite", action="store_true", help="allow replacing results in a non-empty --out")
    run.add_argument("--quiet", action="store_true", help="print nothing but errors")
    run.add_argument("--traceback", action="store_true",
                     help="show the Python traceback of a run that fails (by default one line says why)")
    lst = sub.add_parser("list", help="list the experiment configs with their descriptions")
    lst.add_argument("--dir", type=Path, default=Path("configs"), help="folder of YAML configs")
    bench = sub.add_parser("bench", help="run the benchmark suite")
    bench.add_argument(
        "--quick", action="store_true",
        help="fewer sizes and repeats (about 12 minutes on 2 cores; the full suite about 30)",
    )
    bench.add_argument(
        "--out", type=Path, default=None,
        help="new JSON file for a summary (each suite's exit status, result files and goals); the "
        "measurements themselves always go to benchmarks/results/",
    )
    bench.add_argument(
        "--keep-freed-memory", action="store_true",
        help="run each suite with meanfield_jax.keep_freed_memory() (docs/scaling.md)",
    )
    return parser


def _list(folder: Path) -> int:
    if not folder.is_dir():
        raise ConfigError(f"no config folder {folder} (run from the repository root or pass --dir)")
    for path in sorted(folder.glob("*.yaml")):
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            desc = raw.get("description", "") if isinstance(raw, dict) else ""
        except yaml.YAMLError:
            desc = "(malformed YAML)"
        except (OSError, UnicodeDecodeError):
            desc = "(unreadable: not a UTF-8 text file)"
        print(f"{path.as_posix():45s} {desc}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            return _list(args.dir)
        if args.command == "bench":
            from .bench import run_benchmarks

            return run_benchmarks(quick=args.quick, out=args.out, keep_freed_memory=args.keep_freed_memory)
        cfg = apply_overrides(load_config(args.config), args.overrides)
        from .runner import run_experiment

        metrics = run_experiment(cfg, args.out, overwrite=args.overwrite, quiet=args.quiet)
    except ConfigError as exc:
        print(f"meanfield-jax: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `meanfield-jax list | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, MemoryError) or "RESOURCE_EXHAUSTED" in str(exc):  # the config asks too much
            print(f"meanfield-jax: error: out of memory ({reason}); reduce the sizes the config asks for "
                  "(model.layers, data.particles, solver.cells)", file=sys.stderr)
            return 2
        if args.command != "run" or args.traceback:
            raise
        # a value the config checks let through but the experiment cannot handle (a weight so large that
        # e^{wT} overflows, say): one line; --traceback shows where
        print(f"meanfield-jax: error: the run failed: {type(exc).__name__}: {reason} (pass --traceback to "
              "see where)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("meanfield-jax: interrupted; files already written are complete", file=sys.stderr)
        return 130
    return 0 if metrics["passed"] else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
