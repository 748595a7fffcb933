"""unigrpo rollout package: text and image samplers (`rollout.text_sampler`, `rollout.image_sampler`) and
the Ray rollout worker (`rollout.worker`). Imports only `policy`."""
