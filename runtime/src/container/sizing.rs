//! How big a container's microVM is: the configured defaults, grown by
//! the container's limits (vCPUs = ceil(cpu limit) + the default, memory =
//! limit + the default, which is then the VM's overhead).

use oci_spec::runtime::Spec;

use crate::config::HuskConfig;

/// vCPUs and MiB of guest memory for a container.
pub fn vm_size(config: &HuskConfig, spec: &Spec) -> (u8, u32) {
    let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
    let mut vcpus = u32::from(config.default_vcpus);
    let mut memory = config.default_memory_mib;
    if let Some(cpu) = resources.and_then(|r| r.cpu().as_ref()) {
        if let (Some(quota), Some(period)) = (cpu.quota(), cpu.period()) {
            if quota > 0 && period > 0 {
                let limit = (quota as u64).div_ceil(period);
                vcpus = vcpus.saturating_add(u32::try_from(limit).unwrap_or(u32::MAX));
            }
        }
    }
    if let Some(limit) = resources
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit())
    {
        if limit > 0 {
            let mib = u32::try_from((limit as u64).div_ceil(1 << 20)).unwrap_or(u32::MAX);
            memory = memory.saturating_add(mib);
        }
    }
    let vcpus = vcpus.min(u32::from(crate::vmm::config::MAX_VCPUS)) as u8;
    (vcpus, memory)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(resources: &str) -> Spec {
        serde_json::from_str(&format!(
            r#"{{"ociVersion":"1.0.2","linux":{{"resources":{resources}}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn limits_grow_the_defaults() {
        let config = HuskConfig::default();
        assert_eq!(vm_size(&config, &spec("{}")), (1, 128));
        assert_eq!(
            vm_size(
                &config,
                &spec(r#"{"cpu":{"quota":150000,"period":100000},"memory":{"limit":268435456}}"#)
            ),
            (3, 384)
        );
        assert_eq!(
            vm_size(&config, &spec(r#"{"cpu":{"quota":-1,"period":100000}}"#)),
            (1, 128)
        );
        assert_eq!(
            vm_size(&config, &spec(r#"{"cpu":{"quota":100000000,"period":1}}"#)).0,
            32
        );
    }
}
