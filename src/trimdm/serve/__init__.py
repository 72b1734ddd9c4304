"""The web server of a trained run: an HTTP API mirroring `trimdm generate` and a page that shows the
canvas revealing itself step by step (app.py; docs/serve.md)."""
