"""sluice's `train` worker: reads one request (docs/plugins.md) on stdin, trains with
onnxruntime-training, and writes the inference model, the history and the training artifacts.

    python -m sluice_train < request.json

Protocol messages go to a private copy of stdout; fd 1 itself is pointed at stderr, so anything
else that prints (onnxruntime's C++ logging included) lands in the stage's log, never in the
message stream.

What the Rust side resolves and validates (`with`, the device, the resume and cache directories)
is trusted for shape; what depends on the data (class counts, feature widths, user model shapes)
is checked here, with errors that name the file or field and a hint.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
import types

import numpy as np

from . import data, models, regularize
from .persist import FORMAT, Resume, Saver, atomic_dir, atomic_file, mkdtemp, write_json

PROGRESS_INTERVAL_S = 0.2
EVAL_BATCH = 1024
INPUT_NAMES = {"train", "val", "preprocess", "model"}


class Fail(Exception):
    """A user-facing error: its text becomes the `result` message."""


class Messages:
    """Writes protocol messages, one JSON object per line, flushed."""

    def __init__(self, stream):
        self.stream = stream
        # When the next throttled progress message is due (time.monotonic()). The training loop
        # compares against it directly, so that a batch whose progress is not sent builds no text.
        self.progress_due = 0.0

    def send(self, kind: str, **fields) -> None:
        self.stream.write(json.dumps({"type": kind, **fields}) + "\n")
        self.stream.flush()

    def log(self, message: str, level: str = "info") -> None:
        self.send("log", level=level, message=message)

    def progress(self, done: int, total: int, message: str) -> None:
        """Sends a progress message now; callers throttle with `progress_due`."""
        self.progress_due = time.monotonic() + PROGRESS_INTERVAL_S
        self.send("progress", done=done, total=total, unit="batch", message=message)


def _claim_stdout():
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(fd, "w", encoding="utf-8")


def _import_ort():
    """onnxruntime/training/__init__.py imports ORTModule, which needs torch. Registering a bare
    package for `onnxruntime.training` lets its torch-free submodules (api, artifacts, onnxblock)
    import on their own."""
    import onnxruntime as ort

    if "onnxruntime.training" not in sys.modules:
        package = types.ModuleType("onnxruntime.training")
        package.__path__ = [os.path.join(os.path.dirname(ort.__file__), "training")]
        sys.modules["onnxruntime.training"] = package
    from onnxruntime.training import api, artifacts
    from onnxruntime.training.onnxblock import optim

    ort.set_default_logger_severity(3)  # warnings and up only; the log is for the user
    return ort, api, artifacts, optim


def _preload_cuda_libraries() -> None:
    """Loads the CUDA and cuDNN libraries of NVIDIA's pip wheels (site-packages/nvidia/*/lib),
    globally, so that ORT's CUDA provider finds them by soname without LD_LIBRARY_PATH. A no-op
    where the wheels are absent (a system CUDA on the loader path then serves). Libraries whose
    dependencies are not loaded yet fail and are retried until a pass makes no progress. NVBLAS
    is left out: loaded globally it would take over every BLAS call in the process."""
    import ctypes
    import glob
    import site

    pending = sorted(
        path
        for root in site.getsitepackages()
        for path in glob.glob(os.path.join(root, "nvidia", "*", "lib", "lib*.so*"))
        if "nvblas" not in os.path.basename(path)
    )
    while pending:
        failed = []
        for path in pending:
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError:
                failed.append(path)
        if len(failed) == len(pending):
            break
        pending = failed


def _cuda_driver_problem() -> str | None:
    """Why the CUDA driver cannot serve, or None. Checked before ORT touches CUDA: without a
    driver, creating a CUDA training session aborts the process instead of raising."""
    import ctypes

    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "no NVIDIA driver (libcuda.so.1 cannot be loaded)"
    count = ctypes.c_int(0)
    status = cuda.cuInit(0)
    if status == 0:
        status = cuda.cuDeviceGetCount(ctypes.byref(count))
    if status != 0 or count.value == 0:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        return f"no CUDA device visible (CUDA_VISIBLE_DEVICES={visible!r}, driver status {status})"
    return None


def main() -> None:
    messages = Messages(_claim_stdout())
    try:
        request = json.load(sys.stdin)
        Training(request, messages).run()
    except (Fail, models.ModelError, data.DataError) as e:
        messages.send("result", status="error", message=str(e))
        sys.exit(1)
    except OSError as e:  # a full disk, a missing or read-only directory: name the file
        traceback.print_exc()
        messages.send("result", status="error", message=f"{e.strerror or e}: {e.filename}")
        sys.exit(1)
    except Exception as e:
        traceback.print_exc()  # to stderr, i.e. the stage's log
        messages.send("result", status="error", message=f"internal error in the train worker: {type(e).__name__}: {e}")
        sys.exit(1)


class Training:
    def __init__(self, request: dict, messages: Messages):
        self.msg = messages
        if request.get("protocol") != 1:
            raise Fail(f"the train worker speaks protocol 1, but the request has protocol {request.get('protocol')!r}")
        self.cfg = request["with"]
        self.train_opts = request["train"]
        self.inputs = request.get("inputs", {})
        self.outputs = request.get("outputs", {})
        unknown = sorted(k for k in self.inputs if k not in INPUT_NAMES and not k.startswith("stages."))
        if unknown:
            raise Fail(f"unknown input(s) {unknown}; the train stage takes {sorted(INPUT_NAMES)}")
        if "train" not in self.inputs:
            raise Fail("the train stage needs the input `train` (a directory with features.npy and labels.npy)")
        for name in ("model", "history", "artifacts"):
            if name not in self.outputs:
                raise Fail(f"the train stage must declare the output `{name}`")
        self.task = self.cfg["task"]
        self.loss = self.cfg["loss"]
        self.seed = int(self.cfg["seed"])

    # ---- setup -------------------------------------------------------------------------------

    def run(self) -> None:
        self.load_data()
        self.ort, self.api, artifacts, optim = _import_ort()
        forward, requires_grad, key_model = self.forward_model()
        self.decayed = regularize.decayed_params(forward, requires_grad)
        key = self.artifact_key(key_model, requires_grad)
        self.artifact_dir = self.ensure_artifacts(key, forward, requires_grad, artifacts, optim)
        self.config_key = _sha256_json({"artifacts": key, "with": self.cfg, "n_train": len(self.train_x)})
        self.train_loop()

    def load_data(self) -> None:
        self.train_x, train_y = data.load_split(self.inputs["train"], "train", self.task)
        if len(self.train_x) == 0:
            raise Fail(f"the training split {self.inputs['train']} has no rows\nhint: check the split stage's fractions")
        self.val_x = self.val_y = None
        if "val" in self.inputs:
            val_x, val_y = data.load_split(self.inputs["val"], "val", self.task)
            if val_x.shape[1:] != self.train_x.shape[1:] and len(val_x):
                raise Fail(
                    f"features.npy in {self.inputs['val']} has samples of shape {list(val_x.shape[1:])}, "
                    f"but in {self.inputs['train']} {list(self.train_x.shape[1:])}"
                )
            if len(val_x):
                self.val_x, self.val_y = val_x, val_y
        es = self.cfg.get("early_stopping")
        if self.val_x is None:
            if es:
                raise Fail(
                    "early_stopping needs a validation split, but "
                    + (f"{self.inputs['val']} has no rows" if "val" in self.inputs else "the stage has no `val` input")
                    + "\nhint: give the split stage a val fraction, or remove early_stopping"
                )
            self.msg.log("no validation data: no val metrics, and the model of the last epoch is exported", "warning")
        if es:
            wrong = {"classification": "val_rmse", "regression": "val_accuracy"}[self.task]
            if es["metric"] == wrong:
                raise Fail(f"early_stopping.metric {wrong} does not apply to task {self.task}\nhint: use val_loss")
        self.sample_shape = tuple(int(d) for d in self.train_x.shape[1:])
        self.out_size, self.out_why = self.output_size(train_y)
        self.train_labels = train_y
        self.target = self.target_statistics(train_y)
        self.train_y = self.graph_labels(train_y, self.inputs["train"])
        if self.val_x is not None:
            self.val_labels = self.val_y
            self.val_y = self.graph_labels(self.val_y, self.inputs["val"])

    def target_statistics(self, labels: np.ndarray) -> tuple[float, float] | None:
        """(mean, std) of the train split's regression targets when they are standardized, else
        None. Unscaled targets far from 0 (a mean of 155, or 1,000 + 100·x) leave the output
        bias to crawl there at the learning rate's pace while weight decay pulls the other way;
        standardized, every target sits where the initial model already is."""
        if self.task != "regression" or self.cfg.get("target_scaling", "none") != "standard":
            return None
        mean = float(np.mean(labels, dtype=np.float64))
        std = float(np.std(labels, dtype=np.float64))
        # A constant target (or a single row) keeps its units: there is nothing to scale by.
        if not math.isfinite(std) or std == 0.0:
            std = 1.0
        return mean, std

    def output_size(self, labels: np.ndarray) -> tuple[int, str]:
        """The model's output width, and words for where it comes from."""
        compatible = {"classification": ("cross_entropy", "bce_with_logits"), "regression": ("mse", "l1")}
        if self.loss not in compatible[self.task]:
            raise Fail(
                f"loss {self.loss} does not fit task {self.task}\nhint: use loss "
                + " or ".join(compatible[self.task])
            )
        if self.task == "regression":
            return 1, "task regression predicts one value"
        classes = self.cfg.get("classes")
        if classes is not None:
            k = len(classes)
            names = ", ".join(map(str, classes[:10])) + (", …" if k > 10 else "")
            source = f"there are {k} classes in preprocess.json ({names})"
        else:
            k = int(labels.max()) + 1
            source = f"there are {k} classes (the largest label in {self.inputs['train']}/labels.npy is {k - 1})"
        if self.loss == "bce_with_logits":
            if k != 2:
                raise Fail(f"loss bce_with_logits needs 2 classes, but {source}\nhint: use loss cross_entropy")
            return 1, "bce_with_logits takes one logit for 2 classes"
        return k, f"{source}, one logit each"

    def graph_labels(self, labels: np.ndarray, where: str) -> np.ndarray:
        """Labels in the form the loss graph takes: int64 [N] for cross entropy, float32 [N, 1]
        otherwise. Also checks class ids against the number of classes."""
        if self.task == "classification":
            k = 2 if self.loss == "bce_with_logits" else self.out_size
            bad = labels[(labels < 0) | (labels >= k)]
            if len(bad):
                raise Fail(
                    f"{where}/labels.npy has class id {int(bad[0])}, outside 0..{k - 1}: {self.out_why}"
                    "\nhint: the labels and preprocess.json must come from the same normalize run"
                )
            if self.loss == "cross_entropy":
                return labels
        if self.target is not None:
            mean, std = self.target
            labels = (labels.astype(np.float64) - mean) / std
        return labels.astype(np.float32).reshape(-1, 1)

    def forward_model(self):
        """The forward ONNX model, the parameters to train, and what identifies it in the cache key."""
        spec = self.cfg["model"]
        if spec["type"] != "onnx":
            features = os.path.join(self.inputs["train"], "features.npy")
            model, trainable = models.build(spec, features, self.sample_shape, self.out_size, self.task, self.seed)
            # The initial weights come from the seed, and they live in the artifacts' checkpoint.
            return model, trainable, {**spec, "seed": self.seed}
        path = self.inputs.get("model") or spec.get("path")
        if not path or not os.path.isfile(path):
            raise Fail(f"model.type onnx needs the model file as the input `model` (got {path!r})")
        features = os.path.join(self.inputs["train"], "features.npy")
        model, floats = models.prepare_user_model(path, features, self.sample_shape, self.out_size, self.task, self.out_why)
        trainable = models.trainable_names(floats, spec.get("trainable"), spec.get("frozen") or [], path)
        self.dry_run(model, path)
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        return model, trainable, {"type": "onnx", "sha256": digest}

    def dry_run(self, model, path: str) -> None:
        """Runs the user's model on two samples: catches shapes that only show at run time."""
        try:
            session = self.ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            out = session.run(None, {models.INPUT: self.train_x[:2]})[0]
        except Exception as e:
            raise Fail(
                f"the model {path} cannot run on the features (samples of shape {list(self.sample_shape)}): "
                f"{str(e).strip().splitlines()[-1]}"
            ) from e
        models.check_output_size(out.shape, self.out_size, path, self.out_why)

    # ---- artifacts ---------------------------------------------------------------------------

    def optimizer_spec(self) -> dict:
        """The optimizer settings baked into the artifacts (the lr and λ are inputs, not baked)."""
        o = self.cfg["optimizer"]
        if o["type"] == "adamw":
            # The optimizer graph decays nothing; the training graph decays the weights only
            # (regularize.py), when there is a decay to apply.
            return {"type": "adamw", "betas": list(o["betas"]), "eps": o["eps"], "weight_decay": 0.0,
                    "decay_in_training_graph": self.weight_decay() > 0}
        return {"type": "sgd"}

    def weight_decay(self) -> float:
        """AdamW's λ; 0 for SGD."""
        o = self.cfg["optimizer"]
        return float(o.get("weight_decay") or 0.0) if o["type"] == "adamw" else 0.0

    def artifact_key(self, key_model: dict, requires_grad: list) -> str:
        import onnx

        return _sha256_json({
            "format": FORMAT,
            "model": key_model,
            "requires_grad": sorted(requires_grad),
            "task": self.task,
            "input": list(self.sample_shape),
            "output": self.out_size,
            "loss": self.loss,
            "optimizer": self.optimizer_spec(),
            "onnx": onnx.__version__,
            "onnxruntime": self.ort.__version__,
        })

    def ensure_artifacts(self, key: str, forward, requires_grad: list, artifacts, optim) -> str:
        """Returns `<cache>/<key>`, generating it first when absent. Generation happens in a temp
        dir renamed into place, so the directory is complete whenever it exists; of two
        concurrent generators, the loser discards its copy and uses the winner's."""
        cache = self.train_opts["artifacts_cache"]
        final = os.path.join(cache, key)
        if os.path.isdir(final):
            self.msg.log(f"reusing training artifacts {key[:12]}")
            return final
        os.makedirs(cache, exist_ok=True)
        tmp = mkdtemp(cache, f".tmp-{key[:12]}-")
        started = time.monotonic()
        losses = {
            "cross_entropy": artifacts.LossType.CrossEntropyLoss,
            "mse": artifacts.LossType.MSELoss,
            "l1": artifacts.LossType.L1Loss,
            "bce_with_logits": artifacts.LossType.BCEWithLogitsLoss,
        }
        o = self.optimizer_spec()
        # AdamW's hyperparameters are attributes of the optimizer graph's node, hence the block.
        optimizer = (
            optim.AdamW(betas=tuple(o["betas"]), eps=o["eps"], weight_decay=o["weight_decay"])
            if o["type"] == "adamw"
            else optim.SGD()
        )
        try:
            with _stderr_kept_on_failure():
                artifacts.generate_artifacts(
                    forward,
                    requires_grad=requires_grad,
                    loss=losses[self.loss],
                    optimizer=optimizer,
                    artifact_directory=tmp,
                    additional_output_names=[models.output_name(self.task)],
                )
                if o.get("decay_in_training_graph") and self.decayed:
                    regularize.add_weight_decay(tmp, self.decayed)
            try:
                os.rename(tmp, final)
            except OSError:
                if not os.path.isdir(final):
                    raise
                self.msg.log(f"reusing training artifacts {key[:12]} (generated concurrently)")
                return final
        except Exception as e:
            raise Fail(f"cannot build the training graph for model.type {self.cfg['model']['type']}: {e}") from e
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.msg.log(f"generated training artifacts {key[:12]} in {time.monotonic() - started:.2f}s")
        return final

    # ---- training ----------------------------------------------------------------------------

    def choose_provider(self) -> None:
        self.provider = "CPUExecutionProvider"
        if self.train_opts.get("device") != "cuda":
            return
        _preload_cuda_libraries()
        if "CUDAExecutionProvider" not in self.ort.get_available_providers():
            self.cuda_unavailable(f"this onnxruntime build has only {self.ort.get_available_providers()}")
        elif problem := _cuda_driver_problem():
            self.cuda_unavailable(problem)
        else:
            self.provider = "CUDAExecutionProvider"

    def cuda_unavailable(self, why: str) -> None:
        """Falls back to the CPU when the device was chosen automatically; fails otherwise."""
        if not self.train_opts.get("auto"):
            raise Fail(
                f"CUDA was asked for (device: cuda) but the CUDA execution provider is unavailable: {why}"
                "\nhint: run `sluice setup --cuda`, or use device: auto"
            )
        self.msg.log(f"CUDA execution provider unavailable ({why}); training on CPU", "warning")
        self.provider = "CPUExecutionProvider"

    def open_module(self, checkpoint: str):
        """Loads `checkpoint` into a Module on the chosen provider: (state, module, optimizer)."""
        api = self.api
        cuda = self.provider == "CUDAExecutionProvider"
        try:
            state = api.CheckpointState.load_checkpoint(checkpoint)
            module = api.Module(
                os.path.join(self.artifact_dir, "training_model.onnx"),
                state,
                os.path.join(self.artifact_dir, "eval_model.onnx"),
                device="cuda" if cuda else "cpu",
            )
        except Exception as e:
            if not cuda:
                raise
            self.cuda_unavailable(str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__)
            return self.open_module(checkpoint)
        optimizer = api.Optimizer(os.path.join(self.artifact_dir, "optimizer_model.onnx"), module)
        return state, module, optimizer

    def lr_at(self, step: int) -> float:
        """Linear warmup to optimizer.lr over schedule.warmup_epochs, then linear decay to 0 or
        constant. Computed here rather than by ORT's LinearLRScheduler, which always starts at
        step 0: a resumed run must continue the schedule where it stopped."""
        base = float(self.cfg["optimizer"]["lr"])
        if step < self.warmup_steps:
            return base * step / self.warmup_steps
        if self.cfg["schedule"]["decay"] == "constant":
            return base
        return base * max(0.0, (self.total_steps - step) / max(1, self.total_steps - self.warmup_steps))

    def loss_failure(self, loss: float, epoch: int, b: int) -> Fail:
        """The error for a NaN or infinite loss at batch index `b` (named from 1) of `epoch`."""
        return Fail(
            f"the loss became {'NaN' if math.isnan(loss) else 'infinite'} at epoch {epoch}, batch {b + 1}"
            f"\nhint: lower the learning rate (optimizer.lr is {self.cfg['optimizer']['lr']})"
        )

    def train_loop(self) -> None:
        cfg = self.cfg
        epochs, batch_size = int(cfg["epochs"]), int(cfg["batch_size"])
        batches = data.batch_slices(len(self.train_x), batch_size)
        self.total_steps = epochs * len(batches)
        self.warmup_steps = round(float(cfg["schedule"]["warmup_epochs"]) * len(batches))
        augment = data.Augmenter(cfg.get("augment") or {})
        if not augment.active:
            augment = None
        elif len(self.sample_shape) != 3:
            self.msg.log("augment applies to images only; ignored for table features", "warning")
            augment = None
        es = cfg.get("early_stopping")
        self.best_metric = (es or {}).get("metric", "val_loss")
        lower_is_better = self.best_metric != "val_accuracy"
        min_delta = float(es["min_delta"]) if es else 0.0

        resume = Resume(self.train_opts["resume_dir"], self.config_key, self.api)
        st = resume.load(self.msg)
        resumed_from = st["epoch"] if st else None
        if st:
            self.msg.log(f"resuming from the checkpoint of epoch {st['epoch']}", "notice")
            checkpoint = os.path.join(resume.dir, st["checkpoint"])
        else:
            st = {"epoch": 0, "step": 0, "history": [], "best": None, "bad_epochs": 0, "stopped_early": False,
                  "checkpoint": None, "best_checkpoint": None, "warnings": []}
            checkpoint = os.path.join(self.artifact_dir, "checkpoint")
        self.choose_provider()
        state, module, optimizer = self.open_module(checkpoint)
        self.msg.log(f"training on {self.provider} (onnxruntime-training {self.ort.__version__})", "notice")
        module.train()
        saver = Saver(resume, state, module)

        step = st["step"]
        epoch = st["epoch"]
        n, n_batches = len(self.train_x), len(batches)
        # A constant learning rate is set once; only a schedule sets it every step.
        scheduled = self.warmup_steps > 0 or cfg["schedule"]["decay"] != "constant"
        lr = self.lr_at(step)
        optimizer.set_learning_rate(lr)
        # The hot loop reads locals only: on small models (iris: ~35 µs of graph work a batch)
        # the loop's own Python is a visible share of a step.
        msg, lr_at = self.msg, self.lr_at
        set_lr, optimizer_step, reset_grad = optimizer.set_learning_rate, optimizer.step, module.lazy_reset_grad
        # Weight decay: in the training graph, which takes the factor 1 − lr·λ as its last input
        # (`factor`: the Feed's tensor shares its memory, so a write reaches the next step); from
        # Python for the weights it could not take (none, usually), between the forward-backward
        # pass and the optimizer step, like the graph's.
        weight_decay = self.weight_decay()
        in_graph = regularize.decayed_in_graph(self.artifact_dir) if weight_decay > 0 else []
        factor = np.array([regularize.decay_factor(lr, weight_decay)], dtype=np.float32)
        feed = data.Feed(module, self.train_x, self.train_y, batch_size, (factor,) if in_graph else (), augment)
        train_step = feed.step
        decay = regularize.WeightDecay(state, [p for p in self.decayed if p not in in_graph], weight_decay)
        decay_step = decay.step if decay else None
        decay_factor = regularize.decay_factor
        isfinite, monotonic = math.isfinite, time.monotonic
        while epoch < epochs and not st["stopped_early"]:
            epoch += 1
            started = monotonic()
            # ORT's Dropout draws from a global generator: reseeding per epoch keeps masks
            # identical between an uninterrupted and a resumed run.
            self.ort.set_seed((self.seed * 1_000_003 + epoch) % 2**31)
            aug_rng = np.random.default_rng([self.seed, epoch, 1]) if augment else None
            feed.epoch(data.epoch_order(n, self.seed, epoch, bool(cfg["shuffle"])), aug_rng)
            loss_sum = 0.0
            for b, part in enumerate(batches):
                if scheduled:
                    lr = lr_at(step)
                    set_lr(lr)
                    factor[0] = decay_factor(lr, weight_decay)
                loss = train_step(b)
                if not isfinite(loss):
                    raise self.loss_failure(loss, epoch, b)
                if decay_step:
                    decay_step(lr)
                optimizer_step()
                reset_grad()
                step += 1
                loss_sum += loss * (part.stop - part.start)
                if monotonic() >= msg.progress_due:
                    msg.progress(
                        (epoch - 1) * n_batches + b + 1, self.total_steps, f"epoch {epoch}/{epochs} · loss {loss_sum / part.stop:.4f}"
                    )
            # The training phase ends with the last optimizer step: samples/s measures the shuffle,
            # forward, backward and update only, like bench/train_bench.py's bare loop. `seconds`
            # adds the epoch's final progress message and validation.
            train_seconds = monotonic() - started
            msg.progress(epoch * n_batches, self.total_steps, f"epoch {epoch}/{epochs} · loss {loss_sum / n:.4f}")
            row = {"epoch": epoch, "train_loss": loss_sum / n}
            if self.val_x is not None:
                row.update(self.evaluate(module))
            row.update(lr=lr, samples_per_sec=len(self.train_x) / train_seconds)
            row["seconds"] = time.monotonic() - started
            st["history"].append(row)
            improved = False
            if self.val_x is not None:
                value, best = row[self.best_metric], st["best"]
                improved = best is None or (
                    value < best["value"] - min_delta if lower_is_better else value > best["value"] + min_delta
                )
                if improved:
                    st["best"] = {"metric": self.best_metric, "value": value, "epoch": epoch}
                    st["bad_epochs"] = 0
                else:
                    st["bad_epochs"] += 1
                    st["stopped_early"] = bool(es) and st["bad_epochs"] >= int(es["patience"])
            self.report_epoch(row, epochs)
            self.check_loss_growth(st)
            st.update(epoch=epoch, step=step)
            saver.epoch_done(st, improved, last=epoch == epochs or st["stopped_early"])
            if st["stopped_early"]:
                self.msg.log(
                    f"early stopping after epoch {epoch}: {self.best_metric} has not improved for "
                    f"{st['bad_epochs']} epochs (best {st['best']['value']:.4f} at epoch {st['best']['epoch']})"
                )
        saver.close()
        self.finish(st, resume, saver, resumed_from)

    def evaluate(self, module) -> dict:
        module.eval()
        loss_sum, outputs = 0.0, []
        for part in data.batch_slices(len(self.val_x), EVAL_BATCH):
            loss, out = data.evaluate_outputs(module, self.val_x[part], self.val_y[part])
            loss_sum += float(loss) * (part.stop - part.start)
            outputs.append(out)
        module.train()
        out = np.concatenate(outputs)
        row = {"val_loss": loss_sum / len(self.val_x)}
        if self.task == "regression":
            row["val_rmse"] = float(np.sqrt(np.mean((self.target_units(out[:, 0]) - self.val_labels) ** 2)))
        else:
            predicted = (out[:, 0] > 0).astype(np.int64) if self.loss == "bce_with_logits" else out.argmax(axis=1)
            row["val_accuracy"] = float(np.mean(predicted == self.val_labels))
        return row

    def target_units(self, predictions: np.ndarray) -> np.ndarray:
        """Predictions of the training graph in the units of the labels."""
        if self.target is None:
            return predictions
        mean, std = self.target
        return predictions.astype(np.float64) * std + mean

    def warn(self, st: dict, kind: str, message: str) -> None:
        """A warning for the log and for history.json's `warnings`."""
        st["warnings"].append({"kind": kind, "message": message})
        self.msg.log(message, "warning")

    def check_loss_growth(self, st: dict) -> None:
        """Warns, once, when the training loss keeps growing."""
        if any(w["kind"] == "loss_growing" for w in st["warnings"]):
            return
        if message := regularize.loss_growth(st["history"], self.cfg["optimizer"]["lr"]):
            self.warn(st, "loss_growing", message)

    def report_epoch(self, row: dict, epochs: int) -> None:
        for name in ("train_loss", "val_loss", "val_accuracy", "val_rmse", "lr", "samples_per_sec"):
            if name in row:
                # One message per epoch (`step` = epoch) is what a sweep's pruning judges. JSON
                # has no NaN or infinity, so those go as the text the protocol accepts ("nan").
                value = float(row[name])
                value = value if math.isfinite(value) else str(value)
                self.msg.send("metric", name=name, value=value, step=row["epoch"])
        parts = [f"{n} {row[n]:.4g}" for n in ("train_loss", "val_loss", "val_accuracy", "val_rmse", "lr") if n in row]
        self.msg.log(
            f"epoch {row['epoch']}/{epochs}: {' · '.join(parts)} · {row['samples_per_sec']:.0f} samples/s · {row['seconds']:.2f}s"
        )

    # ---- outputs -----------------------------------------------------------------------------

    def finish(self, st: dict, resume: "Resume", saver: "Saver", resumed_from) -> None:
        """Exports the best epoch's weights (by the early-stopping metric, else val_loss) when
        there is validation, else the last epoch's; then writes the outputs and clears the
        resume directory."""
        best = st["best"]
        exported = best["epoch"] if best else st["epoch"]
        state, module = saver.state, saver.module
        if best and best["epoch"] != st["epoch"] and not saver.load_best():
            state, module, _ = self.open_module(os.path.join(resume.dir, st["best_checkpoint"]))
            self.msg.log(f"exporting the model of epoch {exported}, the best by {best['metric']}")
        name = models.output_name(self.task)

        def export(path: str) -> None:
            if self.target is None:
                module.export_model_for_inferencing(path, [name])
                return
            # The graph is trained on standardized targets; the exported model maps them back,
            # so evaluate, serve and any ONNX consumer see target units.
            module.export_model_for_inferencing(path, [name])
            models.append_target_inverse(path, *self.target)

        atomic_file(self.outputs["model"], export)

        def write_artifacts(tmp: str) -> None:
            for file in ("training_model.onnx", "eval_model.onnx", "optimizer_model.onnx"):
                shutil.copyfile(os.path.join(self.artifact_dir, file), os.path.join(tmp, file))
            self.api.CheckpointState.save_checkpoint(state, os.path.join(tmp, "checkpoint"))

        atomic_dir(self.outputs["artifacts"], write_artifacts)
        st.setdefault("warnings", [])
        rows = st["history"]
        baseline = None if self.val_x is None else regularize.baseline(self.task, self.train_labels, self.val_labels)
        if rows and baseline and (message := regularize.worse_than_baseline(rows[exported - 1], baseline)):
            self.warn(st, "worse_than_baseline", message)
        history = {
            "format": 1,
            "task": self.task,
            "provider": self.provider,
            "device": "cuda" if self.provider == "CUDAExecutionProvider" else "cpu",
            "seed": self.seed,
            "epochs": st["history"],
            "best_epoch": exported,
            "best": {"metric": best["metric"], "value": best["value"]} if best else None,
            "stopped_early": st["stopped_early"],
            "resumed_from_epoch": resumed_from,
            # Training graph outputs and losses are in these units; the exported model's are not.
            "target_scaling": (
                {"method": "standard", "mean": self.target[0], "std": self.target[1]} if self.target else None
            ),
            "baseline": baseline,
            "warnings": st["warnings"],
        }
        atomic_file(self.outputs["history"], lambda p: write_json(p, history))
        resume.clear()
        metrics = {"best_epoch": exported, "epochs_run": len(rows)}
        if rows:
            final, at_best = rows[-1], rows[exported - 1]
            metrics["train_loss"] = final["train_loss"]
            metrics.update({n: at_best[n] for n in ("val_loss", "val_accuracy", "val_rmse") if n in at_best})
            metrics["samples_per_sec"] = statistics.median(r["samples_per_sec"] for r in rows)
        self.msg.send("result", status="ok", metrics=metrics)


def _sha256_json(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@contextlib.contextmanager
def _stderr_kept_on_failure():
    """The gradient builder logs every graph pass at info level to fd 2. Park that in a temp file
    and pass it on to the log only if generation fails."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as parked:
        os.dup2(parked.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            parked.seek(0)
            sys.stderr.buffer.write(parked.read()[-20000:])
            sys.stderr.flush()
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


if __name__ == "__main__":
    main()
