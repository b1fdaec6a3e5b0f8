"""`fastgate serve` and `fastgate check-config`: the commands that read the config
file only (no store session)."""

from __future__ import annotations

import argparse
import logging
import sys


def serve(args: argparse.Namespace) -> int:
    """Load and check the config, set up logging, run the gateway until stopped."""
    from fastgate.cli.session import EXIT_USAGE, config_error, default_config_path
    from fastgate.config import ConfigError, config_warnings, load_config

    path = args.config or default_config_path()
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        config_error(path, exc.problems, defaulted=not args.config)
        return EXIT_USAGE
    from fastgate import logs

    logs.setup(args.log_level or cfg.logging.level, args.log_format or cfg.logging.format)
    for warning in config_warnings(cfg):
        logging.getLogger("fastgate").warning("%s", warning)
    from fastgate.supervisor import serve as serve_forever

    try:
        return serve_forever(cfg, host=args.host, port=args.port, workers=args.workers)
    except OSError as exc:  # binding: permission denied, unknown host, address not here
        host = cfg.server.host if args.host is None else args.host
        port = cfg.server.port if args.port is None else args.port
        print(f"fastgate: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1


def check_config(args: argparse.Namespace) -> int:
    from fastgate.config import check_config_main

    return check_config_main(args.file)
