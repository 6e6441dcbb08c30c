# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""ResNet-18/34 (basic blocks) and ResNet-50 (bottleneck) for ImageNet, float or LUT-Q.

Built through the shared layer choice (:class:`examples.common.models.Layers`), so the float
network and its LUT-Q twin have the same scope names and a float run's parameters initialize a
LUT-Q run (``--init``). Every convolution and the final affine layer are LUT-Q, the first and the
last included, as in the paper (``Layers(quantize_first_last=False)`` keeps them float).

The architecture is the standard one (He et al. 2016; torchvision / nnabla-examples "resnet"
with ``stride_on_1x1=False``): a 7x7/2 stem with 3x3/2 max pooling, four stages of 64/128/256/512
maps, the stride on the 3x3 convolution of the first block of a stage, a 1x1 projection
shortcut where the shape changes, global average pooling and an affine classifier.
"""
import nnabla.functions as F

__all__ = ['ARCHS', 'resnet', 'resnet18', 'resnet34', 'resnet50']

#: blocks per stage and the block type of each depth
ARCHS = {18: ((2, 2, 2, 2), 'basic'), 34: ((3, 4, 6, 3), 'basic'),
         50: ((3, 4, 6, 3), 'bottleneck')}


def _basic(h, layers, test, name, maps, stride):
    r = layers.act(layers.bn(layers.conv(h, maps, (3, 3), name + '/conv1', pad=(1, 1),
                                         stride=stride), test, name + '/bn1'), test, name + '/act1')
    r = layers.bn(layers.conv(r, maps, (3, 3), name + '/conv2', pad=(1, 1)), test, name + '/bn2')
    return r, maps


def _bottleneck(h, layers, test, name, maps, stride):
    r = layers.act(layers.bn(layers.conv(h, maps, (1, 1), name + '/conv1'), test, name + '/bn1'),
                   test, name + '/act1')
    r = layers.act(layers.bn(layers.conv(r, maps, (3, 3), name + '/conv2', pad=(1, 1),
                                         stride=stride), test, name + '/bn2'), test, name + '/act2')
    r = layers.bn(layers.conv(r, 4 * maps, (1, 1), name + '/conv3'), test, name + '/bn3')
    return r, 4 * maps


def resnet(x, layers, depth=18, test=False, n_classes=1000):
    """ResNet-``depth`` for ImageNet-style images.

    Args:
        x (~nnabla.Variable): images (B, 3, H, W), already normalized; H, W >= 32.
        layers (~examples.common.models.Layers): the layer choice (float or LUT-Q).
        depth (int): 18, 34 or 50.
        test (bool): build the inference graph.
        n_classes (int): outputs of the classifier.

    Returns:
        ~nnabla.Variable: logits (B, n_classes).

    Raises:
        ValueError: for another depth.
    """
    if depth not in ARCHS:
        raise ValueError(f"ResNet depth {depth} is not available; use one of {sorted(ARCHS)}")
    counts, kind = ARCHS[depth]
    block = _basic if kind == 'basic' else _bottleneck
    h = layers.act(layers.bn(layers.conv(x, 64, (7, 7), 'conv0', pad=(3, 3), stride=(2, 2),
                                         edge=True), test, 'bn0'), test, 'act0')
    h = F.max_pooling(h, (3, 3), (2, 2), pad=(1, 1))
    for stage, (n, maps) in enumerate(zip(counts, (64, 128, 256, 512))):
        for b in range(n):
            name = f'res{stage + 1}/b{b}'
            stride = (2, 2) if stage > 0 and b == 0 else (1, 1)
            r, out_maps = block(h, layers, test, name, maps, stride)
            if stride != (1, 1) or h.shape[1] != out_maps:
                h = layers.bn(layers.conv(h, out_maps, (1, 1), name + '/short', stride=stride),
                              test, name + '/bn_short')
            h = layers.act(h + r, test, name + '/act_out')
    h = F.average_pooling(h, h.shape[2:])
    return layers.affine(h, n_classes, 'fc', edge=True)


def resnet18(x, layers, test=False, n_classes=1000):
    """ResNet-18 (see :func:`resnet`)."""
    return resnet(x, layers, 18, test, n_classes)


def resnet34(x, layers, test=False, n_classes=1000):
    """ResNet-34 (see :func:`resnet`)."""
    return resnet(x, layers, 34, test, n_classes)


def resnet50(x, layers, test=False, n_classes=1000):
    """ResNet-50 (see :func:`resnet`)."""
    return resnet(x, layers, 50, test, n_classes)
