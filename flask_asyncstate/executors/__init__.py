"""Where jobs run: the seam between a job's lifecycle and the threads (or workers) running it.

An :class:`~flask_asyncstate.executors.base.Executor` only runs callables it is
handed; admission, documents, cancel and final states live in
:mod:`flask_asyncstate.lifecycle`, the same whichever executor runs the job.
"""

from .base import Executor
from .inline import InlineExecutor
from .threads import ThreadExecutor

__all__ = ["Executor", "InlineExecutor", "ThreadExecutor"]
