"""Entry point of one sandbox worker process (see rewards/sandbox.py for the protocol).

Runs until stdin closes. Every call is answered, whatever the reward does: exceptions (including
SystemExit and KeyboardInterrupt raised by a plugin, at import or at call time) become status "error".
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import struct
import sys


def _limit_memory() -> None:
    mb = int(os.environ.get("UNIGRPO_SANDBOX_MEM_MB", "0") or 0)
    if mb > 0:
        try:
            resource.setrlimit(resource.RLIMIT_AS, (mb * 1024 * 1024, mb * 1024 * 1024))
        except (ValueError, OSError):
            pass


def _error(exc: BaseException):
    from rewards.api import RewardResult

    if isinstance(exc, MemoryError):
        return RewardResult(0.0, "error", "memory limit exceeded")
    if isinstance(exc, SystemExit):
        return RewardResult(0.0, "error", f"SystemExit({exc.code!r})")
    return RewardResult(0.0, "error", f"{type(exc).__name__}: {str(exc)[:300]}")


def main() -> None:
    out = os.fdopen(os.dup(1), "w", buffering=1)  # private channel to the parent
    os.dup2(2, 1)  # a plugin's print() goes to the captured (and capped) output, not into the protocol
    sys.stdout = sys.stderr
    inp = sys.stdin.buffer
    for mod in filter(None, os.environ.get("UNIGRPO_SANDBOX_PRELOAD", "").split(",")):
        try:
            importlib.import_module(mod)  # pay the sympy/latex2sympy import once, before any deadline
        except Exception:
            pass
    _limit_memory()
    import pickle

    from rewards.api import RewardSpec
    from rewards.registry import load_reward, probe_reward

    out.write('{"ready": true}\n')
    loaded: dict[str, object] = {}
    while True:
        head = inp.read(8)
        if len(head) < 8:
            return
        (n,) = struct.unpack("<Q", head)
        op, spec_d, reward_input, parent_path = pickle.loads(inp.read(n))  # written by our parent only
        for p in parent_path:
            if p and p not in sys.path:
                sys.path.append(p)
        try:
            spec = RewardSpec(**spec_d)
            if op == "probe":
                res = probe_reward(spec)
            else:
                key = json.dumps(spec_d, sort_keys=True, default=str)
                if key not in loaded:
                    loaded[key] = load_reward(spec)
                    out.write('{"loaded": true}\n')  # the parent restarts the deadline for the call itself
                res = loaded[key].score_one(reward_input)
        except BaseException as exc:  # noqa: B036 - a plugin's sys.exit() must not end the worker
            res = _error(exc)
        sys.stderr.flush()
        out.write(json.dumps({"value": res.value, "status": res.status, "detail": res.detail[:500]}) + "\n")


if __name__ == "__main__":
    main()
