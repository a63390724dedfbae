"""The Keras classes of the custom-layer fixture (fixtures/models/
k3_custom_layers), as a model repository defines them; given to
``--custom-objects`` so that verification can load the model."""
import keras


@keras.saving.register_keras_serializable(package="fixtures")
class Scale(keras.layers.Layer):
    def call(self, x):
        return x * 2.0


@keras.saving.register_keras_serializable(package="fixtures")
class Shift(keras.layers.Layer):
    def call(self, x):
        return x + 1.0
