//! From a sensor to a model: [`SensorPipeline`] reads samples from any
//! [`Sensor`] into a fixed ring buffer, and when a window is full (and
//! `hop` new samples have arrived since the last one) runs the model on the
//! window, oldest sample first. The artifact's preprocessing is part of its
//! graph, so the window goes in raw. [`Lis3dh`] is the worked example: the
//! ST LIS3DH accelerometer over any `embedded_hal::i2c::I2c` bus.

use crate::{Error, Model, Outputs};
use embedded_hal::i2c::I2c;

/// A source of samples of `C` channels.
pub trait Sensor<const C: usize> {
    type Error;

    /// Reads one sample.
    fn read(&mut self, sample: &mut [f32; C]) -> Result<(), Self::Error>;
}

/// Windows of `W` samples of `C` channels over a ring buffer; no heap.
#[derive(Debug)]
pub struct SensorPipeline<const W: usize, const C: usize> {
    ring: [[f32; C]; W],
    /// Where the next sample goes.
    next: usize,
    /// Samples held (up to `W`).
    held: usize,
    /// Samples since the last window was handed out.
    fresh: usize,
    hop: usize,
}

impl<const W: usize, const C: usize> SensorPipeline<W, C> {
    /// A pipeline that offers a window every `hop` samples once `W` are
    /// held (`hop` 0 counts as 1: every sample).
    pub const fn new(hop: usize) -> Self {
        Self {
            ring: [[0.0; C]; W],
            next: 0,
            held: 0,
            fresh: 0,
            hop: if hop == 0 { 1 } else { hop },
        }
    }

    /// Bytes of one window as model input (`W · C` little-endian f32).
    pub const WINDOW_BYTES: usize = W * C * 4;

    /// Reads one sample from `sensor`; returns whether a window is ready.
    pub fn poll<S: Sensor<C>>(&mut self, sensor: &mut S) -> Result<bool, S::Error> {
        let mut sample = [0.0; C];
        sensor.read(&mut sample)?;
        Ok(self.push(sample))
    }

    /// Adds one sample (from a sensor or a test); returns whether a window
    /// is ready.
    pub fn push(&mut self, sample: [f32; C]) -> bool {
        if W == 0 {
            return false;
        }
        self.ring[self.next] = sample;
        self.next = (self.next + 1) % W;
        self.held = (self.held + 1).min(W);
        self.fresh += 1;
        self.held == W && self.fresh >= self.hop
    }

    /// Writes the latest window, oldest sample first, as little-endian f32
    /// into `out` ([`Self::WINDOW_BYTES`] bytes); returns false (writing
    /// nothing) when `out` has another length.
    pub fn window(&self, out: &mut [u8]) -> bool {
        if out.len() != Self::WINDOW_BYTES {
            return false;
        }
        let oldest = if self.held == W { self.next } else { 0 };
        let samples = (0..W).map(|k| &self.ring[(oldest + k) % W]);
        for (dst, v) in out.chunks_exact_mut(4).zip(samples.flatten()) {
            dst.copy_from_slice(&v.to_le_bytes());
        }
        true
    }

    /// Runs `model` on the latest window (copied into `input`,
    /// [`Self::WINDOW_BYTES`] bytes, which must be the model's one input)
    /// inside `arena`, and starts counting `hop` again.
    pub fn infer<'r, 'a>(
        &mut self,
        model: &Model<'a>,
        arena: &'r mut [u8],
        input: &mut [u8],
    ) -> Result<Outputs<'r, 'a>, Error> {
        if !self.window(input) {
            return Err(Error::InputSize {
                input: 0,
                expected: Self::WINDOW_BYTES,
                got: input.len(),
            });
        }
        self.fresh = 0;
        model.run(arena, &[input])
    }
}

/// What can go wrong talking to a [`Lis3dh`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lis3dhError<E> {
    /// The bus failed.
    Bus(E),
    /// `WHO_AM_I` read this instead of 0x33: not a LIS3DH at that address.
    WrongDevice(u8),
}

/// ST LIS3DH 3-axis accelerometer on I²C, in high-resolution mode (12-bit,
/// ±2 g, 1 mg per digit) at 100 Hz; samples are in g.
#[derive(Debug)]
pub struct Lis3dh<I> {
    i2c: I,
    address: u8,
}

impl<I: I2c> Lis3dh<I> {
    /// The address with SA0 low (high: 0x19).
    pub const ADDRESS: u8 = 0x18;
    const WHO_AM_I: u8 = 0x0F;
    const CTRL_REG1: u8 = 0x20;
    const CTRL_REG4: u8 = 0x23;
    const OUT_X_L: u8 = 0x28;
    /// Register-address bit for auto-increment over a multi-byte read.
    const AUTO_INCREMENT: u8 = 0x80;

    /// Checks the device's identity and configures it.
    pub fn new(mut i2c: I, address: u8) -> Result<Self, Lis3dhError<I::Error>> {
        let mut id = [0];
        i2c.write_read(address, &[Self::WHO_AM_I], &mut id)
            .map_err(Lis3dhError::Bus)?;
        if id[0] != 0x33 {
            return Err(Lis3dhError::WrongDevice(id[0]));
        }
        // 100 Hz, normal power, X/Y/Z enabled; then high resolution, ±2 g.
        i2c.write(address, &[Self::CTRL_REG1, 0x57])
            .map_err(Lis3dhError::Bus)?;
        i2c.write(address, &[Self::CTRL_REG4, 0x08])
            .map_err(Lis3dhError::Bus)?;
        Ok(Self { i2c, address })
    }

    /// Gives the bus back.
    pub fn release(self) -> I {
        self.i2c
    }
}

impl<I: I2c> Sensor<3> for Lis3dh<I> {
    type Error = I::Error;

    fn read(&mut self, sample: &mut [f32; 3]) -> Result<(), I::Error> {
        let mut raw = [0u8; 6];
        self.i2c.write_read(
            self.address,
            &[Self::OUT_X_L | Self::AUTO_INCREMENT],
            &mut raw,
        )?;
        for (v, b) in sample.iter_mut().zip(raw.chunks_exact(2)) {
            // Left-justified 12-bit two's complement, 1 mg per digit.
            let digits = i16::from_le_bytes([b[0], b[1]]) >> 4;
            *v = f32::from(digits) / 1000.0;
        }
        Ok(())
    }
}
