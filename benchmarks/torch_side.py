"""The Hugging Face side: the shared T5 1.1 weights, PEFT prompt tuning and full fine-tuning.

The weights both sides use are born here: a `transformers` T5 1.1 (gated GELU, untied
lm_head, dropout 0) with a fixed seed, saved as safetensors for ptune to load through
`ptune.checkpoints.load`. PEFT runs as its users run it: `get_peft_model` with
`PromptTuningConfig(num_transformer_submodules=1)` (the prompt goes in front of the encoder
input only; PEFT prepends it before the padded tokens and extends the attention mask with
ones, which is ptune's prefix placement), transformers' Adafactor at lr 0.3 on the prompt,
eager PyTorch, `torch.set_num_threads(<cores>)`. Loss: transformers' mean token
cross-entropy with padding labels -100.
"""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import peft
import torch
import transformers

from benchmarks.timing import time_steps


def build_model(bench, seed: int = 0) -> transformers.T5ForConditionalGeneration:
    """A random T5 1.1 of `bench`'s shape, initialised by transformers from `seed`."""
    torch.manual_seed(seed)
    config = transformers.T5Config(**bench.hf_kwargs())
    return transformers.T5ForConditionalGeneration(config).train()


def save_model(model, directory: str) -> None:
    """safetensors + a config.json that says T5 1.1 the way real 1.1 checkpoints do
    (`tie_word_embeddings: false`; transformers 5 may write `scale_decoder_outputs` instead,
    see tests/test_checkpoints_hf.py), so `ptune.checkpoints.load` reads an untied lm_head."""
    model.save_pretrained(directory, safe_serialization=True)
    path = os.path.join(directory, "config.json")
    with open(path) as f:
        config = json.load(f)
    config["tie_word_embeddings"] = False
    config.pop("scale_decoder_outputs", None)
    with open(path, "w") as f:
        json.dump(config, f)


def peft_config(bench) -> peft.PromptTuningConfig:
    return peft.PromptTuningConfig(
        task_type="SEQ_2_SEQ_LM",
        num_virtual_tokens=bench.prompt,
        num_transformer_submodules=1,
        token_dim=bench.d_model,
        num_layers=bench.num_layers,
        num_attention_heads=bench.num_heads,
    )


def peft_model(model, bench, prompt: np.ndarray, train_everything: bool = False):
    """`model` wrapped by PEFT with `prompt` [P, E] copied into its prompt embedding.

    train_everything: also unfreeze every weight of the T5 (full fine-tuning at the same
    sequence length as prompt tuning); the model is deep-copied first, so the caller's
    instance stays as it was.
    """
    if train_everything:
        model = copy.deepcopy(model)
    wrapped = peft.get_peft_model(model, peft_config(bench))
    with torch.no_grad():
        wrapped.prompt_encoder["default"].embedding.weight.copy_(torch.from_numpy(prompt))
    if train_everything:
        for p in wrapped.parameters():
            p.requires_grad_(True)
    return wrapped


def torch_batch(batch: dict, device: str = "cpu") -> dict:
    """A `workloads.batches` batch as transformers' keyword arguments, on `device`."""
    enc = torch.from_numpy(batch["encoder_input_tokens"].astype(np.int64))
    dec = torch.from_numpy(batch["decoder_input_tokens"].astype(np.int64))
    tgt = torch.from_numpy(batch["decoder_target_tokens"].astype(np.int64))
    out = {
        "input_ids": enc,
        "attention_mask": (enc > 0).long(),
        "decoder_input_ids": dec,
        "decoder_attention_mask": (tgt > 0).long(),
        "labels": torch.where(tgt > 0, tgt, torch.full_like(tgt, -100)),
    }
    return {k: v.to(device) for k, v in out.items()}


def loss_and_prompt_grad(wrapped, batch: dict) -> tuple[float, np.ndarray]:
    """(mean token cross-entropy, its gradient w.r.t. the prompt [P, E]) on one batch."""
    wrapped.zero_grad(set_to_none=True)
    loss = wrapped(**torch_batch(batch)).loss
    loss.backward()
    grad = wrapped.prompt_encoder["default"].embedding.weight.grad.detach().numpy().copy()
    wrapped.zero_grad(set_to_none=True)
    return float(loss.detach()), grad


def adafactor(params, lr: float):
    """transformers' Adafactor with the paper's settings: constant lr, decay exponent 0.8,
    no parameter scaling, update clipping 1.0, weight decay 1e-5."""
    return transformers.optimization.Adafactor(
        params,
        lr=lr,
        scale_parameter=False,
        relative_step=False,
        warmup_init=False,
        decay_rate=-0.8,
        clip_threshold=1.0,
        weight_decay=1e-5,
    )


def make_step(wrapped, batches: list[dict], lr: float, device: str = "cpu", bfloat16: bool = False):
    """`run(i)`: one optimizer step on batch i % len(batches) over the trainable parameters;
    reading the loss back (`float`) waits for the step on any device. `bfloat16`: the forward
    pass under `torch.autocast` to bfloat16 (float32 weights and optimizer, as mixed-precision
    training in PyTorch is done)."""
    optimizer = adafactor([p for p in wrapped.parameters() if p.requires_grad], lr)
    inputs = [torch_batch(b, device) for b in batches]
    wrapped.train()

    def run(i: int):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bfloat16):
            loss = wrapped(**inputs[i % len(inputs)]).loss
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return run


def trainable_count(wrapped) -> int:
    return sum(p.numel() for p in wrapped.parameters() if p.requires_grad)


def matmul_peak_flops(n: int = 2048, repeats: int = 10) -> float:
    """PyTorch's float32 matmul throughput on the same threads (context for its MFU)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    timing = time_steps(lambda i: torch.mm(a, b), 2, repeats)
    return 2.0 * n**3 / timing.median_s
