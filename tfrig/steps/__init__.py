"""Host steps that more than one namespace reads: a target's GPUs and its TensorFlow environment."""
