"""Show samples and statistics of a prepared (binary) episode dataset.

    python tools/inspect_sft_dataset.py --dataset_dir data/sft_phase1_format_lock --show_samples 5

Prints per split: samples, episodes, tokens, an episode length histogram, the supervised
fraction and the weight distribution, for packed datasets the packing efficiency and
episodes per block; then the first samples decoded with every change of loss weight
marked ([w=0] masked, [w=1] trained, [w=1.5]/[w=2] steering tags), or coloured with --color
(dim = masked, green = trained, bold = weight > 1).
Token ids >= the vocabulary size are reported on PROBLEM lines.
Exit status: 0 shown, 1 shown but the dataset has problems (bad token ids), 2 the dataset
cannot be read (one line naming the file).
"""

from __future__ import annotations

from mypt_lightning.data_prep import cli


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__, prog="inspect_sft_dataset.py")
    p.add_argument("--dataset_dir", "--dataset", dest="dataset_dir", required=True, metavar="DIR")
    p.add_argument("--show_samples", type=int, default=5, metavar="N", help="samples to decode per split (default 5)")
    p.add_argument("--split", action="append", metavar="NAME", help="only this split (repeatable; default all)")
    p.add_argument("--max_samples", type=int, metavar="N", help="compute statistics over the first N samples only")
    p.add_argument("--color", action="store_true", help="colour trained tokens instead of [w=...] markers")
    args = p.parse_args(argv)

    def go() -> int:
        from data_modules.episode_format import DatasetFormatError
        from mypt_lightning.data_prep.inspect import inspect_report
        from mypt_lightning.errors import UserError

        try:
            report = inspect_report(args.dataset_dir, show_samples=args.show_samples, splits=args.split,
                                    color=args.color, max_samples=args.max_samples)
        except (DatasetFormatError, OSError) as exc:
            raise UserError(str(exc)) from None
        print(report.text)
        if report.problems:
            print(f"PROBLEMS: {len(report.problems)} (see the PROBLEM lines above); "
                  f"run tools/validate_sft_dataset.py for every check")
            return 1
        return 0

    return cli.run(go, "inspect_sft_dataset")
