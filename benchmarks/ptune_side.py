"""ptune's side of the benchmark: jitted prompt-tuning and model-tuning steps, and the loss
and prompt gradient the parity check compares with PEFT's.

Imports only jax, flax, optax, numpy and ptune's numerical core (`models`, `step`,
`trainable`, `prompts`, `losses`), so it runs on a machine that has nothing else (the GPU
machine has no TensorFlow, seqio, gin or torch); `run.py` asserts it in a fresh interpreter.
Weights arrive as a plain parameter dict (loaded from the transformers model's safetensors
by `run.py`, or `random_params` when torch is absent).

Both steps use `ptune.step.make_train_step` unchanged: the prompt step differentiates the
prompt only (the frozen weights are a non-donated argument, so XLA computes activation
gradients but no weight gradients); the model step trains every parameter, the prompt
included, at the same sequence length. Loss: mean token cross-entropy without z-loss
(transformers' loss). Dropout is 0 in the model config, so none runs in either step.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from benchmarks.timing import time_steps
from ptune import losses, optimizers, prompts, trainable
from ptune import step as step_lib
from ptune.models import t5

LOSS = step_lib.LossConfig(z_loss=0.0, loss_normalizing_factor=losses.NUM_REAL_TARGET_TOKENS)
PROMPT_LR = 0.3  # the paper's prompt-tuning rate
MODEL_LR = 1e-3  # T5's fine-tuning rate (Adafactor, constant)


def t5_config(bench) -> t5.T5Config:
    """The ptune T5Config of a `workloads.BenchConfig` (what `checkpoints.load` infers from
    the transformers config.json of the same shape)."""
    return t5.T5Config(
        vocab_size=bench.vocab,
        emb_dim=bench.d_model,
        num_heads=bench.num_heads,
        head_dim=bench.d_kv,
        num_encoder_layers=bench.num_layers,
        num_decoder_layers=bench.num_layers,
        mlp_dim=bench.d_ff,
        mlp_activations=("gelu", "linear"),
        logits_via_embedding=False,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        dropout_rate=0.0,
    )


def random_params(config: t5.T5Config, seed: int = 0) -> dict:
    """Random frozen weights, for a machine without torch to build the shared ones."""
    model = t5.Transformer(config)
    tokens = jnp.ones((1, 1), jnp.int32)
    variables = jax.jit(lambda k: model.init(k, tokens, tokens, tokens, enable_dropout=False))(
        jax.random.PRNGKey(seed)
    )
    return nn.unbox(variables["params"])


def _with_prompt(params: dict, prompt: np.ndarray) -> dict:
    return prompts.with_prompt(params, jnp.asarray(prompt, jnp.float32))


def _model(config: t5.T5Config, prompt_length: int) -> t5.Transformer:
    return t5.Transformer(config, prompts.prompt_factory(prompt_length))


def loss_and_prompt_grad(
    config: t5.T5Config, params: dict, prompt: np.ndarray, batch: dict
) -> tuple[float, np.ndarray]:
    """(mean token cross-entropy, its gradient w.r.t. the prompt [P, E]) on one batch,
    computed at 'highest' matmul precision so a GPU's TF32 cannot blur the comparison."""
    model = _model(config, prompt.shape[0])
    frozen = params

    def loss_fn(p):
        return step_lib.loss_and_metrics(
            model, LOSS, prompts.with_prompt({}, p), frozen, batch, False, None
        )[0]

    with jax.default_matmul_precision("highest"):
        loss, grad = jax.jit(jax.value_and_grad(loss_fn))(jnp.asarray(prompt))
    return float(loss), np.asarray(grad)


@dataclasses.dataclass
class CompiledStep:
    """A ready-to-time train step: `run(i)` takes step i on batch i % len(batches) and
    blocks until the new state and the loss exist."""

    run: Any
    xla_flops: Optional[float]  # XLA's cost_analysis()['flops'] of the compiled step
    trainable_params: int
    hlo_text: str


def _xla_flops(compiled) -> Optional[float]:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        return None
    return float(analysis["flops"])


def make_step(
    kind: str,
    config: t5.T5Config,
    params: dict,
    prompt: np.ndarray,
    batches: list[dict],
    device: Optional[jax.Device] = None,
) -> CompiledStep:
    """kind 'prompt' (prompt only trains, paper Adafactor lr 0.3) or 'model' (every
    parameter trains, Adafactor lr 1e-3). Compiles before returning, so timing excludes it."""
    model = _model(config, prompt.shape[0])
    full = _with_prompt(params, prompt)
    if kind == "prompt":
        patterns, optimizer = trainable.PROMPT_ONLY, optimizers.prompt_tuning_adafactor(PROMPT_LR)
    elif kind == "model":
        patterns, optimizer = trainable.EVERYTHING, optimizers.prompt_tuning_adafactor(MODEL_LR)
    else:
        raise ValueError(f"unknown step kind {kind!r}")
    mask = trainable.trainable_mask(full, patterns)
    train, frozen = trainable.partition(full, mask)
    count, _ = trainable.count(mask, full)
    device = device or jax.devices()[0]
    train, frozen = jax.device_put((train, frozen), device)
    # The state is donated: give it buffers of its own, not ones the caller's params share.
    train = jax.tree_util.tree_map(jnp.copy, train)
    device_batches = [
        jax.device_put({k: jnp.asarray(v) for k, v in b.items()}, device) for b in batches
    ]
    state = step_lib.init_state(train, optimizer)
    step = step_lib.make_train_step(model, optimizer, LOSS)
    compiled = step.lower(state, frozen, device_batches[0]).compile()
    holder = {"state": state}

    def run(i: int):
        new_state, metrics = compiled(holder["state"], frozen, device_batches[i % len(batches)])
        jax.block_until_ready((new_state, metrics["loss_sum"]))
        holder["state"] = new_state
        return metrics

    return CompiledStep(run, _xla_flops(compiled), count, compiled.as_text())


def matmul_peak_flops(
    device: Optional[jax.Device] = None, n: int = 2048, repeats: int = 10, dtype: str = "float32"
) -> float:
    """Measured matmul throughput (FLOP/s) in `dtype`: median of `repeats` jitted n x n dots,
    the denominator of MFU, taken in the same process as the steps it judges."""
    device = device or jax.devices()[0]
    a, b = (
        jax.device_put(jax.random.normal(jax.random.PRNGKey(seed), (n, n), dtype), device)
        for seed in (0, 1)
    )
    dot = jax.jit(jnp.dot).lower(a, b).compile()
    timing = time_steps(lambda i: dot(a, b).block_until_ready(), 2, repeats)
    return 2.0 * n**3 / timing.median_s
