import pytest

import keras_vit
from keras_vit.variants import VARIANTS, builder_name, variant_config

# Parameter counts at 224 px with 1000 classes, as the paper's code (and timm) count them.
EXPECTED_PARAMS = {
    "Ti/16": 5_717_416,
    "S/16": 22_050_664,
    "S/32": 22_878_952,
    "B/8": 86_576_872,
    "B/16": 86_567_656,
    "B/32": 88_224_232,
    "L/16": 304_326_632,
    "L/32": 306_535_400,
    "H/14": 632_045_800,
    # The hybrids, as counted from the Flax modules (tests/fixtures/make_hybrid_goldens.py).
    "R+Ti/16": 6_337_704,
    "R26+S/32": 36_431_912,
    "R50+B/16": 98_659_112,
    "R50+L/32": 328_994_856,
}
LARGE = {"L/16", "L/32", "H/14", "R50+B/16", "R50+L/32"}


def test_table_has_the_papers_variants():
    assert set(VARIANTS) == set(EXPECTED_PARAMS)
    for name in VARIANTS:
        assert callable(getattr(keras_vit, builder_name(name)))


@pytest.mark.parametrize(
    "variant",
    [pytest.param(v, marks=pytest.mark.slow) if v in LARGE else v for v in EXPECTED_PARAMS],
)
def test_parameter_counts_match_the_paper(variant):
    model = getattr(keras_vit, builder_name(variant))()
    assert model.count_params() == EXPECTED_PARAMS[variant]
    assert model.name == builder_name(variant).lower()


def test_b16_with_ten_classes():
    assert keras_vit.ViT_B16(num_classes=10).count_params() == 85_806_346


def test_builders_merge_overrides():
    model = keras_vit.ViT_Ti16(
        num_classes=10, image_size=(64, 96), num_layers=2, pooling="gap", name="mine"
    )
    assert model.image_size == (64, 96) and model.num_layers == 2 and model.hidden_size == 192
    assert model.pooling == "gap" and model.name == "mine" and model.num_classes == 10


def test_variant_config_accepts_both_spellings():
    assert variant_config("B/16") == variant_config("ViT_B16")
    assert variant_config("ViT_Ti16")["hidden_size"] == 192
    assert variant_config("R50+B/16") == variant_config("ViT_R50_B16")
    assert variant_config("ViT_R_Ti16")["resnet_layers"] == ()
    assert builder_name("R26+S/32") == "ViT_R26_S32"
    with pytest.raises(ValueError, match="Unknown ViT variant 'B/17'"):
        variant_config("B/17")


def test_table_is_read_only():
    with pytest.raises(TypeError):
        VARIANTS["B/16"]["hidden_size"] = 1


def test_table_and_builders_live_together_without_a_circle():
    # The table is data (variant_table, below the loaders); variants re-exports it beside
    # the builders, and checkpoints reads it without importing the builders.
    from keras_vit import checkpoints, variant_table, variants

    assert variants.VARIANTS is variant_table.VARIANTS
    assert variants.variant_config is variant_table.variant_config
    assert checkpoints.variant_of is variant_table.variant_of
    assert keras_vit.ViT is variants.ViT and keras_vit.ViT_S16 is variants.ViT_S16
    model = keras_vit.ViT_Ti16(num_classes=3, image_size=32)
    assert variants.variant_of(model) == "Ti/16"
