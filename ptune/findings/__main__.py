"""`python -m ptune.findings --output=DIR` (`make paper`): runs every point of the paper's
findings at small scale (`design.points()`), then writes DIR/report (`summary`).
`--report_only` redraws the report from DIR/results.jsonl."""

from __future__ import annotations

import os
import sys
import time

from ptune.errors import ArgumentParser, UserError


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m ptune.findings")
    parser.add_argument("--output", required=True, help="a new directory for runs and report")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run")
    parser.add_argument("--sizes", default="small,medium,large", help="model sizes to run")
    parser.add_argument("--no_ablations", action="store_true", help="scale points only")
    parser.add_argument("--points", default="", help="comma-separated point names: only these")
    parser.add_argument("--report_only", action="store_true", help="redraw the report")
    try:
        args = parser.parse_args(argv)
    except UserError as e:
        print(f"python -m ptune.findings: error: {e}", file=sys.stderr)
        return 2
    from ptune import runtime

    runtime.quiet_tensorflow()  # the task modules import it
    try:
        from ptune.findings import design, runner, summary

        seeds = tuple(s.strip() for s in args.seeds.split(",") if s.strip())
        if not seeds or not all(s.isdigit() for s in seeds):
            raise UserError(f"--seeds={args.seeds!r}: give non-negative integers, e.g. 0,1,2")
        seeds = tuple(int(s) for s in seeds)
        sizes = tuple(s.strip() for s in args.sizes.split(",") if s.strip())
        if not sizes or set(sizes) - set(design.SIZES):
            raise UserError(f"--sizes={args.sizes!r}: choose from {','.join(design.SIZES)}")
        if args.steps is not None and args.steps < 1:
            raise UserError(f"--steps={args.steps}: give at least 1 training step")
        if args.report_only:
            records = summary.read(os.path.join(args.output, "results.jsonl"))
        else:
            if os.path.exists(args.output):
                raise UserError(f"--output {args.output} exists: name a new directory")
            start = time.perf_counter()
            points = design.points(
                seeds, args.steps or design.STEPS, sizes, ablations=not args.no_ablations
            )
            if args.points:
                wanted = [p.strip() for p in args.points.split(",") if p.strip()]
                unknown = sorted(set(wanted) - {p.name for p in points})
                if unknown:
                    raise UserError(
                        f"--points: no point named {', '.join(unknown)} with these --sizes, "
                        f"--seeds and ablations (e.g. {points[0].name})"
                    )
                points = [p for p in points if p.name in wanted]
            records = runner.run(points, args.output)
            print(f"ran {len(points)} points in {(time.perf_counter() - start) / 60:.1f} min")
        report = summary.write(records, os.path.join(args.output, "report"))
        print(f"wrote {report}")
        return 0
    except UserError as e:
        print(f"python -m ptune.findings: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
