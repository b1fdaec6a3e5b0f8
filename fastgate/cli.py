"""The `fastgate` command: parse arguments, load config, run. No work at import time."""

from __future__ import annotations

import argparse
import logging
import sys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastgate", description="A fast LLM API gateway.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the gateway")
    s.add_argument("--config", "-c", default="config.example.toml", help="TOML config file")
    s.add_argument("--host", help="listen address (overrides [server] host)")
    s.add_argument("--port", type=int, help="listen port, 0 = ephemeral (overrides [server] port)")
    s.add_argument("--workers", type=int, help="processes sharing the port (SO_REUSEPORT)")
    s.add_argument("--log-level", help="debug | info | warning | error")
    c = sub.add_parser("check-config", help="validate a config file")
    c.add_argument("file")
    from fastgate import commands

    commands.add_subcommands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        from fastgate.config import check_config_main

        return check_config_main(args.file)
    if args.command == "serve":
        return _serve(args)
    from fastgate import commands

    return commands.run(args)


def _serve(args: argparse.Namespace) -> int:
    from fastgate.config import ConfigError, config_warnings, load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"fastgate: invalid config {args.config}:\n{exc}", file=sys.stderr)
        return 2
    level = (args.log_level or cfg.logging.level).upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for warning in config_warnings(cfg):
        logging.getLogger("fastgate").warning("%s", warning)
    if args.workers is not None and args.workers < 1:
        print("fastgate: --workers must be >= 1", file=sys.stderr)
        return 2
    from fastgate.server import serve

    return serve(cfg, host=args.host, port=args.port, workers=args.workers)


if __name__ == "__main__":
    sys.exit(main())
