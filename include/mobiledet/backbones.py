"""The four MobileDet backbones (CPU, EdgeTPU, DSP, GPU) as plain data, and one builder.

Each backbone is a stem (3x3 stride-2 conv) followed by stages C1..C5; a stage is a list of
blocks. Channel counts are the paper's at depth multiplier 1.0 and are scaled with
`scale_filters`. The SSD head takes C4 (stride 16) and C5 (stride 32).
"""
from __future__ import annotations

from dataclasses import dataclass

from include.mobiledet import blocks


@dataclass(frozen=True)
class Block:
    kind: str            # "ibn_noexp" | "ibn" | "fused" | "tucker"
    filters: int         # output channels at multiplier 1.0
    e: int = 0           # expansion (ibn, fused)
    k: int = 3           # kernel size
    s: int = 1           # stride
    res: bool = True     # residual add (ibn, fused, tucker); "nr" blocks set False
    rin: float = 0.0     # tucker input rank ratio
    rout: float = 0.0    # tucker output rank ratio


def _rep(block: Block, n: int) -> list[Block]:
    return [block] * n


def IBN(f, e, k=3, s=1, nr=False):
    return Block("ibn", f, e=e, k=k, s=s, res=not nr)


def FUSED(f, e, k=3, s=1, nr=False):
    return Block("fused", f, e=e, k=k, s=s, res=not nr)


def TUCKER(f, rin, rout, k=3, s=1, nr=False):
    return Block("tucker", f, k=k, s=s, res=not nr, rin=rin, rout=rout)


def NOEXP(f, k=3, s=1):
    return Block("ibn_noexp", f, k=k, s=s, res=False)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    activation: str      # "hswish" | "relu6"
    se: bool             # squeeze-excite in IBN-noexp and IBN blocks
    stem: int
    stages: tuple        # ((stage name, [Block, ...]), ...) for C1..C5


BACKBONES = {
    "cpu": BackboneSpec("cpu", "hswish", True, 16, (
        ("C1", [NOEXP(8)]),
        ("C2", [IBN(16, 4, s=2, nr=True)]),
        ("C3", [IBN(32, 8, s=2, nr=True)] + _rep(IBN(32, 4), 3)),
        ("C4", [IBN(72, 8, k=5, s=2, nr=True), IBN(72, 8), IBN(72, 4, k=5), IBN(72, 4),
                IBN(72, 8, nr=True)] + _rep(IBN(72, 8), 3)),
        ("C5", [IBN(104, 8, k=5, s=2, nr=True)] + _rep(IBN(104, 4, k=5), 2)
         + [IBN(104, 4), IBN(144, 8, nr=True)]),
    )),
    "dsp": BackboneSpec("dsp", "relu6", False, 32, (
        ("C1", [NOEXP(24)]),
        ("C2", [FUSED(32, 4, s=2, nr=True), FUSED(32, 4), IBN(32, 4), TUCKER(32, 0.25, 0.75)]),
        ("C3", [FUSED(64, 8, s=2, nr=True), IBN(64, 4)] + _rep(FUSED(64, 4), 2)),
        ("C4", [FUSED(120, 8, s=2, nr=True), IBN(120, 4)] + _rep(IBN(120, 8), 2)
         + [FUSED(144, 8, nr=True)] + _rep(IBN(144, 8), 3)),
        ("C5", [IBN(160, 4, s=2, nr=True), IBN(160, 4), FUSED(160, 4), TUCKER(160, 0.75, 0.75),
                IBN(240, 8, nr=True)]),
    )),
    "edgetpu": BackboneSpec("edgetpu", "relu6", False, 32, (
        ("C1", [TUCKER(16, 0.25, 0.75, nr=True)]),
        ("C2", [FUSED(16, 8, s=2, nr=True), FUSED(16, 4), FUSED(16, 8), FUSED(16, 4)]),
        ("C3", [FUSED(40, 8, k=5, s=2, nr=True)] + _rep(FUSED(40, 4), 3)),
        ("C4", [IBN(72, 8, s=2, nr=True), IBN(72, 8)] + _rep(FUSED(72, 4), 2)
         + [IBN(96, 8, k=5, nr=True), IBN(96, 8, k=5)] + _rep(IBN(96, 8), 2)),
        ("C5", [IBN(120, 8, k=5, s=2, nr=True), IBN(120, 8), IBN(120, 4, k=5), IBN(120, 8),
                IBN(384, 8, k=5, nr=True)]),
    )),
    "gpu": BackboneSpec("gpu", "relu6", False, 32, (
        ("C1", [TUCKER(16, 0.25, 0.25, nr=True)]),
        ("C2", [FUSED(32, 8, s=2, nr=True)] + _rep(TUCKER(32, 0.25, 0.25), 3)),
        ("C3", [FUSED(64, 8, s=2, nr=True)] + _rep(FUSED(64, 8), 2) + [FUSED(64, 4)]),
        ("C4", [FUSED(128, 8, s=2, nr=True)] + _rep(FUSED(128, 4), 3) + [FUSED(128, 8, nr=True)]
         + _rep(FUSED(128, 8), 3)),
        ("C5", [FUSED(128, 4, s=2, nr=True)] + _rep(FUSED(128, 4), 3) + [IBN(384, 8, nr=True)]),
    )),
}


def apply_block(x, block: Block, spec: BackboneSpec, multiplier: float, name: str):
    filters = blocks.scale_filters(block.filters, multiplier)
    act = spec.activation
    if block.kind == "ibn_noexp":
        return blocks.ibn_noexp(x, filters, act, name, kernel=block.k, strides=block.s, se=spec.se)
    if block.kind == "ibn":
        return blocks.ibn(x, filters, act, name, block.e, kernel=block.k, strides=block.s,
                          se=spec.se, residual=block.res)
    if block.kind == "fused":
        return blocks.fused_ibn(x, filters, act, name, block.e, kernel=block.k, strides=block.s,
                                residual=block.res)
    if block.kind == "tucker":
        return blocks.tucker(x, filters, act, name, block.rin, block.rout, kernel=block.k,
                             strides=block.s, residual=block.res)
    raise ValueError(f"unknown block kind {block.kind!r}")


def build_backbone(images, variant: str, multiplier: float = 1.0) -> dict:
    """Apply the backbone to a Keras tensor of normalised images; returns {"C1": t, ..., "C5": t}."""
    spec = BACKBONES[variant]
    x = blocks.conv_bn(images, blocks.scale_filters(spec.stem, multiplier), 3, 2, spec.activation,
                       f"{variant}/stem")
    endpoints = {}
    for stage_name, stage in spec.stages:
        for i, block in enumerate(stage):
            x = apply_block(x, block, spec, multiplier, f"{variant}/{stage_name}/{block.kind}_{i}")
        endpoints[stage_name] = x
    return endpoints
