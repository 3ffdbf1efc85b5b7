//! Run-time instruction-set detection and the `WATTLE_CPU_ISA` override (SPEC §4).

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// A CPU code path. Every kernel has a [`Isa::Scalar`] reference; the others are SIMD bodies.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Isa {
    /// Portable scalar Rust: the reference every other path is tested against.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 F/BW/VL/DQ (+ VNNI/BF16 where a kernel needs them).
    Avx512,
    /// aarch64 Advanced SIMD (NEON).
    Neon,
}

impl Isa {
    /// Every path wattle knows, scalar first.
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon];

    /// Lower-case name as accepted by `WATTLE_CPU_ISA`.
    pub const fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// True when this CPU can run the path.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2.is_supported()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512dq")
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every path this CPU supports, scalar first, best last.
    pub fn supported() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_supported()).collect()
    }

    /// The best path this CPU supports.
    pub fn best() -> Isa {
        Isa::supported().into_iter().last().unwrap_or(Isa::Scalar)
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an ISA could not be selected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IsaError {
    /// The name is not one wattle knows.
    Unknown(String),
    /// The CPU lacks the requested path.
    Unsupported(Isa),
}

impl fmt::Display for IsaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IsaError::Unknown(s) => write!(
                f,
                "unknown CPU ISA `{s}` (expected one of scalar, avx2, avx512, neon)"
            ),
            IsaError::Unsupported(i) => write!(f, "this CPU does not support the `{i}` path"),
        }
    }
}

impl std::error::Error for IsaError {}

impl FromStr for Isa {
    type Err = IsaError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Isa::ALL
            .into_iter()
            .find(|i| i.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| IsaError::Unknown(s.to_string()))
    }
}

/// Parses an override (as in `WATTLE_CPU_ISA`) and checks the CPU supports it.
pub fn resolve(name: Option<&str>) -> Result<Isa, IsaError> {
    match name.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(Isa::best()),
        Some(s) => {
            let isa: Isa = s.parse()?;
            if isa.is_supported() {
                Ok(isa)
            } else {
                Err(IsaError::Unsupported(isa))
            }
        }
    }
}

/// The process-wide path: `WATTLE_CPU_ISA` if set, else the best supported. Read once.
pub fn selected() -> Result<Isa, IsaError> {
    static SELECTED: OnceLock<Result<Isa, IsaError>> = OnceLock::new();
    SELECTED
        .get_or_init(|| resolve(std::env::var("WATTLE_CPU_ISA").ok().as_deref()))
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_is_always_supported_and_names_parse() {
        assert!(Isa::Scalar.is_supported());
        for i in Isa::ALL {
            assert_eq!(i.name().parse::<Isa>(), Ok(i));
        }
        assert_eq!(resolve(Some("SCALAR")), Ok(Isa::Scalar));
        assert!(matches!(resolve(Some("sse9")), Err(IsaError::Unknown(_))));
        assert_eq!(resolve(None), Ok(Isa::best()));
    }

    #[test]
    fn unsupported_path_is_refused() {
        for i in Isa::ALL {
            if !i.is_supported() {
                assert_eq!(resolve(Some(i.name())), Err(IsaError::Unsupported(i)));
            }
        }
    }
}
