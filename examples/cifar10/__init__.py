"""ResNet-20 on CIFAR-10."""
