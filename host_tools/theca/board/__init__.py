"""A real board: compiling the firmware and flashing it with mpremote."""
