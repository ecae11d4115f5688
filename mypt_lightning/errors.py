"""Errors that are the user's to fix (bad input, missing files, wrong config).

Command-line entry points catch :class:`UserError` and print its message on one line
instead of a traceback; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the input or the configuration, explained in the message."""


class Preempted(Exception):
    """Training stopped on SIGTERM after saving ``last.ckpt``; resume with ``ckpt_path=last``.

    ``handoff``: the run's :class:`~mypt_lightning.fault_tolerance.Preemption`; the entry
    point calls its ``hand_over()`` last, so a job scheduler's own handler (submitit's
    requeue) runs after the checkpoint is safe.
    """

    def __init__(self, message: str, handoff=None):
        super().__init__(message)
        self.handoff = handoff
