"""Model serving: registry -> preprocess -> MicroBatcher -> ModelBackend."""
