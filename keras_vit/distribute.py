"""Training on several devices and machines with TensorFlow's `tf.distribute`.

`make_strategy(name, tpu=None)` picks one of TensorFlow's own strategies:

- `"auto"`: `MirroredStrategy` over the local GPUs when more than one is visible, the
  default (one-device) strategy otherwise.
- `"default"`: `tf.distribute.get_strategy()`, one device.
- `"mirrored"`: `MirroredStrategy` over every local GPU, or over every logical CPU device
  when there is no GPU (how the tests run two replicas on a CPU).
- `"multiworker"`: `MultiWorkerMirroredStrategy`, the cluster read from the `TF_CONFIG`
  environment variable (TensorFlow's own contract) by `TFConfigClusterResolver`; it is
  checked first, so a missing or malformed one is a one-line `DistributeError`. The
  strategy must be created before TensorFlow runs anything else in the process.
- `"tpu"`: `TPUStrategy` over `TPUClusterResolver(tpu=...)` (a Cloud TPU name, `"local"`
  on a TPU VM, or a `grpc://host:port` address). A `grpc://` address is probed with a plain
  TCP connection first and the TPU system is initialised with a time limit, so an
  unreachable TPU fails in seconds instead of hanging.

Rules a training run follows (`keras_vit.training.train`):

- Batch sizes are global: each of the R replicas gets `batch_size / R` examples per step,
  and a batch size not divisible by R is refused (`check_global_batch`).
- Learning rate: no automatic rule. Because the batch size is global, the same command on
  1, 2 or 8 replicas runs the same optimisation (the tests check that two replicas give the
  one-device loss trajectory); scaling the learning rate with the replica count would
  break that. Who raises the global batch picks the learning rate; the usual start is the
  linear rule of Goyal et al. / DeiT (`lr = 5e-4 * batch / 512` for AdamW from scratch),
  with the warmup the recipes already have.
- Input sharding (multi-worker only; one machine splits each global batch between its
  replicas): `AutoShardPolicy.DATA` for every source, set explicitly (`with_shard_policy`).
  Every worker runs the same seeded pipeline and keeps its share of each global batch, so
  the global batches, their order and their augmentations are those of a one-machine run.
  `FILE` does not apply to tensorflow-datasets' TFRecord files either: tf.data's
  FILE rewrite stops at the per-example seed stream (`tf.data.Dataset.random`) zipped
  into the training pipeline ("Did not find a shardable source"), and digits (in memory)
  and image folders (a list of paths read by a Python function) have no file reader to
  shard at all. The cost: each worker reads the whole split once (then it is cached).
- Mixed precision (`mixed_precision_policy`): `mixed_float16` when the replicas are GPUs,
  `mixed_bfloat16` on TPUs and CPUs; variables stay float32. Loss scaling (float16 only):
  Keras 3's `compile(auto_scale_loss=True)` wraps the optimizer in a `LossScaleOptimizer`
  only when the model's *own* policy is `mixed_float16`, and the functional
  `VisionTransformer` keeps float32 as its own policy (its layers get the mixed one), so
  nothing would be wrapped; `keras_vit.training.build_training_model` wraps it itself.
- Multi-worker: only the chief (task `chief`, or `worker` 0 when there is no chief) writes
  the run directory. Every worker runs the same saving code, because reading Keras'
  metric variables (`synchronization="on_read"`) is a collective operation; a non-chief
  writes into `worker_scratch_dir(output, task)` and deletes it at once (the pattern of
  TensorFlow's multi-worker Keras tutorial). `BackupAndRestore` resumes from the chief's
  `backup/`, which every worker reads, so `--output` must be on storage all workers
  share (a network file system or a bucket) for `--resume`.

Why `prepare_model_for_fit` exists: `MirroredStrategy` works with `model.fit` as is; Keras 3's
`model.fit` under a multi-worker `MultiWorkerMirroredStrategy` fails twice
(tensorflow/tensorflow#72388, keras-team/keras#20585, still open): (1) before the first
step it all-reduces a nested batch with `strategy.reduce`, which MWMS cannot
("Attempt to convert a value (PerReplica...)"); (2) it reduces the scalar logs of each
step with `strategy.reduce("MEAN", value, axis=0)` ("Invalid reduction dimension 0 for
input with 0 dimensions"). And under any strategy other than the default, `fit` first
draws one batch to build the metrics, which starts (and discards) a pass of the dataset:
the seeded, reshuffled-each-pass order of epoch 1 then becomes that of epoch 2 of a
one-device run.
`prepare_model_for_fit` works around all three: it builds the compiled metrics and loss
from the dataset's element spec up front (so `fit` skips its pre-build), and under MWMS it
makes the train and test steps return their logs as `[1]` vectors (so the cross-worker
mean over axis 0 is well defined and gives scalars again). With these, two workers log
identical, global metrics and `BackupAndRestore` works.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import tensorflow as tf

logger = logging.getLogger(__name__)

StrategyName = Literal["auto", "default", "mirrored", "multiworker", "tpu"]
STRATEGIES: tuple[str, ...] = ("auto", "default", "mirrored", "multiworker", "tpu")
# The multi-worker jobs MultiWorkerMirroredStrategy knows.
WORKER_JOBS = ("chief", "worker")
# Seconds to reach and initialise a TPU before giving up.
TPU_TIMEOUT_S = 60.0
WORKER_SCRATCH_PREFIX = ".workertemp_"


class DistributeError(ValueError):
    """A strategy that cannot be set up; the message is one line naming the culprit."""


# --- TF_CONFIG -----------------------------------------------------------------------


def parse_tf_config(text: str | None) -> dict:
    """Checks a `TF_CONFIG` value for a `MultiWorkerMirroredStrategy` cluster.

    Args:
        text: the JSON text of `TF_CONFIG`, or None when it is not set.

    Returns:
        The parsed `{"cluster": {job: ["host:port", ...]}, "task": {"type", "index"}}`.

    Raises:
        DistributeError: not set, not JSON, or not a valid cluster (one line).

    Example:
    >>> parse_tf_config('{"cluster": {"worker": ["127.0.0.1:2222"]}, '
    ...                 '"task": {"type": "worker", "index": 0}}')["task"]["index"]
    0
    """
    if not text or not text.strip():
        raise DistributeError(
            "--strategy multiworker reads the cluster from the TF_CONFIG environment "
            "variable, which is not set (expected JSON like "
            '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
            '"task": {"type": "worker", "index": 0}})'
        )
    try:
        config = json.loads(text)
    except ValueError as error:
        raise DistributeError(f"TF_CONFIG is not valid JSON ({error})") from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict):
        raise DistributeError(f"TF_CONFIG has no 'cluster' object. Received: {text.strip()}")
    cluster, task = config["cluster"], config.get("task")
    if not isinstance(task, dict):
        raise DistributeError(f"TF_CONFIG has no 'task' object. Received: {text.strip()}")
    if not cluster:
        raise DistributeError("TF_CONFIG's 'cluster' names no jobs")
    for job, addresses in cluster.items():
        if job not in WORKER_JOBS:
            raise DistributeError(
                f"TF_CONFIG's cluster has a {job!r} job; MultiWorkerMirroredStrategy takes "
                f"only {' and '.join(repr(j) for j in WORKER_JOBS)}"
            )
        if not isinstance(addresses, list) or not addresses:
            raise DistributeError(
                f"TF_CONFIG's cluster job {job!r} must be a non-empty list of 'host:port'. "
                f"Received: {addresses!r}"
            )
        for address in addresses:
            host, _, port = str(address).rpartition(":")
            if not isinstance(address, str) or not host or not port.isdigit():
                raise DistributeError(
                    f"TF_CONFIG's cluster job {job!r} has address {address!r}; expected 'host:port'"
                )
    if len(cluster.get("chief", [])) > 1:
        raise DistributeError("TF_CONFIG's cluster has more than one 'chief'")
    kind, index = task.get("type"), task.get("index")
    if kind not in cluster:
        raise DistributeError(
            f"TF_CONFIG's task type {kind!r} is not a job of its cluster "
            f"({', '.join(sorted(cluster))})"
        )
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(cluster[kind]):
        raise DistributeError(
            f"TF_CONFIG's task index {index!r} is out of range for job {kind!r} "
            f"({len(cluster[kind])} address{'es' if len(cluster[kind]) != 1 else ''})"
        )
    return config


# --- strategies ----------------------------------------------------------------------


def _mirrored() -> tf.distribute.Strategy:
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=devices)


def _multiworker() -> tf.distribute.Strategy:
    parse_tf_config(os.environ.get("TF_CONFIG"))
    try:
        return tf.distribute.MultiWorkerMirroredStrategy(
            cluster_resolver=tf.distribute.cluster_resolver.TFConfigClusterResolver()
        )
    except (RuntimeError, ValueError) as error:
        raise DistributeError(
            f"Cannot start MultiWorkerMirroredStrategy: {_first_line(error)}"
        ) from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def _probe(address: str, timeout: float) -> None:
    parsed = urlparse(address)
    if parsed.scheme != "grpc" or not parsed.hostname or not parsed.port:
        return
    try:
        socket.create_connection((parsed.hostname, parsed.port), timeout=timeout).close()
    except OSError as error:
        raise DistributeError(f"No TPU reachable at {address} ({error})") from None


def _tpu(tpu: str | None, timeout: float) -> tf.distribute.Strategy:
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        master = resolver.master()
    except Exception as error:  # ValueError, URLError from the metadata server, ...
        raise DistributeError(
            f"Cannot find the TPU {tpu!r} (--tpu takes a Cloud TPU name, 'local' on a TPU VM "
            f"or grpc://host:port): {_first_line(error)}"
        ) from None
    _probe(master, min(timeout, 10.0))
    outcome: dict = {}

    def connect():
        try:
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            outcome["ok"] = True
        except Exception as error:  # TF raises many types here
            outcome["error"] = error

    # A thread bounds the wait: TensorFlow's own connection attempt has no time limit.
    thread = threading.Thread(target=connect, name="tpu-connect", daemon=True)
    thread.start()
    thread.join(timeout)
    if "error" in outcome:
        raise DistributeError(f"No TPU at {tpu!r}: {_first_line(outcome['error'])}")
    if "ok" not in outcome:
        raise DistributeError(f"No TPU answered at {master or tpu!r} within {timeout:g} s")
    return tf.distribute.TPUStrategy(resolver)


def make_strategy(
    name: StrategyName = "auto", *, tpu: str | None = None, tpu_timeout: float = TPU_TIMEOUT_S
) -> tf.distribute.Strategy:
    """One of TensorFlow's distribution strategies (see the module docstring).

    Args:
        name: `"auto"`, `"default"`, `"mirrored"`, `"multiworker"` or `"tpu"`.
        tpu: for `"tpu"`: a Cloud TPU name, `"local"`, or `grpc://host:port`.
        tpu_timeout: seconds to reach and initialise the TPU.

    Returns:
        A `tf.distribute.Strategy`.

    Raises:
        DistributeError: unknown name, missing or malformed `TF_CONFIG`, unreachable TPU,
            `tpu` given without the `"tpu"` strategy (one line).

    Example:
    >>> strategy = make_strategy("auto")
    >>> strategy.num_replicas_in_sync
    1
    """
    if name not in STRATEGIES:
        raise DistributeError(
            f"Unknown strategy {name!r}. Expected one of: {', '.join(STRATEGIES)}"
        )
    if tpu is not None and name != "tpu":
        raise DistributeError(f"--tpu {tpu} needs --strategy tpu (got {name!r})")
    if name == "auto":
        name = "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "default"
    if name == "default":
        strategy = tf.distribute.get_strategy()
    elif name == "mirrored":
        strategy = _mirrored()
    elif name == "multiworker":
        strategy = _multiworker()
    else:
        strategy = _tpu(tpu, tpu_timeout)
    # One device is the ordinary case: worth a line only when it is not.
    level = logging.INFO if strategy.num_replicas_in_sync > 1 else logging.DEBUG
    logger.log(
        level,
        "Strategy %s: %d replica%s",
        type(strategy).__name__,
        strategy.num_replicas_in_sync,
        "" if strategy.num_replicas_in_sync == 1 else "s",
    )
    return strategy


# --- facts about a strategy ----------------------------------------------------------


def task_of(strategy: tf.distribute.Strategy) -> tuple[str | None, int]:
    """`(task type, task index)` of this process; `(None, 0)` outside a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return None, 0
    return resolver.task_type, int(resolver.task_id or 0)


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """Worker processes in the cluster (1 on one machine)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or isinstance(strategy, tf.distribute.TPUStrategy):
        return 1
    spec = resolver.cluster_spec().as_dict()
    return max(1, sum(len(spec.get(job, [])) for job in WORKER_JOBS))


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's files: the `chief` task, else `worker` 0."""
    kind, index = task_of(strategy)
    if kind is None or kind == "chief":
        return True
    spec = strategy.cluster_resolver.cluster_spec().as_dict()
    return kind == "worker" and index == 0 and "chief" not in spec


def worker_scratch_dir(output: str | os.PathLike, strategy: tf.distribute.Strategy) -> Path:
    """Where a non-chief worker writes what the chief writes into `output` (then deletes)."""
    kind, index = task_of(strategy)
    return Path(output) / f"{WORKER_SCRATCH_PREFIX}{kind}_{index}"


def check_global_batch(batch_size: int, strategy: tf.distribute.Strategy) -> None:
    """Raises a one-line `DistributeError` if the replicas cannot split the global batch."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise DistributeError(
            f"The global batch size {batch_size} is not divisible by the {replicas} replicas "
            f"of {type(strategy).__name__}; use a multiple of {replicas} for --batch-size"
        )


def mixed_precision_policy(strategy: tf.distribute.Strategy) -> str:
    """`"mixed_float16"` when the strategy's replicas are GPUs, else `"mixed_bfloat16"`."""
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "mixed_bfloat16"
    try:
        devices = tuple(strategy.extended.worker_devices)
    except RuntimeError:  # the default strategy has no device list
        devices = ()
    if devices:
        on_gpu = all("GPU" in tf.DeviceSpec.from_string(d).device_type.upper() for d in devices)
    else:
        on_gpu = bool(tf.config.list_logical_devices("GPU"))
    return "mixed_float16" if on_gpu else "mixed_bfloat16"


def with_shard_policy(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` with the explicit `AutoShardPolicy.DATA` (see the module docstring)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _in_multi_worker_mode(strategy: tf.distribute.Strategy) -> bool:
    return (
        isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        and num_workers(strategy) > 1
    )


def _vector_logs(step):
    def wrapped(data):
        return {key: tf.reshape(value, [1]) for key, value in step(data).items()}

    return wrapped


def prepare_model_for_fit(model, strategy: tf.distribute.Strategy, element_spec) -> None:
    """Makes `model.fit` under `strategy` run as on one device (module docstring).

    A model created inside a strategy's scope gets its compiled metrics and loss built from
    `element_spec` here, so that `fit` neither draws a batch to build them (which costs a
    pass of the dataset and so changes the seeded shuffle order of every epoch) nor, under
    `MultiWorkerMirroredStrategy`, all-reduces that batch (which fails). Under a
    multi-worker strategy the train and test steps return `[1]`-shaped logs (Keras'
    cross-worker mean reduces over axis 0). Call it inside `strategy.scope()` after
    `model.compile`, and call `model.fit` inside `strategy.scope()` too.

    Args:
        model: a compiled Keras model.
        strategy: the strategy the model was created under.
        element_spec: `(images, labels)` `tf.TensorSpec`s of the training batches.
    """
    if getattr(model, "_distribute_strategy", None) is not None:
        model._symbolic_build(data_batch=element_spec)
        # With no strategy of its own, Keras uses the one in scope and skips its pre-build.
        model._distribute_strategy = None
    if _in_multi_worker_mode(strategy):
        model.train_step = _vector_logs(model.train_step)
        model.test_step = _vector_logs(model.test_step)
