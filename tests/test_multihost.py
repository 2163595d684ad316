"""Two processes on localhost (one CPU device each, gloo collectives, `jax.distributed`) train a
tiny model together, each feeding its half of every batch, and write one Orbax checkpoint
together; they end with the same prompt as one process driving 2 local devices.

Each process is this file run as a script: `python test_multihost.py MODE OUT [ID PORT]`.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import DROPOUT, simulated_devices_env, tiny_t5

STEPS = 3
BATCH = 8
# Both runs compute the same sums on the same 2-way split; only the all-reduce transport
# (gloo vs in-process) differs, which may reorder float32 additions.
RTOL, ATOL = 1e-6, 1e-7


def _worker(mode: str, out_dir: str, process_id: int = 0, port: int = 0) -> None:
    if mode == "multi":
        from ptune import distributed

        distributed.initialize(distributed.ProcessConfig(f"localhost:{port}", 2, process_id))
    import jax
    from flax import linen as nn

    from ptune import buckets, optimizers, partitioning, prompts, step, trainable
    from ptune.checkpoints.state import StateCheckpointer
    from ptune.models import t5

    assert jax.device_count() == 2 and jax.process_count() == (2 if mode == "multi" else 1)
    cfg = tiny_t5(  # dropout on: both processes must draw one process's masks
        emb_dim=16,
        head_dim=8,
        mlp_dim=32,
        num_encoder_layers=1,
        num_decoder_layers=1,
        dropout_rate=DROPOUT,
    )
    factory = prompts.prompt_factory(4)
    model = t5.Transformer(cfg, factory)
    part = partitioning.Partitioner.create(partitioning.MeshConfig(mesh_shape=(2, 1)))
    boxed = t5.abstract_variables(cfg, factory)["params"]
    shardings = part.param_shardings(boxed)
    tokens = np.zeros((1, 1), np.int32)
    params = part.jit(
        lambda k: nn.unbox(model.init(k, tokens, tokens, tokens, enable_dropout=False)["params"]),
        in_shardings=part.replicated,
        out_shardings=shardings,
    )(jax.random.PRNGKey(0))
    optimizer = optimizers.prompt_tuning_adafactor()
    mask = trainable.trainable_mask(params, trainable.PROMPT_ONLY)
    state_sh, frozen_sh = step.train_shardings(part, optimizer, boxed, mask)
    train, frozen = trainable.partition(params, mask)
    state = part.jit(
        lambda p: step.init_state(p, optimizer),
        in_shardings=(state_sh.params,),
        out_shardings=state_sh,
    )(train)
    train_step = step.make_train_step(
        model, optimizer, seed=1, partitioner=part, in_shardings=(state_sh, frozen_sh)
    )

    rows = (
        slice(None)
        if mode == "single"
        else slice(process_id * BATCH // 2, (process_id + 1) * BATCH // 2)
    )
    rng = np.random.default_rng(0)
    bucket_lengths = buckets.LengthBuckets(smallest=4)  # 4, 8, 12
    losses, widths, own = [], [], []
    for _ in range(STEPS):
        enc = rng.integers(3, 64, size=(BATCH, 12)).astype(np.int32)
        # Rows of different real lengths, padded at the end: the two hosts' halves need
        # different buckets on their own and must agree on one (`buckets.agree_across_hosts`).
        lengths = np.concatenate([rng.integers(2, 5, BATCH // 2), rng.integers(5, 13, BATCH // 2)])
        for row, length in enumerate(lengths):
            enc[row, length:] = 0
        tgt = rng.integers(3, 64, size=(BATCH, 4)).astype(np.int32)
        dec = np.concatenate([np.zeros((BATCH, 1), np.int32), tgt[:, :-1]], axis=1)
        host = {
            "encoder_input_tokens": enc[rows],
            "decoder_input_tokens": dec[rows],
            "decoder_target_tokens": tgt[rows],
        }
        longest = buckets.longest_rows(host)
        own.append(bucket_lengths.width("inputs", longest["inputs"], 12))
        if mode == "multi":
            longest = buckets.agree_across_hosts(longest)
        host = buckets.cut_to_buckets(host, bucket_lengths, longest)
        widths.append(host["encoder_input_tokens"].shape[1])
        state, metrics = train_step(state, frozen, part.shard_batch(host))
        losses.append(float(metrics["loss_sum"] / metrics["tokens"]))

    checkpointer = StateCheckpointer(os.path.join(out_dir, "run"), keep=1)
    checkpointer.save(STEPS, state, {"data_position": STEPS})
    restored, meta = checkpointer.restore(STEPS, state)
    checkpointer.close()
    prompt = partitioning.gather(prompts.get_prompt(state.params))
    if jax.process_index() == 0:  # one writer, as the trainer's exports
        np.save(os.path.join(out_dir, "prompt.npy"), prompt)
        np.save(
            os.path.join(out_dir, "restored.npy"),
            partitioning.gather(prompts.get_prompt(restored.params)),
        )
    with open(os.path.join(out_dir, f"widths_{jax.process_index()}.json"), "w") as f:
        json.dump({"widths": widths, "own": own}, f)
    if jax.process_index() == 0:
        with open(os.path.join(out_dir, "losses.json"), "w") as f:
            json.dump({"losses": losses, "meta": meta}, f)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    here = os.path.abspath(__file__)
    multi = tmp_path_factory.mktemp("multi")
    single = tmp_path_factory.mktemp("single")
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, here, "multi", str(multi), str(i), str(port)],
            env=simulated_devices_env(1),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    reference = subprocess.run(
        [sys.executable, here, "single", str(single)],
        env=simulated_devices_env(2),
        capture_output=True,
        text=True,
        timeout=180,
    )
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    for p, text in zip(procs, outputs):
        assert p.returncode == 0, text[-3000:]
    assert reference.returncode == 0, reference.stderr[-3000:]
    return multi, single


def test_two_processes_end_with_the_prompt_of_one_process_with_two_devices(runs):
    multi, single = runs
    got, want = np.load(multi / "prompt.npy"), np.load(single / "prompt.npy")
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    losses = json.load(open(multi / "losses.json"))["losses"]
    np.testing.assert_allclose(
        losses, json.load(open(single / "losses.json"))["losses"], rtol=RTOL, atol=ATOL
    )
    assert losses[0] != losses[-1]


def test_hosts_agree_on_each_batch_length_bucket(runs):
    """Host 0's rows are short, host 1's long: alone they would pick different buckets (and
    the global batch could not be assembled); agreed, both use the single process's."""
    multi, single = runs
    hosts = [json.load(open(multi / f"widths_{i}.json")) for i in range(2)]
    reference = json.load(open(single / "widths_0.json"))["widths"]
    assert hosts[0]["widths"] == hosts[1]["widths"] == reference
    assert all(a < b for a, b in zip(hosts[0]["own"], hosts[1]["own"]))
    assert max(reference) > 4


def test_both_hosts_write_one_orbax_checkpoint_that_restores(runs):
    multi, _ = runs
    assert sorted(os.listdir(multi / "run" / "checkpoints")) == [str(STEPS)]
    np.testing.assert_array_equal(np.load(multi / "restored.npy"), np.load(multi / "prompt.npy"))
    assert json.load(open(multi / "losses.json"))["meta"] == {"data_position": STEPS}


def test_incomplete_multiprocess_flags_are_one_clear_error():
    from ptune import distributed
    from ptune.errors import UserError

    with pytest.raises(UserError, match="give all of --coordinator_address"):
        distributed.ProcessConfig(coordinator_address="localhost:1234").check()
    with pytest.raises(UserError, match=r"--process_id must be in \[0, 2\), got 2"):
        distributed.ProcessConfig("localhost:1", 2, 2).check()


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:]))
