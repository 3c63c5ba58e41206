#!/usr/bin/env python
"""Check every file of the datasets of a config before training on them.

    python tools/check_dataset.py --config-file configs/ade20k/upernet_R50_bs16_160k.yaml
    python tools/check_dataset.py --config-file C ade20k_sem_seg_val --workers 8
    python tools/check_dataset.py --config-file C DATASETS.TRAIN '("my_data_train",)'

Checks the datasets named on the command line, or those of ``DATASETS.TRAIN`` and
``DATASETS.TEST`` (as the config registers them: builtin names under ``UPER_PARSING_DATASETS``),
with every check of each one's family (``uper_parsing.data.check``): image or label files missing,
unreadable or truncated (a JPEG whose data ends early), image / label sizes differing, label values
outside the classes and not the ignore label, empty or malformed JSON / CSV annotation files,
duplicate image ids, panoptic segment ids in the PNG but not in the JSON or the reverse, Broden
label numbers of no class table. Files are read on ``--workers`` threads, with a progress bar on
stderr.

Prints one line per problem on stdout, ``<file>: <field>: <value> (expected <expected>)``, then
a summary line.

Exit status:
    0  no problem found;
    1  problems found (one line each);
    2  usage or config error: bad arguments, unreadable config file, unknown config key or
       dataset name (nothing was checked).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

from uper_parsing.config import CfgNode, get_cfg
from uper_parsing.data import DatasetCatalog
from uper_parsing.data.check import CheckReport, check_dataset
from uper_parsing.data.datasets import register_declared_datasets

EXIT_CLEAN, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2
_CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")  # SOLVER.BASE_LR, not a dataset name


class UsageError(Exception):
    """Arguments, config or dataset names that cannot be used (exit status 2)."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Options, then dataset names, then ``KEY VALUE`` overrides (names end at the first
    upper-case dotted key). argparse exits with status 2 on bad options."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to config file")
    parser.add_argument("--workers", type=int, default=4, help="threads reading files")
    parser.add_argument(
        "--num-images",
        type=int,
        default=-1,
        metavar="N",
        help="check N sampled images of each dataset (-1: all; annotation files always whole)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument(
        "rest",
        nargs=argparse.REMAINDER,
        metavar="[NAME ...] [KEY VALUE ...]",
        help="datasets to check (default DATASETS.TRAIN + DATASETS.TEST), then config overrides",
    )
    args = parser.parse_args(argv)
    split = next((i for i, a in enumerate(args.rest) if _CONFIG_KEY.match(a)), len(args.rest))
    args.names, args.opts = args.rest[:split], args.rest[split:]
    return args


def load_config(args: argparse.Namespace) -> CfgNode:
    """The config of ``--config-file`` with the overrides, its ``DATASETS.REGISTER`` registered;
    UsageError when it cannot be read."""
    cfg = get_cfg()
    try:
        cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(args.opts)
        register_declared_datasets(cfg)
    except (OSError, KeyError, ValueError, AssertionError) as err:
        raise UsageError(f"Cannot use config {args.config_file} {args.opts}: {err}") from err
    return cfg


def dataset_names(args: argparse.Namespace, cfg: CfgNode) -> list[str]:
    """The names to check, each registered (else UsageError)."""
    names = args.names or [*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST]
    names = list(dict.fromkeys(names))
    unknown = [n for n in names if n not in DatasetCatalog]
    if unknown or not names:
        raise UsageError(f"Datasets not registered: {unknown or 'none given'}")
    return names


def summary(reports: Sequence[CheckReport], problems: int) -> str:
    checked = ", ".join(f"{r.dataset} ({r.checked} of {r.total} images)" for r in reports)
    if not problems:
        return f"No problem found in {checked}"
    bad = sum(1 for r in reports if r.problems)
    return f"{problems} problem(s) in {bad} of {len(reports)} dataset(s): {checked}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the checks; returns the exit status (see the module docstring)."""
    args = parse_args(argv)
    try:
        names = dataset_names(args, load_config(args))
    except UsageError as err:
        print(f"check_dataset: {err}", file=sys.stderr)
        return EXIT_USAGE
    reports = [
        check_dataset(n, num_images=args.num_images, workers=args.workers,
                      progress=not args.no_progress)
        for n in names
    ]  # fmt: skip
    lines = list(
        dict.fromkeys(str(p) for r in reports for p in r.problems)
    )  # CSVs shared by splits
    for line in lines:
        print(line)
    print(summary(reports, len(lines)))
    return EXIT_PROBLEMS if lines else EXIT_CLEAN


if __name__ == "__main__":
    sys.exit(main())
