"""Training recipes: the optimisation and augmentation settings a run starts from.

- `scratch` (DeiT / "How to train your ViT"): AdamW, lr 1e-3, weight decay 0.05, linear
  warmup (5 % of the steps) then cosine decay to 0, label smoothing 0.1, drop-path 0.1,
  random resized crop + flip, RandAugment (2 ops), MixUp 0.8 / CutMix 1.0.
- `finetune` (the ViT paper's fine-tuning code): SGD with momentum 0.9, lr 0.01, no weight
  decay, linear warmup (5 %) then cosine decay to 0, global-norm gradient clipping at 1.0,
  random resized crop + flip.

On `"digits"` the scratch recipe is adjusted to the data set (`recipe_for`): digits are
8x8 and not mirror-symmetric, so no flip, a mild crop (area 0.7-1), no RandAugment and
no MixUp / CutMix, 100 epochs of 64.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from keras_vit.data.pipelines import Augmentation

RecipeName = Literal["scratch", "finetune"]

# The small ViT trained by default (on digits): 16x16 images cut into 4x4 patches (each
# patch is 2x2 pixels of the 8x8 original).
SMALL_MODEL = {
    "image_size": 16,
    "patch_size": 4,
    "hidden_size": 96,
    "num_layers": 4,
    "num_heads": 4,
    "mlp_dim": 192,
}
# The sizes above, and a hybrid's ResNet stem (`VisionTransformer`'s `resnet_layers`, None
# for the plain ViT, and `resnet_width`).
ARCHITECTURE_KEYS = (*SMALL_MODEL, "resnet_layers", "resnet_width")


@dataclass(frozen=True)
class Recipe:
    """Optimisation and regularisation settings of a training run.

    Attributes:
        name: the recipe's name.
        optimizer: `"adamw"` or `"sgd"` (momentum `momentum`).
        learning_rate: peak learning rate, reached after the warmup.
        weight_decay: decoupled weight decay (AdamW), 0 for none.
        momentum: SGD momentum.
        global_clipnorm: clip gradients to this global norm, or None.
        warmup_fraction: share of the steps with a linear warmup from 0; a cosine decay to
            0 follows.
        label_smoothing: label smoothing of the cross-entropy.
        drop_path_rate: stochastic depth of the last block.
        epochs: default number of epochs.
        batch_size: default global batch size.
        augmentation: input-pipeline augmentation (`keras_vit.data.Augmentation`).
    """

    name: str
    optimizer: Literal["adamw", "sgd"]
    learning_rate: float
    weight_decay: float
    momentum: float
    global_clipnorm: float | None
    warmup_fraction: float
    label_smoothing: float
    drop_path_rate: float
    epochs: int
    batch_size: int
    augmentation: Augmentation


RECIPES: dict[str, Recipe] = {
    "scratch": Recipe(
        name="scratch",
        optimizer="adamw",
        learning_rate=1e-3,
        weight_decay=0.05,
        momentum=0.0,
        global_clipnorm=None,
        warmup_fraction=0.05,
        label_smoothing=0.1,
        drop_path_rate=0.1,
        epochs=100,
        batch_size=128,
        augmentation=Augmentation(
            crop_area=(0.08, 1.0), flip=True, randaugment_ops=2, mixup_alpha=0.8, cutmix_alpha=1.0
        ),
    ),
    "finetune": Recipe(
        name="finetune",
        optimizer="sgd",
        learning_rate=0.01,
        weight_decay=0.0,
        momentum=0.9,
        global_clipnorm=1.0,
        warmup_fraction=0.05,
        label_smoothing=0.0,
        drop_path_rate=0.0,
        epochs=10,
        batch_size=64,
        augmentation=Augmentation(crop_area=(0.05, 1.0), flip=True),
    ),
}

# The scratch recipe on digits (chosen by a sweep of settings on digits).
DIGITS_SCRATCH = dict(
    epochs=100,
    batch_size=64,
    warmup_fraction=0.1,
    augmentation=Augmentation(crop_area=(0.7, 1.0), crop_aspect=(0.8, 1.25), flip=False),
)


def recipe_for(name: str, dataset: str) -> Recipe:
    """The recipe `name`, adjusted to the data set (see the module docstring).

    Raises:
        ValueError: unknown recipe name.
    """
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}. Expected one of: {', '.join(RECIPES)}")
    recipe = RECIPES[name]
    if dataset == "digits" and name == "scratch":
        recipe = dataclasses.replace(recipe, **DIGITS_SCRATCH)
    return recipe
