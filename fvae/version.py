"""fvae's version, read by the package, its Hub folders and its build."""
__version__ = "0.13.3"
