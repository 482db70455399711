"""What the parts of one app's runtime need from each other, as protocols.

:class:`~flask_asyncstate.appstate.AppState` is the one implementation; the
lifecycle, the writer, the job handles and the event streams are written
against :class:`Runtime`, so none of them imports the module that wires them.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from flask import Flask

    from .config import Settings
    from .context import JobContext
    from .executors.base import Executor
    from .records import JobRecords
    from .registry import JobSpec, LocalJobs
    from .sse import StreamSlots
    from .state import StateAPI
    from .stores.base import Store
    from .tokens import TokenSigner


class Starter(Protocol):
    def start(self, job: JobSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any: ...

    def run(
        self, ctx: JobContext, job: JobSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None: ...

    def finish(self, ctx: JobContext, job: JobSpec, status: str, **kw: Any) -> bool: ...

    def flush(self) -> None: ...


class Beater(Protocol):
    def beat(self) -> None: ...


class Runtime(Protocol):
    """One app's runtime (see :class:`~flask_asyncstate.appstate.AppState`)."""

    @property
    def app_ref(self) -> weakref.ref[Flask]: ...

    @property
    def extension(self) -> Any: ...

    role: str

    @property
    def settings(self) -> Settings: ...

    @property
    def store(self) -> Store: ...

    @property
    def state(self) -> StateAPI: ...

    @property
    def records(self) -> JobRecords: ...

    @property
    def signer(self) -> TokenSigner: ...

    @property
    def streams(self) -> StreamSlots: ...

    @property
    def registry(self) -> LocalJobs: ...

    @property
    def executor(self) -> Executor: ...

    @property
    def writer(self) -> Beater: ...

    @property
    def lifecycle(self) -> Starter: ...

    @property
    def flask_app(self) -> Flask: ...

    @property
    def instance_id(self) -> str: ...

    def ensure_running(self) -> None: ...

    def supervise(self) -> None: ...

    def shutdown(self, timeout: float | None = None) -> None: ...

    def cancel_job(self, job_id: str, queued: bool = True) -> bool: ...

    def local_context(self, job_id: str) -> JobContext | None: ...


class RuntimeSource(Protocol):
    """What a :class:`~flask_asyncstate.jobs.TrackedJob` needs from its extension."""

    def app_state(self, app: Any = None) -> Runtime: ...
