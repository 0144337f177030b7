//! The Q4_1 matrix product the engine decodes with (candle's, with the vendored AVX2
//! kernel: `vendor/README.md`) against the same product in f32 on the dequantized
//! weights: equal up to the activations' own 8-bit quantization, for a row (decoding) and
//! for several rows (a prompt), on random weights.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

/// A deterministic pseudo-random matrix in [-1, 1) with a per-row offset (so that Q4_1's
/// minimum matters).
fn matrix(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut state = seed | 1;
    (0..rows * cols)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let x = (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            x + (i / cols) as f32 * 0.01
        })
        .collect()
}

#[test]
fn the_q4_1_product_equals_the_dequantized_one() {
    let device = Device::Cpu;
    let (out_features, in_features) = (96, 576);
    let weights = Tensor::from_vec(
        matrix(out_features, in_features, 7),
        (out_features, in_features),
        &device,
    )
    .unwrap();
    let q = QTensor::quantize(&weights, GgmlDType::Q4_1).unwrap();
    let dequantized = q.dequantize(&device).unwrap();
    let layer = QMatMul::from_qtensor(q).unwrap();
    for rows in [1, 5] {
        let x = Tensor::from_vec(
            matrix(rows, in_features, 11 + rows as u64),
            (rows, in_features),
            &device,
        )
        .unwrap();
        let got: Vec<Vec<f32>> = layer.forward(&x).unwrap().to_vec2().unwrap();
        let want: Vec<Vec<f32>> = x
            .matmul(&dequantized.t().unwrap())
            .unwrap()
            .to_vec2()
            .unwrap();
        let scale = want.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
        for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
            // The activations are quantized to 8 bits per block of 32: about 0.4% of the
            // block's range per element, far less on a sum of 576 products.
            assert!(
                (g - w).abs() <= 0.01 * scale,
                "rows {rows}: {g} against {w} (scale {scale})"
            );
        }
    }
}
