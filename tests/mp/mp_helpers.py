# Small helpers the host-side harness tests call through MPWorker.


def divide(a, b):
    return a // b


def rx_verdict(blob_hex, max_rate_nl_h, min_rate_nl_day):
    """What the device says of a prescription blob on its own: the RxError field (negative)
    or the dose guard's verdict (0 OK, else the DENY_* code)."""
    import guard
    import rx
    from pump import load_druglib

    try:
        r = rx.parse(bytes.fromhex(blob_hex))
    except rx.RxError as e:
        return -e.field
    lib = load_druglib("firmware/druglib.json")
    return guard.check_rx(r, lib[r.drug], max_rate_nl_h, min_rate_nl_day)
