"""Tasks: what each kind of restoration needs beyond its operator (command-line options, image
sizes, simulated measurements and their files, scoring, ONNX export, the app), behind one protocol
(:class:`Task`), in one module per task. Third-party tasks register through the entry-point group
``lorun_peft.tasks`` (:mod:`lorun_peft.tasks.plugins`), loaded when this package is imported.

No torch at import: ``lorun --help`` lists the tasks and their options without it.

>>> from lorun_peft.tasks import task_names
>>> task_names()
['cassi', 'cs', 'deblur', 'deepinv', 'inpaint', 'sr']
"""

from .base import TASKS, Option, Task, register_task, registered_tasks, task_named, task_names, task_of
from . import cs, sr, cassi, deblur, inpaint, deepinv  # noqa: F401, I001 - each registers its task, in this order
from .plugins import load_plugins

__all__ = ["Task", "Option", "TASKS", "register_task", "registered_tasks", "task_named", "task_names", "task_of"]

load_plugins()  # last: a plugin imports the names above
