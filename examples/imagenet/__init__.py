"""ImageNet ResNet-18/34/50 with LUT-Q (Table 2 of the paper)."""
