"""Data collection, labeling, validation and preparation: arrays and frames in, arrays out."""
