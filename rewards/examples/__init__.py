"""Example user rewards, configured by `path:` exactly like a reward from your own package."""
