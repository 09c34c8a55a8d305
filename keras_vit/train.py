"""`python -m keras_vit.train`: train a ViT and write a run directory.

With no flags but `--output`, it trains the small default ViT on the embedded digits data:

    python -m keras_vit.train --output run/
    python -m keras_vit.train --dataset cifar10 --model ViT_Ti16 --image-size 32 \
        --patch-size 4 --epochs 50 --output cifar_run/
    python -m keras_vit.train --dataset path/to/flowers/ --model ViT_B16 \
        --weights ViT-B_16.npz --recipe finetune --output flowers_run/
    python -m keras_vit.train --dataset path/to/more_flowers/ --weights flowers_run/ \
        --recipe finetune --output more_flowers_run/

A run killed part-way continues with the same command plus `--resume`. Several GPUs,
machines or a TPU: `--strategy {auto,default,mirrored,multiworker,tpu}` (see
`keras_vit.distribute`; `--batch-size` is the global batch).

The parser imports nothing heavy: `--help` and argument errors answer without loading
TensorFlow. TensorFlow's own log lines (C++ INFO / WARNING / ERROR, absl) are hidden
unless `--verbose` is given or `TF_CPP_MIN_LOG_LEVEL` is set by the user.
"""

from __future__ import annotations

import argparse
import sys

from keras_vit.console import configure_logging, fit_verbosity, import_tensorflow_quietly

# Mirrors `keras_vit.training.RECIPES` and `keras_vit.distribute.STRATEGIES` (a test keeps
# them equal) so that the parser needs neither TensorFlow nor Keras.
RECIPE_NAMES = ("finetune", "scratch")
STRATEGY_NAMES = ("auto", "default", "mirrored", "multiworker", "tpu")
ARCHITECTURE_FLAGS = (
    "image-size",
    "patch-size",
    "hidden-size",
    "num-layers",
    "num-heads",
    "mlp-dim",
)
PLAIN = "none"

OVERWRITE_HELP = (
    "replace the keras-vit run in --output (never a foreign folder); the old run is kept "
    "as <output>.previous until the new run completes its first epoch, and put back if the "
    "new run fails before that"
)


def parse_resnet_layers(text: str) -> tuple[int, ...] | str:
    """`--resnet-layers`: "3,4,9" (units per stage), "()" (root block only) or "none".

    Returns the stage tuple, or `PLAIN` for "none" (the plain ViT).
    """
    text = text.strip()
    if text.lower() == PLAIN:
        return PLAIN
    body = text.removeprefix("(").removesuffix(")").strip().rstrip(",")
    try:
        layers = tuple(int(part) for part in body.split(",")) if body else ()
    except ValueError:
        layers = None
    if layers is None or any(n <= 0 for n in layers):
        raise argparse.ArgumentTypeError(
            f"expected units per stage such as 3,4,9, or () or none; got {text!r}"
        )
    return layers


def _augmentation_overrides(args: argparse.Namespace) -> dict:
    overrides = {}
    if args.no_flip:
        overrides["flip"] = False
    if args.no_crop:
        overrides["crop_area"] = None
    if args.rotation is not None:
        overrides["rotation_degrees"] = args.rotation
    if args.randaugment is not None:
        overrides["randaugment_ops"] = args.randaugment
    if args.mixup is not None:
        overrides["mixup_alpha"] = args.mixup
    if args.cutmix is not None:
        overrides["cutmix_alpha"] = args.cutmix
    return overrides


def _add_data_and_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, help="run directory to write")
    parser.add_argument(
        "--dataset",
        default="digits",
        help="'digits' (default), a tensorflow-datasets name, or a folder of class sub-folders",
    )
    parser.add_argument("--data-dir", help="tensorflow-datasets data folder")
    parser.add_argument(
        "--model", help="a named variant (ViT_Ti16, ViT_B16, B/16, ...); default: small ViT"
    )
    for flag in ARCHITECTURE_FLAGS:
        parser.add_argument(f"--{flag}", type=int, help="override the model's " + flag)
    parser.add_argument(
        "--resnet-layers",
        type=parse_resnet_layers,
        help="a hybrid ViT: ResNet stem units per stage, e.g. 3,4,9; () for the root block "
        "only; none for the plain ViT",
    )
    parser.add_argument(
        "--resnet-width",
        type=float,
        help="multiplier of the ResNet stem's 64 base channels (64 x it a multiple of 32)",
    )
    parser.add_argument(
        "--weights",
        help="start from these weights: a Google .npz checkpoint, or the run directory of an "
        "earlier training run (fine-tuning; its architecture, a new head if the classes differ)",
    )


def _add_recipe(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--recipe",
        default="scratch",
        choices=RECIPE_NAMES,
        help=f"training recipe: {' or '.join(RECIPE_NAMES)} (default scratch)",
    )
    parser.add_argument(
        "--epochs", type=int, help="epochs (default: the recipe's; 100 for scratch on digits)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help="global batch size (default: the recipe's; on a small data set at most a tenth of "
        "the training images, for >= 10 steps per epoch)",
    )
    parser.add_argument("--learning-rate", type=float, help="peak learning rate")
    parser.add_argument(
        "--weight-decay",
        type=float,
        help="decoupled weight decay (default: the recipe's; 0.05 for scratch, 0 for finetune)",
    )
    parser.add_argument(
        "--label-smoothing",
        type=float,
        help="label smoothing of the loss (default: the recipe's; 0.1 for scratch, 0 for finetune)",
    )
    parser.add_argument(
        "--drop-path",
        type=float,
        metavar="RATE",
        help="stochastic depth of the last block, growing linearly from 0 at the first "
        "(default: the recipe's; 0.1 for scratch, 0 for finetune)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    parser.add_argument("--no-crop", action="store_true", help="no random resized crops")
    parser.add_argument(
        "--rotation", type=float, metavar="DEGREES", help="random rotations up to DEGREES"
    )
    mixing = " (default: the recipe's; off below a few thousand training images)"
    parser.add_argument(
        "--randaugment", type=int, metavar="OPS", help="RandAugment ops, 0: off" + mixing
    )
    parser.add_argument("--mixup", type=float, metavar="ALPHA", help="MixUp alpha, 0: off" + mixing)
    parser.add_argument(
        "--cutmix", type=float, metavar="ALPHA", help="CutMix alpha, 0: off" + mixing
    )


def _add_execution(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mixed-precision",
        action="store_true",
        help="mixed precision: mixed_float16 on GPUs (with loss scaling), mixed_bfloat16 on "
        "TPUs and CPUs",
    )
    parser.add_argument("--jit-compile", action="store_true", help="XLA-compile the train step")
    parser.add_argument(
        "--train-class-token-only",
        action="store_true",
        help="train the last block on the class token alone (faster, same gradients)",
    )
    parser.add_argument(
        "--strategy",
        default="auto",
        choices=STRATEGY_NAMES,
        help=f"tf.distribute strategy: {', '.join(STRATEGY_NAMES)}; auto: mirrored over "
        "several local GPUs, else default; multiworker reads the cluster from TF_CONFIG",
    )
    parser.add_argument(
        "--tpu", help="with --strategy tpu: Cloud TPU name, 'local' or grpc://host:port"
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in --output")
    parser.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show TensorFlow's own log lines (hidden by default unless "
        "TF_CPP_MIN_LOG_LEVEL is set)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line parser; it imports nothing heavy."""
    parser = argparse.ArgumentParser(
        prog="python -m keras_vit.train",
        description="Train a Vision Transformer and write a run directory.",
    )
    _add_data_and_model(parser)
    _add_recipe(parser)
    _add_execution(parser)
    return parser


def _make_config(training, args: argparse.Namespace):
    architecture = {flag.replace("-", "_"): None for flag in ARCHITECTURE_FLAGS}
    architecture.update({key: getattr(args, key) for key in architecture})
    if args.resnet_layers is not None:
        architecture["resnet_layers"] = None if args.resnet_layers == PLAIN else args.resnet_layers
    if args.resnet_width is not None:
        architecture["resnet_width"] = args.resnet_width
    return training.make_config(
        args.dataset,
        data_dir=args.data_dir,
        model=args.model,
        architecture=architecture,
        weights=args.weights,
        recipe=args.recipe,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing,
        drop_path_rate=args.drop_path,
        augmentation=_augmentation_overrides(args),
        seed=args.seed,
        mixed_precision=args.mixed_precision,
        jit_compile=args.jit_compile,
        train_class_token_only=args.train_class_token_only,
    )


def _report(result) -> int:
    metrics = result.metrics
    if not metrics:  # a non-chief worker of a multi-worker run
        print(f"worker done; the chief writes {result.path}")
        return 0
    print(
        f"{result.path}: test top-1 {100 * metrics['top1']:.2f} %, "
        f"top-5 {100 * metrics['top5']:.2f} % ({metrics['num_examples']} images)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    import_tensorflow_quietly(args.verbose)
    from keras_vit import data, training  # after the parser: --help needs neither

    try:
        config = _make_config(training, args)
        result = training.train(
            config,
            args.output,
            resume=args.resume,
            overwrite=args.overwrite,
            verbose=fit_verbosity(args.quiet),
            strategy=args.strategy,
            tpu=args.tpu,
        )
    except (training.TrainingError, data.DataError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"interrupted: continue with the same command plus --resume (output {args.output})",
            file=sys.stderr,
        )
        return 130
    return _report(result)


if __name__ == "__main__":
    raise SystemExit(main())
