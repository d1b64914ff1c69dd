"""sd2.file_lock: one writer per file (across real processes) and whole-file atomic rewrites."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import pytest

from sd2.file_lock import FileLockedError, atomic_write_text, exclusive_lock, lock_path
from sd2.paths import REPO_ROOT


def hold_lock_in_another_process(path):
    """A real second process that takes the lock and keeps it until its stdin closes."""
    code = textwrap.dedent(f"""
        import sys
        from sd2.file_lock import exclusive_lock
        with exclusive_lock({str(path)!r}, what="answer file"):
            print("locked", flush=True)
            sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_is_refused_naming_the_file_and_the_holder(tmp_path):
    path = tmp_path / "answers.jsonl"
    holder = hold_lock_in_another_process(path)
    try:
        with pytest.raises(FileLockedError) as refused:
            with exclusive_lock(path, what="answer file"):
                pytest.fail("took a lock another process holds")
        message = str(refused.value)
        assert f"answer file {path} is being written by another run (process {holder.pid})" in message
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    # The holder ended (as a killed run would): the lock is free again, with no stale state to clear.
    with exclusive_lock(path):
        assert lock_path(path).read_text().strip().isdigit()
    with exclusive_lock(path):  # and released after the block
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    path = tmp_path / "replies.jsonl"
    holder = hold_lock_in_another_process(path)
    holder.kill()
    holder.wait(timeout=30)
    with exclusive_lock(path):
        pass


def test_the_lock_holds_within_one_process_too(tmp_path):
    path = tmp_path / "f"
    with exclusive_lock(path):
        with pytest.raises(FileLockedError, match="being written by another run"):
            with exclusive_lock(path):
                pass


def test_concurrent_atomic_rewrites_never_share_a_temporary_file_nor_tear_the_file(tmp_path):
    path = tmp_path / "answers.jsonl"
    texts = [f"{i}\n" * 2000 for i in range(8)]
    errors = []

    def rewrite(text):
        try:
            for _ in range(25):
                atomic_write_text(path, text)
                assert path.read_text() in texts  # always one whole version
        except Exception as exc:  # noqa: BLE001 -- reported below
            errors.append(exc)

    threads = [threading.Thread(target=rewrite, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert path.read_text() in texts
    assert [p.name for p in tmp_path.iterdir()] == ["answers.jsonl"]  # no temporary file left


def test_a_failed_rewrite_keeps_the_old_file(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text("old\n")
    with pytest.raises(TypeError):
        atomic_write_text(path, None)
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["answers.jsonl"]
