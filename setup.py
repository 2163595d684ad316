"""ptune: soft prompt tuning of frozen T5 models in JAX/Flax.

`tasks/` installs as `ptune.tasks` and `gin/` as the data folder `ptune/gin` (no
`__init__.py`, so it never shadows gin-config), so an installed wheel finds its seqio tasks
and gin files without the source tree.
"""

import setuptools

_CORE = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "tensorstore==0.1.86",
    "msgpack==1.2.4",
    "safetensors==0.8.0",
    "numpy==2.4.6",
    "seqio==0.0.20",
    "gin-config==0.5.0",
    "tensorflow-datasets==4.9.10",
    "importlib_resources==7.1.0",  # tensorflow-datasets imports it without declaring it
    "tensorflow==2.21.0",
    "tensorflow-text==2.21.1",
    "sentencepiece==0.2.3",
    "tokenizers==0.23.3",  # Hugging Face tokenizer.json vocabularies (decoder-only models)
    "clu==0.0.12",
    "tensorboard==2.20.0",  # clu writes TensorBoard event files through it
    "tqdm==4.70.1",
    "matplotlib==3.11.2",  # ptune report: plots (headless Agg canvas)
    "huggingface_hub==2.4.0",  # hub ids resolved through the local Hugging Face cache
    "scipy==1.17.1",  # STS-B's Pearson and Spearman correlations (tasks/metrics.py)
]

_TEST = [
    "pytest==9.2.0",
    "pytest-xdist==3.8.0",  # make test runs the suite on every core (tests/conftest.py)
    "ruff==0.17.6",
    # Reference implementation for logit parity tests (CPU build of PyTorch).
    "torch==2.13.0",
    "transformers==5.23.0",
    "peft==0.21.2",
]

setuptools.setup(
    name="ptune",
    version="0.1.0",
    description="Soft prompt tuning of frozen T5 models in JAX/Flax (Lester et al., 2021).",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    packages=[
        "ptune",
        "ptune.models",
        "ptune.checkpoints",
        "ptune.family",
        "ptune.findings",
        "ptune.prompts",
        "ptune.report",
        "ptune.tasks",
        "ptune.gin",
    ],
    package_dir={"ptune": "ptune", "ptune.tasks": "tasks", "ptune.gin": "gin"},
    package_data={
        "ptune.gin": [
            "*.gin",
            "models/*.gin",
            "prompts/*.gin",
            "presets/*.gin",
            "runs/*.gin",
            "experiments/*.gin",
        ],
        # data/demo/model, data/findings/*: pretrained models, Orbax trees of nested folders
        "ptune.tasks": ["data/*", "data/*/*", "data/demo/model/**/*", "data/findings/**/*"],
    },
    install_requires=_CORE,
    extras_require={
        "test": _TEST,
        # Accelerator wheels: swap in the matching jaxlib plugins.
        "cuda": ["jax[cuda12]==0.10.2"],
        "cuda13": ["jax[cuda13]==0.10.2"],
        "tpu": ["jax[tpu]==0.10.2"],
    },
    entry_points={"console_scripts": ["ptune=ptune.cli:main"]},
)
