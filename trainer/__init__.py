"""unigrpo trainer package."""
