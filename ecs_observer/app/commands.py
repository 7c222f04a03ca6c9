"""The `ecs-observer` commands but `healthcheck`: run, check, translate, dlq, demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import get_args

from ..core.decision import translate
from ..core.ecs_event import Ignored, Rejected, decode
from ..core.translate import NotPrefects
from ..support.redact import redact
from .errors import OUTAGES, explain
from .healthcheck import DEFAULT_HEALTH_PORT, EXIT_CONFIG, HEALTH_PORT_ENV
from .healthcheck import main as healthcheck
from .logs import configure_logging
from .settings import ConfigError, Settings, env_name, load_settings, observer_config

__all__ = ["main"]

_SECRET_FIELDS = {"prefect_api_key", "prefect_api_auth_string"}


# The settings each command but `run` (all of them) uses: the dead-letter commands find the queue, nothing
# else; `check` probes what `run` will call.
_QUEUE_SETTINGS = ("queue_url", "queue_name", "queue_region")
_CHECK_SETTINGS = (
    *_QUEUE_SETTINGS,
    "prefect_api_url",
    "prefect_api_key",
    "prefect_api_auth_string",
    "watched_clusters",
    "state_table",
    "flow_run_states",
    "crash_log_lines",
    "sweep_interval",
    "stop_cancelled",
    "stop_orphans",
    "start_timeout",
)


def _add_settings_flags(parser: argparse.ArgumentParser, names: Sequence[str] | None = None) -> None:
    """A flag per setting the command uses (`names`; default: all), its variable and default in its help."""
    group = parser.add_argument_group("settings (each also read from its environment variable)")
    for name, field in Settings.model_fields.items():
        if name in ("log_format", "log_level") or (names is not None and name not in names):
            continue
        notes = [env_name(name)]
        if field.default is not None:
            notes.append(f"default {str(field.default).lower() if isinstance(field.default, bool) else field.default}")
        if name in _SECRET_FIELDS:
            notes.append("secret; prefer the environment")
        help_text = f"{field.description or ''} [{'; '.join(notes)}]"
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, metavar="VALUE", help=help_text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecs-observer",
        description="Forwards AWS ECS task state changes of Prefect flow runs to the Prefect events API.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the observer service until SIGTERM/SIGINT")
    _add_settings_flags(run)
    check = commands.add_parser("check", help="check configuration, queue, DescribeTasks permission and Prefect API")
    _add_settings_flags(check, _CHECK_SETTINGS)
    tr = commands.add_parser(
        "translate", help="print the Prefect event the observer would forward for one EventBridge event"
    )
    tr.add_argument("file", nargs="?", help="file holding the EventBridge event (default: stdin)")
    tr.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="a tag of the task (repeatable)")
    tr.add_argument("--follows", default=None, metavar="UUID", help="id of the previous state change, if any")
    health = commands.add_parser("healthcheck", help="exit 0 if the local observer's /healthz answers 200, else 1")
    health.add_argument(
        "--health-port",
        dest="health_port",
        default=None,
        metavar="PORT",
        help=f"port of /healthz [{HEALTH_PORT_ENV}, default {DEFAULT_HEALTH_PORT}]",
    )
    dlq = commands.add_parser("dlq", help="show or redrive the queue's dead-letter queue")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_show = dlq_commands.add_parser("show", help="list dead letters with the reason the observer rejects each")
    dlq_show.add_argument("--limit", type=int, default=1000, help="list at most this many (default 1000)")
    _add_settings_flags(dlq_show, _QUEUE_SETTINGS)
    dlq_redrive = dlq_commands.add_parser("redrive", help="move dead letters back to the source queue")
    _add_settings_flags(dlq_redrive, _QUEUE_SETTINGS)
    demo = commands.add_parser("demo", help="run the observer on an embedded moto with a few Prefect-tagged tasks")
    demo.add_argument(
        "--prefect-api-url",
        default=None,
        help="forward events and flow-run states to this Prefect API (default: PREFECT_API_URL, else in memory)",
    )
    demo.add_argument("--json", action="store_true", help="print the raw Prefect events as JSON lines instead")
    for sub in (run, check, tr, health, dlq_show, dlq_redrive, demo):
        fmt = "json lines on stdout" if sub is run else "text on stderr"
        level = "WARNING" if sub is demo else "INFO"
        sub.add_argument(
            "--log-format",
            choices=_choices("log_format"),
            default=None,
            help=f"log format [ECS_OBSERVER_LOG_FORMAT; default {fmt}]",
        )
        sub.add_argument(
            "--log-level",
            choices=_choices("log_level"),
            default=None,
            help=f"log level [ECS_OBSERVER_LOG_LEVEL; default {level}]",
        )
    return parser


def _choices(name: str) -> list[str]:
    """The values a Literal setting takes, as Settings declares them."""
    return [str(value) for value in get_args(Settings.model_fields[name].annotation)]


def _version() -> str:
    try:
        return metadata.version("ecs-observer")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "healthcheck":
        return healthcheck(["--health-port", args.health_port] if args.health_port is not None else [])
    overrides = {name: getattr(args, name, None) for name in Settings.model_fields}
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        print(f"ecs-observer: invalid configuration: {redact(str(exc))}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "translate":
        return _translate(args, observer_config(settings).container_name)
    # Only the service logs JSON on stdout (for CloudWatch); the other commands keep stdout for their
    # output (events, check lines, dead letters) and log as text on stderr unless asked otherwise.
    log_format = args.log_format or (settings.log_format if args.command == "run" else "text")
    # The demo speaks first: its timeline and summary, with only warnings logged unless asked otherwise.
    quiet = args.command == "demo" and "log_level" not in settings.model_fields_set
    configure_logging(log_format, "WARNING" if quiet else settings.log_level)
    try:
        if args.command == "run":
            from .service import run_service

            asyncio.run(run_service(settings))
            return 0
        if args.command == "check":
            from .check import check

            return 0 if asyncio.run(check(settings, print)) else 1
        if args.command == "dlq":
            from .service import dead_letters

            limit = getattr(args, "limit", 0)
            return asyncio.run(dead_letters(settings, args.dlq_command, limit, print, sys.stderr.isatty()))
        from .demo import run_demo

        return asyncio.run(run_demo(settings, as_json=args.json))
    except ConfigError as exc:
        print(f"ecs-observer: invalid configuration: {redact(str(exc))}", file=sys.stderr)
        return EXIT_CONFIG
    except OUTAGES as exc:  # a service down, refusing or throttling at start: one line, never a traceback
        print(f"ecs-observer: {explain(exc)}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


def _translate(args: argparse.Namespace, container_name: str) -> int:
    """The event the service forwards for this change, by the service's own rules (`decision.forward`)."""
    try:
        body = Path(args.file).read_text() if args.file else sys.stdin.read()
    except (OSError, UnicodeDecodeError) as exc:
        print(f"ecs-observer: cannot read {args.file}: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
        return EXIT_CONFIG
    tags: dict[str, str] = {}
    for item in args.tag:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"ecs-observer: --tag {item!r} is not KEY=VALUE", file=sys.stderr)
            return EXIT_CONFIG
        tags[key] = value
    follows = None
    if args.follows:
        from ..core.ecs_event import parse_uuid

        follows = parse_uuid(args.follows)
        if follows is None:
            print(f"ecs-observer: --follows {args.follows!r} is not a UUID", file=sys.stderr)
            return EXIT_CONFIG
    decoded = decode(body)
    if isinstance(decoded, Rejected):
        print(f"rejected: {decoded.reason}", file=sys.stderr)
        return 1
    if isinstance(decoded, Ignored):
        print(f"ignored: not an ECS task state change ({decoded.reason})", file=sys.stderr)
        return 0
    event = translate(decoded, tags, follows, container_name=container_name)
    if isinstance(event, NotPrefects):
        print(f"filtered: task {decoded.task_arn} is not Prefect's: {event.reason}", file=sys.stderr)
        return 0
    for warning in event.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(json.dumps(event.to_json(), indent=2))
    return 0
