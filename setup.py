# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
from setuptools import setup, find_packages

setup(
    name='nnabla-lutq',
    version='0.1.0',
    description='LUT-Q (look-up table quantization) for Neural Network Libraries (nnabla)',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    packages=find_packages(include=['nnabla_lutq', 'nnabla_lutq.*']),
    # the fused k-means kernels: their source and the PTX the driver loads
    package_data={'nnabla_lutq.kmeans': ['cuda/kmeans.cu', 'cuda/kmeans.ptx']},
    python_requires='>=3.8,<3.11',
    install_requires=['nnabla==1.39.*', 'numpy>=1.20,<2', 'h5py', 'tqdm'],
    extras_require={
        'cuda': ['nnabla-ext-cuda120==1.39.*'],
        'demo': ['scikit-learn>=1.0'],
        'examples': ['Pillow>=8', 'matplotlib>=3.3'],
        # nnabla-converter itself must be installed with --no-deps (its declared dependencies
        # pull in TensorFlow, which NNP -> ONNX does not use): see the README
        'onnx': ['onnx~=1.13.0', 'onnxruntime>=1.15,<1.20'],
        # NVRTC (no GPU needed) checks that the shipped PTX is built from the kernel source
        'test': ['scikit-learn>=1.0', 'pytest>=7', 'hypothesis>=6', 'Pillow>=8',
                 'matplotlib>=3.3', 'nvidia-cuda-nvrtc-cu12==12.0.76',
                 # an exact 1-D k-means (C++), the tests' reference for the table fit
                 'kmeans1d>=0.4'],
    },
    entry_points={'console_scripts': ['nnabla-lutq = nnabla_lutq.cli:main']},
    classifiers=['License :: OSI Approved :: Apache Software License',
                 'Programming Language :: Python :: 3 :: Only',
                 'Topic :: Scientific/Engineering :: Artificial Intelligence'],
)
