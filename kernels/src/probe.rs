//! Roofline probes for the CPU: memory read bandwidth and f32 FMA peak.
//!
//! PLACEHOLDER: filled in by the benchmark work.
