"""TFOD's TF1 variable names <-> this project's Keras detector, for the four MobileDet variants.

The names follow how TFOD builds SSDLite + MobileDet in TF1 (slim):

- the backbone lives under `FeatureExtractor/MobileDet{CPU,EdgeTPU,DSP,GPU}/`. The stem is
  `Conv`. Each block opens a variable scope with a default name that TF1 makes unique by
  counting per name inside the backbone: `IBNNoExpansion`, `IBN`, `IBN_1`, ..., `FusedConv`,
  `FusedConv_1`, ..., `TuckerConv`, ... in the order the backbone applies them (the order of
  `include/mobiledet/backbones.py`). Inside a block, slim names its convs `Conv`, `Conv_1`,
  `Conv_2` in order and the depthwise conv `SeparableConv2d`; squeeze-excite (CPU) is a
  `SqueezeExcite` scope with `Conv` (reduce) and `Conv_1` (expand), both with biases.
  IBN: Conv (expand), SeparableConv2d, [SqueezeExcite], Conv_1 (project).
  IBN-noexp: SeparableConv2d, [SqueezeExcite], Conv (project).
  Fused: Conv (kxk), Conv_1 (project). Tucker: Conv, Conv_1 (kxk), Conv_2 (project).
- the four extra feature maps (from C5, SSDLite: 1x1, depthwise 3x3 stride 2, 1x1) are
  `C5_1_Conv2d_{i}_1x1_{d/2}`, `C5_2_Conv2d_{i}_3x3_s2_{d}_depthwise` and
  `C5_2_Conv2d_{i}_3x3_s2_{d}` for i = 2..5, where d is the layer depth after the depth
  multiplier and min_depth (512, 256, 256, 128 at 1.0), under the same backbone scope.
- the box predictor of feature map i is `BoxPredictor_{i}/BoxEncodingPredictor_depthwise`
  (depthwise 3x3 + BN) then `BoxPredictor_{i}/BoxEncodingPredictor` (1x1, weights + biases),
  the same for `ClassPredictor`.
- a conv with batch norm has `weights` (`depthwise_weights` for depthwise) and
  `BatchNorm/{gamma,beta,moving_mean,moving_variance}`; one without has `weights`, `biases`.
- quantization-aware training (contrib.quantize) adds, per conv, `<conv>/weights_quant/{min,max}`
  (the range of the BN-folded weights) and `<conv>/act_quant/{min,max}` (the conv's output
  after its activation; for linear convs the conv's output), and per residual add
  `<block>/post_activation_bypass_quant/{min,max}`; the activation ranges are moving averages
  whose helpers (`.../biased`, `.../local_step`) are not needed.

Each `Variable` names the Keras layer and attribute that receive it: the float model's
layers for weights and BN, the QAT model's wrappers (`quant_<layer>`) for ranges.
Shapes are computed from the backbone table, not from a built model, so `--check` costs no
model build; tests compare them with a built model for every variant.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

SCOPES = {"cpu": "MobileDetCPU", "edgetpu": "MobileDetEdgeTPU", "dsp": "MobileDetDSP",
          "gpu": "MobileDetGPU"}
FEATURE_EXTRACTOR = "FeatureExtractor"
# other TFOD feature extractors' scopes, to name what a checkpoint is when it is not MobileDet
OTHER_EXTRACTORS = {
    "MobilenetV1": "ssd_mobilenet_v1", "MobilenetV2": "ssd_mobilenet_v2",
    "MobilenetV3": "ssd_mobilenet_v3_large / ssd_mobilenet_v3_small",
    "MobilenetEdgeTPU": "ssd_mobilenet_edgetpu", "InceptionV2": "ssd_inception_v2",
    "InceptionV3": "ssd_inception_v3", "ResNet50V1_FPN": "ssd_resnet50_v1_fpn",
    "ResNet101V1_FPN": "ssd_resnet101_v1_fpn", "ResNet152V1_FPN": "ssd_resnet152_v1_fpn",
    "MobilenetV1_FPN": "ssd_mobilenet_v1_fpn", "MobilenetV2_FPN": "ssd_mobilenet_v2_fpn",
    "SpaghettiNet": "ssd_spaghettinet", "EfficientNet": "ssd_efficientnet",
}
_BLOCK_SCOPE = {"ibn_noexp": "IBNNoExpansion", "ibn": "IBN", "fused": "FusedConv",
                "tucker": "TuckerConv"}
BN_PARAMS = ("gamma", "beta", "moving_mean", "moving_variance")

# optimizer slots and bookkeeping that hold no model weights
_SLOT_SUFFIXES = ("/Momentum", "/Adam", "/Adam_1", "/RMSProp", "/RMSProp_1", "/Adagrad",
                  "/Ftrl", "/Ftrl_1", "/AdadeltaAccumulator", "/AdadeltaAccumulator_1")
_BOOKKEEPING = ("global_step", "beta1_power", "beta2_power")
EMA_SUFFIX = "/ExponentialMovingAverage"
_QUANT_HELPER = re.compile(r"_quant/.+/(biased|local_step)$")


@dataclass(frozen=True)
class Conv:
    tfod: str              # the conv's TF1 scope
    keras: str             # the Keras conv layer
    kernel_shape: tuple
    depthwise: bool
    bn: str | None         # Keras BatchNormalization layer (None: the conv has a bias)
    act: str | None        # Keras activation layer after conv (+BN); None when linear
    quantized: bool = True  # carries TF1 quantization ranges (not the CPU's squeeze-excite)


@dataclass(frozen=True)
class Add:
    tfod: str              # the residual block's TF1 scope
    keras: str             # the Keras Add layer


@dataclass(frozen=True)
class Variable:
    name: str              # TF1 variable name
    shape: tuple
    layer: str             # Keras layer (float model), or its QAT wrapper `quant_<layer>`
    attr: str              # kernel | depthwise_kernel | bias | gamma | ... | kernel_min | ...
    kind: str              # "weight" | "range"


@dataclass(frozen=True)
class Layout:
    variant: str
    scope: str             # FeatureExtractor/MobileDet<V>
    convs: tuple
    adds: tuple
    concats: tuple         # ((Keras concat layer, (the convs feeding it), ...)

    def variables(self, qat: bool) -> list:
        out = []
        for c in self.convs:
            kernel = "depthwise_weights" if c.depthwise else "weights"
            attr = "depthwise_kernel" if c.depthwise else "kernel"
            out.append(Variable(f"{c.tfod}/{kernel}", c.kernel_shape, c.keras, attr, "weight"))
            channels = c.kernel_shape[2] if c.depthwise else c.kernel_shape[3]
            if c.bn:
                out += [Variable(f"{c.tfod}/BatchNorm/{p}", (channels,), c.bn, p, "weight")
                        for p in BN_PARAMS]
            else:
                out.append(Variable(f"{c.tfod}/biases", (channels,), c.keras, "bias", "weight"))
        if qat:
            for c in self.convs:
                if not c.quantized:
                    continue
                kernel = "depthwise_kernel" if c.depthwise else "kernel"
                for end in ("min", "max"):
                    out.append(Variable(f"{c.tfod}/weights_quant/{end}", (), f"quant_{c.keras}",
                                        f"{kernel}_{end}", "range"))
                    if c.act:
                        out.append(Variable(f"{c.tfod}/act_quant/{end}", (), f"quant_{c.act}",
                                            f"output_{end}", "range"))
                    else:
                        out.append(Variable(f"{c.tfod}/act_quant/{end}", (), f"quant_{c.keras}",
                                            f"post_activation_{end}", "range"))
            for a in self.adds:
                for end in ("min", "max"):
                    out.append(Variable(f"{a.tfod}/post_activation_bypass_quant/{end}", (),
                                        f"quant_{a.keras}", f"output_{end}", "range"))
        return out


def layout(spec) -> Layout:
    """The TF1 <-> Keras layout of the detector `spec` (a ModelSpec)."""
    from include.mobiledet.anchors import num_anchors_per_location
    from include.mobiledet.backbones import BACKBONES
    from include.mobiledet.blocks import scale_filters
    from include.mobiledet.ssd import EXTRA_LAYER_DEPTHS, MIN_DEPTH

    v, m = spec.variant, spec.depth_multiplier
    bb = BACKBONES[v]
    act = bb.activation
    root = f"{FEATURE_EXTRACTOR}/{SCOPES[v]}"
    convs, adds = [], []

    def conv(tfod, keras, shape, *, depthwise=False, bn=True, activation=act, quantized=True):
        base = keras[:-len("/conv")] if keras.endswith("/conv") else keras
        bn_name = (f"{base}/bn" if keras.endswith("/conv") else f"{keras}_bn") if bn else None
        if activation in (None, "linear"):
            act_name = None
        elif keras.endswith("/conv"):
            act_name = f"{base}/{activation}"
        else:
            act_name = f"{keras}_{activation}"
        convs.append(Conv(tfod, keras, tuple(shape), depthwise, bn_name, act_name, quantized))

    def se(block_tfod, keras_block, channels):
        hidden = scale_filters(channels, 0.25)
        convs.append(Conv(f"{block_tfod}/SqueezeExcite/Conv", f"{keras_block}/se_reduce",
                          (1, 1, channels, hidden), False, None, None, False))
        convs.append(Conv(f"{block_tfod}/SqueezeExcite/Conv_1", f"{keras_block}/se_expand",
                          (1, 1, hidden, channels), False, None, None, False))

    cin = scale_filters(bb.stem, m)
    conv(f"{root}/Conv", f"{v}/stem/conv", (3, 3, 3, cin))
    counts: dict = {}
    for stage, blocks in bb.stages:
        for i, b in enumerate(blocks):
            base = _BLOCK_SCOPE[b.kind]
            n = counts.get(base, 0)
            counts[base] = n + 1
            t = f"{root}/{base}" + (f"_{n}" if n else "")
            k = f"{v}/{stage}/{b.kind}_{i}"
            out = scale_filters(b.filters, m)
            if b.kind == "ibn_noexp":
                conv(f"{t}/SeparableConv2d", f"{k}/depthwise", (b.k, b.k, cin, 1), depthwise=True)
                if bb.se:
                    se(t, k, cin)
                conv(f"{t}/Conv", f"{k}/project/conv", (1, 1, cin, out), activation=None)
            elif b.kind == "ibn":
                mid = cin * b.e
                conv(f"{t}/Conv", f"{k}/expand/conv", (1, 1, cin, mid))
                conv(f"{t}/SeparableConv2d", f"{k}/depthwise", (b.k, b.k, mid, 1), depthwise=True)
                if bb.se:
                    se(t, k, mid)
                conv(f"{t}/Conv_1", f"{k}/project/conv", (1, 1, mid, out), activation=None)
            elif b.kind == "fused":
                mid = cin * b.e
                conv(f"{t}/Conv", f"{k}/fused/conv", (b.k, b.k, cin, mid))
                conv(f"{t}/Conv_1", f"{k}/project/conv", (1, 1, mid, out), activation=None)
            elif b.kind == "tucker":
                rin, rout = scale_filters(cin, b.rin), scale_filters(out, b.rout)
                conv(f"{t}/Conv", f"{k}/reduce/conv", (1, 1, cin, rin))
                conv(f"{t}/Conv_1", f"{k}/core/conv", (b.k, b.k, rin, rout))
                conv(f"{t}/Conv_2", f"{k}/project/conv", (1, 1, rout, out), activation=None)
            else:  # pragma: no cover - the backbone table has only these kinds
                raise ValueError(f"unknown block kind {b.kind!r}")
            if b.res and b.kind != "ibn_noexp":
                adds.append(Add(t, f"{k}/add"))
            cin = out
            if stage == "C4":
                c4 = out
    channels = [c4, cin]

    x = cin
    for i, depth in enumerate(EXTRA_LAYER_DEPTHS):
        j = i + 2
        half, full = max(int(depth / 2 * m), MIN_DEPTH), max(int(depth * m), MIN_DEPTH)
        conv(f"{root}/C5_1_Conv2d_{j}_1x1_{half}", f"feature_map_{j}/reduce/conv",
             (1, 1, x, half), activation="relu6")
        conv(f"{root}/C5_2_Conv2d_{j}_3x3_s2_{full}_depthwise", f"feature_map_{j}/depthwise",
             (3, 3, half, 1), depthwise=True, activation="relu6")
        conv(f"{root}/C5_2_Conv2d_{j}_3x3_s2_{full}", f"feature_map_{j}/expand/conv",
             (1, 1, half, full), activation="relu6")
        channels.append(full)
        x = full

    box, cls = [], []
    for i, (c, a) in enumerate(zip(channels, num_anchors_per_location(len(channels)))):
        for head, per_anchor, feeds in (("BoxEncodingPredictor", 4, box),
                                        ("ClassPredictor", spec.num_classes + 1, cls)):
            conv(f"BoxPredictor_{i}/{head}_depthwise", f"BoxPredictor_{i}/{head}/depthwise",
                 (3, 3, c, 1), depthwise=True, activation="relu6")
            conv(f"BoxPredictor_{i}/{head}", f"BoxPredictor_{i}/{head}/conv_1x1",
                 (1, 1, c, a * per_anchor), bn=False, activation=None)
            feeds.append(convs[-1])
    return Layout(v, root, tuple(convs), tuple(adds),
                  (("box_encodings", tuple(box)), ("class_logits", tuple(cls))))


# ---------------------------------------------------------------- the checkpoint's other names
def ignored_kind(name: str) -> str | None:
    """Why a checkpoint variable holds no model weight, or None when it might."""
    if name in _BOOKKEEPING:
        return "global_step" if name == "global_step" else "optimizer slot"
    if name.endswith(_SLOT_SUFFIXES):
        return "optimizer slot"
    if name.endswith(EMA_SUFFIX):
        return "moving average"
    if _QUANT_HELPER.search(name):
        return "quantization moving-average helper"
    return None


def feature_extractor_scopes(names) -> list:
    """The scopes found under FeatureExtractor/ (e.g. ['MobileDetEdgeTPU'])."""
    found = []
    for n in names:
        parts = n.split("/")
        if len(parts) > 2 and parts[0] == FEATURE_EXTRACTOR and parts[1] not in found:
            found.append(parts[1])
    return found


def describe_scope(scope: str) -> str:
    for variant, s in SCOPES.items():
        if s == scope:
            return f"FeatureExtractor/{scope} (ssd_mobiledet_{variant})"
    other = OTHER_EXTRACTORS.get(scope)
    return f"FeatureExtractor/{scope}" + (f" ({other})" if other else "")


def nearest(name: str, candidates, n: int = 1) -> list:
    return difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)
