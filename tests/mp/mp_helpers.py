# Small helpers the host-side harness tests call through MPWorker.


def divide(a, b):
    return a // b
