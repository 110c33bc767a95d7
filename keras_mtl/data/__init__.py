"""Reading the Cityscapes multitask layout: discovery, decoding, tf.data pipeline."""
