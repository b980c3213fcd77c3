"""Contrastive losses, one module per loss. Import the module you need: each imports torch."""
