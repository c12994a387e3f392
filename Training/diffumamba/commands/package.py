"""``diffumamba package``: trained checkpoints -> one model package for predict, propagate and the Slicer catalog."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "package", help="bundle checkpoints (e.g. 5 folds) with a model card into one .zip for the Slicer catalog",
        description="Writes the weights of each CHECKPOINT (optimizer and training-method state left out), their "
                    "shared plan and the model card into one .zip, reads it back and verifies it, and prints its "
                    "SHA-256 and size for the catalog entry (docs/model_catalog.md).")
    parser.add_argument("checkpoints", type=Path, nargs="+", metavar="CHECKPOINT", help=".safetensors of one plan")
    parser.add_argument("--out", type=Path, required=True, help="the package to write (.zip)")
    parser.add_argument("--card", type=Path, help="model card (Markdown): intended use, data, licence, accuracy")
    parser.add_argument("--crop", choices=["none", "lungs"], help="record this crop as the model's predict default")
    parser.add_argument("--overlap", type=float, help="record this sliding-window overlap as the model's default")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import load_checkpoint
    from ..inference.models import check_overlap
    from ..inference.predictor import check_same_plan
    from ..model_package import PackageFold, check_not_renamed_package, is_package, write_model_package

    if args.out.suffix.lower() != ".zip":
        raise ValueError(f"--out {args.out}: a model package is a .zip file")
    check_overlap(args.overlap)
    card = read_card(args.card) if args.card else None
    folds = []
    for index, path in enumerate(args.checkpoints):
        if is_package(path):
            raise ValueError(f"{path}: a model package, not a checkpoint; to package its folds again, unzip it and "
                             "pass its fold_*/model.safetensors (and --card MODEL_CARD.md)")
        check_not_renamed_package(path)
        header, state, _ = load_checkpoint(path)
        inference = header["plan"].setdefault("inference", {})
        if args.crop:
            inference["crop"] = args.crop
        if args.overlap is not None:
            inference["overlap"] = args.overlap
        fold = str(header.get("cases", {}).get("fold", index))
        folds.append(PackageFold(fold if fold not in {f.name for f in folds} else str(index), header, state))
    try:
        check_same_plan([fold.header["plan"] for fold in folds])
    except ValueError as err:         # "checkpoint N" is the N-th CHECKPOINT: name them
        names = ", ".join(f"{n} = {p}" for n, p in enumerate(args.checkpoints, start=1))
        raise ValueError(f"{err} (checkpoints: {names})") from None
    digest = write_model_package(args.out, folds, card)
    print(f"wrote {args.out}: {len(folds)} fold(s) {', '.join(f.name for f in folds)}; "
          f"{args.out.stat().st_size} bytes, sha256 {digest} (read back and verified)")
    return 0


def read_card(path: Path) -> str:
    """The model card as text; a card that is not UTF-8 (a PDF, a Word file) would otherwise fail with a bare
    codec error that names no file."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"--card {path}: not a UTF-8 text file (byte {err.start} is 0x{err.object[err.start]:02x}); "
                         "give the model card as Markdown or plain text") from None
