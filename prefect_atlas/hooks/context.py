"""What an alert says about a run: names, state, root exception, duration, parameters, link.

``state.message`` alone can name the wrong error (Prefect issue #14775: a flow that returns
failed task states reports "1/2 states failed"), so the exception is dug out of the state's
result, followed down its ``__cause__`` chain, and, when the flow only saw a Prefect wrapper,
looked up in the run's failed task runs.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from prefect_atlas._redact import MASK, redact_tree

_SECRET_KEY = re.compile(r"pass|secret|token|key|credential|auth|webhook|dsn|cookie", re.I)
_MESSAGE_EXC = re.compile(
    r"encountered an exception:?\s*(?P<type>[A-Za-z_][\w.]*)(?::\s*(?P<msg>.*))?$", re.S
)


@dataclass
class RootCause:
    """The exception that ended a run, as far as it can be known."""

    type: str
    """The root exception's class name."""
    message: str
    """The root exception's message."""
    wrapped_as: str | None = None  # the outermost exception when it differs from the root
    """The outermost exception, when it differs from the root."""
    source: str = "state"  # "state", "task run <name>", or "state message"
    """Where it was found: ``"state"``, ``"task run <name>"`` or ``"state message"``."""


@dataclass
class RunFacts:
    """Everything an alert about one flow or task run shows."""

    kind: str  # "flow" or "task"
    """``"flow"`` or ``"task"``."""
    name: str
    """The flow's or task's name."""
    run_name: str
    """The run's name."""
    run_id: UUID | None
    """The run's id."""
    state_name: str
    """The state the run ended in, such as ``Failed`` or ``Crashed``."""
    deployment_id: UUID | None = None
    """The deployment the flow run belongs to, if any."""
    duration: float | None = None
    """Seconds the run took, when known."""
    parameters: dict[str, Any] = field(default_factory=dict)
    """The run's parameters (secrets redacted)."""
    link: str | None = None
    """The run's page in the Prefect UI, when the UI URL is known."""
    root: RootCause | None = None
    """The exception that ended the run, when one did."""

    @property
    def scope(self) -> str:
        """What a later success resolves: the same flow (or task) in the same deployment."""
        return f"{self.kind}:{self.name}|{self.deployment_id or ''}"


def root_of(exc: BaseException) -> RootCause:
    """The deepest explicit cause of ``exc`` (``raise X from Y`` gives Y)."""
    seen = {id(exc)}
    root = exc
    while root.__cause__ is not None and id(root.__cause__) not in seen and len(seen) < 20:
        root = root.__cause__
        seen.add(id(root))
    wrapped = f"{type(exc).__name__}: {exc}" if root is not exc else None
    return RootCause(type=type(root).__name__, message=str(root), wrapped_as=wrapped)


def _from_message(message: str | None, source: str) -> RootCause | None:
    if not message:
        return None
    match = _MESSAGE_EXC.search(message)
    if match is None:
        return None
    return RootCause(
        type=match["type"].rsplit(".", 1)[-1], message=(match["msg"] or "").strip(), source=source
    )


def _is_prefect_wrapper(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("prefect.")


async def dig_root_cause(
    state: Any, flow_run_id: UUID | None = None, *, depth: int = 0
) -> RootCause:
    """The root exception of a final state, then of the run's failed task runs, then the message."""
    exc: BaseException | None = None
    try:
        result = await state.aresult(raise_on_failure=False)
    except Exception as err:  # the result may be unreadable (not persisted): its error is a clue
        result = err
    if isinstance(result, BaseException):
        exc = result
    if exc is not None and not _is_prefect_wrapper(exc):
        return root_of(exc)
    # A flow that returned states (its own, or of tasks): the first failed one is the cause.
    for inner in _failed_states(result):
        if depth < 3:
            cause = await dig_root_cause(inner, None, depth=depth + 1)
            if cause.source == "state":
                cause.source = "a returned task state"
            return cause
    if flow_run_id is not None:
        from_tasks = await _failed_task_cause(flow_run_id)
        if from_tasks is not None:
            return from_tasks
    if exc is not None:
        return root_of(exc)
    parsed = _from_message(getattr(state, "message", None), "state message")
    if parsed is not None:
        return parsed
    return RootCause(
        type=str(getattr(state, "name", "Unknown")),
        message=str(getattr(state, "message", "") or ""),
    )


def _failed_states(result: Any) -> list[Any]:
    """Failed or crashed states in a flow's return value (a state, or a collection of them)."""
    from prefect.client.schemas.objects import State

    if isinstance(result, State):
        candidates: list[Any] = [result]
    elif isinstance(result, list | tuple | set):
        candidates = list(result)
    elif isinstance(result, dict):
        candidates = list(result.values())
    else:
        return []
    return [c for c in candidates if isinstance(c, State) and (c.is_failed() or c.is_crashed())]


async def _failed_task_cause(flow_run_id: UUID) -> RootCause | None:
    """The first failed task run's exception (from its state, else its message)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    async with get_client() as client:
        task_runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            task_run_filter=TaskRunFilter(
                state=TaskRunFilterState(
                    type=TaskRunFilterStateType(any_=[StateType.FAILED, StateType.CRASHED])
                )
            ),
        )
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    for task_run in sorted(task_runs, key=lambda t: t.end_time or t.start_time or epoch):
        task_state = task_run.state
        if task_state is None:
            continue
        source = f"task run {task_run.name}"
        try:
            result = await task_state.aresult(raise_on_failure=False)
        except Exception:
            result = None
        if isinstance(result, BaseException) and not _is_prefect_wrapper(result):
            cause = root_of(result)
            cause.source = source
            return cause
        parsed = _from_message(task_state.message, source)
        if parsed is not None:
            return parsed
    return None


def redact_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """Parameters safe to post: secret-looking keys masked, URL passwords masked."""
    safe: dict[str, Any] = {}
    for key, value in parameters.items():
        if _SECRET_KEY.search(str(key)):
            safe[key] = MASK
        elif isinstance(value, dict):
            safe[key] = redact_parameters(value)
        else:
            safe[key] = redact_tree(value)
    return safe


def run_link(kind: str, run_id: UUID | None) -> str | None:
    """A link to the run in the Prefect UI when ``PREFECT_UI_URL`` is set."""
    from prefect.settings import PREFECT_UI_URL

    ui = PREFECT_UI_URL.value()
    if not ui or run_id is None:
        return None
    return f"{str(ui).rstrip('/')}/runs/{kind}-run/{run_id}"


def duration_of(start: dt.datetime | None, state: Any) -> float | None:
    if start is None:
        return None
    end = getattr(state, "timestamp", None) or dt.datetime.now(dt.UTC)
    try:
        return max(0.0, (end - start).total_seconds())
    except TypeError:
        return None


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"
