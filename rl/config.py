"""The run configuration: a typed schema, YAML files, dotted overrides, validation before any actor starts.

    cfg = load_config("configs/tiny.yaml", ["learner.lr=1e-6", "rollout.num_workers=8"])

YAML and overrides are merged with OmegaConf (so `a.b=c` dotlists and `${...}` interpolation work);
the result is validated by pydantic models, and every problem is reported as
`<dotted.key>: <what was wrong> (got <value>)` in one ConfigError, before Ray is even started.
Unknown keys are errors too: a typo like `learner.lr_rate=1e-6` must not be silently ignored.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any, Literal

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from policy.actor_group import PLACEMENT_TIMEOUT_S
from policy.deadlines import DeadlinePolicy
from policy.lora import BLOCK_PROJECTIONS, LoraSettings
from policy.prompts import T2I_MAX_TEXT_LEN
from rewards.api import DEFAULT_MAX_ABS
from rl.tasks import TEXT_TASKS
from rollout.image_sampler import ImageSamplerConfig
from rollout.text_sampler import TextSamplerConfig
from trainer.engine import LearnerConfig
from trainer.unigrpo import UniGRPOConfig

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"  # what `make demo` runs


class ConfigError(ValueError):
    """One or more problems in a run configuration, each naming its key."""


def _number_types(annotation: Any) -> set[type]:
    """int/float inside a field's annotation (through Optional, unions and Field metadata)."""
    if annotation in (int, float):
        return {annotation}
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return set().union(*(_number_types(a) for a in typing.get_args(annotation)))
    return set()


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_non_finite(v) for v in value)
    return False


class Section(BaseModel):
    # allow_inf_nan=False: `learner.lr=inf` or `nan` is an error, not a run that trains on NaN
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info):
        # pydantic's lax mode reads `true` as 1 for int and float fields; a boolean where a number is
        # expected is a mistake (a shifted YAML line, a wrong key), so it is rejected
        if isinstance(value, bool) and _number_types(cls.model_fields[info.field_name].annotation):
            raise ValueError("expected a number, got a boolean")
        return value


def default(runtime_cls, name: str):
    """The default of `name` in a runtime dataclass: a section repeats no default its builder's class has."""
    return next(f.default for f in dataclass_fields(runtime_cls) if f.name == name)


def runtime_kwargs(section: BaseModel, runtime_cls, **extra) -> dict:
    """The section's fields that `runtime_cls` also has, plus `extra`: no field-by-field copies."""
    names = {f.name for f in dataclass_fields(runtime_cls)}
    return {k: v for k, v in section.model_dump().items() if k in names} | extra


class PlacementSection(Section):
    """How a group's actors are placed: one placement-group bundle per actor, reserved together."""

    strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="PACK: as few nodes as possible; SPREAD: across nodes; STRICT_*: must")
    resources: dict[str, float] = Field(
        default_factory=dict, description="extra custom resources per bundle, e.g. {learner_node: 1}")


class TinyPolicySpec(Section):
    """A tiny random policy built into the run directory (the embedded default needs no download)."""

    d_model: int = Field(64, ge=8)
    n_layers: int = Field(2, ge=1)
    n_heads: int = Field(4, ge=1)
    mlp_hidden_size: int | None = None
    codebook_size: int = Field(64, ge=2)
    init: Literal["llada", "scaled"] = Field("llada", description="weight init: LLaDA's N(0, 0.02), or "
                                             "'scaled' (1/fan_in variance; trains without a long plateau at this size)")
    seed: int = 0


class WarmStartSpec(Section):
    """Masked-diffusion SFT of the tiny policy before RL (trainer/sft.py) that teaches parts of the tasks,
    never a task itself. text: the training prompts paired with the answers of other prompts (and, for the
    demo task, questions that only ask to read one number): the answer format (rl/tasks/arith.py); mmu: the
    same for image questions; t2i (the built-in shapes only): colour words and position words, never
    together (rl/tasks/shapes.py). See rl/warm_start.py."""

    tasks: list[Literal["text", "mmu", "t2i"]] = Field(
        default_factory=lambda: ["text"], min_length=1, description="whose warm-start sets to train on")
    steps: int = Field(100, ge=1)
    lr: float = Field(3e-3, gt=0)
    batch_size: int = Field(32, ge=1)
    seed: int = 0


class ModelSection(Section):
    path: str | None = Field(None, description="local policy directory (config.json + safetensors + tokenizer)")
    tiny: TinyPolicySpec | None = Field(default_factory=TinyPolicySpec)
    warm_start: WarmStartSpec | None = Field(None, description="SFT of the tiny policy before RL: parts of each task, not the task")
    dtype: Literal["float32", "bfloat16", "auto"] = "auto"
    image_tokenizer: str | None = Field(
        None, description="'palette' (the demo's colour-patch tokenizer) or a local directory (MAGVIT-v2 "
        "weights, or image_tokenizer.json); needed by mmu and t2i tasks")

    @field_validator("path")
    @classmethod
    def _path_not_empty(cls, v):
        if v is not None and not v.strip():
            raise ValueError("expected a local policy directory, got an empty string (use null for model.tiny)")
        return v

    @model_validator(mode="after")
    def _one_source(self, info: ValidationInfo):
        if self.path is None and self.tiny is None and not planning(info):
            raise ValueError("set model.path (a local policy directory) or model.tiny")
        return self


class ImageTaskData(Section):
    """Prompts of one image task (data.mmu / data.t2i): files, or the built-in synthetic shapes."""

    source: Literal["files", "shapes"] = "files"
    files: list[str] = Field(default_factory=list, description="Parquet or JSONL prompt files")
    question_field: str | None = Field(None, description="default: 'question' (mmu), 'caption' (t2i)")
    answer_field: str = "answer"
    image_field: str = Field("image", description="mmu: a bytes column or a path relative to the data file")
    shapes_size: int = Field(256, ge=1, description="rows of the built-in shapes task")

    @model_validator(mode="after")
    def _files_for_files(self, info: ValidationInfo):
        if self.source == "files" and not self.files and not planning(info):
            raise ValueError("files is empty; set files or source: shapes")
        return self


class DataSection(Section):
    # the text task (rl/tasks): toy_copy and toy_arith are built in, math and custom read data.files
    task: Literal[TEXT_TASKS] = Field(description="the text task (rl/tasks.TEXT_TASKS); no default: a config "
                                      "names what it trains on")
    files: list[str] = Field(default_factory=list, description="Parquet or JSONL prompt files")
    question_field: str = "question"
    answer_field: str = "answer"
    prompts_per_step: int = Field(8, ge=1)
    allow_repeats: bool = Field(False, description="let data.prompts_per_step exceed a task's prompts: each "
                                "step then holds some prompts more than once, as separate groups (refused by "
                                "default, rl/preflight.py)")
    shuffle: bool = True
    seed: int = 0
    think: bool = False
    toy_size: int = Field(512, ge=1, description="rows of the built-in toy task")
    # multimodal tasks: the text task is the one above; mmu / t2i each have their own prompts
    mixture: dict[Literal["text", "mmu", "t2i"], float] | None = Field(
        None, description="share of each task in every batch, e.g. {text: 0.5, mmu: 0.25, t2i: 0.25}")
    mmu: ImageTaskData | None = None
    t2i: ImageTaskData | None = None
    image_resize: Literal["center_crop", "squash", "none"] = Field(
        "center_crop", description="how mmu images become rollout.image.resolution square; none = must fit")

    @model_validator(mode="after")
    def _files_for_file_tasks(self, info: ValidationInfo):
        from rl.tasks import get_task

        if not get_task(self.task).builtin and not self.files and not planning(info):
            raise ValueError(f"data.files is empty; task {self.task!r} reads prompts from files")
        return self

    @model_validator(mode="after")
    def _mixture_has_data(self):
        if self.mixture is not None:
            if any(w < 0 for w in self.mixture.values()) or sum(self.mixture.values()) <= 0:
                raise ValueError(f"data.mixture: weights must be >= 0 with a positive sum, got {self.mixture}")
            for kind in ("mmu", "t2i"):
                if self.mixture.get(kind, 0) > 0 and getattr(self, kind) is None:
                    raise ValueError(f"data.mixture gives {kind} weight {self.mixture[kind]} but data.{kind} is not set")
        return self

    def kinds(self) -> list[str]:
        """The task kinds this data yields."""
        return [k for k, w in (self.mixture or {"text": 1.0}).items() if w > 0]

    def task_source(self, kind: str) -> tuple[str, Section | None]:
        """(the task that supplies `kind`'s prompts, the section they are described by): `task` and this
        section for text, the image task named after its section (data.mmu, data.t2i) and that section."""
        return (self.task, self) if kind == "text" else (kind, getattr(self, kind))


class TextSamplerSection(Section):
    gen_length: int = Field(default(TextSamplerConfig, "gen_length"), ge=1)
    steps: int = Field(default(TextSamplerConfig, "steps"), ge=1)
    block_length: int = Field(default(TextSamplerConfig, "block_length"), ge=1)
    temperature: float = Field(default(TextSamplerConfig, "temperature"), ge=0.0)
    remasking: Literal["low_confidence", "random"] = default(TextSamplerConfig, "remasking")
    threshold: float | None = Field(default(TextSamplerConfig, "threshold"), gt=0.0, le=1.0)
    use_cache: bool = default(TextSamplerConfig, "use_cache")
    cfg_scale: float = Field(default(TextSamplerConfig, "cfg_scale"), ge=0.0)

    @model_validator(mode="after")
    def _sampler_accepts(self):
        # the sampler's own rules (block divisibility, steps per block, ...), checked here so that a
        # bad combination fails before any actor starts rather than inside the rollout worker
        TextSamplerConfig(**runtime_kwargs(self, TextSamplerConfig)).validate()
        return self


class ImageSamplerSection(Section):
    steps: int = Field(default(ImageSamplerConfig, "steps"), ge=1)
    guidance_scale: float = Field(default(ImageSamplerConfig, "guidance_scale"), ge=0.0)
    temperature: float = Field(default(ImageSamplerConfig, "temperature"), ge=0.0)
    resolution: int = Field(512, ge=16, description="pixels; MAGVIT-v2 gives (resolution / 16)^2 image tokens")
    max_text_len: int = Field(T2I_MAX_TEXT_LEN, ge=4, description="t2i prompt width in tokens (513 for MMaDA-8B)")

    @property
    def num_image_tokens(self) -> int:
        return (self.resolution // 16) ** 2


class RolloutSection(Section):
    num_workers: int = Field(1, ge=1)
    max_workers: int | None = Field(None, ge=1, description="elastic fleet: up to this many workers, the ones beyond "
                                    "num_workers started when a node with room joins and dropped when it leaves "
                                    "(docs/elastic.md); None: a fixed fleet of num_workers")
    max_staleness: int = Field(0, ge=0, description="K: 0 generates each step's batch after the previous update "
                               "(synchronous); >= 1 generates the next batch while the learner updates, and trains "
                               "on no record more than K policy versions old (docs/async.md)")
    num_shards: int | None = Field(None, ge=1, description="shards of each step's prompts (shard k: seed + 7919 k); "
                                   "None: one per worker. Fixed, the records do not depend on the number of workers")
    num_gpus_per_worker: float = Field(0.0, ge=0.0)
    group_size: int = Field(8, ge=2, description="G: responses per prompt (group normalisation needs >= 2)")
    text: TextSamplerSection = Field(default_factory=TextSamplerSection)
    image: ImageSamplerSection = Field(default_factory=ImageSamplerSection)
    placement: PlacementSection = Field(default_factory=PlacementSection)


class RewardEntry(Section):
    """One reward. Unset weight / timeout_s come from the reward's own defaults (rewards.api), the same
    ones `unigrpo rewards check` uses, so training and the checker score a dump identically."""

    name: str
    weight: float | None = None
    tasks: list[str] | None = None
    timeout_s: float | None = Field(None, gt=0)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    path: str | None = Field(None, description="module:function or module:Class of a user reward")
    max_abs: float = Field(DEFAULT_MAX_ABS, gt=0, description="|value| above this is an `invalid` result worth 0")

    @field_validator("kwargs")
    @classmethod
    def _finite_kwargs(cls, v):
        if _non_finite(v):
            raise ValueError("contains a non-finite number (inf or nan)")
        return v

    @field_validator("path")
    @classmethod
    def _path_shape(cls, v):
        if v is not None and (":" not in v or not all(v.split(":", 1))):
            raise ValueError(f"expected 'module:attribute', got {v!r}")
        return v


class RewardsSection(Section):
    functions: list[RewardEntry] = Field(
        default_factory=lambda: [RewardEntry(name="math", kwargs={"last_number_fallback": True})]
    )
    num_workers: int = Field(1, ge=1)
    num_model_workers: int = Field(1, ge=0)
    model_device: str = "cpu"
    clip_model_path: str | None = Field(None, description="local CLIP directory (transformers CLIPModel)")
    tiny_clip: bool = Field(False, description="build a tiny random CLIPModel into the run directory "
                            "(exercises the CLIP path on CPU; its scores mean nothing)")
    placement: PlacementSection = Field(default_factory=lambda: PlacementSection(strategy="SPREAD"))

    @field_validator("functions")
    @classmethod
    def _unique_names(cls, v: list[RewardEntry]):
        first: dict[str, int] = {}
        for i, entry in enumerate(v):
            if entry.name in first:
                raise ValueError(f"rewards.functions[{first[entry.name]}] and [{i}] are both named {entry.name!r}; "
                                 "reward names must be unique (each names a component "
                                 "of the total, its metrics and eval.correct_rewards): rename one")
            first[entry.name] = i
        return v


class UniGRPOSection(Section):
    mu: int = Field(default(UniGRPOConfig, "mu"), ge=1, description="inner UniGRPO iterations per rollout batch")
    eps_low: float = Field(default(UniGRPOConfig, "eps_low"), ge=0.0)
    eps_high: float = Field(default(UniGRPOConfig, "eps_high"), ge=0.0)
    beta: float = Field(default(UniGRPOConfig, "beta"), ge=0.0,
                        description="k3 KL coefficient; 0 drops the reference model")
    mask_schedule: Literal["stratified", "paper_formula", "random", "full"] = default(UniGRPOConfig, "mask_schedule")
    p_min: float = Field(default(UniGRPOConfig, "p_min"), ge=0.0, le=1.0)
    loss_norm: Literal["sequence", "token"] = default(UniGRPOConfig, "loss_norm")
    response_positions: Literal["all", "through_first_eos"] = Field(
        default(UniGRPOConfig, "response_positions"), description="which positions form o_i (docs/learner.md)")
    logprob_support: Literal["sampler", "full"] = Field(
        default(UniGRPOConfig, "logprob_support"), description="text log-probs over the sampler's support "
        "at the rollout temperature, or the whole vocabulary at 1")
    off_policy: Literal["decoupled", "behaviour"] = Field(
        default(UniGRPOConfig, "off_policy"), description="asynchronous rollouts (rollout.max_staleness >= 1): "
        "clip around the learner's weights and weight stale rows by pi_prox / pi_behaviour (decoupled), or clip "
        "around the behaviour policy (docs/async.md)")
    behaviour_weight_cap: float = Field(default(UniGRPOConfig, "behaviour_weight_cap"), ge=1.0,
                                        description="decoupled: truncation of pi_prox / pi_behaviour")


class EvalSection(Section):
    """Held-out evaluation between RL steps on the rollout workers, scored by the reward actors
    (rl/evaluation.py): at step 0, every `every` steps and at the last step."""

    files: list[str] = Field(default_factory=list, description="Parquet/JSONL like data.files; empty: the "
                             "text task's own held-out split where it has one (rl/tasks: toy_arith)")
    every: int = Field(25, ge=1, description="evaluate every N steps (and at step 0 and the last step)")
    num_prompts: int = Field(0, ge=0, description="the first N prompts of the eval set; 0 = all")
    temperature: float = Field(0.0, ge=0.0, description="eval sampler temperature (0: greedy)")
    use_cache: bool = Field(False, description="eval with the prefix KV cache (default: the plain exact sampler)")
    threshold: float | None = Field(None, gt=0.0, le=1.0, description="confidence-threshold unmasking (None: off)")
    k: int = Field(1, ge=1, description="pass@k: k samples per prompt at pass_temperature (1: off)")
    pass_temperature: float = Field(1.0, gt=0.0)
    correct_rewards: list[str] = Field(default_factory=lambda: ["math"],
                                       description="a response is correct when each of these rewards is > 0")

    def sampler_overrides(self) -> dict:
        return {"temperature": self.temperature, "use_cache": self.use_cache, "threshold": self.threshold}


class AdvantageSection(Section):
    eps: float = Field(1e-6, gt=0)
    drop_zero_variance_groups: bool = False


class LoraSection(Section):
    """`learner.lora`: train low-rank adapters on the block projections only (docs/lora.md)."""

    rank: int = Field(default(LoraSettings, "rank"), ge=1)
    alpha: float = Field(default(LoraSettings, "alpha"), gt=0, description="scale s = alpha / rank")
    dropout: float = Field(default(LoraSettings, "dropout"), ge=0.0, lt=1.0)
    target_modules: list[Literal[BLOCK_PROJECTIONS]] = Field(  # type: ignore[valid-type]
        list(default(LoraSettings, "target_modules")), min_length=1, description="block projections to adapt")


class LearnerSection(Section):
    num_ranks: int = Field(1, ge=1)
    num_gpus_per_rank: float = Field(0.0, ge=0.0)
    deepspeed_config: str = default(LearnerConfig, "deepspeed_config")
    lr: float = Field(default(LearnerConfig, "lr"), gt=0)
    weight_decay: float = Field(default(LearnerConfig, "weight_decay"), ge=0)
    lr_schedule: Literal["constant", "cosine"] = default(LearnerConfig, "lr_schedule")
    warmup_steps: int = Field(default(LearnerConfig, "warmup_steps"), ge=0)
    grad_clip: float = Field(default(LearnerConfig, "grad_clip"), gt=0)
    micro_batch_tokens: int = Field(default(LearnerConfig, "micro_batch_tokens"), ge=16)
    gradient_checkpointing: bool = default(LearnerConfig, "gradient_checkpointing")
    sliced_load: bool = Field(default(LearnerConfig, "sliced_load"), description="ZeRO-3: each rank reads only "
                              "its slice of the checkpoint under deepspeed.zero.Init (false: a full load per rank)")
    bf16: Literal["auto", "true", "false"] = str(default(LearnerConfig, "bf16")).lower()
    lora: LoraSection | None = Field(None, description="adapters only (rank, alpha, dropout, target_modules); "
                                     "null = full fine-tuning (docs/lora.md)")
    max_skipped_updates: int = Field(3, ge=1, description="stop the run after this many updates in a row were "
                                     "skipped for a NaN/inf loss or gradient norm")
    placement: PlacementSection = Field(default_factory=PlacementSection)

    @field_validator("bf16", mode="before")
    @classmethod
    def _bf16_bool(cls, v):
        return str(v).lower() if isinstance(v, bool) else v  # YAML reads an unquoted false as a boolean


class DeadlineSection(Section):
    """How long a wait on an actor may last before the actor counts as frozen (policy/deadlines.py)."""

    factor: float = Field(default(DeadlinePolicy, "factor"), gt=1, description="x the call's recent median")
    floor_s: float = Field(default(DeadlinePolicy, "floor_s"), gt=0, description="never sooner than this")
    first_s: float = Field(default(DeadlinePolicy, "first_s"), gt=0,
                           description="a call kind with no timing yet (loading, warm-up, compilation)")
    override_s: float | None = Field(default(DeadlinePolicy, "override_s"), gt=0,
                                     description="one fixed deadline for every call instead")


class RaySection(Section):
    address: str | None = Field(None, description="None starts a local cluster on loopback; 'auto' joins one")
    num_cpus: int | None = Field(None, ge=1)
    include_dashboard: bool = False
    deadlines: DeadlineSection = Field(default_factory=DeadlineSection,
                                       description="frozen-actor deadlines learned from the run's timings")
    placement_timeout_s: float = Field(
        PLACEMENT_TIMEOUT_S, gt=0, description="how long a group waits for its placement group before failing")


class RunSection(Section):
    name: str = "tiny"
    dir: str = "runs"
    steps: int = Field(120, ge=1)
    checkpoint_every: int = Field(50, ge=1)
    seed: int = 0
    max_wall_s: float | None = Field(None, gt=0, description="stop (gracefully) after this many seconds")
    weight_transport: Literal["object_store", "broadcast"] = "object_store"
    max_restarts: int = Field(2, ge=0, description="restarts of the run from its last checkpoint after a lost "
                              "learner rank or any unexpected error in a step (Ray's own in-place restarts of one "
                              "crashed actor are policy/actor_group.ACTOR_MAX_RESTARTS)")
    checkpoint_margin_gb: float = Field(1.0, ge=0, description="free space to leave on the run dir's disk "
                                        "beyond the next checkpoint's size")
    keep_checkpoints: int | None = Field(3, ge=1, description="keep the newest N checkpoints, and the one with "
                                         "the best held-out eval/accuracy; older ones are removed once a new "
                                         "one verifies (null: keep all)")
    plot: bool = True
    trace_groups: int = Field(1, ge=-1, description="groups per step whose per-token update terms the learner "
                              "records under token_traces/ (rl/token_traces.py): the first K; 0 off; -1 all (debug)")
    dashboard: bool = Field(False, description="start `unigrpo dashboard` on this run too and print its URL")
    dashboard_port: int | None = Field(None, ge=0, le=65535, description="default: the dashboard's own")
    loggers: list[Literal["jsonl", "tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=lambda: ["jsonl"], description="metric sinks; jsonl is the source of truth (rl/loggers.py)")
    tracker_samples: int = Field(4, ge=0, description="rollouts per step in the sample table sent to the TensorBoard, "
                                 "W&B and MLflow loggers (prompt, response, rewards, advantage; rl/loggers.py); 0 off")

    @field_validator("loggers")
    @classmethod
    def _loggers(cls, v: list[str]):
        from rl.loggers import missing

        if "jsonl" not in v:
            raise ValueError("must include jsonl (the dashboard, resume and plots read metrics.jsonl)")
        absent = missing(v)
        if absent:
            raise ValueError(f"{', '.join(absent)} not installed (pip install {' '.join(absent)}), "
                             "or drop it from run.loggers")
        return list(dict.fromkeys(v))

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str):
        if not v or "/" in v or v.startswith("."):
            raise ValueError(f"run.name must be a plain directory name, got {v!r}")
        return v


class ModeSection(Section):
    """Where the rollouts run (docs/architecture.md, "Placement modes").

    disaggregated: rollout workers on their own actors (rollout.num_workers), the learner ranks on theirs;
                   every update publishes the full weights to the workers.
    colocated:     every learner rank (one per GPU) generates its shard of the rollouts with its own
                   current weights, then every rank trains; nothing is published. The rollout actors'
                   settings (rollout.num_workers, num_gpus_per_worker, placement; run.weight_transport) are
                   not used, so one override switches any config: the shards are the learner ranks."""

    mode: Literal["disaggregated", "colocated"] = "disaggregated"
    inference_weights: Literal["keep", "free"] = Field(
        "keep", description="colocated under ZeRO-3: keep the gathered full weights between steps (refreshed "
        "once after each update) or free them after each generation (gathered again at the next)")
    offload_optimizer: bool = Field(
        False, description="colocated on GPU: move the optimizer states to host memory while generating")
    gpu_memory_gb: float = Field(
        80.0, gt=0, description="memory of one GPU: configs that cannot fit are refused before any actor starts")


class RunConfig(Section):
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection
    rollout: RolloutSection = Field(default_factory=RolloutSection)
    rewards: RewardsSection = Field(default_factory=RewardsSection)
    unigrpo: UniGRPOSection = Field(default_factory=UniGRPOSection)
    advantages: AdvantageSection = Field(default_factory=AdvantageSection)
    learner: LearnerSection = Field(default_factory=LearnerSection)
    placement: ModeSection = Field(default_factory=ModeSection, description="where rollouts run: their own "
                                   "actors (disaggregated) or the learner ranks (colocated)")
    ray: RaySection = Field(default_factory=RaySection)
    run: RunSection = Field(default_factory=RunSection)
    eval: EvalSection = Field(default_factory=EvalSection, description="held-out evaluation between steps")

    @model_validator(mode="after")
    def _eval_rewards_exist(self):
        from rl.tasks import get_task

        if not (self.eval.files or get_task(self.data.task).has_heldout):
            return self  # no eval set (rl/evaluation.py: build_eval_prompts), so nothing is scored as correct
        names = {r.name for r in self.rewards.functions}
        unknown = [n for n in self.eval.correct_rewards if n not in names]
        if unknown:
            raise ValueError(f"eval.correct_rewards names {unknown}, not among rewards.functions {sorted(names)}")
        return self

    @model_validator(mode="after")
    def _colocated_shards(self):
        if self.placement.mode == "colocated" and self.rollout.max_staleness > 0:
            raise ValueError(f"rollout.max_staleness={self.rollout.max_staleness} with placement.mode=colocated: a "
                             "colocated rank cannot generate while it trains; use placement.mode=disaggregated")
        if self.rollout.max_workers is not None and self.rollout.max_workers < self.rollout.num_workers:
            raise ValueError(f"rollout.max_workers={self.rollout.max_workers} is below rollout.num_workers="
                             f"{self.rollout.num_workers}: the fleet never shrinks below its placement group")
        if self.placement.mode == "colocated" and self.rollout.max_workers is not None:
            raise ValueError("rollout.max_workers with placement.mode=colocated: the learner ranks generate, there "
                             "are no rollout workers to add; use placement.mode=disaggregated")
        shards, ranks = self.rollout.num_shards, self.learner.num_ranks
        if self.placement.mode == "colocated" and shards not in (None, ranks):
            raise ValueError(f"rollout.num_shards={shards} with placement.mode=colocated: each of the "
                             f"learner.num_ranks={ranks} ranks generates one shard; drop rollout.num_shards")
        return self

    @model_validator(mode="after")
    def _multimodal_parts(self, info: ValidationInfo):
        if planning(info):
            return self  # `unigrpo plan` reads shapes and sizes; the run's files are checked when it runs
        kinds = self.data.kinds()
        if ("mmu" in kinds or "t2i" in kinds) and not self.model.image_tokenizer:
            raise ValueError("model.image_tokenizer is not set; mmu and t2i tasks need one "
                             "('palette' or a MAGVIT-v2 directory)")
        tok = self.model.image_tokenizer
        if tok and tok != "palette" and not Path(tok).is_dir():
            raise ValueError(f"model.image_tokenizer: {tok} is not a directory")
        if tok == "palette" and self.model.tiny is not None and self.model.path is None:
            from policy.palette_tokenizer import NAMED_COLOURS

            if self.model.tiny.codebook_size != len(NAMED_COLOURS):
                raise ValueError(f"model.tiny.codebook_size must be {len(NAMED_COLOURS)} (the palette's "
                                 f"colours) with model.image_tokenizer=palette, got {self.model.tiny.codebook_size}")
        from rl.tasks import get_task

        ws = self.model.warm_start
        for kind in ws.tasks if ws is not None else []:  # each kind's task says whether it has a set here
            name, source = self.data.task_source(kind)
            problem = get_task(name).warm_start_problem(source)
            if problem:
                raise ValueError(f"model.warm_start.tasks: {problem}")
        from rewards.registry import builtin_kind

        # built-in model rewards (rewards/registry.py: BUILTIN_KINDS) score with the CLIP model on model actors
        model_rewards = [f.name for f in self.rewards.functions if f.path is None and builtin_kind(f.name) == "model"]
        if model_rewards:
            path = self.rewards.clip_model_path
            if path is None and not self.rewards.tiny_clip:
                raise ValueError(f"rewards.clip_model_path is not set; the {model_rewards[0]} reward needs a local "
                                 "CLIP directory (or rewards.tiny_clip=true for a tiny random one)")
            if path is not None and not (Path(path) / "config.json").is_file():
                raise ValueError(f"rewards.clip_model_path: {path} is not a CLIP model directory (no config.json)")
            if self.rewards.num_model_workers < 1:
                raise ValueError(f"rewards.num_model_workers must be >= 1 to run the {model_rewards[0]} reward")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.run.dir) / self.run.name

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


SECTIONS = {name: field.description or name for name, field in RunConfig.model_fields.items()}


def _describe(errors: list[dict]) -> str:
    lines = []
    for err in errors:
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        got = err.get("input")
        got_text = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {key}: {err['msg']}{got_text}")
    return "\n".join(lines)


def planning(info: ValidationInfo) -> bool:
    """Validating for `unigrpo plan` (rl/plan.py): a config may leave its model and data paths unset."""
    return bool(info.context and info.context.get("planning"))


def validate_config(raw: dict[str, Any], planning: bool = False) -> RunConfig:
    try:
        return RunConfig.model_validate(raw, context={"planning": planning})
    except ValidationError as err:
        raise ConfigError("invalid configuration:\n" + _describe(err.errors())) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, planning: bool = False) -> RunConfig:
    """YAML file (default: configs/demo.yaml) + dotted `key=value` overrides -> validated RunConfig.
    planning=True: model.path, data files and image/CLIP directories may be unset or absent (`unigrpo plan`)."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        base = OmegaConf.load(path)
    except (OmegaConfBaseException, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    for item in overrides or []:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r}: expected key=value, e.g. learner.lr=1e-6")
    try:
        merged = OmegaConf.merge(base, OmegaConf.from_dotlist(list(overrides or [])))
        raw = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"could not apply overrides {overrides}: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return validate_config(raw, planning)


def save_resolved(cfg: RunConfig, run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    out = run_dir / "config.yaml"
    out.write_text(cfg.to_yaml())
    return out
