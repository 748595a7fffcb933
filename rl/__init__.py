"""unigrpo rl package."""
