"""Check a prepared (binary) episode dataset; every check has a name and a verdict.

    python tools/validate_sft_dataset.py --dataset data/sft_phase1_format_lock [--json report.json]

Checks: integrity (train/ exists; metadata, file sizes, index records tiling tokens.bin,
token ids), tokenizer (tokenizer_state.json exists and matches),
mask_files (mask.bin == mask_weighted.bin > 0), structure (tags only where the protocol puts
them; no special id inside content), mask_direction (assistant trained, everything else
not), mask_alignment (each tag its own weight; catches a mask shifted by one), segment_ids
(packed blocks numbered 1..k, padding only at the end), eot_trained (every conversation
ends with a trained <myPT_eot>). A failure names the split, sample and position.
Datasets written by the original MyPT scripts (or prepare_sft --protocol mypt_chat/mypt_tool)
are checked against that layout (<myPT_eot> padding, "\\n" between tool blocks); the profile
comes from the metadata, or give it with --protocol.
Exit status: 0 all checks passed, 1 a check failed, 2 bad arguments.
"""

from __future__ import annotations

from pathlib import Path

from mypt_lightning.data_prep import cli


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__, prog="validate_sft_dataset.py")
    p.add_argument("--dataset", "--dataset_dir", dest="dataset", required=True, metavar="DIR")
    p.add_argument("--max_samples", type=int, metavar="N", help="check only the first N samples of each split")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--protocol", choices=("ours", "mypt_chat", "mypt_tool"), default=None,
                   help="the serialization the dataset was made with (default: from its metadata, else ours)")
    args = p.parse_args(argv)

    def go() -> int:
        from data_modules.atomic_write import write_json_atomic
        from mypt_lightning.data_prep.validate import format_results, summary_dict, validate_dataset
        from mypt_lightning.errors import UserError

        if not Path(args.dataset).is_dir():
            raise UserError(f"{args.dataset} is not a directory")
        results = validate_dataset(args.dataset, max_samples=args.max_samples, protocol=args.protocol)
        print(format_results(results))
        if args.json:
            write_json_atomic(args.json, summary_dict(results))
        failed = [r.name for r in results if not r.passed]
        print(f"{'FAILED: ' + ', '.join(failed) if failed else 'all checks passed'}")
        return 1 if failed else 0

    return cli.run(go, "validate_sft_dataset")
