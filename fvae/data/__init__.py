"""Data: datasets by name or path, idx files, prepared arrays, images to score, batch order."""
from fvae.data.arrays import load_images, load_labels
from fvae.data.datasets import DataError, ImageFolder, dequantize, embedded_mnist
from fvae.data.load import NAMED, dataset_key, load_dataset

__all__ = ["DataError", "ImageFolder", "NAMED", "dataset_key", "dequantize", "embedded_mnist", "load_dataset",
           "load_images",
           "load_labels"]
