"""trimdm: tri-modal masked diffusion models."""
__version__ = "0.1.0"
