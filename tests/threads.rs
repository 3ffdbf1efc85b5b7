//! `Runtime` is `Clone + Send + Sync`; 8 threads using it at once get the results one thread gets.

mod common;

use common::*;
use wattle::{DType, Runtime, Tensor};

fn assert_send_sync<T: Send + Sync + Clone>() {}

#[test]
fn runtime_is_shared_across_threads() {
    assert_send_sync::<Runtime>();
    assert_send_sync::<wattle::Device>();
    assert_send_sync::<Tensor>();
    let rt = Runtime::new().unwrap();
    for dev in devices_under_test(&rt) {
        let mut rng = Rng::new(7);
        let (m, n, k) = (3, 65, 257);
        let (w, _) = float_tensor(&rng.vec(n * k), &[n, k], DType::F16);
        let xs: Vec<Tensor> = (0..8)
            .map(|_| Tensor::from_f32(&rng.vec(m * k), &[m, k]).unwrap())
            .collect();
        let serial: Vec<Vec<f32>> = xs
            .iter()
            .map(|x| {
                rt.matmul(&x.to(&dev).unwrap(), &w.to(&dev).unwrap())
                    .unwrap()
                    .to_f32_vec()
                    .unwrap()
            })
            .collect();
        let parallel: Vec<Vec<f32>> = std::thread::scope(|s| {
            let handles: Vec<_> = xs
                .iter()
                .map(|x| {
                    let (rt, dev, w) = (rt.clone(), dev.clone(), w.clone());
                    s.spawn(move || {
                        (0..4)
                            .map(|_| {
                                rt.matmul(&x.to(&dev).unwrap(), &w.to(&dev).unwrap())
                                    .unwrap()
                                    .to_f32_vec()
                                    .unwrap()
                            })
                            .next_back()
                            .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(
            serial, parallel,
            "results on {dev} differ between 1 and 8 threads"
        );
    }
}
