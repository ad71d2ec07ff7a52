"""The catalog: the thesis's facts read as the thesis prints them."""

import pytest
from conftest import ROOT

from raybench import catalog, grid


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


def test_image_size_checks_need_no_model():
    catalog.check_image_size("vit_b_16", 352)
    with pytest.raises(ValueError, match="at least 32"):
        catalog.check_image_size("resnet_18", 16)
    with pytest.raises(ValueError, match="patch size 32"):
        catalog.check_image_size("mlpmixer_s32", 80)


def test_future_architectures_are_configurations_but_not_the_thesis_grid():
    assert catalog.FUTURE_NAMES == ("convmixer_768_32", "convmixer_256_8", "xception")
    assert not set(catalog.FUTURE_NAMES) & set(catalog.MODEL_NAMES)
    assert len(grid.load_grid(ROOT / "grids" / "thesis.py").trials) == 99
    for name in catalog.FUTURE_NAMES:
        config = catalog.configuration(name)
        assert not config.in_thesis and config.parameters is None and not config.pretrainable
        assert config.batch_size == config.chosen_batch_size and config.activation_mb > 0


def test_the_thesis_batch_sizes_come_from_its_tables_and_only_the_rest_from_the_records():
    for name, config in catalog.BUILT_IN.items():
        assert (config.chosen_batch_size is None) == config.in_thesis, name
        assert (config.chosen_pretrained_batch_size is None) == (
            name in catalog.PRETRAINABLE or not config.pretrainable
        )
    assert catalog.batch_size("resnet_18") == 64 and catalog.batch_size("xception") == 16
    with pytest.raises(ValueError, match="the thesis publishes its batch size"):
        catalog._check_batch_sizes(catalog.Configuration("resnet_18", "ResNet", "resnet18", 1.0, chosen_batch_size=8))
    with pytest.raises(ValueError, match="needs a batch size"):
        catalog._check_batch_sizes(catalog.Configuration("new_net", "New", "m:f", 1.0))


def test_vits_are_pretrainable_but_the_thesis_grid_keeps_its_eleven_fine_tunes():
    assert set(catalog.IMAGENET_PRETRAINABLE) == {*catalog.PRETRAINABLE, "vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32"}
    assert catalog.batch_size("vit_l_16", pretrained=True) == 32
    g = grid.load_grid(ROOT / "grids" / "thesis.py")
    assert (
        sorted(t.model for t in g.trials if t.pretrained) == sorted(catalog.PRETRAINABLE)
        and len(catalog.PRETRAINABLE) == 11
    )
