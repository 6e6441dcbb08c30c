"""Examples of nnabla-lutq (importable by package path: ``examples.cifar10.train``)."""
