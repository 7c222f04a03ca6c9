"""The `ecs-observer` command as a user runs it."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ecs_observer.adapters.aws import AwsClients
from ecs_observer.app.demo.samples import FARGATE_LIFECYCLE, state_change

from .servers import PrefectServer, free_port
from .world import depth, make_queue, make_table, observer, send, start_tasks

ARN = "arn:aws:ecs:us-east-1:123456789012:task/prefect/0123456789abcdef0123456789abcdef"
RUN = "7c2f4b1e-58c8-4d1b-9a4e-0f3c2d1b6a59"
EXE = str(Path(sys.executable).with_name("ecs-observer"))


def cli(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ECS_OBSERVER_", "PREFECT_INTEGRATIONS_"))}
    return subprocess.run(
        [EXE, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**clean, **(env or {})},
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "args", "named"),
    [
        ({}, [], "ECS_OBSERVER_QUEUE_URL"),
        ({"ECS_OBSERVER_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/q"}, [], "PREFECT_API_URL"),
        ({"ECS_OBSERVER_RECEIVERS": "many"}, [], "ECS_OBSERVER_RECEIVERS"),
        ({}, ["--visibility-timeout", "1"], "ECS_OBSERVER_VISIBILITY_TIMEOUT"),
        ({"ECS_OBSERVER_QUEUE_URL": "not a url"}, [], "ECS_OBSERVER_QUEUE_URL"),
        ({"PREFECT_API_URL": "ftp://x"}, [], "PREFECT_API_URL"),
        ({"PREFECT_API_KEY": "pnu_secret", "PREFECT_API_AUTH_STRING": "a:b"}, [], "PREFECT_API_KEY"),
        # A drain that ECS's SIGKILL would cut short (the service template passes its stop timeout).
        ({"ECS_OBSERVER_DRAIN_TIMEOUT": "60", "ECS_OBSERVER_STOP_TIMEOUT": "30"}, [], "ECS_OBSERVER_DRAIN_TIMEOUT"),
        ({"ECS_OBSERVER_STOP_TIMEOUT": "30"}, ["--drain-timeout", "30"], "ECS_OBSERVER_DRAIN_TIMEOUT (30 s)"),
    ],
)
def test_bad_configuration_is_one_line_naming_the_setting_exit_2(
    env: dict[str, str], args: list[str], named: str
) -> None:
    result = cli("run", *args, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]
    assert "pnu_secret" not in result.stderr + result.stdout


def test_translate_prints_the_event() -> None:
    body = json.dumps(state_change(ARN, "RUNNING", 2, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)))
    result = cli(
        "translate", "--tag", f"prefect.io/flow-run-id={RUN}", "--tag", "prefect.io/worker-name=w1", stdin=body
    )
    assert result.returncode == 0, result.stderr
    event = json.loads(result.stdout)
    assert event["event"] == "prefect.ecs.task.running"
    assert event["id"] == json.loads(body)["id"]
    assert [r["prefect.resource.role"] for r in event["related"]] == ["flow-run", "worker"]


async def test_translate_prints_what_the_service_forwards_for_the_same_change(aws: AwsClients) -> None:
    """One way to build an event: a crashed task's lifecycle through the real observer, then each of its
    stopped and running changes through `translate`, with the task's tags and the `follows` it was sent with."""
    from ecs_observer.app.demo.timeline import RecordingSink

    queue_url, _ = await make_queue(aws)
    (task,) = await start_tasks(aws, 1, crash_first=True)
    await send(aws, queue_url, [json.dumps(e) for e in task.events])
    sink = RecordingSink()
    await asyncio.wait_for((await observer(aws, queue_url, sink)).run(until_idle=2), timeout=120)
    tags = ["prefect.io/flow-run-id=" + str(task.run_id), "prefect.io/flow-run-name=run-0"]
    tags.append("prefect.io/worker-name=ecs-worker")
    for body in (task.events[-1], task.events[3]):  # STOPPED (exit code 1: the diagnosis labels), RUNNING
        forwarded = sink.events[body["id"]]
        follows = ["--follows", forwarded["follows"]] if "follows" in forwarded else []
        printed = cli("translate", *[f"--tag={tag}" for tag in tags], *follows, stdin=json.dumps(body))
        assert printed.returncode == 0, printed.stderr
        assert json.loads(printed.stdout) == forwarded
    assert "ecs.diagnosis" in sink.events[task.events[-1]["id"]]["resource"]


def test_translate_from_file_with_follows(tmp_path: Path) -> None:
    path = tmp_path / "event.json"
    path.write_text(json.dumps(state_change(ARN, "STOPPED", 8, datetime(2026, 1, 2, tzinfo=UTC), flow_run_id=RUN)))
    follows = "9b6d7f0e-1c2d-4e3f-8a9b-0c1d2e3f4a5b"
    result = cli("translate", str(path), "--follows", follows)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["follows"] == follows


def test_translate_untagged_task_prints_nothing() -> None:
    result = cli(
        "translate", "--tag", "team=data", stdin=json.dumps(state_change(ARN, "RUNNING", 2, datetime.now(UTC)))
    )
    assert (result.returncode, result.stdout) == (0, "")
    assert "not Prefect's" in result.stderr


def test_translate_broken_message_exits_1_with_reason() -> None:
    result = cli("translate", stdin='{"source": "aws.ecs", "detail-type": "ECS Task State Change", "id": "x"}')
    assert result.returncode == 1
    assert result.stderr.startswith("rejected: ")
    assert result.stdout == ""


def test_translate_bad_tag_option() -> None:
    assert cli("translate", "--tag", "novalue", stdin="{}").returncode == 2


async def test_check_passes_against_moto_and_prefect(aws: AwsClients, prefect: PrefectServer) -> None:
    queue_url, _ = await make_queue(aws)
    result = cli("check", env={"ECS_OBSERVER_QUEUE_URL": queue_url, "PREFECT_API_URL": prefect.api_url})
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split(": ")[0] for line in lines] == [
        "ok   configuration",
        "ok   queue exists",
        "ok   queue has a dead-letter queue",
        "ok   queue can be read",
        "ok   ecs:DescribeTasks allowed",
        "ok   ecs:StopTask allowed",
        "ok   Prefect API answers",
        "ok   Prefect flow runs readable",
        "ok   ecs:DescribeTaskDefinition allowed",
        "ok   logs:GetLogEvents allowed",
    ]
    off = cli(
        "check",
        env={
            "ECS_OBSERVER_QUEUE_URL": queue_url,
            "PREFECT_API_URL": prefect.api_url,
            "ECS_OBSERVER_FLOW_RUN_STATES": "false",
        },
    )
    assert off.returncode == 0
    assert "flow runs" not in off.stdout


async def test_check_checks_the_state_table(aws: AwsClients, prefect: PrefectServer) -> None:
    queue_url, _ = await make_queue(aws)
    base = {"ECS_OBSERVER_QUEUE_URL": queue_url, "PREFECT_API_URL": prefect.api_url}
    good = cli("check", env=base | {"ECS_OBSERVER_STATE_TABLE": await make_table(aws)})
    assert good.returncode == 0, good.stdout + good.stderr
    assert "ok   state table usable" in good.stdout
    assert "read and write allowed" in good.stdout
    no_ttl = cli("check", env=base | {"ECS_OBSERVER_STATE_TABLE": await make_table(aws, ttl=False)})
    assert no_ttl.returncode == 1
    assert "FAIL state table usable: RuntimeError: TTL is not on for attribute 'expires'" in no_ttl.stdout
    missing = cli("check", env=base | {"ECS_OBSERVER_STATE_TABLE": "no-such-table"})
    assert missing.returncode == 1
    assert "FAIL state table usable: DescribeTable failed with ResourceNotFoundException" in missing.stdout
    bad_name = cli("check", env=base | {"ECS_OBSERVER_STATE_TABLE": "a b"})
    assert bad_name.returncode == 2
    assert "ECS_OBSERVER_STATE_TABLE: " in bad_name.stderr


async def test_run_with_a_missing_state_table_says_so_and_exits_2(aws: AwsClients) -> None:
    queue_url, _ = await make_queue(aws)
    env = {"ECS_OBSERVER_QUEUE_URL": queue_url, "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    result = cli("run", env=env | {"ECS_OBSERVER_STATE_TABLE": "no-such-table", "ECS_OBSERVER_HEALTH_PORT": "0"})
    assert result.returncode == 2
    assert "ECS_OBSERVER_STATE_TABLE: no table 'no-such-table' in us-east-1" in result.stderr


async def test_check_finds_queue_by_prefect_aws_name_and_reports_each_failure(aws: AwsClients) -> None:
    queue_url, _ = await make_queue(aws)
    name = queue_url.rsplit("/", 1)[1]
    result = cli(
        "check",
        env={"PREFECT_INTEGRATIONS_AWS_ECS_OBSERVER_SQS_QUEUE_NAME": name, "PREFECT_API_URL": "http://127.0.0.1:9/api"},
    )
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert lines[1].startswith("ok   queue exists")
    assert any(line.startswith("FAIL Prefect API answers") for line in lines)
    assert any(line.startswith("FAIL Prefect flow runs readable") for line in lines)


async def test_run_forwards_then_exits_0_on_sigterm(aws: AwsClients, prefect: PrefectServer) -> None:
    queue_url, _ = await make_queue(aws)
    (task,) = await start_tasks(aws, 1)
    await send(aws, queue_url, [json.dumps(e) for e in task.events])
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECS_OBSERVER_")}
    env |= {
        "ECS_OBSERVER_QUEUE_URL": queue_url,
        "PREFECT_API_URL": prefect.api_url,
        "ECS_OBSERVER_WAIT_TIME_SECONDS": "2",
        "PREFECT_API_KEY": "pnu_never_logged",
        "ECS_OBSERVER_HEALTH_PORT": str(free_port()),  # never the fixed 9090: two runs at once would collide
    }
    process = await asyncio.create_subprocess_exec(
        EXE, "run", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while await depth(aws, queue_url) != (0, 0) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        stopped_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        raw_out, raw_err = await asyncio.wait_for(process.communicate(), timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
    out, err = raw_out.decode(), raw_err.decode()
    assert process.returncode == 0, err
    assert time.monotonic() - stopped_at < 25
    logs = [json.loads(line) for line in out.splitlines()]
    assert {"time", "level", "logger", "message"} <= set(logs[0])
    assert any(entry["message"].startswith("stopping (received SIGTERM): no new messages") for entry in logs)
    (summary,) = [entry["message"] for entry in logs if entry["message"].startswith("stopped: ")]
    counts = dict(pair.split("=") for pair in summary.removeprefix("stopped: ").split(", "))
    assert int(counts["received"]) == int(counts["forwarded"]) == int(counts["deleted"]) >= 8
    assert "pnu_never_logged" not in out + err
    assert len(prefect.wait_for_events([task.resource_id], count=8)) == 8


def test_python_dash_m_runs_the_same_command() -> None:
    body = json.dumps(state_change(ARN, "PENDING", 1, datetime(2026, 1, 2, tzinfo=UTC), flow_run_id=RUN))
    result = subprocess.run(
        [sys.executable, "-m", "ecs_observer", "translate"],
        input=body,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["event"] == "prefect.ecs.task.pending"


def test_demo_prints_a_timeline_per_task_with_the_states_it_would_set() -> None:
    result = cli("demo", timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert out.count("\ntask ") + out.startswith("task ") == 4  # the untagged tasks and the EC2 event yield nothing
    # Every change follows the one before: a break (" | ") only before the STOPPED the sweep found, which moto
    # gives no version (ECS would, and it would follow).
    assert out.count("  ECS      PROVISIONING → PENDING → STOPPED\n") == 2
    full = "  ECS      " + " → ".join(FARGATE_LIFECYCLE) + "\n"
    assert out.count(full) == 1
    assert out.count("  ECS      " + " → ".join(FARGATE_LIFECYCLE[:-1]) + " | STOPPED\n") == 1
    assert out.count(" | ") == 1
    assert out.count("  sweep    STOPPED found by the sweep: its EventBridge event never came\n") == 1
    assert out.count("  run      Pending → InfrastructurePending → Crashed\n") == 2
    assert out.count("  run      Pending → InfrastructurePending → AwaitingRetry\n") == 1
    assert out.count("  run      Pending → InfrastructurePending\n") == 1
    assert "exited cleanly (code 0) at " in out
    assert "the flow run never reported a final state" in out
    assert "  retry    Rescheduled (image pull timed out): attempt 1 of 2" in out
    assert "stopped: the container ran out of memory and was killed; exit code 137" in out
    assert "  why      out-of-memory: raise the task's or the container's memory" in out
    assert "  logs     the container's last 3 line(s) posted, ending 'Killed'" in out
    # The demo speaks first: the timeline, then one summary line; no moto warnings, no log lines.
    assert all(line.startswith(("task ", "  ")) for line in out.splitlines()), out
    (summary,) = result.stderr.strip().splitlines()
    assert summary.startswith("demo: received ")
    assert "flow runs in memory" in summary


def test_the_demo_logs_name_runs_as_the_timeline_does() -> None:
    result = cli("demo", "--log-level", "INFO", timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    proposals = [line for line in result.stderr.splitlines() if "proposed (task" in line]
    assert proposals, result.stderr
    assert all("flow run demo-run-" in line for line in proposals), proposals
    assert "moto" not in result.stderr


def test_demo_json_prints_the_raw_chained_events() -> None:
    result = cli("demo", "--json", timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    # Unique by id: SQS may deliver a message twice, and Prefect keeps one copy of each id.
    events = list({e["id"]: e for e in map(json.loads, result.stdout.splitlines())}.values())
    assert len(events) == 3 + 3 + 8 + 8  # two tasks stop once placed; one STOPPED comes from the sweep
    by_task: dict[str, list[dict[str, object]]] = {}
    for event in events:
        by_task.setdefault(str(event["resource"]["prefect.resource.id"]), []).append(event)
    assert sorted(len(chain) for chain in by_task.values()) == [3, 3, 8, 8]
    for chain in by_task.values():
        ordered = sorted(chain, key=lambda e: str(e["occurred"]))
        follows = [e.get("follows") for e in ordered]
        expected = [None] + [e["id"] for e in ordered[:-1]]
        # The swept STOPPED (no version from moto) follows nothing; every other change its predecessor.
        assert follows == expected or follows == [*expected[:-1], None]


def test_demo_with_a_prefect_api_creates_the_runs_there_and_sets_their_states(prefect: PrefectServer) -> None:
    result = cli("demo", "--prefect-api-url", prefect.api_url, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("  run      Pending → InfrastructurePending → Crashed\n") == 2
    assert result.stdout.count("  run      Pending → InfrastructurePending → AwaitingRetry\n") == 1
    assert result.stdout.count("  sweep    STOPPED found by the sweep") == 1
    assert f"flow runs in {prefect.api_url}" in result.stderr


def test_settings_take_their_defaults_from_the_pipeline_and_hand_every_shared_one_on() -> None:
    from ecs_observer.app.settings import Settings, load_settings, observer_config
    from ecs_observer.pipeline.config import ObserverConfig, settings_of

    assert observer_config(Settings()) == ObserverConfig()
    shared = set(ObserverConfig.__dataclass_fields__) & set(Settings.model_fields)
    assert shared == {f.name for f in settings_of(ObserverConfig)}
    assert len(shared) == 24
    # Declared once, in the pipeline: the setting has its bounds and its description from there.
    receivers = Settings.model_fields["receivers"]
    assert (receivers.annotation, receivers.default) == (int, 4)
    assert receivers.description == ObserverConfig.__dataclass_fields__["receivers"].metadata["description"]
    assert str(receivers.metadata) == "[Ge(ge=1), Le(le=64)]"
    given = load_settings(receivers="7", reorder_window="3.5", describe_claim="9", drain_timeout="4")
    config = observer_config(given)
    assert (config.receivers, config.reorder_window, config.describe_claim, config.drain_timeout) == (7, 3.5, 9, 4)
    swept = observer_config(load_settings(sweep_grace="60", start_retries="0", stop_orphans="true"))
    assert (swept.sweep_grace, swept.start_retries, swept.stop_orphans) == (60.0, 0, True)


def test_the_readme_lists_every_setting_with_its_variable_flag_and_default() -> None:
    from ecs_observer.app.settings import Settings, env_name

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    variables = ("| `ECS_OBSERVER_", "| `PREFECT_API")
    rows = [line.split(" | ") for line in readme.splitlines() if line.startswith(variables)]
    listed = [(variable.strip("| `"), flag.strip("`"), default.strip("`")) for variable, flag, default, _ in rows]

    def shown(default: object) -> str:
        if default is None:
            return "—"
        return str(default).lower() if isinstance(default, bool) else str(default)

    expected = [
        (env_name(name), f"--{name.replace('_', '-')}", shown(field.default))
        for name, field in Settings.model_fields.items()
    ]
    # The README may drop a float's ".0" (300 for 300.0); nothing else may differ.
    assert [(v, f, d.removesuffix(".0")) for v, f, d in listed] == [
        (v, f, d.removesuffix(".0")) for v, f, d in expected
    ]


async def test_credentials_in_the_prefect_url_never_show(aws: AwsClients) -> None:
    queue_url, _ = await make_queue(aws)
    url = "http://admin:s3cret-pw@127.0.0.1:9/api"
    checked = cli("check", env={"ECS_OBSERVER_QUEUE_URL": queue_url, "PREFECT_API_URL": url})
    assert checked.returncode == 1
    assert "s3cret" not in checked.stdout + checked.stderr
    assert "FAIL Prefect API answers" in checked.stdout


async def test_the_prefect_clients_outage_lines_redact_the_url(caplog: pytest.LogCaptureFixture) -> None:
    from ecs_observer.adapters.prefect.client import PrefectClient
    from ecs_observer.app.logs import _JsonFormatter
    from ecs_observer.support.backoff import Backoff
    from ecs_observer.support.redact import redact

    client = PrefectClient(f"http://admin:s3cret-pw@127.0.0.1:{free_port()}/api", backoff=Backoff(0.01, 0.02))
    with caplog.at_level(logging.WARNING, logger="ecs_observer"):
        task = asyncio.create_task(client.request("POST", "/events", content=b"[]"))
        while not caplog.records:
            await asyncio.sleep(0.02)
        task.cancel()
    await client.aclose()
    assert "cannot reach the Prefect API at http://***@127.0.0.1:" in caplog.text
    assert "s3cret" not in caplog.text
    # And whatever a message holds, the formatters take credentials out of it.
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "to %s", ("https://u:p@h/api",), None)
    assert "u:p" not in _JsonFormatter().format(record)
    assert redact("a https://user:pw@host/x and http://h/y") == "a https://***@host/x and http://h/y"


def one_line(result: subprocess.CompletedProcess[str], *pieces: str) -> None:
    """An operator error: exit 2 and one line naming what is wrong, no traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for piece in pieces:
        assert piece in lines[0], lines[0]


async def test_operator_errors_are_one_line_and_exit_2(aws: AwsClients, tmp_path: Path) -> None:
    queue_url, _ = await make_queue(aws)
    prefect = {"PREFECT_API_URL": "http://127.0.0.1:9/api", "ECS_OBSERVER_HEALTH_PORT": "0"}
    missing = queue_url.rsplit("/", 1)[0] + "/no-such-queue"
    one_line(cli("run", env=prefect | {"ECS_OBSERVER_QUEUE_URL": missing}), "ECS_OBSERVER_QUEUE_URL", "no queue")
    one_line(cli("run", env=prefect | {"ECS_OBSERVER_QUEUE_NAME": "no-such-queue"}), "ECS_OBSERVER_QUEUE_NAME")
    one_line(cli("dlq", "show", env={"ECS_OBSERVER_QUEUE_URL": missing}), "no queue")
    unreachable = {"AWS_ENDPOINT_URL_SQS": f"http://127.0.0.1:{free_port()}", "AWS_MAX_ATTEMPTS": "1"}
    one_line(cli("run", env=prefect | unreachable | {"ECS_OBSERVER_QUEUE_URL": queue_url}), "cannot reach SQS")
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))  # noqa: S104
        busy.listen()
        port = str(busy.getsockname()[1])
        taken = prefect | {"ECS_OBSERVER_QUEUE_URL": queue_url, "ECS_OBSERVER_HEALTH_PORT": port}
        one_line(cli("run", env=taken), "ECS_OBSERVER_HEALTH_PORT", f"cannot serve /healthz on {port}")
    one_line(cli("translate", str(tmp_path / "nothing.json")), "cannot read", "nothing.json")


def test_version_and_each_commands_help_lists_only_the_settings_it_uses() -> None:
    from ecs_observer.app.settings import Settings

    version = cli("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == "ecs-observer 0.1.0"

    def flags(*command: str) -> set[str]:
        text = cli(*command, "--help").stdout
        return {name for name in Settings.model_fields if f"--{name.replace('_', '-')} VALUE" in text}

    queue = {"queue_url", "queue_name", "queue_region"}
    assert flags("dlq", "show") == flags("dlq", "redrive") == queue
    assert flags("check") == queue | {
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
    }
    assert flags("run") == set(Settings.model_fields) - {"log_format", "log_level"}
    run_help = " ".join(cli("run", "--help").stdout.split())
    assert "[ECS_OBSERVER_RECEIVERS; default 4]" in run_help
    assert "[ECS_OBSERVER_FLOW_RUN_STATES; default true]" in run_help


def test_each_setting_refuses_a_value_past_its_bounds_naming_itself() -> None:
    """The bounds are declared once, in the pipeline (`setting(..., ge=, le=, min_length=, max_length=)`);
    each one reaches the operator: the bound itself is taken, one step past it is one line naming the setting."""
    from ecs_observer.app.settings import ConfigError, env_name, load_settings
    from ecs_observer.pipeline.config import ObserverConfig, settings_of

    checked = 0
    for f in settings_of(ObserverConfig):
        for bound, limit in f.metadata["bounds"].items():
            step = 1 if f.type in (int, "int") else 0.5
            at, past = {
                "ge": (limit, limit - step),
                "le": (limit, limit + step),
                "min_length": ("x" * limit, "x" * (limit - 1)),
                "max_length": ("x" * limit, "x" * (limit + 1)),
            }[bound]
            assert getattr(load_settings(**{f.name: str(at)}), f.name) == at, (f.name, bound)
            with pytest.raises(ConfigError, match=env_name(f.name)):
                load_settings(**{f.name: str(past)})
            checked += 1
    assert checked >= 30  # every bounded setting, each of its bounds
