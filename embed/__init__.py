"""Image to vector: safe decoding and the ResNet50 encoder."""
