"""The glibc arena cap reaches the processes fedlab starts (TFF's worker among them)."""

import subprocess

from fedlab.system import malloc_arenas


def test_limit_arenas_reaches_child_processes(monkeypatch):
    monkeypatch.delenv('MALLOC_ARENA_MAX', raising=False)
    malloc_arenas.limit_arenas()
    child = subprocess.run(['sh', '-c', 'echo "$MALLOC_ARENA_MAX"'], capture_output=True, text=True, check=True)
    assert child.stdout.strip() == str(malloc_arenas.ARENAS)


def test_a_value_the_user_set_is_kept(monkeypatch):
    monkeypatch.setenv('MALLOC_ARENA_MAX', '4')
    malloc_arenas.limit_arenas()
    child = subprocess.run(['sh', '-c', 'echo "$MALLOC_ARENA_MAX"'], capture_output=True, text=True, check=True)
    assert child.stdout.strip() == '4'
