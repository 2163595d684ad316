"""Run assembly: one place builds what `train`, `plan`, `eval`, `infer`, `ensemble` and
`explain` run, so `plan` measures exactly what `train` compiles.

    config = model_config.resolve_model_config(model_fields, checkpoint_path)
    run = assemble(config, prompt_factory=..., mesh=..., trainable=..., optimizer=...)
    frozen = run.load_frozen(checkpoint_path)     # strict, straight into shards and dtype
    params = run.place_prompt(frozen, value)      # the prompt (or bank) in its slot
    state, frozen = run.init_state(params)        # trainable state; frozen weights, cast
    train_step = run.train_step(loss, seed)       # jitted, sharded, state donated

The model's configuration comes from `ptune.model_config` (the model file reconciled with the
checkpoint).

Frozen weights are read once, strictly, with the prompt slot left out (`prompts.PROMPT_PATTERN`):
no other copy of the model is initialised to hold a placeholder.

The numerical core: jax, flax, optax; checkpoints and prompts; no TensorFlow, seqio or gin.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from ptune import family as family_lib
from ptune import optimizers, partitioning, prompts
from ptune import step as step_lib
from ptune import trainable as trainable_lib
from ptune.memo import Memo
from ptune.model_config import ModelConfig
from ptune.models import attention, llama, t5

log = logging.getLogger("ptune")
PyTree = Any
# The train steps and random initialisations of the most recent distinct runs of this process
# (`Run.train_step`, `Run.random_frozen`).
_TRAIN_STEPS = Memo(kept=8)
_INITS = Memo(kept=8)


def load_frozen(
    config: ModelConfig,
    path: str,
    *,
    shardings: Optional[PyTree] = None,
    dtype: Any = jnp.float32,
) -> dict:
    """The checkpoint's parameters without the prompt slot (`Family.load_frozen`)."""
    return family_lib.family_of(config).load_frozen(config, path, shardings=shardings, dtype=dtype)


@dataclasses.dataclass
class Run:
    """The assembled pieces of one run (see the module docstring). `mask` and the state
    shardings exist only for runs that train (`trainable` given to `assemble`)."""

    config: ModelConfig
    family: family_lib.Family
    model: Union[t5.Transformer, llama.CausalLM]
    partitioner: partitioning.Partitioner
    boxed: PyTree  # abstract parameters with logical axis names, prompt slot included
    shardings: PyTree  # one sharding per parameter
    mask: Optional[dict[str, bool]]
    optimizer: Optional[optax.GradientTransformation]
    state_shardings: Optional[step_lib.TrainState]
    frozen_shardings: Optional[PyTree]
    frozen_dtype: Optional[str]
    layout: Optional[Mapping[str, Any]] = None  # what the data asks of the model (its BOS)

    @property
    def abstract_params(self) -> PyTree:
        return nn.unbox(self.boxed)

    def with_prompt_module(self, prompt_factory: Callable[..., nn.Module]) -> "Run":
        """This run's model, mesh, frozen dtype and layout with another prompt module (a
        served bank's); for runs that do not train."""
        boxed = self.family.abstract_params(self.config, prompt_factory)
        return dataclasses.replace(
            self,
            model=self.family.build(self.config, prompt_factory, self.layout),
            boxed=boxed,
            shardings=self.partitioner.param_shardings(boxed),
        )

    def _load_dtype(self):
        """Frozen weights are read in their final dtype unless some loaded weight trains."""
        if self.mask is None or not any(
            v for k, v in self.mask.items() if not re.fullmatch(prompts.PROMPT_PATTERN, k)
        ):
            return jnp.dtype(self.frozen_dtype or "float32")
        return jnp.float32

    def load_frozen(self, path: str) -> dict:
        """The frozen model from `path` (strictly), each device reading its own shards."""
        return self.family.load_frozen(
            self.config,
            path,
            shardings=prompts.without_prompt(self.shardings),
            dtype=self._load_dtype(),
        )

    def random_frozen(self, seed: int) -> dict:
        """Random frozen weights from `seed` (only for runs that name them, e.g. the demo);
        every host computes the same values, each device keeps its shards."""
        leaves, structure = jax.tree_util.tree_flatten(self.shardings)
        init = _INITS.get(
            (self.family, self.model, self.partitioner, structure, tuple(leaves)),
            lambda: self.partitioner.jit(
                functools.partial(self.family.init_params, self.model),
                in_shardings=self.partitioner.replicated,
                out_shardings=self.shardings,
            ),
        )  # an equal run in this process reuses the traced initialisation
        params = init(jax.random.PRNGKey(seed))
        params = prompts.without_prompt(params) if prompts.has_prompt(params) else params
        if self.frozen_dtype:
            params = trainable_lib.cast_frozen(params, self.frozen_dtype)
        return params

    def embedding(self, frozen: dict) -> Any:
        """The frozen token embedding table [vocab, embed] (what prompts are initialised
        from and compared with)."""
        return self.family.embedding(frozen)

    def place_prompt(self, frozen: dict, value: Any, seed: int = 0) -> dict:
        """`frozen` with `value` ([P, E], or a bank [K, P, E]) in the prompt slot, placed
        with the slot's (replicated) shardings; the prompt module's other parameters (a
        residual MLP) start from their initializers with `seed`."""
        rng = jax.random.fold_in(jax.random.PRNGKey(seed), 2)
        module = prompts.module_parameters(self.model.prompt_factory, value, rng)
        shardings = prompts.get_module(self.shardings)
        return prompts.with_module(frozen, self.partitioner.put(module, shardings))

    def init_state(self, params: dict, optimizer_step: int = 0) -> tuple[step_lib.TrainState, dict]:
        """(train state of the trainable subtree, frozen subtree cast to `frozen_dtype`).

        optimizer_step: where the optimizer's own step counters start (Adafactor's decay
        reads it). t5x restored the pretrained step with the model (1,100,000 for the
        LM-adapted checkpoints); the run's step and data position still start at 0."""
        train_params, frozen = trainable_lib.partition(params, self.mask)
        frozen = trainable_lib.cast_frozen(frozen, self.frozen_dtype)
        optimizer = self.optimizer

        def init(p):
            state = step_lib.init_state(p, optimizer)
            if not optimizer_step:
                return state
            count = jnp.full((), optimizer_step, jnp.int32)
            return state.replace(opt_state=optax.tree.set(state.opt_state, count=count))

        state = self.partitioner.jit(
            init, in_shardings=(self.state_shardings.params,), out_shardings=self.state_shardings
        )(train_params)
        return state, frozen

    def train_step(self, loss: step_lib.LossConfig, seed: int, donate: bool = True) -> Callable:
        """`train_step(state, frozen, batch) -> (state, metrics)`, compiled for the mesh.

        A run equal in everything the step is built from (model, optimizer, loss, seed,
        mesh and shardings, and the attention form traced: `ptune plan` asks for the
        batched form on CPUs) gets the step an earlier run of this process built, traced and
        compiled: jax then reuses its traces for the same shapes."""
        shardings = (self.state_shardings, self.frozen_shardings)
        leaves, structure = jax.tree_util.tree_flatten(shardings)
        key = (self.model, self.optimizer, loss, seed, donate, self.partitioner, structure)
        key += (attention.batched_everywhere(),)
        return _TRAIN_STEPS.get(
            (*key, tuple(leaves)),
            lambda: step_lib.make_train_step(
                self.model,
                self.optimizer,
                loss,
                seed=seed,
                donate=donate,
                partitioner=self.partitioner,
                in_shardings=shardings,
            ),
        )

    def abstract_state(self) -> tuple[step_lib.TrainState, PyTree]:
        """ShapeDtypeStructs (with shardings) of the state and the frozen weights; nothing is
        allocated. What `plan` compiles the train step on."""
        train_abstract, frozen_abstract = trainable_lib.partition(self.abstract_params, self.mask)
        optimizer = self.optimizer
        state = jax.eval_shape(lambda p: step_lib.init_state(p, optimizer), train_abstract)
        state = _with_shardings(state, self.state_shardings)
        frozen_dtype = jnp.dtype(self.frozen_dtype) if self.frozen_dtype else None
        return state, _with_shardings(frozen_abstract, self.frozen_shardings, frozen_dtype)


def _with_shardings(abstract: PyTree, shardings: PyTree, dtype=None) -> PyTree:
    return jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, dtype or x.dtype, sharding=s),
        abstract,
        shardings,
    )


def abstract_params(config: ModelConfig, prompt_factory=None) -> PyTree:
    """Either family's parameters as shapes with logical axis names; allocates nothing."""
    return family_lib.family_of(config).abstract_params(config, prompt_factory)


def assemble(
    config: ModelConfig,
    *,
    prompt_factory: Optional[Callable[..., nn.Module]] = None,
    mesh: partitioning.MeshConfig = partitioning.MeshConfig(),
    trainable: Optional[Sequence[str]] = None,
    optimizer: Optional[optax.GradientTransformation] = None,
    frozen_dtype: Optional[str] = None,
    devices: Optional[Sequence[Any]] = None,
    causal_layout: Optional[Mapping[str, Any]] = None,
) -> Run:
    """Model, mesh, shardings and (when `trainable` is given) the mask, optimizer and state
    shardings of a run. Allocates nothing. `causal_layout`: a decoder-only model's
    `bos_id`/`drop_input_eos` (`llama.CausalLM`; from the tasks' vocabulary)."""
    family = family_lib.family_of(config)
    model = family.build(config, prompt_factory, causal_layout)
    boxed = family.abstract_params(config, prompt_factory)
    partitioner = partitioning.Partitioner.create(mesh, devices)
    shardings = partitioner.param_shardings(boxed)
    mask = state_sh = frozen_sh = None
    if trainable is not None:
        mask = trainable_lib.trainable_mask(nn.unbox(boxed), trainable)
        optimizer = optimizer or optimizers.prompt_tuning_adafactor()
        state_sh, frozen_sh = step_lib.train_shardings(partitioner, optimizer, boxed, mask)
    return Run(
        config=config,
        family=family,
        model=model,
        partitioner=partitioner,
        boxed=boxed,
        shardings=shardings,
        mask=mask,
        optimizer=optimizer,
        state_shardings=state_sh,
        frozen_shardings=frozen_sh,
        frozen_dtype=frozen_dtype,
        layout=causal_layout,
    )
