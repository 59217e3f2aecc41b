"""only_train_once: joint structured pruning and mixed-precision quantization while training (GETA / HESSO)."""
