"""Shared fixtures for the integration tests: where the built programs
are, and a scratch directory per test (pytest's tmp_path)."""
import os
import subprocess

import pytest

BUILD = os.environ.get("MSTORE_BUILD") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build")
BUILD = os.path.abspath(BUILD)


def prog(name):
    path = os.path.join(BUILD, name)
    if not os.path.exists(path):
        pytest.fail(f"{path} is not built (run make)")
    return path


def run(*args, check=None, **kw):
    """Run a program of ours; return CompletedProcess with text output."""
    p = subprocess.run([str(a) for a in args], capture_output=True,
                       text=True, timeout=120, **kw)
    if check is not None and p.returncode != check:
        raise AssertionError(
            f"{args} exited {p.returncode}, expected {check}\n"
            f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


@pytest.fixture
def mstore():
    path = prog("mstore")

    def call(*args, check=None):
        return run(path, *args, check=check)
    return call


SRC = os.environ.get("MSTORE_SRC") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))


def run_sh(*args, var):
    """tests/lib/run.sh (what make run/stop call) against a scratch var."""
    env = dict(os.environ, MSTORE_VAR=str(var))
    return subprocess.run([os.path.join(SRC, "tests/lib/run.sh"), *args,
                           BUILD], capture_output=True, text=True,
                          env=env, timeout=120)
