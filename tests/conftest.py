"""Process-wide settings for the test suite, applied before any test module imports ray.

Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when it is imported: set later (inside a fixture), a plain
`pytest` run puts workers on the external interface. Keep every Ray port on loopback, no Ray auth
tokens, no model hub, and passive OpenMP waits (see docs/architecture.md, "Local runs").
"""

import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

TINY_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"


@pytest.fixture(autouse=True, scope="session")
def _tests_default_to_the_tiny_config():
    """In tests, `load_config(None, ...)` (and so `unigrpo train` run in-process) means configs/tiny.yaml:
    the fast toy task without a warm start. The embedded default, configs/demo.yaml (a 4-minute run), is
    what tests/test_demo.py runs, in a subprocess that sees the real default. Session-scoped, so that
    module-scoped fixtures that build drivers see it too."""
    import rl.config

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rl.config, "DEFAULT_CONFIG", TINY_CONFIG)
        yield


ROOT = TINY_CONFIG.parent.parent


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray cluster (8 logical CPUs, loopback) per test module that asks for it: starting Ray costs
    seconds, so a module's tests share it; each module gets its own, so one that breaks it (killed actors,
    a frozen process) cannot leak into another module. Ray workers inherit this environment: the tests'
    own plugins (tests.plugins...) must be importable there."""
    from policy.placement import ensure_local_ray_env

    ensure_local_ray_env()
    if str(ROOT) not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    import ray

    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def pytest_configure(config):
    # pyproject.toml registers `slow`; `bench` marks the benchmarks' smoke runs (tests/test_benchmarks.py)
    config.addinivalue_line("markers", "bench: a benchmark's --smoke run; `make bench-smoke` (CI), not `make test`")
