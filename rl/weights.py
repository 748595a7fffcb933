"""`WeightPublisher`: learner -> rollout workers after every update, one place for the transport choice.

    publisher = WeightPublisher(learner_group, rollout_group, transport="object_store")
    info = publisher.publish()   # {"publish/transport", "publish/bytes", "publish/receivers", "publish/version",
                                 #  "time/publish_s"}: logged with every step's metrics

The policy version is the learner group's counter (bumped by every update, saved in checkpoints); every
payload is tagged with it and every rollout carries the version of the weights it was sampled from.

Transports (docs/architecture.md, "Transports"):
  object_store  rank 0 gathers the full weights as numpy into Ray's object store once per version; each
                worker pulls the same ObjectRef (Ray fans it out node to node).
  broadcast     a torch.distributed group (gloo on CPU, NCCL on GPU) joining learner rank 0 and the
                live workers; rank 0 streams every tensor once. A member that dies breaks the group:
                that publication falls back to the object store, and the group is formed again (with
                the workers then live) at the next one.
Restarted workers are always served from the object store (`payload()` is the rollout group's
`weight_source`), whatever the transport.
"""

from __future__ import annotations

import time


class WeightPublisher:
    def __init__(self, learner, rollout, transport: str = "object_store") -> None:
        if transport not in ("object_store", "broadcast"):
            raise ValueError(f"weight transport {transport!r}: expected 'object_store' or 'broadcast'")
        self.learner, self.rollout, self.transport = learner, rollout, transport
        self.rollout.weight_source = self.payload
        self._payload: tuple[int, object] | None = None  # (version, ObjectRef) of the latest payload
        self._group: tuple[list[int], int] | None = None  # broadcast members, rollout restarts when formed
        self._bytes: int | None = None

    @property
    def version(self) -> int:
        return self.learner.policy_version

    def payload(self, version: int | None = None) -> tuple[int, object]:
        """(version, ObjectRef): `version`'s weights if they are the payload still held (a restarted worker
        rejoining the batch its group samples with that version), else the current weights, gathered at most
        once per version. Asynchronous runs call this from the rollout thread while the learner may be
        updating: the learner group's lock lets the update finish (and bump the version) before the gather,
        so a payload is never tagged with the version before the weights it holds."""
        if version is not None and self._payload is not None and self._payload[0] == version:
            return self._payload
        with self.learner.lock:
            if self._payload is None or self._payload[0] != self.version:
                self._payload = None  # drop the previous version's object before gathering the next
                self._payload = (self.version, self.learner.publish_object_store(self.version))
            return self._payload

    def publish(self) -> dict:
        import ray

        t0 = time.perf_counter()
        version = self.version
        used = self.transport
        if self.transport == "broadcast":
            if self._group is not None and (self._group[0] != self.rollout.live()
                                            or self._group[1] != self.rollout.restarts):
                self._group, used = None, "object_store_fallback"  # a member restarted: the group is broken
            else:
                if self._group is None:
                    self._form_group()
                members = self._group[0]
                ray.get(self.learner.broadcast_weights(version) + self.rollout.receive_weights(members))
                self.rollout.version = version
        if used != "broadcast":
            _, ref = self.payload()
            self.rollout.load_weights(version, ref)
        if self._bytes is None:
            self._bytes = self.learner.weight_bytes()
        receivers = len(self.rollout.live())
        return {"publish/transport": used, "publish/version": version, "publish/receivers": receivers,
                "publish/bytes": self._bytes * receivers, "time/publish_s": time.perf_counter() - t0}

    def _form_group(self) -> None:
        import ray

        members = self.rollout.live()
        world = len(members) + 1
        backend = "nccl" if self.learner.ds_config["bf16"]["enabled"] and self.rollout.on_gpu else "gloo"
        host, port, root = self.learner.init_broadcast(world, backend=backend)
        ray.get([root, *self.rollout.join_weight_group(host, port, world, backend)])  # one rendezvous
        self._group = (members, self.rollout.restarts)
