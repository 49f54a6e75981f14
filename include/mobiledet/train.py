"""Training of the SSDLite + MobileDet detector: float, and quantization-aware fine-tuning.

The TFOD recipe of the `ssd_mobiledet_*` configs, at a scale that runs on a laptop CPU:
* targets: argmax matcher 0.5/0.5 with a forced match per ground truth (`targets.py`);
* loss: sigmoid focal loss (alpha 0.75, gamma 2) + smooth L1, normalised by the number of
  matches (`losses.py`), plus the configs' L2 weight decay (4e-5) on the conv kernels;
* SGD with momentum 0.9, cosine learning-rate decay with a linear warm-up;
* augmentation: horizontal flip + SSD random crop (`augment.py`), then the product's one
  preprocessing (`include.data.preprocess.preprocess`: bilinear resize + [-1, 1]).

Input pipeline: a background thread assembles numpy batches (decode, augment, preprocess, target
assignment) while TensorFlow runs the train step on the other core(s). Each image file is
decoded at most once per epoch: decoded images are kept in memory when the split fits
(`CACHE_LIMIT_BYTES`), so in practice once per run.

QAT: `train(..., qat=True, init=FLOAT_CKPT)` folds BatchNorm of the float model into its convs,
wraps it with tensorflow-model-optimization's fake-quant layers (`qat.qat_from_float`) and
fine-tunes at a tenth of the float learning rate; the checkpoint it writes has qat=True.
"""
from __future__ import annotations

import math
import queue
import threading
import time
from pathlib import Path

import numpy as np

from include.errors import CheckpointError, ConfigError, DataError

DEFAULT_BATCH = 32
OPTIMIZERS = ("momentum", "adam")
# Base LR of the cosine schedule per optimizer, for batch 32 (scaled linearly with the batch).
# momentum: the TFOD MobileDet configs' SGD with momentum 0.9 (0.8 at batch 512, long runs).
# adam: for short runs from scratch; measured on the synthetic data, Adam at 0.003 (batch 16)
# fits in 1,500 steps far more than momentum SGD does in 2,400 (README, "Training").
DEFAULT_LEARNING_RATES = {"momentum": 0.08, "adam": 0.006}
WARMUP_START_FRACTION = 1.0 / 6.0   # TFOD: warmup_learning_rate 0.1333 for base 0.8
DEFAULT_WARMUP_FRACTION = 0.1       # warm-up steps when not given: 10% of the run, <= 2000
QAT_LR_FACTOR = 0.1                 # QAT fine-tuning uses a tenth of the float LR
MOMENTUM = 0.9
WEIGHT_DECAY = 4e-5                 # the configs' l2_regularizer weight on conv kernels
CACHE_LIMIT_BYTES = 2 << 30         # keep decoded images in memory up to this size
PREFETCH_BATCHES = 4


# ---------------------------------------------------------------------- learning rate
def cosine_with_warmup(step, base_lr: float, total_steps: int, warmup_steps: int,
                       warmup_start: float):
    """TFOD `cosine_decay_with_warmup` in plain Python (for the summary and the tests)."""
    step = float(step)
    if warmup_steps > 0 and step < warmup_steps:
        return warmup_start + (base_lr - warmup_start) * step / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0.0) / span, 1.0)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * progress))


def _make_schedule(base_lr, total_steps, warmup_steps, warmup_start):
    import tensorflow as tf

    class WarmupCosine(tf.keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            step = tf.cast(step, tf.float32)
            span = float(max(total_steps - warmup_steps, 1))
            progress = tf.clip_by_value((step - warmup_steps) / span, 0.0, 1.0)
            cosine = 0.5 * base_lr * (1.0 + tf.cos(math.pi * progress))
            if warmup_steps <= 0:
                return cosine
            warm = warmup_start + (base_lr - warmup_start) * step / float(warmup_steps)
            return tf.where(step < warmup_steps, warm, cosine)

        def get_config(self):
            return {"base_lr": base_lr, "total_steps": total_steps,
                    "warmup_steps": warmup_steps, "warmup_start": warmup_start}

    return WarmupCosine()


# ---------------------------------------------------------------------- input pipeline
class BatchStream:
    """Endless numpy batches for training, built on a background thread.

    Order: a fresh permutation of the split every epoch (seeded by seed and epoch); each image
    gets its own random stream (seed, epoch, position) for augmentation, so a run is repeatable.
    A batch is a dict of float32 arrays: images [B, S, S, 3], box_targets [B, N, 4],
    class_targets [B, N, C+1], box_weights [B, N], class_weights [B, N].
    """

    def __init__(self, dataset, assigner, input_size: int, batch: int, seed: int = 0,
                 augment_config=None, cache_limit: int = CACHE_LIMIT_BYTES,
                 prefetch: int = PREFETCH_BATCHES):
        from include.mobiledet.augment import AugmentConfig

        self.dataset = dataset
        self.assigner = assigner
        self.size = int(input_size)
        self.batch = int(batch)
        self.seed = int(seed)
        self.augment_config = augment_config if augment_config is not None else AugmentConfig()
        self.ids = list(dataset.image_ids)
        if not self.ids:
            raise DataError("the training split has no images.", where=str(dataset.annotation_file),
                            fix="train on a split that lists images and annotations.")
        est = sum(int(im["width"]) * int(im["height"]) * 3 for im in dataset.images)
        self.cache = {} if est <= cache_limit else None
        self.targets = {i: dataset.targets(i) for i in self.ids}
        self.decode_seconds = 0.0
        self.decoded = 0
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(prefetch)))
        self._stop = threading.Event()
        self._thread = None

    # -- one example
    def image(self, image_id):
        if self.cache is not None and image_id in self.cache:
            return self.cache[image_id]
        t0 = time.perf_counter()
        img = self.dataset.load_image(image_id)
        self.decode_seconds += time.perf_counter() - t0
        self.decoded += 1
        if self.cache is not None:
            self.cache[image_id] = img
        return img

    def example(self, image_id, rng):
        from include.data.preprocess import preprocess
        from include.mobiledet.augment import augment

        img, tgt = augment(self.image(image_id), self.targets[image_id], rng, self.augment_config)
        x = preprocess(img, self.size)
        t = self.assigner(tgt["boxes"], tgt["classes"], tgt["is_crowd"])
        return x, t

    def _order(self):
        epoch = 0
        while True:
            perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.ids))
            for pos, k in enumerate(perm):
                yield self.ids[k], np.random.default_rng([self.seed, epoch, pos])
            epoch += 1

    def _batches(self):
        order = self._order()
        while True:
            xs, ts = [], []
            for _ in range(self.batch):
                image_id, rng = next(order)
                x, t = self.example(image_id, rng)
                xs.append(x)
                ts.append(t)
            yield {"images": np.stack(xs),
                   **{k: np.stack([t[k] for t in ts]) for k in
                      ("box_targets", "class_targets", "box_weights", "class_weights")}}

    def _produce(self):
        try:
            for b in self._batches():
                while not self._stop.is_set():
                    try:
                        self._queue.put(b, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._queue.put(exc)

    def __enter__(self):
        self._thread = threading.Thread(target=self._produce, name="train-batches", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    self._thread.join(timeout=0.1)
            self._thread = None

    def next(self) -> dict:
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item


# ---------------------------------------------------------------------- checks
def _check_positive_int(value, name, flag):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(f"{name} must be a positive whole number, got {value!r}.", where=flag,
                          fix=f"pass e.g. {flag} 100.")
    return int(value)


def open_split(data_dir, split):
    """A dataset folder's split, or an annotation file as it is (split ignored)."""
    from include.data.coco import open_dataset

    p = Path(data_dir)
    return open_dataset(p, None if p.is_file() else split)


def label_map_of(dataset) -> dict:
    """{class index: {"name", "category_id"}} of a dataset."""
    return {i: {"name": name, "category_id": int(cid)}
            for i, (name, cid) in enumerate(zip(dataset.class_names, dataset.category_ids))}


def _check_init(init_meta, init, variant, num_classes, input_size, depth_multiplier, qat):
    """The init checkpoint must describe the same detector as the one being trained."""
    where = str(init)
    kind = "QAT" if init_meta["qat"] else "float"
    if init_meta["qat"] and not qat:
        raise CheckpointError(
            "the init checkpoint is a QAT checkpoint; float training cannot start from "
            "fake-quantised (BatchNorm-folded) weights.", where=where,
            fix="pass the float checkpoint it was fine-tuned from as --init, or add --qat to "
                "continue quantization-aware training.")
    wanted = {"variant": variant, "num_classes": num_classes, "input_size": input_size,
              "depth_multiplier": depth_multiplier}
    bad = [(k, init_meta[k], v) for k, v in wanted.items()
           if v is not None and (float(init_meta[k]) != float(v) if k == "depth_multiplier"
                                 else init_meta[k] != v)]
    if bad:
        text = "; ".join(f"{k}: init checkpoint has {a!r}, this training wants {b!r}"
                         for k, a, b in bad)
        raise CheckpointError(
            f"the {kind} init checkpoint ({init_meta['variant']}, {init_meta['num_classes']} "
            f"classes, {init_meta['input_size']}x{init_meta['input_size']}, depth multiplier "
            f"{init_meta['depth_multiplier']}) does not match the model to train ({text}).",
            where=where,
            fix="pass a checkpoint trained with the same variant, dataset classes, input size "
                "and depth multiplier, or change the training flags to match it.")


# ---------------------------------------------------------------------- training
def train(data_dir, out_dir, variant: str, steps: int, batch: int = DEFAULT_BATCH,
          input_size: int | None = None, depth_multiplier: float | None = None,
          init=None, qat: bool = False, seed: int = 0, learning_rate: float | None = None,
          warmup_steps: int | None = None, progress: bool = True, split: str = "train",
          augment="ssd", weight_decay: float = WEIGHT_DECAY,
          log_every: int = 0, keep_model: bool = False, optimizer: str = "momentum",
          clip_norm: float | None = None) -> dict:
    """Train a detector on a COCO-format dataset and write a checkpoint folder to `out_dir`.

    input_size / depth_multiplier: taken from `init` when it is given and they are None, else
    320 / 1.0 (the published MobileDet). augment: "ssd" (flip + SSD random crop), "flip" or
    "none", or an `augment.AugmentConfig`. qat=True needs `init` (a float checkpoint of the same
    detector, or a QAT one to continue). optimizer: "momentum" (SGD, momentum 0.9, as TFOD) or
    "adam". learning_rate: base LR of the cosine schedule (default
    DEFAULT_LEARNING_RATES[optimizer] * batch / 32, a tenth of that for QAT). Returns a summary dict (the
    checkpoint's metadata plus `out`; plus the trained Keras `model` when keep_model).
    """
    t_start = time.perf_counter()
    from include.mobiledet.spec import VARIANTS, ModelSpec

    steps = _check_positive_int(steps, "the number of training steps", "--steps")
    batch = _check_positive_int(batch, "the batch size", "--batch")
    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}; allowed values: {', '.join(VARIANTS)}.",
                          where="--variant", fix="pass one of the allowed variants.")
    if learning_rate is not None and not (isinstance(learning_rate, (int, float))
                                          and learning_rate > 0 and math.isfinite(learning_rate)):
        raise ConfigError(f"the learning rate must be a positive number, got {learning_rate!r}.",
                          where="--lr", fix="pass e.g. --lr 0.05, or leave it out for the default.")
    if warmup_steps is not None and (isinstance(warmup_steps, bool) or
                                     not isinstance(warmup_steps, (int, np.integer))
                                     or warmup_steps < 0):
        raise ConfigError(f"warm-up steps must be a whole number >= 0, got {warmup_steps!r}.",
                          where="--warmup-steps", fix="pass e.g. --warmup-steps 50.")
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {optimizer!r}; allowed: {', '.join(OPTIMIZERS)}.",
                          where="--optimizer", fix="pass --optimizer momentum or adam.")
    from include.mobiledet.augment import resolve as resolve_augment
    augment_config = resolve_augment(augment)
    if qat:
        from include.mobiledet.qat import QAT_VARIANTS, check_qat_supported
        if variant not in QAT_VARIANTS:
            check_qat_supported(ModelSpec(variant, 1, 320, 1.0))
        if init is None:
            raise ConfigError("quantization-aware training fine-tunes a trained float model, "
                              "and no init checkpoint was given.", where="--init",
                              fix="train a float checkpoint first and pass it as --init "
                                  "together with --qat.")

    init_meta = None
    if init is not None:
        from include.mobiledet.checkpoint import read_checkpoint_meta
        init_meta = read_checkpoint_meta(init)
        _check_init(init_meta, init, variant, None, input_size, depth_multiplier, qat)

    dataset = open_split(data_dir, split)
    if init_meta is not None:
        _check_init(init_meta, init, variant, dataset.num_classes, None, None, qat)
        input_size = int(init_meta["input_size"]) if input_size is None else input_size
        depth_multiplier = (float(init_meta["depth_multiplier"]) if depth_multiplier is None
                            else depth_multiplier)
    spec = ModelSpec(variant, dataset.num_classes, 320 if input_size is None else input_size,
                     1.0 if depth_multiplier is None else depth_multiplier)

    import tensorflow as tf
    from include.progress import progress as progress_bar
    from include.mobiledet import checkpoint as ckpt_mod
    from include.mobiledet.losses import ssd_loss
    from include.mobiledet.ssd import anchors_for, build_detector
    from include.mobiledet.targets import TargetAssigner

    tf.keras.utils.set_random_seed(int(seed))
    if init_meta is not None:
        init_model, _ = ckpt_mod.load_checkpoint(init)
        if qat and not init_meta["qat"]:
            from include.mobiledet.qat import qat_from_float
            model = qat_from_float(init_model, spec)
        else:
            model = init_model
    else:
        model = build_detector(spec)

    if learning_rate is None:
        learning_rate = DEFAULT_LEARNING_RATES[optimizer] * batch / 32.0
        if qat:
            learning_rate *= QAT_LR_FACTOR
    learning_rate = float(learning_rate)
    if warmup_steps is None:
        warmup_steps = min(int(round(DEFAULT_WARMUP_FRACTION * steps)), 2000)
    warmup_steps = min(int(warmup_steps), steps)
    warmup_start = learning_rate * WARMUP_START_FRACTION
    schedule = _make_schedule(learning_rate, steps, warmup_steps, warmup_start)
    if optimizer == "adam":
        opt = tf.keras.optimizers.Adam(schedule)
        opt_info = {"name": "adam", "weight_decay": weight_decay}
    else:
        opt = tf.keras.optimizers.SGD(schedule, momentum=MOMENTUM)
        opt_info = {"name": "sgd", "momentum": MOMENTUM, "weight_decay": weight_decay}

    variables = model.trainable_variables
    decay_vars = [v for v in variables if "kernel" in v.name]
    n = len(anchors_for(spec))
    c1 = spec.num_classes + 1
    s = spec.input_size

    @tf.function(input_signature=[
        tf.TensorSpec([batch, s, s, 3], tf.float32), tf.TensorSpec([batch, n, 4], tf.float32),
        tf.TensorSpec([batch, n, c1], tf.float32), tf.TensorSpec([batch, n], tf.float32),
        tf.TensorSpec([batch, n], tf.float32)])
    def train_step(images, box_t, cls_t, box_w, cls_w):
        with tf.GradientTape() as tape:
            box, logits = model(images, training=True)
            losses = ssd_loss(box, logits, box_t, cls_t, box_w, cls_w)
            total = losses["total"]
            if weight_decay:
                total = total + weight_decay * tf.add_n([tf.nn.l2_loss(v) for v in decay_vars])
        grads = tape.gradient(total, variables)
        if clip_norm:
            grads, _ = tf.clip_by_global_norm(grads, clip_norm)
        opt.apply_gradients(zip(grads, variables))
        return {**losses, "total": total}

    assigner = TargetAssigner(anchors_for(spec), spec.num_classes)
    history = []
    t_loop = None
    t_setup = time.perf_counter() - t_start
    desc = f"train {variant}{' qat' if qat else ''}"
    with BatchStream(dataset, assigner, s, batch, seed, augment_config) as stream, \
            progress_bar(total=steps, desc=desc, unit="step",
                         disable=None if progress else True) as bar:
        for step in range(steps):
            b = stream.next()
            out = train_step(tf.constant(b["images"]), tf.constant(b["box_targets"]),
                             tf.constant(b["class_targets"]), tf.constant(b["box_weights"]),
                             tf.constant(b["class_weights"]))
            loss = float(out["total"])
            if not math.isfinite(loss):
                raise ConfigError(f"the training loss became {loss} at step {step + 1}.",
                                  where="--lr", fix="lower the learning rate (--lr).")
            history.append((loss, float(out["localization"]), float(out["classification"])))
            now = time.perf_counter()
            if t_loop is None:
                t_loop = now                    # timing starts after the first (tracing) step
                first_step_seconds = now - t_start - t_setup
            rate = batch * step / (now - t_loop) if step else 0.0
            bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{rate:.1f}", refresh=False)
            bar.update(1)
            if log_every and ((step + 1) % log_every == 0 or step + 1 == steps):
                print(f"step {step + 1}/{steps} loss {loss:.4f} {rate:.1f} img/s "
                      f"{now - t_start:.0f}s", flush=True)
        loop_seconds = time.perf_counter() - t_loop
        decode_seconds, decoded = stream.decode_seconds, stream.decoded

    if qat:
        from include.mobiledet.qat import pin_input_range
        pin_input_range(model)

    tail = np.asarray(history[-max(1, min(20, steps // 10 or 1)):])
    head = np.asarray(history[:max(1, min(20, steps // 10 or 1))])
    images_per_second = batch * (steps - 1) / loop_seconds if steps > 1 and loop_seconds > 0 \
        else None
    training = {
        "split": dataset.split, "train_images": len(dataset), "batch": batch, "steps": steps,
        "seed": int(seed), "init": str(init) if init is not None else None,
        "optimizer": opt_info,
        "learning_rate": {"schedule": "cosine_with_warmup", "base": learning_rate,
                          "warmup_steps": warmup_steps, "warmup_start": warmup_start,
                          "total_steps": steps},
        "augmentation": {"preset": augment if isinstance(augment, str) else None,
                         **augment_config.to_dict()},
        "loss": {"classification": "sigmoid_focal(alpha=0.75, gamma=2)",
                 "localization": "smooth_l1(delta=1)", "normalize_by_num_matches": True},
        "initial_loss": float(head[:, 0].mean()),
        "final_loss": float(tail[:, 0].mean()),
        "final_localization_loss": float(tail[:, 1].mean()),
        "final_classification_loss": float(tail[:, 2].mean()),
        "images_per_second": round(images_per_second, 2) if images_per_second else None,
        "first_step_seconds": round(first_step_seconds, 2),
        "decode_seconds": round(decode_seconds, 2), "images_decoded": decoded,
    }
    training["seconds"] = round(time.perf_counter() - t_start, 2)
    parent = str(Path(init).resolve()) if init is not None else None
    meta = ckpt_mod.save_checkpoint(model, out_dir, spec, qat=bool(qat),
                                    label_map=label_map_of(dataset), steps=steps,
                                    data_fingerprint=dataset.fingerprint(), training=training,
                                    parent=parent)
    result = {"out": str(out_dir), **meta}
    if keep_model:
        result["model"] = model
    return result
