"""`fastgate serve` and `fastgate check-config`: the commands that read the config
file only (no store session)."""

from __future__ import annotations

import argparse
import logging
import sys


def serve(args: argparse.Namespace) -> int:
    """Load and check the config, set up logging, run the gateway until stopped."""
    from fastgate.config import ConfigError, config_warnings, load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"fastgate: invalid config {args.config}:\n{exc}", file=sys.stderr)
        return 2
    from fastgate import logs

    logs.setup(args.log_level or cfg.logging.level, args.log_format or cfg.logging.format)
    for warning in config_warnings(cfg):
        logging.getLogger("fastgate").warning("%s", warning)
    if args.workers is not None and args.workers < 1:
        print("fastgate: --workers must be >= 1", file=sys.stderr)
        return 2
    from fastgate.supervisor import serve as serve_forever

    return serve_forever(cfg, host=args.host, port=args.port, workers=args.workers)


def check_config(args: argparse.Namespace) -> int:
    from fastgate.config import check_config_main

    return check_config_main(args.file)
