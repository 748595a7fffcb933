"""Receiver-side weight helpers: numpy payloads (bf16 included), strict loading, the broadcast protocol."""

import threading

import numpy as np
import pytest
import torch

from policy.loading import load_policy
from policy.tiny import build_tiny_policy
from policy.weight_sync import (
    BroadcastReceiver,
    init_weight_group,
    load_state_into,
    make_payload,
    send_weights,
)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_policy(build_tiny_policy(tmp_path_factory.mktemp("pol"), seed=0, d_model=32)).model


def test_payload_round_trip_including_bf16(model):
    state = {k: v.to(torch.bfloat16) if i % 2 else v + 1 for i, (k, v) in enumerate(model.state_dict().items())}
    payload = make_payload(5, state)
    assert all(isinstance(a, np.ndarray) for a in payload["state"].values())
    fresh = type(model)(model.config)
    assert load_state_into(fresh, payload) == 5
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, state[k].float()), k


def test_strict_loading_names_the_problem(model):
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    state.pop("model.transformer.ln_f.weight")
    with pytest.raises(KeyError, match="ln_f"):
        load_state_into(model, state)
    load_state_into(model, state, strict=False)
    state["model.transformer.ln_f.weight"] = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="shape"):
        load_state_into(model, state, strict=False)


def test_broadcast_protocol_between_threads(model):
    """Rank 0 (the learner's side) and a receiver in one process: every tensor arrives bit-exact."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["model.transformer.wte.weight"] = state["model.transformer.wte.weight"].to(torch.bfloat16)
    entries = [(k, v.dtype, tuple(v.shape)) for k, v in state.items()]
    errors = []

    def sender():
        try:
            group = init_weight_group("127.0.0.1", port, 0, 2)
            send_weights(group, 9, entries, iter(state.values()))
        except Exception as err:  # surfaced by the main thread
            errors.append(err)

    thread = threading.Thread(target=sender)
    thread.start()
    receiver = BroadcastReceiver("127.0.0.1", port, rank=1, world_size=2, timeout_s=60)
    version, received = receiver.receive_state()
    thread.join(60)
    assert not errors and version == 9
    assert received.keys() == state.keys()
    for k, v in state.items():
        assert received[k].dtype == v.dtype and torch.equal(received[k], v), k
