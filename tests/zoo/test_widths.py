"""Width-searched networks are slices of their full-width network: same shortcuts, same convs, whatever the widths."""

from __future__ import annotations

import dataclasses

import torch

import zoo
from zoo.mobilenetv2 import FULL_WIDTH as MBV2_FULL
from zoo.mobilenetv2 import mobilenetv2_width_spec
from zoo.resnet import FULL_WIDTH as RESNET_FULL
from zoo.resnet import resnet50_width_spec
from zoo.spec import BlockSpec


def _mbv2_with(**entries: int) -> list[int]:
    widths = list(MBV2_FULL)
    for index, width in entries.items():
        widths[int(index.removeprefix("e"))] = width
    return widths


def test_matching_widths_do_not_add_an_identity_the_full_network_lacks() -> None:
    # Stem = block-0 output (16 = 16) and the 64->96 row's first block at 48 -> 48: shapes match, but MobileNetV2
    # has no shortcut there, so neither does its slice (BCNet's masked network has none).
    widths = _mbv2_with(e0=16, e1=16, e2=16)
    start = 3 + 3 * (2 + 3 + 4) - 1  # output entry of the last 64-wide block
    for e in (start, start - 3, start - 6, start - 9):  # the 64-wide row is tied by its residuals
        widths[e] = 48
    widths[start + 3] = 48  # the first 96-wide block's output
    for e in (start + 6, start + 9):
        widths[e] = 48
    model = zoo.build_model(mobilenetv2_width_spec(widths)).eval()
    first_96 = model.blocks[4][0]
    assert first_96.conv_pw.in_channels == first_96.conv_pwl.out_channels == 48  # the shapes do match
    assert model.blocks[0][0].has_skip is False and first_96.has_skip is False
    assert model.blocks[4][1].has_skip is True  # a shortcut the full network has is kept
    keys = [op.key for op in zoo.iter_ops(mobilenetv2_width_spec(widths), 224)]
    assert sum(k.endswith("-nores") for k in keys) == 2


def test_an_explicit_hidden_width_keeps_its_expansion_conv_when_it_equals_the_input() -> None:
    widths = _mbv2_with(e3=16, e4=16)  # block 1: 16 -> hidden 16 (full: 16 -> 96)
    model = zoo.build_model(mobilenetv2_width_spec(widths))
    block = model.blocks[1][0]
    assert isinstance(block.conv_pw, torch.nn.Conv2d) and block.conv_pw.weight.shape[:2] == (16, 16)
    assert zoo.count_module(model, (3, 224, 224)) == zoo.count(mobilenetv2_width_spec(widths), 224)


def test_a_resnet_stage_keeps_its_projection_shortcut_when_widths_match() -> None:
    widths = list(RESNET_FULL)
    for e in (3, 4, 7, 10):  # stage 1's conv3/downsample group (tied): 64 = the stem width
        widths[e] = 64
    spec = resnet50_width_spec(widths)
    model = zoo.build_model(spec)
    assert isinstance(model.layer1[0].downsample, torch.nn.Sequential)
    assert isinstance(model.layer1[1].downsample, torch.nn.Identity)
    assert zoo.count_module(model, (3, 224, 224)) == zoo.count(spec, 224)


def test_the_residual_flag_is_in_the_key_only_where_it_changes_compute() -> None:
    widening = BlockSpec("ir", 32, 1, 3, expand=6.0)
    same = BlockSpec("ir", 16, 1, 3, expand=6.0)
    spec = zoo.get_arch_spec("nbmacro_11111111")

    def key(block: BlockSpec, in_chs: int) -> str:
        stem = dataclasses.replace(spec.stem, out_chs=in_chs)
        return next(op for op in zoo.iter_ops(spec.replace(stem=stem, stages=((block,),)), 32) if op.name != "stem").key

    assert key(dataclasses.replace(widening, residual=False), 16) == key(widening, 16)
    assert key(dataclasses.replace(same, residual=False), 16) == key(same, 16) + "-nores"
