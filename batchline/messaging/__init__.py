"""How Batchline's stages talk: the Celery app factory, queue and task names, the dispatcher.

The deployment package `workers/` builds the app instance from here and `tasks/` registers
each task under its `TaskName`; the library sends work by name and never imports either.
"""

from batchline.messaging.names import TaskName
from batchline.messaging.queues import ROUTES, Queue

__all__ = ["ROUTES", "Queue", "TaskName"]
