//! Per-pod overrides of the husk configuration through `io.husk.*`
//! annotations. Only the keys listed here are accepted; any other
//! `io.husk.` key is refused by name, so a typo never passes silently.

use std::collections::HashMap;

use husk::config::HuskConfig;
use husk::vmm::config::MAX_VCPUS;

/// The prefix of husk's annotations.
const PREFIX: &str = "io.husk.";
/// vCPUs of the pod's VM (before container limits are added).
pub const VCPUS: &str = "io.husk.vcpus";
/// Guest memory of the pod's VM in MiB (before container limits).
pub const MEMORY_MIB: &str = "io.husk.memory_mib";
/// Verbose guest kernel log in the pod's console log.
pub const DEBUG_CONSOLE: &str = "io.husk.debug_console";
/// Every key accepted.
pub const ALLOWED: &[&str] = &[VCPUS, MEMORY_MIB, DEBUG_CONSOLE];
/// The smallest guest that boots the agent.
const MIN_MEMORY_MIB: u32 = 64;

/// Why the annotations were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnnotationError {
    /// A key husk does not allow.
    #[error("annotation {key:?} is not allowed (husk accepts {allowed})")]
    NotAllowed {
        /// The key.
        key: String,
        /// The allowed keys.
        allowed: String,
    },
    /// A value out of range or of the wrong kind.
    #[error("annotation {key}={value:?}: {why}")]
    Value {
        /// The key.
        key: &'static str,
        /// The value.
        value: String,
        /// What is expected.
        why: String,
    },
}

/// `config` with the pod's annotations applied.
pub fn apply(
    config: &HuskConfig,
    annotations: &HashMap<String, String>,
) -> Result<HuskConfig, AnnotationError> {
    let mut config = config.clone();
    if let Some(key) = annotations
        .keys()
        .filter(|k| k.starts_with(PREFIX) && !ALLOWED.contains(&k.as_str()))
        .min()
    {
        return Err(AnnotationError::NotAllowed {
            key: key.clone(),
            allowed: ALLOWED.join(", "),
        });
    }
    let bad = |key, value: &String, why: String| AnnotationError::Value {
        key,
        value: value.clone(),
        why,
    };
    if let Some(v) = annotations.get(VCPUS) {
        match v.parse::<u8>() {
            Ok(n) if (1..=MAX_VCPUS).contains(&n) => config.default_vcpus = n,
            _ => {
                return Err(bad(
                    VCPUS,
                    v,
                    format!("a whole number from 1 to {MAX_VCPUS}"),
                ))
            }
        }
    }
    if let Some(v) = annotations.get(MEMORY_MIB) {
        match v.parse::<u32>() {
            Ok(n) if n >= MIN_MEMORY_MIB => config.default_memory_mib = n,
            _ => {
                return Err(bad(
                    MEMORY_MIB,
                    v,
                    format!("a whole number of MiB, at least {MIN_MEMORY_MIB}"),
                ))
            }
        }
    }
    if let Some(v) = annotations.get(DEBUG_CONSOLE) {
        match v.as_str() {
            "true" => config.debug_console = true,
            "false" => config.debug_console = false,
            _ => return Err(bad(DEBUG_CONSOLE, v, "true or false".into())),
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grouping::map;

    #[test]
    fn allowed_keys_override_the_config() {
        let c = apply(
            &HuskConfig::default(),
            &map(&[(VCPUS, "2"), (MEMORY_MIB, "512"), ("other.key", "x")]),
        )
        .unwrap();
        assert_eq!((c.default_vcpus, c.default_memory_mib), (2, 512));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = apply(&HuskConfig::default(), &map(&[("io.husk.vcpu", "2")])).unwrap_err();
        assert!(
            e.to_string().contains("\"io.husk.vcpu\" is not allowed"),
            "{e}"
        );
        assert!(e.to_string().contains(VCPUS), "{e}");
        let e = apply(&HuskConfig::default(), &map(&[(VCPUS, "0")])).unwrap_err();
        assert!(e.to_string().contains("io.husk.vcpus=\"0\""), "{e}");
        let e = apply(&HuskConfig::default(), &map(&[(MEMORY_MIB, "8")])).unwrap_err();
        assert!(e.to_string().contains("at least 64"), "{e}");
        let e = apply(&HuskConfig::default(), &map(&[(DEBUG_CONSOLE, "yes")])).unwrap_err();
        assert!(e.to_string().contains("true or false"), "{e}");
    }
}
