"""Data-parallel training with tf.distribute: ``zoo.distribute.strategy("mirrored")``.

Each replica (a GPU) holds a copy of the model and takes a slice of every global batch; gradients
are summed across replicas before each update. ``batch_size`` is always the global batch, and
``zoo.distribute.batch_plan`` shows how it splits and how the learning rate scales with it. Here
the pretrained ``resnet_tiny.digits`` is fine-tuned on scikit-learn's digits 5-9.

Without GPUs, ``--cpu-devices 2`` splits the CPU into two logical devices (before TensorFlow
starts) so that the same code runs with two replicas on any machine.

Run:  python examples/multi_gpu.py [--cpu-devices 2] [--quick]
"""
import argparse

import tensorflow as tf

parser = argparse.ArgumentParser(description="data-parallel fine-tuning with MirroredStrategy")
parser.add_argument("--cpu-devices", type=int, default=0, help="split the CPU into this many logical devices")
parser.add_argument("--quick", action="store_true", help="2 epochs on 20 images per class")
args = parser.parse_args()
if args.cpu_devices:  # must come before anything else touches TensorFlow's devices
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.cpu_devices)

import zoo  # noqa: E402  (after the device split, to make the order plain)

# all GPUs by default; the logical CPU devices when asked for them
devices = [d.name for d in tf.config.list_logical_devices("CPU")] if args.cpu_devices else None
strategy = zoo.distribute.strategy("mirrored", devices=devices)
print(f"replicas in sync: {strategy.num_replicas_in_sync} ({', '.join(strategy.extended.worker_devices)})")

plan = zoo.distribute.batch_plan(strategy, batch_size=64, learning_rate=1e-3, scale_rule="linear")
print("batch plan:", plan.describe())

with strategy.scope():  # the model's variables are mirrored on every replica
    model = zoo.create_model("resnet_tiny.digits", num_classes=5, input_shape=(16, 16))
result = zoo.finetune(model, "digits", strategy=strategy, recipe="full", epochs=2 if args.quick else 8,
                      batch_size=plan.global_batch_size, learning_rate=plan.base_learning_rate,
                      lr_scaling=plan.scale_rule, verbose=0 if args.quick else 2,
                      data_options={"classes": [5, 6, 7, 8, 9], "per_class": 20 if args.quick else None})
variable = result.model.trainable_weights[0].value
print(f"each weight is a {type(variable).__name__}, a copy on {', '.join(v.device for v in variable.values)}")
print(f"test accuracy {result.metrics['test_accuracy']:.3f}")
