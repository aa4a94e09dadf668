"""Tests of the trainer package: corpus, aliases, training, resume, CLI errors."""
