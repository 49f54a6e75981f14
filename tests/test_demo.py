"""The demo's own logic: its recipe is a valid training setting and stale data is detected."""
from __future__ import annotations

import pytest

from include.deploy.demo_commands import DEMO, demo_data_matches


def test_demo_recipe_is_a_valid_training_setting():
    from include.mobiledet.augment import PRESETS
    from include.mobiledet.qat import QAT_VARIANTS
    from include.mobiledet.spec import ModelSpec
    from include.mobiledet.train import OPTIMIZERS

    assert DEMO["optimizer"] in OPTIMIZERS and DEMO["augment"] in PRESETS
    ModelSpec("edgetpu", 5, DEMO["input_size"], DEMO["depth_multiplier"])   # validates
    assert "edgetpu" in QAT_VARIANTS            # the demo fine-tunes its float model with QAT
    # the held-out split is large enough for a meaningful mAP
    assert DEMO["images"] * DEMO["val_fraction"] >= 200


def test_demo_reuses_only_data_made_with_its_own_settings(tmp_path):
    from include.data.synth import synthesize

    data = tmp_path / "data"
    assert not demo_data_matches(data, 20, 64, 0.25)          # nothing there yet
    synthesize(data, 20, size=64, seed=0, val_fraction=0.25)
    assert demo_data_matches(data, 20, 64, 0.25)
    assert not demo_data_matches(data, 40, 64, 0.25)          # other image count
    assert not demo_data_matches(data, 20, 96, 0.25)          # other size
    assert not demo_data_matches(data, 20, 64, 0.5)           # other split
    for broken in ("{not json", "[]", '{"images": 20}'):
        (data / "synth.json").write_text(broken)
        assert not demo_data_matches(data, 20, 64, 0.25)


@pytest.mark.parametrize("flag", ["--steps", "--qat-steps", "--cpu-steps", "--images"])
def test_demo_cli_flags(flag):
    import argparse

    from include.deploy import demo_commands

    parser = argparse.ArgumentParser()
    demo_commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["demo", flag, "7", "--workdir", "w", "--fresh"])
    assert getattr(args, flag[2:].replace("-", "_")) == 7 and args.fresh and args.workdir == "w"
