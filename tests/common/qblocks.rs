//! Random matrices in the GGUF block formats, with scales in the ranges real files have, for the
//! tests that hold the stored-format products of every device against the CPU's.

use half::f16;
use scalpel::model::quant::GgmlType;

use super::tiny::Lcg;

/// The formats the products keep packed (F32 and BF16 stay dense).
pub const PACKED: [GgmlType; 9] = [
    GgmlType::F16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

fn f16_bytes(v: f32) -> [u8; 2] {
    f16::from_f32(v).to_le_bytes()
}

/// `rows` × `cols` values of `ty` (cols a whole number of blocks): random quants, scales of a
/// realistic size and either sign.
pub fn random_blocks(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let (be, bb) = ty.block();
    assert_eq!(cols % be, 0, "{} rows of {cols}", ty.name());
    let mut r = Lcg(seed | 1);
    let mut u = |lo: f32, hi: f32| lo + (hi - lo) * (r.next_f32() * 0.5 + 0.5);
    let mut out = vec![0u8; rows * cols / be * bb];
    let mut bits = Lcg(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    for b in out.iter_mut() {
        *b = (bits.next_f32() * 127.5 + 127.5) as u8;
    }
    for block in out.chunks_mut(bb) {
        let sign = |x: f32, s: f32| if s < 0.5 { x } else { -x };
        match ty {
            GgmlType::F16 => {
                let v = u(-2.0, 2.0);
                block.copy_from_slice(&f16_bytes(v));
            }
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => {
                let d = sign(u(1e-3, 1e-2), u(0.0, 1.0));
                block[0..2].copy_from_slice(&f16_bytes(d));
            }
            GgmlType::Q4_1 | GgmlType::Q5_1 => {
                let (d, m) = (u(1e-3, 1e-2), -u(0.0, 0.1));
                block[0..2].copy_from_slice(&f16_bytes(d));
                block[2..4].copy_from_slice(&f16_bytes(m));
            }
            GgmlType::Q4K | GgmlType::Q5K => {
                let (d, dmin) = (u(1e-4, 1e-3), u(1e-4, 1e-3));
                block[0..2].copy_from_slice(&f16_bytes(d));
                block[2..4].copy_from_slice(&f16_bytes(dmin));
            }
            GgmlType::Q6K => {
                let d = sign(u(1e-4, 1e-3), u(0.0, 1.0));
                block[208..210].copy_from_slice(&f16_bytes(d));
            }
            other => panic!("no random blocks for {}", other.name()),
        }
    }
    out
}
