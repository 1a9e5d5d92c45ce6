// The emulated Raspberry Pi Pico behind `theca emu` (host_tools/theca/emu/__init__.py starts
// it; docs/hardware.md, "The emulated Pico"). The official MicroPython firmware runs in
// rp2040js, unchanged; this file fills the emulator's gaps (../shared/rp2/README.md lists
// them) and models the pump around the chip.
//
// fd 3 is the master side of the pseudo-terminal that is the board's USB serial port.
// stdin takes control lines (JSON), stdout gives the physical truth (JSON lines):
//   {"ev":"ready"|"usb"|"stroke"|"partial"|"tone"|"reset"|"stats", "t": sim ns, ...}
// Every time is simulated nanoseconds since this run began (across chip resets).
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

process.env.TZ = 'UTC'; // rp2040js's RTC counts in the host's local time

const { values: opt } = parseArgs({
  options: {
    rp2040js: { type: 'string' }, // the folder holding node_modules/rp2040js
    firmware: { type: 'string' },
    bootrom: { type: 'string' },
    'flash-image': { type: 'string' },
    model: { type: 'string' }, // JSON: the board's pins.py data
    'no-encoder': { type: 'boolean', default: false },
    occlusion: { type: 'boolean', default: false },
    'vbat-mv': { type: 'string', default: '4000' },
    'serial-fd': { type: 'string', default: '3' },
  },
});

const lib = await import(
  pathToFileURL(path.join(opt.rp2040js, 'node_modules/rp2040js/dist/esm/index.js')).href
);
const { RP2040, USBCDC, ConsoleLogger, LogLevel } = lib;
const { SimulationClock } = await import(
  pathToFileURL(path.join(opt.rp2040js, 'node_modules/rp2040js/dist/esm/clock/simulation-clock.js')).href
);

const model = JSON.parse(opt.model);
const PINS = model.PINS;
const MOTOR = model.MOTOR;
const FLASH_SIZE = 2 * 1024 * 1024; // the Pico's W25Q16JV
const FLASH_BASE = 0x10000000;
const CYCLE_NS = 8; // 125 MHz: MicroPython's rp2 port keeps clk_sys there
const WATCHDOG = 0x40058000;

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// -- the flash: the firmware from the UF2, the rest from the image file --------------
const bootrom = new Uint32Array(new Uint8Array(fs.readFileSync(opt.bootrom)).buffer);
const flash = new Uint8Array(FLASH_SIZE).fill(0xff);
let imageFd = null;
if (opt['flash-image']) {
  const p = opt['flash-image'];
  if (fs.existsSync(p)) {
    const data = fs.readFileSync(p);
    if (data.length !== FLASH_SIZE) {
      process.stderr.write(`theca emu: ${p} is ${data.length} bytes, not a ${FLASH_SIZE}-byte Pico flash image\n`);
      process.exit(2);
    }
    flash.set(data);
  }
}
loadUf2(fs.readFileSync(opt.firmware));
if (opt['flash-image']) {
  imageFd = fs.openSync(opt['flash-image'], fs.existsSync(opt['flash-image']) ? 'r+' : 'w+');
  fs.writeSync(imageFd, flash, 0, FLASH_SIZE, 0);
}

function loadUf2(buf) {
  // UF2: 512-byte blocks; magic at 0 and 4, target address at 12, size at 16, data at 32
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  for (let off = 0; off + 512 <= buf.length; off += 512) {
    if (v.getUint32(off, true) !== 0x0a324655 || v.getUint32(off + 4, true) !== 0x9e5d5157) {
      throw new Error(`not a UF2 file (block at ${off})`);
    }
    const addr = v.getUint32(off + 12, true);
    const size = v.getUint32(off + 16, true);
    flash.set(buf.subarray(off + 32, off + 32 + size), addr - FLASH_BASE);
  }
}

function persist(offset, length) {
  if (imageFd !== null) {
    fs.writeSync(imageFd, flash, offset, length, offset);
  }
}

// -- the chip -----------------------------------------------------------------------
let mcu = null;
let clock = null;
let cdc = null;
let simBase = 0; // sim ns at which the current chip came out of reset
let resetWhy = ''; // what asked for the pending reset, for people
let resetPending = null; // 'watchdog' | 'force': a bite or machine.reset(), served between batches
let stopped = false;
const scratch = new Uint32Array(8);
let reason = 0;
let boots = 0;

function now() {
  return simBase + clock.nanos;
}

// The ROM's flash functions, looked up by the firmware through the ROM table: patched to
// BKPT #n so that they run here (rp2040js's SSI cannot program flash).
const ROM_HOOKS = { RE: 0xe0, RP: 0xe1 };
function romFunc(code) {
  const rd16 = (a) => (bootrom[a >> 2] >>> ((a & 2) * 8)) & 0xffff;
  let p = rd16(0x14);
  for (;;) {
    const c = rd16(p);
    if (c === 0) return null;
    if (c === code) return rd16(p + 2);
    p += 4;
  }
}
const romPatched = new Uint32Array(bootrom);
for (const [name, bk] of Object.entries(ROM_HOOKS)) {
  const a = romFunc(name.charCodeAt(0) | (name.charCodeAt(1) << 8));
  if (a === null) throw new Error(`boot ROM has no ${name} function`);
  const w = romPatched[a >> 2];
  const shift = (a & 2) * 8;
  romPatched[a >> 2] = ((w & ~(0xffff << shift)) | ((0xbe00 | bk) << shift)) >>> 0;
}

function onBreak(code) {
  const core = mcu.core;
  const r = core.registers;
  if (code === ROM_HOOKS.RE) {
    // flash_range_erase(addr, count, block_size, block_cmd): NOR erase, to 0xFF
    const addr = r[0] >>> 0;
    const count = r[1] >>> 0;
    if (addr + count <= FLASH_SIZE) {
      flash.fill(0xff, addr, addr + count);
      persist(addr, count);
    }
    flashOps.erase += count;
  } else if (code === ROM_HOOKS.RP) {
    // flash_range_program(addr, data, count): NOR programming can only clear bits
    const addr = r[0] >>> 0;
    const data = r[1] >>> 0;
    const count = r[2] >>> 0;
    if (addr + count <= FLASH_SIZE) {
      for (let i = 0; i < count; i++) {
        flash[addr + i] &= mcu.readUint8(data + i);
      }
      persist(addr, count);
    }
    flashOps.program += count;
  } else {
    out({ ev: 'break', t: now(), code, pc: core.PC });
    return;
  }
  core.PC = r[14] & ~1; // return to the caller (bx lr)
}
const flashOps = { erase: 0, program: 0 };

function makeChip() {
  clock = new SimulationClock();
  mcu = new RP2040(clock);
  mcu.logger = new ConsoleLogger(LogLevel.Error);
  mcu.loadBootrom(romPatched);
  bindFlash();
  mcu.onBreak = onBreak;
  // rp2040js wakes a WFE/WFI only when an interrupt newly becomes pending; one that was
  // already pending (USB's, while the firmware sleeps with it masked) never wakes the
  // core. The architecture allows a spurious wake-up, so every asserted interrupt wakes it.
  const core = mcu.core;
  const setInterrupt = core.setInterrupt.bind(core);
  core.setInterrupt = (irq, value) => {
    setInterrupt(irq, value);
    if (value) core.waiting = false;
  };
  // The watchdog: its scratch registers and the reset reason survive a reset; a bite
  // and machine.reset() reset the chip (between batches, not inside the clock's tick).
  const wd = mcu.peripherals[0x40058 >>> 0];
  wd.scratchData.set(scratch);
  wd.reason = reason;
  // rp2040js schedules the watchdog's alarm as if its timer counted up: a counter at N
  // would bite after 2**32 - N ticks (35 min), not N (the timeout). Count it down.
  wd.alarm.schedule = function () {
    this.clockAlarm.schedule(wd.timer.toNanos(Math.max(1, wd.timer.counter)));
  };
  wd.onWatchdogTrigger = () => {
    if (resetPending === null) {
      resetPending = wd.reason === 1 ? 'watchdog' : 'force';
      // what asked for it, for people: the timer ran out (a bite), or the firmware forced
      // it (machine.reset(), the pico-sdk's watchdog_reboot)
      resetWhy = wd.reason === 1 ? 'watchdog bite' : 'machine.reset()';
    }
  };
  // QSPI_SS's pad resets to pull-up (0x5a): BOOTSEL is not pressed
  mcu.qspi[1].padValue = 0x5a;
  mcu.qspi[1].setInputValue(true);
  // the inter-core FIFO (core 1 is not emulated) reads as rp2040js reads any register it
  // lacks (all ones), without a warning for each of the firmware's flash writes
  const sioRead = mcu.sio.readUint32.bind(mcu.sio);
  mcu.sio.readUint32 = (offset) => (offset === 0x50 || offset === 0x58 ? 0xffffffff : sioRead(offset));
  fixUart();
  fixPio();
  attachUsb();
  attachPump();
  // The boot ROM's reset path waits for a second core that rp2040js does not have: start
  // where the ROM would hand over, at boot2 in flash. What the ROM does with the
  // watchdog's reboot magic (scratch[4] = 0xb007c0d3 from watchdog_reboot, as
  // machine.reset() uses) is done here: it is cleared, and pc 0 means a normal boot.
  if (wd.scratchData[4] === 0xb007c0d3) wd.scratchData[4] = 0;
  mcu.core.PC = 0x10000000;
  boots++;
}

function bindFlash() {
  // rp2040js reads flash from mcu.flash / flashView / flash16: point them at our array
  mcu.flash = flash;
  mcu.flash16 = new Uint16Array(flash.buffer);
  mcu.flashView = new DataView(flash.buffer);
}

function chipReset(kind) {
  const wd = mcu.peripherals[0x40058 >>> 0];
  scratch.set(wd.scratchData);
  reason = kind === 'watchdog' ? 1 : 2; // WATCHDOG REASON: TIMER or FORCE
  simBase += clock.nanos;
  out({ ev: 'reset', t: simBase, kind, why: resetWhy || kind });
  makeChip();
}

// -- gaps -----------------------------------------------------------------------------
function fixUart() {
  // rp2040js raises the TX interrupt on every register access, so MicroPython's UART
  // IRQ handler never returns. Here TX is a FIFO that empties a byte time after each
  // write (the bytes go nowhere: no link is carried on the UART here).
  for (const uart of mcu.uart) {
    const TX = 1 << 5;
    uart.checkInterrupts = function () {
      this.rp2040.setInterrupt(this.irq, !!(this.interruptStatus & this.interruptMask));
    };
    const alarm = clock.createAlarm(() => {
      uart.interruptStatus |= TX;
      uart.checkInterrupts();
    });
    uart.interruptStatus |= TX; // the FIFO is empty at reset
    uart.onByte = () => {
      uart.interruptStatus &= ~TX;
      alarm.schedule(87_000); // a byte at 115200 baud
    };
  }
}

function fixPio() {
  // rp2040js runs PIO state machines in wall time from setTimeout, ignoring the clock
  // divider and delays. Here each state machine runs on the simulated clock: one
  // instruction, then as many cycles as it took (1 + delay) times its clock divider.
  for (const pio of mcu.pio) {
    pio.run = () => {
      for (const sm of pio.machines) schedule(sm);
    };
    const schedule = (sm) => {
      if (!sm.enabled || sm.alarm?.scheduled) return;
      if (!sm.alarm) {
        sm.alarm = clock.createAlarm(() => tick(sm));
      }
      sm.alarm.schedule(0);
    };
    const tick = (sm) => {
      sm.alarm.scheduled = false; // rp2040js leaves a fired alarm marked scheduled
      if (!sm.enabled || pio.stopped) return;
      const c0 = sm.cycles;
      sm.step();
      pio.checkChangedPins();
      if (sm.waiting && sm.waitType === 3 /* txFIFO: pull(block) */) {
        return; // writeFIFO wakes it
      }
      const cycles = Math.max(1, sm.cycles - c0);
      const div = sm.clockDivInt + sm.clockDivFrac / 256 || 65536;
      sm.alarm.schedule(cycles * div * CYCLE_NS);
    };
    for (const sm of pio.machines) {
      const write = sm.writeFIFO.bind(sm);
      sm.writeFIFO = (v) => {
        write(v);
        schedule(sm);
      };
    }
  }
}

// -- USB serial over the pty ------------------------------------------------------------
const serialFd = Number(opt['serial-fd']);
const hostBytes = []; // from the host, not yet taken by the firmware
let pendingRead = null; // an OUT transfer the firmware armed while nothing was waiting

function attachUsb() {
  cdc = new USBCDC(mcu.usbCtrl);
  pendingRead = null;
  cdc.onDeviceConnected = () => out({ ev: 'usb', t: now() });
  cdc.onSerialData = (buf) => {
    if (hostT !== null) {
      // the device's first byte after the host's last: what a frame took, at 125 MHz
      replyNs.push(now() - hostT);
      if (replyNs.length > 64) replyNs.shift();
      hostT = null;
    }
    fs.writeSync(serialFd, buf);
  };
  const usb = mcu.usbCtrl;
  // rp2040js answers every OUT transfer at once with nothing, so the CPU never sleeps;
  // here the transfer waits until the host sends bytes (as on a board).
  usb.onEndpointRead = (endpoint, size) => {
    if (endpoint !== cdc.outEndpoint) return;
    if (hostBytes.length === 0) {
      pendingRead = { endpoint, size };
      return;
    }
    serve(endpoint, size);
  };
}

function serve(endpoint, size) {
  const n = Math.min(size, hostBytes.length);
  const buf = new Uint8Array(hostBytes.splice(0, n));
  mcu.usbCtrl.endpointReadDone(endpoint, buf);
}

// While the host talks, idle time passes at most as fast as real time: a host's
// command then meets the device as on a board (a link challenge lasts its 60 s in the
// host's seconds too). 0.3 s after the host's last byte, idle time is skipped again.
const PACE_MS = 300;
let paceUntil = 0; // wall ms
let paceSim0 = 0;
let paceWall0 = 0;

function pace() {
  const w = Date.now();
  if (w >= paceUntil) {
    paceSim0 = now();
    paceWall0 = w;
  }
  paceUntil = w + PACE_MS;
}

let hostT = null; // sim time of the host's last byte, until the device answers
const replyNs = [];

function feedHost(data) {
  pace();
  hostT = now();
  for (const b of data) hostBytes.push(b);
  if (pendingRead !== null && hostBytes.length) {
    const { endpoint, size } = pendingRead;
    pendingRead = null;
    serve(endpoint, size);
  }
}

// The host's bytes: a blocking read of the pty master on libuv's thread pool, one at a
// time; EAGAIN/EIO (no one holds the slave side yet) is tried again shortly.
function readForever(fd, onData) {
  const buf = Buffer.alloc(4096);
  const next = () => {
    fs.read(fd, buf, 0, buf.length, null, (err, n) => {
      if (err) {
        if (err.code === 'EAGAIN' || err.code === 'EIO') {
          setTimeout(next, 10); // no one holds the other side yet
          return;
        }
        return;
      }
      if (n > 0) onData(buf.subarray(0, n));
      next();
    });
  };
  next();
}
readForever(serialFd, (d) => {
  feedHost(d);
  kick();
});

// -- the pump around the chip -------------------------------------------------------------
const pump = {
  encoder: !opt['no-encoder'],
  occluded: opt.occlusion,
  vbatMv: Number(opt['vbat-mv']),
  microsteps: 0, // forward microsteps with the driver enabled: the drug moved
  strokes: 0,
  partial: 0, // microsteps into the current stroke
  edges: 0,
  feedbackLevel: true,
  tone: null,
};

function attachPump() {
  const g = mcu.gpio;
  const stepsPerEdge = MOTOR.microsteps_per_stroke / MOTOR.feedback_edges_per_stroke;
  g[PINS.feedback].setInputValue(true); // open collector, pulled up
  pump.feedbackLevel = true;
  g[PINS.occlusion].setInputValue(!pump.occluded); // the switch pulls it to GND
  g[PINS.step].addListener((state, old) => {
    if (state !== 1 || old === 1) return; // a rising edge
    const enabled = g[PINS.enable].outputValue === !!MOTOR.enable_active;
    const forward = g[PINS.dir].outputValue === !!MOTOR.dir_forward;
    if (!enabled) return;
    if (!forward) {
      pump.microsteps -= 1;
      return;
    }
    pump.microsteps += 1;
    pump.partial += 1;
    if (pump.encoder && pump.partial % stepsPerEdge === 0) {
      pump.feedbackLevel = !pump.feedbackLevel;
      g[PINS.feedback].setInputValue(pump.feedbackLevel);
      pump.edges++;
    }
    if (pump.partial >= MOTOR.microsteps_per_stroke) {
      pump.partial = 0;
      pump.strokes += 1;
      out({ ev: 'stroke', t: now(), n: pump.strokes });
    }
  });
  g[PINS.enable].addListener(() => {
    // a stroke abandoned (occlusion, stall) leaves its microsteps counted, not the stroke
    if (g[PINS.enable].outputValue !== !!MOTOR.enable_active && pump.partial) {
      out({ ev: 'partial', t: now(), microsteps: pump.partial });
      pump.partial = 0;
    }
  });
  setBattery();
  // the buzzer: PWM slice and channel from the pin; tones seen every 5 ms of sim time
  const slice = (PINS.buzzer >> 1) & 7;
  const chB = PINS.buzzer & 1;
  const ch = mcu.pwm.channels[slice];
  const poll = clock.createAlarm(() => {
    const cc = chB ? ch.cc >>> 16 : ch.cc & 0xffff;
    const on = (ch.csr & 1) === 1 && cc > 0 && mcu.gpio[PINS.buzzer].functionSelect === 4;
    if (on && pump.tone === null) {
      const div = (ch.div >> 4) + (ch.div & 15) / 16 || 1;
      const hz = Math.round(mcu.clkSys / ((ch.top + 1) * div));
      pump.tone = { t: now(), hz };
    } else if (!on && pump.tone !== null) {
      out({ ev: 'tone', t: pump.tone.t, hz: pump.tone.hz, ms: Math.round((now() - pump.tone.t) / 1e6) });
      pump.tone = null;
    }
    poll.schedule(5_000_000);
  });
  poll.schedule(5_000_000);
}

function setBattery() {
  // the cell through the 100k/100k divider onto ADC channel (pin - 26), 12 bits of vref
  const B = model.BATTERY;
  const pinMv = (pump.vbatMv * B.r_bottom_k) / (B.r_top_k + B.r_bottom_k);
  mcu.adc.channelValues[PINS.battery_adc - 26] = Math.min(4095, Math.round((pinMv * 4095) / B.vref_mv));
}

// -- control from the host (stdin, JSON lines) ---------------------------------------------
const control = {
  occlusion(v) {
    pump.occluded = !!v;
    mcu.gpio[PINS.occlusion].setInputValue(!pump.occluded);
  },
  encoder(v) {
    pump.encoder = !!v;
  },
  vbat_mv(v) {
    pump.vbatMv = Number(v);
    setBattery();
  },
  stats() {
    report();
  },
  stop() {
    finish(0);
  },
};
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (!line.trim()) return;
  let msg;
  try {
    msg = JSON.parse(line);
  } catch {
    out({ ev: 'error', what: `control line is not JSON: ${line.slice(0, 80)}` });
    return;
  }
  for (const [k, v] of Object.entries(msg)) {
    if (!(k in control)) {
      out({ ev: 'error', what: `unknown control ${k}` });
      continue;
    }
    control[k](v);
  }
  out({ ev: 'ok', t: now() });
  kick();
});
rl.on('close', () => finish(0));

// -- the run loop -------------------------------------------------------------------------
const wallStart = process.hrtime.bigint();
let scheduled = false; // one run-loop chain at a time
let wakeTimer = null;

function kick() {
  if (wakeTimer !== null) {
    clearTimeout(wakeTimer);
    wakeTimer = null;
    scheduled = false;
  }
  if (!scheduled && !stopped) {
    scheduled = true;
    setImmediate(loop);
  }
}

function loop() {
  scheduled = false;
  wakeTimer = null;
  if (stopped) return;
  const deadline = Date.now() + 20;
  let idle = false;
  while (Date.now() < deadline) {
    const core = mcu.core;
    for (let i = 0; i < 20000; i++) {
      if (core.waiting) {
        if (clock.nextAlarm === null) {
          idle = true; // nothing scheduled: wait for the host
          break;
        }
        let dt = clock.nanosToNextAlarm;
        if (paceUntil > 0) {
          const w = Date.now();
          if (w < paceUntil) {
            const room = paceSim0 + (w - paceWall0) * 1e6 - now();
            if (dt > room) {
              if (room > 0) clock.tick(room);
              idle = true; // the host's pace: yield, real time catches up
              break;
            }
          } else {
            paceUntil = 0;
          }
        }
        clock.tick(dt);
      } else {
        clock.tick(core.executeInstruction() * CYCLE_NS);
      }
      if (resetPending !== null) break;
    }
    if (resetPending !== null) {
      const k = resetPending;
      resetPending = null;
      chipReset(k);
    }
    if (idle) break;
  }
  scheduled = true;
  if (idle) {
    wakeTimer = setTimeout(loop, paceUntil > 0 ? 1 : 5);
  } else {
    setImmediate(loop);
  }
}

function report() {
  const wallNs = Number(process.hrtime.bigint() - wallStart);
  out({
    ev: 'stats', t: now(), wall_ns: wallNs, strokes: pump.strokes, microsteps: pump.microsteps,
    edges: pump.edges, boots, flash_erased: flashOps.erase, flash_programmed: flashOps.program,
    reply_ns: replyNs.slice(),
  });
}

function finish(code) {
  if (stopped) return;
  stopped = true;
  report();
  if (imageFd !== null) fs.fsyncSync(imageFd);
  process.exit(code);
}
process.on('SIGTERM', () => finish(0));
process.on('SIGINT', () => finish(0));

makeChip();
out({ ev: 'ready', t: 0, flash_image: opt['flash-image'] ?? null });
kick();
