"""Run ``ray-style`` and stop this process (SIGSTOP) right after its Nth stored frame, so a test
can kill it at a known point of the job instead of after a guessed delay::

    python -m tests.stopping N ARGS…
"""
import os
import signal
import sys

from ray_style import job
from ray_style.cli import main


def stop_after(count: int) -> None:
    real, stored = job.Job.vouch, []

    def vouch(self, *args, **kwargs):
        record = real(self, *args, **kwargs)
        stored.append(record)
        if len(stored) == count:
            os.kill(os.getpid(), signal.SIGSTOP)  # the test's SIGKILL lands here
        return record

    job.Job.vouch = vouch


if __name__ == "__main__":
    stop_after(int(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
