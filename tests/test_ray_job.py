"""A run submitted as a Ray Job (`ray job submit`) to a cluster started with `ray start --head` on
loopback and non-default ports; `ray job stop` sends SIGTERM, and the run checkpoints on its way out."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).with_name("ray"))
pytestmark = pytest.mark.slow


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    gcs, dash, client, agent, agent_grpc, metrics, runtime_env, node_manager, object_manager = free_ports(9)
    temp = tmp_path_factory.mktemp("ray")
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled", HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               RAY_JOB_STOP_WAIT_TIME_S="120")  # the time `ray job stop` leaves between SIGTERM and SIGKILL
    cmd = [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}", "--num-cpus=6",
           "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
           f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
           f"--dashboard-agent-grpc-port={agent_grpc}",
           f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
           f"--node-manager-port={node_manager}", f"--object-manager-port={object_manager}",
           f"--temp-dir={temp}", "--disable-usage-stats"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        ok = subprocess.run([RAY, "job", "list", "--address", address], env=env, capture_output=True)
        if ok.returncode == 0:
            break
        time.sleep(2)
    else:
        raise TimeoutError("the head node's job server did not come up")
    yield address, env
    # --block: ray start takes down the processes it started, in ~4 s (SIGTERM to its whole process group
    # instead took 33-60 s: every part then shuts down on its own), then whatever is left goes
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def job(address: str, env: dict, *args: str) -> str:
    command, *rest = args  # --address goes before the entrypoint's "--"
    out = subprocess.run([RAY, "job", command, "--address", address, *rest], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_ray_job_submit_and_stop_leaves_a_checkpoint(head, tmp_path):
    address, env = head
    run_dir = tmp_path / "job"
    submit = job(address, env, "submit", "--no-wait", "--submission-id", "unigrpo-test", "--",
                 sys.executable, "-m", "rl.cli", "train", "configs/tiny.yaml", "ray.address=auto", f"run.dir={tmp_path}", "run.name=job",
                 "run.steps=500", "run.max_wall_s=null", "run.checkpoint_every=1000", "run.plot=false",
                 "rollout.text.gen_length=8", "rollout.text.steps=4", "rollout.text.block_length=8",
                 "data.prompts_per_step=4", "rollout.group_size=4")
    assert "unigrpo-test" in submit
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 2):
        status = job(address, env, "status", "unigrpo-test").upper()  # "Job '...' failed" / "was stopped"
        assert "FAILED" not in status, job(address, env, "logs", "unigrpo-test")[-3000:]
        time.sleep(1)
    assert metrics.exists(), job(address, env, "logs", "unigrpo-test")[-3000:]
    job(address, env, "stop", "unigrpo-test")  # SIGTERM to the entrypoint; waits for it to end
    deadline = time.monotonic() + 180
    status = ""
    while time.monotonic() < deadline and "STOPPED" not in status:
        time.sleep(1)
        status = job(address, env, "status", "unigrpo-test").upper()  # "Job '...' was stopped"
    assert "STOPPED" in status, status
    logs = job(address, env, "logs", "unigrpo-test")
    assert "received signal 15" in logs, logs[-3000:]
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    assert latest == f"step_{steps[-1]}" and (run_dir / "checkpoints" / latest / "driver_state.json").is_file()
