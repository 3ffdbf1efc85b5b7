//! Every public entry point returns a typed `wattle::Error` on bad input, never panics.

mod common;

use common::*;
use wattle::{DType, Error, Runtime, Tensor};

#[test]
fn shape_mismatch() {
    assert!(matches!(
        Tensor::from_f32(&[1.0; 5], &[2, 3]),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        Tensor::from_bytes(DType::F16, &[2, 3], &[0; 11]),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        Tensor::from_f32(&[], &[usize::MAX, 3]),
        Err(Error::ShapeMismatch { .. })
    ));
    let rt = Runtime::with_backends("cpu").unwrap();
    let x = Tensor::from_f32(&[1.0; 6], &[2, 3]).unwrap();
    let w = Tensor::from_f32(&[1.0; 8], &[2, 4]).unwrap();
    assert!(matches!(
        rt.matmul(&x, &w),
        Err(Error::ShapeMismatch { .. })
    ));
    let x3 = Tensor::from_f32(&[1.0; 6], &[1, 2, 3]).unwrap();
    assert!(matches!(
        rt.matmul(&x3, &w),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn unsupported_dtype() {
    let rt = Runtime::with_backends("cpu").unwrap();
    let w = Tensor::from_f32(&[1.0; 64], &[2, 32]).unwrap();
    // Activations must be F32 or F16.
    let (x, _) = float_tensor(&[0.5; 32], &[1, 32], DType::BF16);
    assert!(matches!(
        rt.matmul(&x, &w),
        Err(Error::UnsupportedDType {
            dtype: DType::BF16,
            ..
        })
    ));
    let xq = Tensor::from_bytes(DType::Q8_0, &[1, 32], &[0; 34]).unwrap();
    assert!(matches!(
        rt.matmul(&xq, &w),
        Err(Error::UnsupportedDType {
            dtype: DType::Q8_0,
            ..
        })
    ));
}

#[test]
fn bad_block_alignment() {
    assert!(matches!(
        Tensor::from_bytes(DType::Q4_0, &[2, 33], &[0; 36]),
        Err(Error::BadBlockAlignment {
            dtype: DType::Q4_0,
            len: 33,
            block: 32
        })
    ));
    assert!(matches!(
        Tensor::from_bytes(DType::Q4_K, &[1, 128], &[0; 72]),
        Err(Error::BadBlockAlignment { block: 256, .. })
    ));
}

#[test]
fn device_mismatch() {
    let rt = Runtime::new().unwrap();
    let devs = devices_under_test(&rt);
    let Some(gpu) = devs.iter().find(|d| !d.is_cpu()) else {
        return; // WATTLE_ALLOW_NO_GPU=1: only one device, nothing can mismatch.
    };
    let x = Tensor::from_f32(&[1.0; 4], &[1, 4]).unwrap();
    let w = Tensor::from_f32(&[1.0; 8], &[2, 4]).unwrap();
    let wg = w.to(gpu).unwrap();
    assert!(matches!(rt.matmul(&x, &wg), Err(Error::DeviceMismatch(..))));
    assert!(matches!(
        rt.matmul(&x.to(gpu).unwrap(), &w),
        Err(Error::DeviceMismatch(..))
    ));
}

#[test]
fn invalid_backend_list_and_cpu_isa() {
    assert!(matches!(
        Runtime::with_backends("cpu,cuda"),
        Err(Error::InvalidArgument(_))
    ));
    // A path the CPU lacks is refused (WATTLE_CPU_ISA goes through the same resolver).
    for isa in wattle::Isa::ALL {
        if !isa.is_supported() {
            let e: Error = wattle_kernels::isa::resolve(Some(isa.name()))
                .unwrap_err()
                .into();
            assert!(matches!(e, Error::NotAvailable(_)));
        }
    }
}

#[test]
fn reshape_is_a_view_and_checks_its_shape() {
    let rt = Runtime::new().unwrap();
    let v: Vec<f32> = (0..96).map(|i| i as f32 * 0.5).collect();
    let t = Tensor::from_f32(&v, &[2, 3, 16]).unwrap();
    for dev in common::devices_under_test(&rt) {
        let t = t.to(&dev).unwrap();
        let r = t.reshape(&[6, 16]).unwrap();
        assert_eq!(r.shape(), &[6, 16]);
        assert_eq!(r.to_f32_vec().unwrap(), v, "{dev}");
        assert_eq!(r.reshape(&[96]).unwrap().to_f32_vec().unwrap(), v, "{dev}");
        assert!(matches!(
            t.reshape(&[5, 16]),
            Err(Error::ShapeMismatch { .. })
        ));
    }
    // Block formats keep whole blocks per row.
    let q = Tensor::from_f32(&v[..64], &[2, 32])
        .unwrap()
        .quantize(DType::Q8_0)
        .unwrap();
    assert_eq!(
        q.reshape(&[1, 64]).unwrap().to_bytes().unwrap(),
        q.to_bytes().unwrap()
    );
    assert!(matches!(
        q.reshape(&[4, 16]),
        Err(Error::BadBlockAlignment { .. })
    ));
}
