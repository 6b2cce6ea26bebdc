"""A search worker: ``python -m orchestra.search.worker WORKER_DIR`` (or ``SWEEP_DIR INDEX``).

Workers, not a driver: a search sweep's manifest members are ``search.parallel`` workers, started by the sweep's
launcher like grid members (local processes, or one SLURM array whose tasks ``launch.member.MemberJob`` runs and
requeues). Each worker loops: resume the unfinished trial it owns (the ``worker`` user attr), else ask the study
for a new one while the budget lasts, run ``python -m orchestra.job <sweep>/trials/NNNN`` as a child, and tell the
study COMPLETE(value) / PRUNED / FAIL from the trial's results.json.

- The ask and the count are one step under a lock directory (``mkdir`` is atomic on NFS, ``fcntl`` is not), so
  workers together never ask more than ``search.trials``, and a trial is asked once.
- SIGUSR2/SIGTERM/SIGINT are passed to the running trial, which saves ``last.ckpt`` and exits 75; the worker then
  exits 75 too (MemberJob requeues it on SLURM; ``orchestra resume`` restarts it locally) and its next start
  resumes that same trial from its checkpoint.
- A worker killed outright leaves its trial RUNNING in the study; its next start (a retry, or ``orchestra
  resume``) picks it up, after the orphaned trial process (told by the kernel that its parent died) has saved.
- ``<sweep>/search.stop`` (``orchestra cancel``) stops all asking.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from launch import manifest
from launch.atomic import write_json
from launch.interrupt import PARENT_ENV
from orchestra.errors import UserError
from orchestra.search import study as studies
from orchestra.search.plan import trial_config, trial_dir

PREEMPTED_EXIT_CODE = 75
STOP_FILE = "search.stop"
ASK_LOCK = ".ask.lock"
LOCK_STALE_S = 120.0  # a lock older than this was left by a killed worker (an ask takes well under a second)
SIGNALS = (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)
TRIAL_RETRIES = 1  # a trial process killed by a signal (OOM killer) is run again in place this many times


def worker_dir(sweep_dir: Path | str, index: int) -> Path:
    return Path(sweep_dir) / f"worker-{index}"


def stop_requested(sweep_dir: Path | str) -> bool:
    return (Path(sweep_dir) / STOP_FILE).exists()


class AskLock:
    """A directory created with ``mkdir``: atomic on NFS and Lustre; broken when older than LOCK_STALE_S."""

    def __init__(self, sweep_dir: Path) -> None:
        self.path = sweep_dir / ASK_LOCK

    def __enter__(self) -> AskLock:
        while True:
            try:
                os.mkdir(self.path)
                return self
            except FileExistsError:
                try:
                    if time.time() - self.path.stat().st_mtime > LOCK_STALE_S:
                        os.rmdir(self.path)
                        continue
                except FileNotFoundError:
                    continue
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            pass


class Worker:
    def __init__(self, sweep_dir: Path, index: int) -> None:
        from optuna.distributions import json_to_distribution

        self.sweep_dir, self.index = sweep_dir, index
        sweep = manifest.load(sweep_dir)
        if not sweep.search:
            raise UserError(f"{sweep_dir} is not a search sweep (its sweep.json has no search section)")
        self.section = sweep.search
        self.distributions = {k: json_to_distribution(v) for k, v in self.section["distributions"].items()}
        self.journal = studies.storage(sweep_dir)
        self.dir = worker_dir(sweep_dir, index)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.signalled: int | None = None
        self.child: subprocess.Popen | None = None
        self.results: dict[str, Any] = {}

    # -- signals -----------------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signalled = signum
        child = self.child
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    def install_signals(self) -> None:
        for signum in SIGNALS:
            signal.signal(signum, self._on_signal)
        # Launchers start us with these blocked until a handler exists (the mask outlives exec): none is lost.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)

    # -- the study ---------------------------------------------------------------------------------------------
    def _study(self, sampler: Any = None) -> Any:
        return studies.load(self.sweep_dir, self.section, sampler=sampler, journal=self.journal)

    def own_unfinished(self) -> Any:
        from optuna.trial import TrialState

        mine = [t for t in self._study().get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if t.user_attrs.get("worker") == self.index]
        return min(mine, key=lambda t: t.number) if mine else None

    def ask(self) -> Any:
        """A new trial, or None once the budget is spent or the search was stopped."""
        with AskLock(self.sweep_dir):
            if stop_requested(self.sweep_dir):
                return None
            trials = self._study().get_trials(deepcopy=False)
            # Running without an owner: its asker died between ask and set_user_attr (both happen under this lock)
            orphan = next((t for t in trials if t.state.name == "RUNNING" and "worker" not in t.user_attrs), None)
            if orphan is not None:
                study_id = self.journal.get_study_id_from_name(studies.STUDY_NAME)
                trial_id = self.journal.get_trial_id_from_study_id_trial_number(study_id, orphan.number)
                self.journal.set_trial_user_attr(trial_id, "worker", self.index)
                self.journal.set_trial_user_attr(trial_id, "job_dir", str(trial_dir(self.sweep_dir, orphan.number)))
                return self._study().get_trials(deepcopy=False)[orphan.number]
            asked = len(trials)
            if asked >= int(self.section["trials"]):
                return None
            sampler = studies.make_sampler(self.section, asked, self.section.get("grid"))
            trial = self._study(sampler).ask(fixed_distributions=self.distributions)
            trial.set_user_attr("worker", self.index)
            trial.set_user_attr("job_dir", str(trial_dir(self.sweep_dir, trial.number)))
        return self._study().get_trials(deepcopy=False)[trial.number]

    # -- one trial ---------------------------------------------------------------------------------------------
    def _write_config(self, trial: Any, path: Path) -> str | None:
        """Write the trial's config.yaml (once); the one-line problem when its parameters make no valid config."""
        from orchestra.jobstate.job_dir import write_job_config

        if (path / "config.yaml").is_file():
            return None
        try:
            write_job_config(path, trial_config(self.sweep_dir, self.section, trial.number, dict(trial.params),
                                                self.index))
        except UserError as err:
            return str(err)
        return None

    def _wait_for_orphan(self, path: Path) -> None:
        """A trial process left by a killed worker saves (SIGINT from the kernel) before it is started again."""
        try:
            host, pid = (path / ".pid").read_text().split()
        except (OSError, ValueError):
            return
        if host != socket.gethostname():
            return
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if str(path).encode() not in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return
            except OSError:
                return
            time.sleep(0.5)

    def _run_child(self, path: Path) -> int:
        env = {**os.environ, PARENT_ENV: str(os.getpid())}  # the trial stops (saves) if this worker dies
        with open(path / "log.txt", "ab") as log:
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, set(SIGNALS))  # unblocked by the body's guard
            try:
                if self.signalled is not None:
                    return PREEMPTED_EXIT_CODE
                # Its own session: a Ctrl+C to this worker's group reaches the trial once, through this worker.
                self.child = subprocess.Popen([sys.executable, "-m", "orchestra.job", str(path)], stdout=log,
                                              stderr=subprocess.STDOUT, env=env, start_new_session=True)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        (path / ".pid").write_text(f"{socket.gethostname()} {self.child.pid}\n")
        code = self.child.wait()
        self.child = None
        return code

    def run_trial(self, trial: Any) -> int | None:
        """Run (or resume) ``trial`` to its end and tell the study; PREEMPTED_EXIT_CODE when stopped by a signal."""
        from orchestra.jobstate.results import read_results

        path = trial_dir(self.sweep_dir, trial.number)
        path.mkdir(parents=True, exist_ok=True)
        problem = self._write_config(trial, path)
        if problem is not None:
            return self._finish(trial, path, {"state": "FAILED", "error": problem})
        self._wait_for_orphan(path)
        print(f"worker {self.index}: trial {trial.number} {json.dumps(trial.params)}", flush=True)
        retries = 0
        while True:
            code = self._run_child(path)
            if self.signalled is not None or code == PREEMPTED_EXIT_CODE:
                return PREEMPTED_EXIT_CODE  # saved: the next start of this worker resumes it
            if code < 0 and -code != signal.SIGINT and retries < TRIAL_RETRIES:
                retries += 1
                print(f"worker {self.index}: trial {trial.number} killed by signal {-code}; running it again",
                      flush=True)
                continue
            break
        try:
            results = read_results(path / "results.json")
        except UserError as err:
            results = {"state": "FAILED", "error": str(err)}
        if code != 0 and results.get("state") not in ("FAILED", "DIVERGED"):
            results = {**results, "state": "FAILED", "error": results.get("error") or f"exited with code {code}"}
        return self._finish(trial, path, results)

    def _finish(self, trial: Any, path: Path, results: dict[str, Any]) -> None:
        """Record the outcome in results.json (the ``search`` block), then tell the study."""
        from optuna.trial import TrialState

        metric = str(self.section["objective"]["metric"])
        value = (results.get("metrics") or {}).get(metric)
        state = results.get("state")
        if state == "COMPLETED" and not isinstance(value, int | float):
            state, results["error"] = "FAILED", f"the last validation has no '{metric}'"
            results["state"] = "FAILED"
        results["search"] = {"trial": trial.number, "worker": self.index, "params": dict(trial.params),
                             "objective": {"metric": metric, "value": value,
                                           "direction": self.section["objective"]["direction"]}}
        write_json(path / "results.json", results)
        study = self._study()
        if study.get_trials(deepcopy=False)[trial.number].state.is_finished():
            return None  # told before this worker was stopped; the results block is now written too
        if state == "COMPLETED":
            study.tell(trial.number, float(value))
        elif state == "PRUNED":
            study.tell(trial.number, state=TrialState.PRUNED)
        else:
            study.tell(trial.number, state=TrialState.FAIL)
        shown = f"{metric}={value:.4f}" if isinstance(value, int | float) else results.get("error", "")
        print(f"worker {self.index}: trial {trial.number} {state} {shown}", flush=True)
        self.results.setdefault("trials", []).append(trial.number)
        return None

    # -- the loop ----------------------------------------------------------------------------------------------
    def _save(self, **values: Any) -> None:
        self.results.update(values)
        write_json(self.dir / "results.json", self.results)

    def run(self) -> int:
        from orchestra.jobstate.results import read_results

        try:
            self.results = read_results(self.dir / "results.json")
        except UserError:
            self.results = {}
        attempts = self.results.get("attempts")
        self._save(state="RUNNING", attempts=(attempts if isinstance(attempts, int) else 0) + 1,
                   job_dir=str(self.dir), started_at=manifest.now())
        self.results.pop("error", None)
        while self.signalled is None:
            trial = self.own_unfinished()
            if trial is None and not stop_requested(self.sweep_dir):
                trial = self.ask()
            if trial is None:
                break
            if self.run_trial(trial) == PREEMPTED_EXIT_CODE:
                break
        if self.signalled is not None:
            self._save(state="INTERRUPTED" if self.signalled == signal.SIGINT else "PREEMPTED",
                       finished_at=manifest.now())
            return PREEMPTED_EXIT_CODE
        self._save(state="COMPLETED", finished_at=manifest.now())
        return 0


def parse_args(args: list[str]) -> tuple[Path, int]:
    if len(args) == 1:  # WORKER_DIR, as launchers run every member: <entry> <job dir>
        path = Path(args[0]).resolve()
        prefix, _, number = path.name.partition("-")
        if prefix == "worker" and number.isdigit():
            return path.parent, int(number)
    if len(args) == 2 and args[1].isdigit():
        return Path(args[0]).resolve(), int(args[1])
    raise UserError("usage: python -m orchestra.search.worker WORKER_DIR | SWEEP_DIR INDEX")


def main(argv: list[str] | None = None) -> int:
    try:
        sweep_dir, index = parse_args(sys.argv[1:] if argv is None else argv)
        worker = Worker(sweep_dir, index)
        worker.install_signals()
        return worker.run()
    except (UserError, manifest.ManifestError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
