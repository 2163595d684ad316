"""Soft prompts: the prompt parameter on the encoder input path, and its initializers.

The prompt is a matrix [P, E] (P = prompt length, E = the model's embedding width) inserted
into the embedded encoder input; only it trains. Its parameter path is stable and documented:

    encoder/prompt/prompt        [prompt, prompt_embed]  (logical axes; replicated)
    encoder/prompt/residual/...  the residual reparameterisation's MLP (`Residual`)
    multi-task prompts (`MultiTask`): prompt [tasks, P, E] and shared [S, E]
    deep prompts (`DeepPrompt`): prompt [layers, P, E]

    from ptune import prompts
    config = prompts.PromptConfig(length=100)                  # what gin binds
    model = t5.Transformer(t5_config, prompt_factory=config.factory())
    value = prompts.initialize(prompts.class_labels(), rng, 100, context)   # [P, E]
    params = prompts.with_prompt(frozen, value)                # the slot's one owner

Modules, lowest first (each imports only those above it):
    slot          the path (`PROMPT_PATH`), reading and placing the prompt, `validate_length`
    initializers  `InitContext` and the initializer factories, `initialize`
    modules       `Prompt`, `PromptBank`, `DeepPrompt`, `MultiTaskPrompt`, `Residual`;
                  `insert_prompt`, `effective_prompt`, `module_parameters`
    config        `PromptConfig` and the modules' factories
Prompt files are read and written by `ptune.checkpoints.prompt_io`, which imports `slot`;
`from_file` reaches it only when it runs. The numerical core: jax, flax and numpy only (never
TensorFlow, seqio or gin); gin files bind these names as `prompts.X` (dynamic registration).
"""

from ptune.prompts.config import (
    PromptConfig,
    bank_factory,
    deep_factory,
    multi_task_factory,
    prompt_factory,
    takes_index,
)
from ptune.prompts.initializers import (
    SPECIAL_IDS,
    TOP_K_TOKENS,
    InitContext,
    Initializer,
    class_labels,
    from_file,
    from_text,
    initialize,
    random_uniform,
    sampled_vocab,
)
from ptune.prompts.modules import (
    COMBINATIONS,
    PLACEMENTS,
    RESIDUAL_EPS,
    DeepPrompt,
    MultiTask,
    MultiTaskPrompt,
    Prompt,
    PromptBank,
    Residual,
    ResidualMLP,
    apply_residual,
    combine_prompts,
    effective_bank,
    effective_prompt,
    insert_prompt,
    module_parameters,
    stack_bank,
)
from ptune.prompts.slot import (
    PROMPT_INDEX,
    PROMPT_PATH,
    PROMPT_PATH_STR,
    PROMPT_PATTERN,
    get_module,
    get_prompt,
    has_prompt,
    validate_length,
    with_module,
    with_prompt,
    without_prompt,
)

__all__ = [
    "COMBINATIONS",
    "PLACEMENTS",
    "PROMPT_INDEX",
    "PROMPT_PATH",
    "PROMPT_PATH_STR",
    "PROMPT_PATTERN",
    "RESIDUAL_EPS",
    "SPECIAL_IDS",
    "TOP_K_TOKENS",
    "DeepPrompt",
    "InitContext",
    "Initializer",
    "MultiTask",
    "MultiTaskPrompt",
    "Prompt",
    "PromptBank",
    "PromptConfig",
    "Residual",
    "ResidualMLP",
    "apply_residual",
    "bank_factory",
    "class_labels",
    "combine_prompts",
    "deep_factory",
    "effective_bank",
    "effective_prompt",
    "from_file",
    "from_text",
    "get_module",
    "get_prompt",
    "has_prompt",
    "initialize",
    "insert_prompt",
    "module_parameters",
    "multi_task_factory",
    "prompt_factory",
    "random_uniform",
    "sampled_vocab",
    "stack_bank",
    "takes_index",
    "validate_length",
    "with_module",
    "with_prompt",
    "without_prompt",
]
