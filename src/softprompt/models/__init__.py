"""The frozen model with its prompt bank (SoftPromptModel), loading, embedded models, caches and sharded weights."""
