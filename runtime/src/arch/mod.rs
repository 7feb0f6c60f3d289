//! Architecture-specific VM setup. Platform differences live here and
//! nowhere else; the rest of husk calls the `x86_64` module's functions.

#[cfg(target_arch = "x86_64")]
pub mod x86_64;
