"""The Keras classes of the custom-layer path's fixture (fixtures/models/
k2_custom_port, k3_custom_port), as the model's own code defines them;
given to ``--custom-objects`` so that verification can load the model.
Registers them with the Keras that the verifying process runs (Keras 3, or
tf-keras for Keras 2 files)."""
import sys

if "tf_keras" in sys.modules:
    import tf_keras as keras
else:
    import keras


@keras.saving.register_keras_serializable(package="fixtures")
def hard_swish(x):
    return x * keras.activations.relu(x + 3.0, max_value=6.0) / 6.0


@keras.saving.register_keras_serializable(package="fixtures")
class GatedScale(keras.layers.Layer):
    """y = x * sigmoid(gate) * scale + offset, per channel (axis)."""

    def __init__(self, offset=0.0, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.offset, self.axis = offset, axis

    def build(self, input_shape):
        n = input_shape[self.axis]
        self.gate = self.add_weight(name="gate", shape=(n,),
                                    initializer="zeros")
        self.scale = self.add_weight(name="scale", shape=(n,),
                                     initializer="ones")

    def call(self, x):
        return (x * keras.activations.sigmoid(self.gate) * self.scale
                + self.offset)

    def get_config(self):
        return dict(super().get_config(), offset=self.offset,
                    axis=self.axis)
