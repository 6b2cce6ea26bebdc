"""The callable submitit runs for one sweep member: run the job entry point on the job dir in a child process.

The entry point is data (a module name), so ``launch`` never imports training code itself. The body runs in a
child (``python -m <entry> JOB_DIR``) so that this process survives when the body is killed from outside (OOM
killer, kill -9): a child that died of a signal is started again in place, in the same allocation, while
``launcher.max_failures`` allows (see ``launch.retry``) — nobody has to watch the sweep for that.

Requeue keeps one owner, submitit. SLURM signals every process of the step, so the child's own guard saves
``last.ckpt`` and exits with PREEMPTED_EXIT_CODE; this process only notes the signal and, once the child has saved,
calls submitit's handler (which calls ``checkpoint`` below, requeues and exits). For SIGTERM (``scontrol
requeue``) SLURM requeues by itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from launch import retry

DEFAULT_ENTRY_MODULE = "orchestra.job"  # data, not an import: launch never loads training code
# Every module a launcher may run for a member (a search sweep's members are workers): cancel signals only these.
ENTRY_MODULES = (DEFAULT_ENTRY_MODULE, "orchestra.search.worker")
PREEMPTED_EXIT_CODE = 75  # shared with the job body: "stopped for a requeue, not failed"
DIVERGED_EXIT_CODE = 65  # shared with the job body: it ran, but its numbers became inf/NaN (never retried)
FORWARDED_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


class MemberFailed(RuntimeError):
    """The member's own code failed; raising makes SLURM and submitit record FAILED, never COMPLETED."""


class MemberJob:
    def __init__(self, job_dir: str, entry_module: str = DEFAULT_ENTRY_MODULE, max_failures: int = 0) -> None:
        self.job_dir, self.entry_module, self.max_failures = job_dir, entry_module, max_failures

    def __call__(self) -> str:
        while True:
            code, received, handlers = self._run_body()
            if code == 0:
                return "completed"
            usr2 = handlers.get(signal.SIGUSR2)
            if signal.SIGUSR2 in received and callable(usr2) and (code == PREEMPTED_EXIT_CODE or code < 0):
                # Preempted or out of time: requeue whether the body saved just now or died while stopping; either
                # way it resumes from its last.ckpt. (A Python error stays an error.)
                sys.stdout.flush()
                usr2(signal.SIGUSR2, None)  # submitit: checkpoint(), requeue, exit
            if code == PREEMPTED_EXIT_CODE:
                return "preempted"  # SLURM requeues this job itself (scontrol requeue); the next start resumes
            # A kill after SLURM's own SIGTERM (scancel, time limit) is the scheduler ending the job: not retried.
            if retry.killed_by_signal(code) and not received and self._may_retry():
                print(f"orchestra: member {retry.describe(code)}; running it again in place "
                      f"(launcher.max_failures={self.max_failures})", flush=True)
                continue
            raise MemberFailed(f"member {self.job_dir} {retry.describe(code)}; see its log")

    def _run_body(self) -> tuple[int, list[int], dict[int, Any]]:
        """Run the body once; returns its exit code (negative: killed by that signal), the signals this process
        received meanwhile, and the handlers they would have reached (submitit's)."""
        received: list[int] = []
        handlers = {signum: signal.getsignal(signum) for signum in FORWARDED_SIGNALS}
        for signum in FORWARDED_SIGNALS:
            signal.signal(signum, lambda signum, frame: received.append(signum))
        try:
            # The body starts with SIGUSR2 blocked (the mask outlives exec): a warning that lands during its
            # start-up waits, pending, until its guard unblocks it and saves at the first batch. Ignoring it lost
            # it, and a member warned early then trained on into its time limit.
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
            try:
                child = subprocess.Popen([sys.executable, "-m", self.entry_module, self.job_dir])
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # this process records it as before
            if signal.SIGUSR2 in received:  # it reached this process before the child existed: pass it on
                child.send_signal(signal.SIGUSR2)
            code = child.wait()  # retried after each signal handler (PEP 475)
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
        return code, received, handlers

    def _may_retry(self) -> bool:
        # Ranks of a multi-task member depend on each other: one rank re-run alone would wait for its peers forever.
        if os.environ.get("SLURM_NTASKS", "1") != "1":
            return False
        return retry.take_retry(Path(self.job_dir).parent, self.job_dir, self.max_failures, count_attempt=True)

    def checkpoint(self) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(MemberJob(self.job_dir, self.entry_module, self.max_failures))
