//! The sensor pipeline: the LIS3DH driver against a mocked I²C bus
//! (register traffic and conversion to g), window order and hop, and a
//! window through a real model matching the native runtime.

use embedded_hal::i2c::ErrorKind;
use embedded_hal_mock::eh1::i2c::{Mock, Transaction};
use kiln_runtime_embedded::Model;
use kiln_runtime_embedded::sensor::{Lis3dh, Lis3dhError, Sensor, SensorPipeline};

const A: u8 = 0x18;

fn init() -> Vec<Transaction> {
    vec![
        Transaction::write_read(A, vec![0x0F], vec![0x33]),
        Transaction::write(A, vec![0x20, 0x57]),
        Transaction::write(A, vec![0x23, 0x08]),
    ]
}

/// The six output bytes of one sample, in mg (12-bit, left-justified).
fn sample_bytes(mg: [i16; 3]) -> Vec<u8> {
    mg.iter().flat_map(|&v| (v << 4).to_le_bytes()).collect()
}

#[test]
fn lis3dh_configures_itself_and_reads_g() {
    let mut t = init();
    t.push(Transaction::write_read(
        A,
        vec![0xA8],
        sample_bytes([1000, -250, 16]),
    ));
    let mut bus = Mock::new(&t);
    let mut dev = Lis3dh::new(bus.clone(), Lis3dh::<Mock>::ADDRESS).expect("a LIS3DH");
    let mut s = [0.0; 3];
    dev.read(&mut s).expect("reads");
    assert_eq!(s, [1.0, -0.25, 0.016]);
    bus.done();
}

#[test]
fn lis3dh_errors_are_typed() {
    let mut bus = Mock::new(&[Transaction::write_read(A, vec![0x0F], vec![0x44])]);
    let e = Lis3dh::new(bus.clone(), A).expect_err("not a LIS3DH");
    assert_eq!(e, Lis3dhError::WrongDevice(0x44));
    bus.done();
    let mut bus = Mock::new(&[
        Transaction::write_read(A, vec![0x0F], vec![0x33]).with_error(ErrorKind::Other)
    ]);
    let e = Lis3dh::new(bus.clone(), A).expect_err("bus error");
    assert_eq!(e, Lis3dhError::Bus(ErrorKind::Other));
    bus.done();
}

#[test]
fn windows_come_oldest_first_every_hop_samples() {
    // Four samples of three channels, a new window every two samples.
    let mut t = init();
    for k in 0..8i16 {
        t.push(Transaction::write_read(
            A,
            vec![0xA8],
            sample_bytes([k, 10 * k, -k]),
        ));
    }
    let mut bus = Mock::new(&t);
    let mut dev = Lis3dh::new(bus.clone(), A).expect("a LIS3DH");
    let mut p = SensorPipeline::<4, 3>::new(2);
    let ready: Vec<bool> = (0..8).map(|_| p.poll(&mut dev).expect("reads")).collect();
    assert_eq!(ready, [false, false, false, true, true, true, true, true]);
    let mut w = [0u8; SensorPipeline::<4, 3>::WINDOW_BYTES];
    assert!(p.window(&mut w));
    let got: Vec<f32> = w
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let want: Vec<f32> = (4..8)
        .flat_map(|k| {
            [
                k as f32 / 1000.0,
                (10 * k) as f32 / 1000.0,
                -k as f32 / 1000.0,
            ]
        })
        .collect();
    assert_eq!(got, want);
    assert!(!p.window(&mut w[..8]), "a wrong-sized buffer is refused");
    bus.done();
}

#[test]
fn a_window_runs_through_the_model_as_natively() {
    let rel = "sklearn/logreg_iris.onnx";
    let src = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/corpus")
            .join(rel),
    )
    .expect("corpus");
    let artifact = kiln_compiler::compile_model(&src, rel, &Default::default())
        .expect("compiles")
        .bytes;
    let mut flash = vec![0u128; artifact.len().div_ceil(16)];
    bytemuck::cast_slice_mut::<u128, u8>(&mut flash)[..artifact.len()].copy_from_slice(&artifact);
    let model =
        Model::new(&bytemuck::cast_slice::<u128, u8>(&flash)[..artifact.len()]).expect("loads");
    let mut arena = vec![0u128; model.arena_size().div_ceil(16)];
    let arena = bytemuck::cast_slice_mut::<u128, u8>(&mut arena);

    // One sample of four features per window (iris takes [N, 4]).
    let mut p = SensorPipeline::<1, 4>::new(1);
    let flower = [5.9f32, 3.0, 5.1, 1.8];
    assert!(p.push(flower));
    let mut input = [0u8; SensorPipeline::<1, 4>::WINDOW_BYTES];
    let out = p.infer(&model, arena, &mut input).expect("runs");
    let native = kiln_runtime_native::Model::load(&artifact).expect("native");
    let x = kiln_runtime_native::TensorValue::from_f32(vec![1, 4], &flower);
    let want = native.session().run(&[&x]).expect("native runs");
    for (i, w) in want.iter().enumerate() {
        assert_eq!(out.get(i).expect("output"), &w.data[..], "output {i}");
    }
    assert!(p.infer(&model, arena, &mut input[..4]).is_err());
}
