"""TF1 checkpoints as TFOD's training writes them, for tests: TF1 variable scopes and
tf.compat.v1.train.Saver, with values the test chooses.

The scopes are opened the way TFOD's slim code opens them (`variable_scope(None,
default_name=...)`), so TF1 itself makes the names unique (IBN, IBN_1, ..., Conv, Conv_1, ...):
the names do not come from include/tfod/names.py, which the tests check against them. The
block sequence and channel counts come from the project's backbone table (the architecture
facts); the feature-map names and depths follow TFOD's multi_resolution_feature_maps.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

SCOPES = {"cpu": "MobileDetCPU", "edgetpu": "MobileDetEdgeTPU", "dsp": "MobileDetDSP",
          "gpu": "MobileDetGPU"}
BLOCK_SCOPE = {"ibn_noexp": "IBNNoExpansion", "ibn": "IBN", "fused": "FusedConv",
               "tucker": "TuckerConv"}


class TF1Model:
    """Builds the variables of one TFOD SSDLite MobileDet model in a TF1 graph."""

    def __init__(self, spec, *, qat=False, seed=0, optimizer="momentum", other_scope=None):
        self.spec, self.qat = spec, qat
        self.rng = np.random.default_rng(seed)
        self.optimizer = optimizer
        self.other_scope = other_scope      # build under another extractor's scope name
        self.values = {}                    # name -> np.ndarray (what was written)
        self.convs = []                     # TF1 scopes of the convs, in order
        self.adds = []                      # TF1 scopes of the residual blocks
        self.overrides = {}                 # name -> value chosen by the test

    # ---------------------------------------------------------------- variables
    def _var(self, name, value, trainable=True):
        import tensorflow as tf

        v1 = tf.compat.v1
        value = np.asarray(self.overrides.get(self._full(name), value))
        var = v1.get_variable(name, initializer=value.astype(value.dtype), trainable=trainable)
        self.values[var.op.name] = value
        return var

    @staticmethod
    def _full(name):
        import tensorflow as tf

        scope = tf.compat.v1.get_variable_scope().name
        return f"{scope}/{name}" if scope else name

    def conv(self, shape, *, depthwise=False, bn=True, name=None):
        import tensorflow as tf

        v1 = tf.compat.v1
        default = None if name else ("SeparableConv2d" if depthwise else "Conv")
        with v1.variable_scope(name, default_name=default) as sc:
            fan_in = shape[0] * shape[1] * (1 if depthwise else shape[2])
            w = self.rng.normal(0, math.sqrt(2.0 / fan_in), shape).astype(np.float32)
            self._var("depthwise_weights" if depthwise else "weights", w)
            c = shape[2] if depthwise else shape[3]
            if bn:
                with v1.variable_scope("BatchNorm"):
                    self._var("gamma", self.rng.uniform(0.5, 1.5, c).astype(np.float32))
                    self._var("beta", self.rng.uniform(-0.2, 0.2, c).astype(np.float32))
                    self._var("moving_mean", self.rng.uniform(-0.2, 0.2, c).astype(np.float32),
                              trainable=False)
                    self._var("moving_variance", self.rng.uniform(0.5, 2.0, c).astype(np.float32),
                              trainable=False)
            else:
                self._var("biases", self.rng.uniform(-0.1, 0.1, c).astype(np.float32))
            self.convs.append(sc.name)

    # ---------------------------------------------------------------- the model
    def build(self):
        import tensorflow as tf

        from include.mobiledet.anchors import num_anchors_per_location
        from include.mobiledet.backbones import BACKBONES
        from include.mobiledet.blocks import scale_filters

        v1 = tf.compat.v1
        spec, m = self.spec, self.spec.depth_multiplier
        bb = BACKBONES[spec.variant]
        scope = self.other_scope or SCOPES[spec.variant]
        with v1.variable_scope("FeatureExtractor"), v1.variable_scope(scope):
            cin = scale_filters(bb.stem, m)
            self.conv((3, 3, 3, cin))
            c4 = None
            for stage, blocks in bb.stages:
                for b in blocks:
                    out = scale_filters(b.filters, m)
                    with v1.variable_scope(None, default_name=BLOCK_SCOPE[b.kind]) as block:
                        if b.kind == "ibn_noexp":
                            self.conv((b.k, b.k, cin, 1), depthwise=True)
                            if bb.se:
                                self.se(cin)
                            self.conv((1, 1, cin, out))
                        elif b.kind == "ibn":
                            mid = cin * b.e
                            self.conv((1, 1, cin, mid))
                            self.conv((b.k, b.k, mid, 1), depthwise=True)
                            if bb.se:
                                self.se(mid)
                            self.conv((1, 1, mid, out))
                        elif b.kind == "fused":
                            self.conv((b.k, b.k, cin, cin * b.e))
                            self.conv((1, 1, cin * b.e, out))
                        else:
                            rin, rout = scale_filters(cin, b.rin), scale_filters(out, b.rout)
                            self.conv((1, 1, cin, rin))
                            self.conv((b.k, b.k, rin, rout))
                            self.conv((1, 1, rout, out))
                        if b.res and b.kind != "ibn_noexp":
                            self.adds.append(block.name)
                    cin = out
                if stage == "C4":
                    c4 = cin
            depths = [c4, cin]
            x = cin
            for i, layer_depth in enumerate((512, 256, 256, 128), start=2):
                half = max(int(layer_depth / 2 * m), 16)
                full = max(int(layer_depth * m), 16)
                self.conv((1, 1, x, half), name=f"C5_1_Conv2d_{i}_1x1_{half}")
                self.conv((3, 3, half, 1), depthwise=True,
                          name=f"C5_2_Conv2d_{i}_3x3_s2_{full}_depthwise")
                self.conv((1, 1, half, full), name=f"C5_2_Conv2d_{i}_3x3_s2_{full}")
                depths.append(full)
                x = full
        for i, (c, a) in enumerate(zip(depths, num_anchors_per_location(6))):
            with v1.variable_scope(f"BoxPredictor_{i}"):
                for head, k in (("BoxEncodingPredictor", 4),
                                ("ClassPredictor", spec.num_classes + 1)):
                    self.conv((3, 3, c, 1), depthwise=True, name=f"{head}_depthwise")
                    self.conv((1, 1, c, a * k), bn=False, name=head)
        if self.qat:
            self.quantization_ranges()
        self.optimizer_slots()
        return self

    def se(self, channels):
        import tensorflow as tf

        from include.mobiledet.blocks import scale_filters

        hidden = scale_filters(channels, 0.25)
        with tf.compat.v1.variable_scope(None, default_name="SqueezeExcite"):
            self.conv((1, 1, channels, hidden), bn=False)
            self.conv((1, 1, hidden, channels), bn=False)

    def quantization_ranges(self):
        """contrib.quantize's variables: weights_quant / act_quant per conv (with the EMA
        helpers of the activation ranges), post_activation_bypass_quant per residual add."""
        for ctx in self.convs:
            if "/SqueezeExcite/" in ctx:
                continue
            self._range(f"{ctx}/weights_quant", (-0.5, 0.5), ema=False)
            self._range(f"{ctx}/act_quant", (0.0, 6.0), ema=True)
        for ctx in self.adds:
            self._range(f"{ctx}/post_activation_bypass_quant", (-4.0, 4.0), ema=True)

    def _range(self, scope, default, ema):
        lo = self.overrides.get(f"{scope}/min", default[0] * self.rng.uniform(0.8, 1.2))
        hi = self.overrides.get(f"{scope}/max", default[1] * self.rng.uniform(0.8, 1.2))
        self._var(f"{scope}/min", np.float32(lo), trainable=False)
        self._var(f"{scope}/max", np.float32(hi), trainable=False)
        if ema:
            for end, val in (("min", lo), ("max", hi)):
                self._var(f"{scope}/{scope}/{end}/biased", np.float32(val), trainable=False)
                self._var(f"{scope}/{scope}/{end}/local_step", np.float32(1000.0),
                          trainable=False)

    def optimizer_slots(self):
        import tensorflow as tf

        v1 = tf.compat.v1
        for var in list(v1.trainable_variables()):
            name = var.op.name
            slots = {"momentum": ["Momentum"], "adam": ["Adam", "Adam_1"],
                     "rmsprop": ["RMSProp", "RMSProp_1"]}[self.optimizer]
            for slot in slots:
                self._var(f"{name}/{slot}", np.zeros(var.shape, np.float32), trainable=False)
        if self.optimizer == "adam":
            self._var("beta1_power", np.float32(0.9), trainable=False)
            self._var("beta2_power", np.float32(0.999), trainable=False)


def write_training_step(folder, model: TF1Model, step: int, *, keep: int = 5, saver=None):
    """Save one step into a training folder with TF1's Saver (index, data, meta and the
    `checkpoint` state file); returns the prefix."""
    import tensorflow as tf

    v1 = tf.compat.v1
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    graph = tf.Graph()
    with graph.as_default():
        model.values.clear()
        model.convs.clear()
        model.adds.clear()
        model.build()
        gs = v1.train.get_or_create_global_step()
        saver = v1.train.Saver(max_to_keep=keep)
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            sess.run(gs.assign(step))
            # earlier steps of the same job, so that keep_checkpoint_max bookkeeping is TF1's
            state = v1.train.get_checkpoint_state(str(folder))
            if state is not None:
                saver.recover_last_checkpoints(list(state.all_model_checkpoint_paths))
            prefix = saver.save(sess, str(folder / "model.ckpt"), global_step=step)
    return prefix


def write_checkpoint(folder, spec, *, qat=False, step=1000, seed=0, overrides=None,
                     config_text=None, **kw):
    """A training folder with one step and a pipeline.config; returns (prefix, TF1Model)."""
    model = TF1Model(spec, qat=qat, seed=seed, **kw)
    model.overrides.update(overrides or {})
    prefix = write_training_step(folder, model, step)
    (Path(folder) / "pipeline.config").write_text(config_text or tfod_config(spec, qat=qat))
    return prefix, model


def tfod_config(spec, *, qat=False, label_map_path=None, extractor=None) -> str:
    """A TFOD pipeline.config for the spec (the project's writer, TFOD's layout)."""
    from include.convert.tfod import VARIANT_TO_TYPE, format_text_proto, pipeline_config_dict

    config = pipeline_config_dict(spec, qat=qat, steps=1000)
    if extractor:
        config["model"]["ssd"]["feature_extractor"]["type"] = extractor
    text = "\n".join(format_text_proto({k: v}) for k, v in config.items())
    if label_map_path:
        text += f'\ntrain_input_reader {{\n  label_map_path: "{label_map_path}"\n}}\n'
    assert VARIANT_TO_TYPE[spec.variant] in text or extractor
    return text
