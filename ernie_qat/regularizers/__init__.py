"""Weight-distribution regularizers, added to the task loss as loss terms (`regularizer:` config)."""
