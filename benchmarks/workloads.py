"""The configurations and batches both sides of the benchmark run: one definition, numpy only.

Both ptune and PEFT/transformers get byte-identical int32 batches from `batches`, so a
difference in loss or time is the framework's, never the data's. Inputs and targets are
padded at the end (token 0), with lengths drawn per example, as a real task's batches are:
the prompt sits in front of the padded inputs on both sides.
"""

from __future__ import annotations

import dataclasses

import numpy as np

VOCAB = 32128  # T5's SentencePiece vocabulary, padded to a multiple of 128


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """A T5 1.1-shaped model (gated GELU, untied lm_head, no dropout) and its batch shape."""

    name: str
    d_model: int
    d_kv: int
    num_heads: int
    d_ff: int
    num_layers: int  # encoder and decoder each
    inputs: int = 128  # encoder input length, before the prompt
    targets: int = 8
    prompt: int = 100
    batch: int = 8
    vocab: int = VOCAB
    # Timed steps after warm-up, per contender; full fine-tuning in PyTorch, the slowest by
    # far, takes `full_steps` so that `make bench` stays within its ten minutes.
    steps: int = 20
    warmup: int = 3
    full_steps: int = 20  # fewer for the configurations below: ten minutes in all

    @property
    def encoder_length(self) -> int:
        """What the encoder processes: the prompt plus the (padded) inputs."""
        return self.inputs + self.prompt

    def hf_kwargs(self) -> dict:
        """`transformers.T5Config` keyword arguments of this shape (T5 1.1, dropout off)."""
        return dict(
            vocab_size=self.vocab,
            d_model=self.d_model,
            d_kv=self.d_kv,
            d_ff=self.d_ff,
            num_layers=self.num_layers,
            num_decoder_layers=self.num_layers,
            num_heads=self.num_heads,
            relative_attention_num_buckets=32,
            relative_attention_max_distance=128,
            feed_forward_proj="gated-gelu",
            dropout_rate=0.0,
            tie_word_embeddings=False,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
        )


CONFIGS = {
    # The small configuration: d_model 256 / mlp 1024 / 4+4 layers.
    "d256-4L": BenchConfig(
        "d256-4L",
        d_model=256,
        d_kv=64,
        num_heads=4,
        d_ff=1024,
        num_layers=4,
        steps=12,
        warmup=2,
        full_steps=12,
    ),
    # T5 1.1 Small (google/t5-v1_1-small): d_model 512, 6 heads of 64, gated MLP 1024, 8+8.
    "t5-1.1-small": BenchConfig(
        "t5-1.1-small",
        d_model=512,
        d_kv=64,
        num_heads=6,
        d_ff=1024,
        num_layers=8,
        steps=6,
        warmup=2,
        full_steps=3,
    ),
    # T5 1.1 Base (google/t5-v1_1-base): d_model 768, 12 heads of 64, gated MLP 2048, 12+12,
    # at the paper's input length and batch 32: an accelerator's workload
    # (benchmarks/gpu_check.py), not in a CPU run by default.
    "t5-1.1-base": BenchConfig(
        "t5-1.1-base",
        d_model=768,
        d_kv=64,
        num_heads=12,
        d_ff=2048,
        num_layers=12,
        inputs=512,
        batch=32,
        steps=6,
        warmup=2,
        full_steps=3,
    ),
}
CPU_CONFIGS = ("d256-4L", "t5-1.1-small")  # run.py's default
# For `gpu_check.py --dry_run` only (every step once, on a CPU): PyTorch's bfloat16 autocast
# on a CPU without bfloat16 matmuls takes seconds per step even at d256-4L. Figures from it
# mean nothing.
CONFIGS["dry-run"] = BenchConfig(
    "dry-run",
    d_model=32,
    d_kv=16,
    num_heads=2,
    d_ff=64,
    num_layers=1,
    inputs=64,
    prompt=4,
    batch=4,
    steps=1,
    warmup=1,
    full_steps=1,
)
# The configuration whose figures become the top-level `speedup_vs_peft`, `mfu`, ... keys.
HEADLINE = "t5-1.1-small"


def batches(config: BenchConfig, count: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """`count` distinct batches in seqio's encoder-decoder layout (int32):

    encoder_input_tokens [batch, inputs], decoder_input_tokens [batch, targets] (targets
    shifted right with 0), decoder_target_tokens [batch, targets]. Each example keeps at least
    half its inputs and targets real, ending in EOS (1); the rest is padding (0).
    """
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(count):
        b, li, lt = config.batch, config.inputs, config.targets
        enc = rng.randint(3, config.vocab, (b, li)).astype(np.int32)
        tgt = rng.randint(3, config.vocab, (b, lt)).astype(np.int32)
        for i in range(b):
            n_in = rng.randint(li // 2, li + 1)
            n_tg = rng.randint(max(lt // 2, 1), lt + 1)
            enc[i, n_in - 1], enc[i, n_in:] = 1, 0
            tgt[i, n_tg - 1], tgt[i, n_tg:] = 1, 0
        dec = np.concatenate([np.zeros((b, 1), np.int32), tgt[:, :-1]], axis=1)
        out.append(
            {"encoder_input_tokens": enc, "decoder_input_tokens": dec, "decoder_target_tokens": tgt}
        )
    return out


def initial_prompt(config: BenchConfig, seed: int = 0) -> np.ndarray:
    """The prompt [prompt, d_model] both sides start from: the paper's uniform [-0.5, 0.5]."""
    rng = np.random.RandomState(seed + 1)
    return rng.uniform(-0.5, 0.5, (config.prompt, config.d_model)).astype(np.float32)
