"""The commands that read what runs left behind: `ptune explain` (a prompt's nearest
vocabulary tokens), `tasks` (what is registered), `report` (plots and tables of runs) and
`similar` (which source prompt transfers best).
"""

from __future__ import annotations

import os
from typing import Sequence

from ptune.errors import ArgumentParser, UserError


def cmd_explain(argv: Sequence[str], gin_args) -> int:
    parser = ArgumentParser(prog="ptune explain")
    parser.add_argument("--prompt_file", required=True)
    parser.add_argument("--checkpoint", required=True, help="the frozen model (embedding table)")
    parser.add_argument(
        "--task",
        default=None,
        help="task whose vocabulary decodes tokens and whose labels summarise",
    )
    parser.add_argument("--labels", default=None, help="comma-separated labels (else the task's)")
    parser.add_argument("--top_k", type=int, default=5)
    parser.add_argument("--output", default=None, help="JSON output (default: beside prompt)")
    args = parser.parse_args(argv)
    from ptune import atomic, family, interpret
    from ptune.checkpoints import prompt_io

    output = args.output or os.path.splitext(args.prompt_file)[0] + ".explain.json"
    atomic.check_output_file(output, "--output", "JSON", {"--prompt_file": args.prompt_file})

    vocabulary, labels = None, None
    if family.of_checkpoint(args.checkpoint).tokenizer_from_checkpoint:  # decodes, feeds tasks
        from ptune import frozen_model
        from ptune.tasks import vocab

        frozen_model.causal_layout(args.checkpoint)
        vocabulary = vocab.active_tokenizer()
    if args.task:
        import ptune.tasks  # noqa: F401
        from ptune import data
        from ptune.tasks import registry

        vocabulary = data.output_vocabulary(args.task)
        labels = registry.label_names(args.task)
    if args.labels is not None:
        labels = [x.strip() for x in args.labels.split(",") if x.strip()]
        if not labels:
            raise UserError(f"--labels={args.labels!r} names no label: give e.g. --labels=yes,no")
    prompt = prompt_io.load_prompt_file(args.prompt_file)
    result = interpret.explain(
        prompt, interpret.read_embedding(args.checkpoint), vocabulary, labels, args.top_k
    )
    print(interpret.format_text(result))
    atomic.write_json(output, result)
    print(f"wrote {output}")
    return 0


def cmd_tasks(argv: Sequence[str], gin_args) -> int:
    parser = ArgumentParser(prog="ptune tasks")
    parser.add_argument("--all", action="store_true", help="also tasks registered by others")
    args = parser.parse_args(argv)
    import ptune.tasks  # noqa: F401
    from ptune.tasks import registry

    tasks = registry.list_tasks(only_ptune=not args.all, include_mixtures=False)
    mixtures = registry.list_mixtures(only_ptune=not args.all)
    print(f"tasks ({len(tasks)}):")
    for name in tasks:
        print(f"  {name}")
    print(f"mixtures ({len(mixtures)}):")
    for name in mixtures:
        print(f"  {name}")
    return 0


def cmd_report(argv: Sequence[str], gin_args) -> int:
    from ptune import report

    return report.main(argv)


def cmd_similar(argv: Sequence[str], gin_args) -> int:
    from ptune import similarity

    return similarity.main(argv)
