"""Several commands touching one sweep at once: real processes updating member states of one sweep.json through
launch.manifest while another keeps reading it. Every update must survive (no lost read-modify-write) and every
read must parse (the file is replaced atomically, never seen half-written).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from launch import manifest

WRITERS, MEMBERS, ROUNDS = 4, 24, 3

WRITER = textwrap.dedent("""
    import sys
    from launch import manifest
    sweep_dir, writer, writers, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    for round_ in range(rounds):
        for member in manifest.load(sweep_dir).members[writer::writers]:
            with manifest.updating(sweep_dir) as sweep:  # what status, resume and a local runner each do
                entry = sweep.members[member.index]
                entry.state, entry.attempts = f"RUNNING-{writer}", entry.attempts + 1
                entry.job_ids.append(f"w{writer}r{round_}")
""")

READER = textwrap.dedent("""
    import sys
    from launch import manifest
    loads = 0
    for _ in range(int(sys.argv[2])):
        manifest.load(sys.argv[1])  # raises on a half-written file
        loads += 1
    print(loads)
""")


def test_concurrent_updates_all_survive_and_every_read_parses(tmp_path: Path):
    members = [manifest.Member(index=i, overrides=[f"seed={i}"], job_dir=str(tmp_path / f"{i:03d}"))
               for i in range(MEMBERS)]
    manifest.create(manifest.Sweep(sweep_dir=str(tmp_path), command=["orchestra", "sweep"], launcher="local",
                                   created_at=manifest.now(), members=members))
    run = [sys.executable, "-c"]
    processes = [subprocess.Popen([*run, WRITER, str(tmp_path), str(w), str(WRITERS), str(ROUNDS)],
                                  stderr=subprocess.PIPE, text=True) for w in range(WRITERS)]
    reader = subprocess.Popen([*run, READER, str(tmp_path), "300"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    for process in processes:
        assert process.wait(timeout=120) == 0, process.stderr.read()
    out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0 and out.strip() == "300", err[-2000:]

    sweep = manifest.load(tmp_path)
    for member in sweep.members:
        writer = member.index % WRITERS
        assert member.state == f"RUNNING-{writer}"
        assert member.attempts == ROUNDS, member  # no writer's read-modify-write was lost
        assert member.job_ids == [f"w{writer}r{r}" for r in range(ROUNDS)]
    assert not list(tmp_path.glob(".sweep.*.tmp"))  # no temporary file left behind
