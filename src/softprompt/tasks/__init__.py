"""Tasks: each is an input format (a template over named fields), its targets and its metric; `--data.task=NAME`.

base.py holds what every task shares; classification.py and text2text.py the generic tasks; squad.py SQuAD and MRQA;
superglue.py the SuperGLUE tasks; sentence.py SST-2, SST-5, MR and TREC.
"""

from softprompt.errors import UserError
from softprompt.options import DataOptions
from softprompt.tasks.base import Example, Task
from softprompt.tasks.classification import ClassificationTask
from softprompt.tasks.sentence import MR, SST2, SST5, TREC, SST5Binary
from softprompt.tasks.squad import MrqaTask, SquadTask
from softprompt.tasks.superglue import CB, COPA, RTE, WSC, BoolQ, MultiRC, ReCoRD, WiC
from softprompt.tasks.text2text import TextToTextTask

TASKS: dict[str, type[Task]] = {
    t.name: t
    for t in (
        ClassificationTask,
        TextToTextTask,
        SquadTask,
        MrqaTask,
        BoolQ,
        CB,
        COPA,
        MultiRC,
        ReCoRD,
        RTE,
        WiC,
        WSC,
        TREC,
        SST5,
        SST5Binary,
        MR,
        SST2,
    )
}


def check_name(name: str) -> None:
    if name not in TASKS:
        raise UserError(f"--data.task: {name!r} is not a task; the tasks are {', '.join(TASKS)}")


def make_task(options: DataOptions) -> Task:
    check_name(options.task)
    return TASKS[options.task](options)


__all__ = ["TASKS", "ClassificationTask", "Example", "SquadTask", "Task", "TextToTextTask", "check_name", "make_task"]
