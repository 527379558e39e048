"""The core: numpy and the BLAS that scipy ships."""
