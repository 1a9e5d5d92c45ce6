# The twin's physical truth as the host reads it (truth.json, the control channel's
# answers): what the mechanism holds, pumped and delivered to the catheter tip. Loaded
# only when asked for, so the firmware's heap does not carry it.


def physical(hw):
    """The mechanism's truth, for the host's checks (never read by the firmware)."""
    if hw.motor.refills:
        hw.motor._refill()
    return {
        "pumped_nl": hw.motor.pumped_nl,
        "reservoir_nl": hw.motor.reservoir_nl,
        "strokes": hw.motor.strokes,
        "failed_strokes": hw.motor.failed,
        "device_time": hw.clock.true_now(),  # the world's time
        "rtc_offset": hw.clock.now() - hw.clock.true_now(),
        # drug (1e-6 ng): in the reservoir, out of the pump, out of the catheter tip
        "mass": hw.motor.mass,
        "left_mass": hw.motor.left_mass,
        "tip_mass": hw.motor.tip_mass,
        "catheter": hw.motor.catheter,
        "drug": hw.motor.drug,
        "pocket_nl": hw.motor.pocket_nl,
        "filled_nl": hw.motor.filled_nl,
        "aspirated_nl": hw.motor.aspirated_nl,
        "tones": hw.buzzer.tones,
        "block_writes": hw.bdev.writes if hw.bdev else 0,
        "block_erases": hw.bdev.erases if hw.bdev else 0,
    }
