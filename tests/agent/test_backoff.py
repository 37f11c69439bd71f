"""Agent back-off and jitter: a real AgentRunner on a simulated host against a fake controller.

The fake controller speaks the agent protocol through ``httpx.MockTransport`` and can be told to be
busy (429/503, with or without ``Retry-After``) for the next requests. Nothing sleeps: every wait the
agent asks for goes through its stop event, which here records the delay and returns at once.
``EdgeRandom`` pins every random draw to the low or high end of its range, so the bounds of each
jitter are checked exactly; a seeded ``random.Random`` checks that real draws stay inside them.
"""

from __future__ import annotations

import json
import random
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from agent.backoff import ControllerUnreachable, parse_retry_after
from agent.cli import app
from agent.runner import AgentConfig, AgentRunner
from drivers.contract.protocol import DesiredState, RegisterResponse, ReportReply, desired_state_revision

HOST = "backoff-host"
NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
DESIRED = DesiredState(revision=desired_state_revision(None, None))
Event = tuple[str, object]


class FakeController:
    """Registers, stores reports and answers heartbeats; first answers each entry of ``busy`` in turn."""

    def __init__(self, timeline: list[Event], busy: list[tuple[int, dict[str, str]]] | None = None) -> None:
        self.timeline = timeline
        self.busy = list(busy or [])

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.timeline.append(("request", f"{request.method} {request.url.path}"))
        if self.busy:
            status, headers = self.busy.pop(0)
            problem = {"type": "about:blank", "title": "Busy", "status": status, "detail": "too many agent requests"}
            return httpx.Response(status, headers={**headers, "content-type": "application/problem+json"}, json=problem)
        if request.url.path == "/v1/agents/register":
            reply = RegisterResponse(hostname=HOST, credential="credential", generation=0, report_interval_s=30)
            return httpx.Response(201, json=reply.model_dump(mode="json"))
        generation = json.loads(request.content)["generation"]
        report = ReportReply(hostname=HOST, generation=generation, desired=DESIRED, report_interval_s=30)
        return httpx.Response(200, json=report.model_dump(mode="json"))


class RecordingStop(threading.Event):
    """A stop event whose ``wait`` records the delay instead of blocking; it sets itself after ``stop_after``."""

    def __init__(self, timeline: list[Event], stop_after: int | None = None) -> None:
        super().__init__()
        self.timeline = timeline
        self.stop_after = stop_after
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None, "the agent never waits without a bound"
        self.waits.append(timeout)
        self.timeline.append(("wait", timeout))
        if self.stop_after is not None and len(self.waits) >= self.stop_after:
            self.set()
        return self.is_set()


class EdgeRandom(random.Random):
    """Every uniform(a, b) draw returns a (``high=False``) or b (``high=True``)."""

    def __init__(self, *, high: bool) -> None:
        super().__init__(0)
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


LOW, HIGH = EdgeRandom(high=False), EdgeRandom(high=True)


def make_agent(
    tmp_path: Path,
    stop: RecordingStop,
    *,
    controller: FakeController | None = None,
    transport: httpx.BaseTransport | None = None,
    rng: random.Random | None = None,
    **options: float,
) -> AgentRunner:
    config = AgentConfig(
        controller_url="http://controller.test",
        state_file=tmp_path / "agent" / "state.json",
        bootstrap_token="bootstrap",
        sim="l4-4x",
        sim_state=tmp_path / "sim.json",
        hostname=HOST,
        **options,  # type: ignore[arg-type]
    )
    transport = transport or httpx.MockTransport((controller or FakeController(stop.timeline)).handle)
    return AgentRunner(config, transport=transport, rng=rng or random.Random(7), stop=stop, clock=lambda: NOW)


def busy_agent(
    tmp_path: Path, busy: list[tuple[int, dict[str, str]]], rng: random.Random | None = None, **options: float
) -> tuple[AgentRunner, RecordingStop]:
    timeline: list[Event] = []
    stop = RecordingStop(timeline)
    return make_agent(tmp_path, stop, controller=FakeController(timeline, busy), rng=rng, **options), stop


def requests(stop: RecordingStop) -> list[object]:
    return [what for kind, what in stop.timeline if kind == "request"]


# ---- Retry-After within one request ---------------------------------------------------------------


@pytest.mark.parametrize("status", [503, 429])
def test_retry_after_is_waited_then_the_request_goes_through(tmp_path: Path, status: int) -> None:
    agent, stop = busy_agent(tmp_path, [(status, {"Retry-After": "5"}), (status, {"Retry-After": "7.5"})])
    reply = agent.cycle()
    assert reply.hostname == HOST
    assert requests(stop)[:3] == ["POST /v1/agents/register"] * 3
    first, second = stop.waits
    assert 5.0 <= first <= 5.5 and 7.5 <= second <= 8.25
    assert (first, second) != (5.0, 7.5), "Retry-After gets a random extra so agents spread out"


@pytest.mark.parametrize(("rng", "expected"), [(LOW, [5.0, 7.5]), (HIGH, [5.5, 8.25])])
def test_retry_after_jitter_is_at_most_ten_percent_and_never_shorter(
    tmp_path: Path, rng: random.Random, expected: list[float]
) -> None:
    agent, stop = busy_agent(tmp_path, [(503, {"Retry-After": "5"}), (429, {"Retry-After": "7.5"})], rng=rng)
    agent.cycle()
    assert stop.waits == pytest.approx(expected)


@pytest.mark.parametrize(("rng", "expected"), [(LOW, 20.0), (HIGH, 22.0)])
def test_http_date_retry_after(tmp_path: Path, rng: random.Random, expected: float) -> None:
    when = format_datetime(NOW + timedelta(seconds=20), usegmt=True)
    agent, stop = busy_agent(tmp_path, [(503, {"Retry-After": when})], rng=rng)
    agent.cycle()
    assert stop.waits == pytest.approx([expected])


@pytest.mark.parametrize(("rng", "expected"), [(LOW, 45.0), (HIGH, 49.5)])
def test_retry_after_is_capped_at_max_backoff(tmp_path: Path, rng: random.Random, expected: float) -> None:
    agent, stop = busy_agent(tmp_path, [(429, {"Retry-After": "3600"})], rng=rng, max_backoff_s=45.0)
    agent.cycle()
    assert stop.waits == pytest.approx([expected])


def test_503_without_retry_after_still_backs_off(tmp_path: Path) -> None:
    agent, stop = busy_agent(tmp_path, [(503, {}), (503, {})], rng=HIGH)
    agent.cycle()
    assert stop.waits == pytest.approx([0.5, 1.0]), "full-jitter ceilings: 0.5 s, then 1 s"
    agent, stop = busy_agent(tmp_path / "seeded", [(503, {}), (503, {"Retry-After": "soon"})])
    agent.cycle()
    first, second = stop.waits
    assert 0 < first <= 0.5 and 0 < second <= 1.0


def test_exhausted_retries_raise_with_the_hint(tmp_path: Path) -> None:
    agent, _ = busy_agent(tmp_path, [(429, {"Retry-After": "20"})] * 3)
    with pytest.raises(ControllerUnreachable) as raised:
        agent.cycle()
    assert raised.value.retry_after_s == 20.0


def test_run_waits_at_least_the_hint_after_exhausted_retries(tmp_path: Path) -> None:
    timeline: list[Event] = []
    stop = RecordingStop(timeline, stop_after=4)
    controller = FakeController(timeline, [(429, {"Retry-After": "20"})] * 3)
    agent = make_agent(tmp_path, stop, controller=controller, interval_s=30.0)
    agent.run(stop)  # a 429 is no reason to exit: the loop goes on and reports once the controller answers
    in_request, after_cycle, interval = stop.waits[:2], stop.waits[2], stop.waits[3]
    assert all(20.0 <= w <= 22.0 for w in in_request)
    assert 20.0 <= after_cycle <= 22.0, "the cycle back-off honours Retry-After over its own 1-2 s"
    assert 27.0 <= interval <= 33.0
    assert agent.cycles == 1


def test_stopping_ends_retries_at_once(tmp_path: Path) -> None:
    timeline: list[Event] = []
    stop = RecordingStop(timeline, stop_after=1)  # SIGTERM arrives during the first Retry-After wait
    agent = make_agent(tmp_path, stop, controller=FakeController(timeline, [(503, {"Retry-After": "20"})] * 3))
    with pytest.raises(ControllerUnreachable):
        agent.cycle()
    assert requests(stop) == ["POST /v1/agents/register"] * 2 and len(stop.waits) == 1


# ---- back-off between failed cycles --------------------------------------------------------------


def unreachable_run(tmp_path: Path, rng: random.Random, cycles: int) -> tuple[list[float], list[float]]:
    """Run against a controller that never answers; returns (in-request waits, waits between cycles)."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    stop = RecordingStop([], stop_after=3 * cycles)  # per cycle: 2 waits between 3 attempts, then back-off
    make_agent(tmp_path, stop, transport=httpx.MockTransport(refuse), rng=rng, max_backoff_s=60.0).run(stop)
    in_request = [w for i, w in enumerate(stop.waits) if i % 3 != 2]
    return in_request, stop.waits[2::3]


def test_failures_back_off_down_to_the_floor(tmp_path: Path) -> None:
    _, between = unreachable_run(tmp_path, LOW, cycles=8)
    assert between == [1.0] * 8


def test_failures_back_off_up_to_the_exponential_cap(tmp_path: Path) -> None:
    in_request, between = unreachable_run(tmp_path, HIGH, cycles=8)
    assert between == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert in_request == [0.5, 1.0] * 8


def test_failures_back_off_with_full_jitter(tmp_path: Path) -> None:
    _, between = unreachable_run(tmp_path, random.Random(11), cycles=12)
    for failures, delay in enumerate(between, start=1):
        assert 1.0 <= delay <= min(60.0, 2.0**failures)
    capped = between[5:]
    assert len(set(capped)) == len(capped), "agents past the cap must not all wait max_backoff_s"
    assert min(capped) < 45.0


# ---- report interval and start-up splay ----------------------------------------------------------


def healthy_run(tmp_path: Path, rng: random.Random, cycles: int, **options: float) -> RecordingStop:
    stop = RecordingStop([], stop_after=cycles)
    make_agent(tmp_path, stop, rng=rng, interval_s=30.0, **options).run(stop)
    return stop


@pytest.mark.parametrize(
    ("rng", "options", "expected"),
    [(LOW, {}, 27.0), (HIGH, {}, 33.0), (HIGH, {"interval_jitter": 0.0}, 30.0), (LOW, {"interval_jitter": 0.2}, 24.0)],
)
def test_interval_jitter_bounds(tmp_path: Path, rng: random.Random, options: dict[str, float], expected: float) -> None:
    stop = healthy_run(tmp_path, rng, 3, **options)
    assert stop.waits == pytest.approx([expected] * 3)


def test_interval_is_jittered_within_ten_percent(tmp_path: Path) -> None:
    stop = healthy_run(tmp_path, random.Random(3), 20)
    assert all(27.0 <= w <= 33.0 for w in stop.waits)
    assert len(set(stop.waits)) == 20
    assert stop.timeline[0] == ("request", "POST /v1/agents/register"), "no wait before the first cycle by default"


@pytest.mark.parametrize(("rng", "splay", "interval"), [(LOW, 0.0, 27.0), (HIGH, 120.0, 33.0)])
def test_startup_splay_precedes_the_first_cycle(
    tmp_path: Path, rng: random.Random, splay: float, interval: float
) -> None:
    stop = healthy_run(tmp_path, rng, 2, startup_splay_s=120.0)
    assert stop.timeline[0] == ("wait", splay)
    assert stop.timeline[1] == ("request", "POST /v1/agents/register")
    assert stop.waits[1] == pytest.approx(interval)


def test_startup_splay_is_random(tmp_path: Path) -> None:
    splays = [healthy_run(tmp_path / str(seed), random.Random(seed), 1, startup_splay_s=120.0) for seed in range(5)]
    delays = [stop.waits[0] for stop in splays]
    assert all(0.0 <= d <= 120.0 for d in delays) and len(set(delays)) == 5
    assert all(stop.timeline == [("wait", stop.waits[0])] for stop in splays), "stopped during the splay: no request"


# ---- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [{"interval_jitter": 1.0}, {"interval_jitter": -0.1}, {"startup_splay_s": -1.0}])
def test_config_refuses_nonsense(tmp_path: Path, options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        AgentConfig(controller_url="http://c", state_file=tmp_path / "s.json", **options)  # type: ignore[arg-type]


def test_cli_options_and_env_vars() -> None:
    runner = CliRunner()
    shown = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
    assert shown.exit_code == 0
    for text in (
        "--interval-jitter",
        "GPUFABRIC_AGENT_INTERVAL_JITTER",
        "--startup-splay",
        "GPUFABRIC_AGENT_STARTUP_SPLAY",
    ):
        assert text in shown.output
    for env in ({"GPUFABRIC_AGENT_INTERVAL_JITTER": "0.9"}, {"GPUFABRIC_AGENT_STARTUP_SPLAY": "-5"}):
        refused = runner.invoke(app, ["run", "--controller", "http://controller.test"], env=env)
        assert refused.exit_code == 2, refused.output


# ---- Retry-After parsing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("Wed, 01 Jan 2025 12:01:30 GMT", 90.0),  # IMF-fixdate
        ("Wednesday, 01-Jan-25 12:00:10 GMT", 10.0),  # obsolete RFC 850
        ("Wed Jan  1 12:00:05 2025", 5.0),  # obsolete asctime, no zone: UTC
        ("Tue, 31 Dec 2024 12:00:00 GMT", 0.0),  # in the past
        (None, None),
        ("", None),
        ("-3", None),
        ("nan", None),
        ("inf", None),
        ("soon", None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == seconds
