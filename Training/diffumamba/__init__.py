"""DiffUMambaSeg core: networks, training, inference and evaluation for lung-tumour GTV segmentation."""

__version__ = "0.1.0"
