"""The catalog: the thesis's facts read as the thesis prints them."""

import pytest

from raybench import catalog


def test_22_configurations_in_six_architectures_and_11_pretrainable():
    assert len(catalog.MODEL_NAMES) == 22 and len(catalog.PRETRAINABLE) == 11
    assert list(catalog.ARCHITECTURES) == ["LeNet-5", "ResNet", "MobileNetV3", "ConvNeXt", "ViT", "MLP-Mixer"]
    assert sum(map(len, catalog.ARCHITECTURES.values())) == 22


def test_published_results_cover_every_configuration_on_every_tier():
    rows = catalog.published_results()
    assert len(rows) == 99
    scratch = {(r["model"], r["dataset"]) for r in rows if not r["pretrained"]}
    assert scratch == {(m, t) for m in catalog.MODEL_NAMES for t in catalog.TIERS}
    assert {r["model"] for r in rows if r["pretrained"]} == set(catalog.PRETRAINABLE)


@pytest.mark.parametrize(
    "name, batch, pretrained_batch, parameters",
    [
        ("lenet5", 64, None, 13_885_580),
        ("convnext_base", 8, 32, 87_574_664),
        ("vit_l_16", 4, 32, 303_604_744),  # §7.2: its ImageNet fine-tune, which the thesis did not run (ours)
        ("mlpmixer_l16", 8, None, 71_133_928),
        ("resnet_101", 16, 64, 42_516_552),
    ],
)
def test_batch_sizes_and_parameters_as_printed(name, batch, pretrained_batch, parameters):
    config = catalog.configuration(name)
    assert (config.batch_size, config.pretrained_batch_size, config.parameters) == (batch, pretrained_batch, parameters)


def test_table_4_1_is_the_5_2_3_split_of_each_tier():
    for tier, (train, val, test) in catalog.TABLE_4_1.items():
        size = catalog.TIERS[tier] or catalog.PBC_IMAGES
        assert abs(train + val + test - size) <= 8  # the large tier leaves 8 of 17,092 images out
    assert sum(catalog.PBC_CLASS_COUNTS) == 17_092 and len(catalog.CLASSES) == 8


def test_the_tiers_the_thesis_trained_on_follow_its_per_class_rule():
    assert catalog.TIER_SPLITS["large"] == catalog.TABLE_4_1["large"] == (8544, 3415, 5125)
    assert catalog.TIER_SPLITS["tiny"] == (198, 76, 115)  # its 33 tiny-tier accuracies are all k/115
    assert catalog.class_split(29) == (14, 5, 8) and catalog.class_images(catalog.PBC_CLASS_COUNTS, 400)[0] == 29


def test_image_size_checks_need_no_model():
    catalog.check_image_size("vit_b_16", 352)
    with pytest.raises(ValueError, match="at least 32"):
        catalog.check_image_size("resnet_18", 16)
    with pytest.raises(ValueError, match="patch size 32"):
        catalog.check_image_size("mlpmixer_s32", 80)
