//! Per-vCPU CPUID: KVM's supported set, told where this vCPU sits.
//!
//! Every vCPU is a one-thread core of one package; its APIC id is its
//! index. Linux reads the topology from leaves 0xb/0x1f (and 4, and AMD's
//! 0x8000_0008), the APIC id from leaf 1, and whether it runs on a
//! hypervisor from leaf 1 ECX bit 31.

use kvm_bindings::CpuId;

/// A vCPU refused its CPUID.
#[derive(Debug, thiserror::Error)]
#[error("KVM refused the CPUID table")]
pub struct CpuidError(#[source] pub kvm_ioctls::Error);

/// Leaf 1 ECX: running under a hypervisor.
const ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 ECX: the local APIC timer has TSC-deadline mode.
const ECX_TSC_DEADLINE: u32 = 1 << 24;
/// Leaf 1 EDX: more than one logical processor per package.
const EDX_HTT: u32 = 1 << 28;
/// Leaf 0xb/0x1f level types.
const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

/// Bits needed to number `n` items (0 for one).
fn bits_for(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// Offers the TSC-deadline timer, which KVM's in-kernel local APIC
/// emulates but reports as a capability (`KVM_CAP_TSC_DEADLINE_TIMER`)
/// rather than in its supported CPUID. With it Linux needs no timer
/// calibration at boot: without it, it spins with interrupts on until a
/// tenth of a second of APIC timer ticks has gone by.
pub fn offer_tsc_deadline(cpuid: &mut CpuId) {
    for entry in cpuid.as_mut_slice() {
        if entry.function == 0x1 {
            entry.ecx |= ECX_TSC_DEADLINE;
        }
    }
}

/// Rewrites `cpuid` (KVM's supported set) for vCPU `id` of `num_cpus`.
pub fn patch_cpuid(cpuid: &mut CpuId, id: u8, num_cpus: u8) {
    let apic_id = u32::from(id);
    let cpus = u32::from(num_cpus.max(1));
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            0x1 => {
                // EBX: [31:24] initial APIC id, [23:16] logical processors
                // per package, [15:0] brand index and CLFLUSH size kept.
                entry.ebx = (entry.ebx & 0xffff) | (apic_id << 24) | (cpus << 16);
                entry.ecx |= ECX_HYPERVISOR;
                if cpus > 1 {
                    entry.edx |= EDX_HTT;
                } else {
                    entry.edx &= !EDX_HTT;
                }
            }
            0x4 => {
                // EAX: [31:26] cores per package - 1, [25:14] threads
                // sharing this cache - 1 (the L3 is shared by all).
                let level = (entry.eax >> 5) & 0x7;
                let sharing = if level >= 3 { cpus - 1 } else { 0 };
                entry.eax = (entry.eax & 0x3fff) | ((cpus - 1) << 26) | (sharing << 14);
            }
            0xa => {
                // No performance monitoring unit.
                entry.eax = 0;
                entry.ebx = 0;
                entry.ecx = 0;
                entry.edx = 0;
            }
            0xb | 0x1f => {
                let (shift, count, level_type) = match entry.index {
                    0 => (0, 1, LEVEL_TYPE_SMT),
                    1 => (bits_for(cpus), cpus, LEVEL_TYPE_CORE),
                    _ => (0, 0, 0),
                };
                entry.eax = shift;
                entry.ebx = count;
                entry.ecx = (level_type << 8) | (entry.index & 0xff);
                entry.edx = apic_id;
            }
            0x8000_0008 => {
                // AMD: ECX[7:0] cores per package - 1, [15:12] APIC id bits.
                entry.ecx = (cpus - 1) | (bits_for(cpus) << 12);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    fn leaf(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: 0xffff_ffff,
            ebx: 0xffff_ffff,
            ecx: 0,
            edx: 0,
            ..Default::default()
        }
    }

    fn find(cpuid: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
        *cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap()
    }

    #[test]
    fn tells_each_vcpu_its_apic_id_and_the_topology() {
        let entries = [
            leaf(1, 0),
            leaf(4, 0),
            leaf(0xa, 0),
            leaf(0xb, 0),
            leaf(0xb, 1),
            leaf(0xb, 2),
        ];
        let mut cpuid = CpuId::from_entries(&entries).unwrap();
        patch_cpuid(&mut cpuid, 3, 4);
        let l1 = find(&cpuid, 1, 0);
        assert_eq!(l1.ebx >> 24, 3);
        assert_eq!((l1.ebx >> 16) & 0xff, 4);
        assert_eq!(l1.ebx & 0xffff, 0xffff);
        assert_ne!(l1.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(l1.edx & EDX_HTT, 0);
        assert_eq!(find(&cpuid, 4, 0).eax >> 26, 3);
        assert_eq!(find(&cpuid, 0xa, 0).eax, 0);
        let smt = find(&cpuid, 0xb, 0);
        assert_eq!((smt.eax, smt.ebx, smt.ecx >> 8, smt.edx), (0, 1, 1, 3));
        let core = find(&cpuid, 0xb, 1);
        assert_eq!((core.eax, core.ebx, core.ecx >> 8, core.edx), (2, 4, 2, 3));
        let end = find(&cpuid, 0xb, 2);
        assert_eq!((end.ebx, end.ecx >> 8), (0, 0));
    }

    #[test]
    fn the_tsc_deadline_timer_is_offered_in_leaf_one_only() {
        let mut cpuid = CpuId::from_entries(&[leaf(1, 0), leaf(4, 0)]).unwrap();
        offer_tsc_deadline(&mut cpuid);
        patch_cpuid(&mut cpuid, 0, 1);
        assert_ne!(find(&cpuid, 1, 0).ecx & ECX_TSC_DEADLINE, 0);
        assert_eq!(find(&cpuid, 4, 0).ecx, 0);
    }

    #[test]
    fn bit_widths() {
        assert_eq!(bits_for(1), 0);
        assert_eq!(bits_for(2), 1);
        assert_eq!(bits_for(3), 2);
        assert_eq!(bits_for(4), 2);
        assert_eq!(bits_for(32), 5);
    }
}
