//! The PVH `hvm_start_info` handed to the kernel in `rbx`: command line,
//! initramfs as module 0, and the E820 memory map.

use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, GuestMemoryRegion};

use super::layout::{
    BASE_MEMORY_END, EBDA_START, HIMEM_START, MMIO_GAP_END, MMIO_GAP_START, PVH_INFO_START,
};

/// `hvm_start_info.magic`.
pub const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// E820 usable RAM.
pub const E820_RAM: u32 = 1;
/// E820 reserved.
pub const E820_RESERVED: u32 = 2;

/// Size of `hvm_start_info` (version 1).
const START_INFO_LEN: u64 = 56;
/// The module list follows the start info, 64-byte aligned.
const MODLIST_START: u64 = PVH_INFO_START + 0x40;
/// The memory map follows the one module entry.
const MEMMAP_START: u64 = MODLIST_START + 0x40;

/// Why the start info could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PvhError {
    /// Guest memory has no RAM at address 0.
    #[error("guest memory does not start at 0")]
    NoLowMemory,
    /// A structure is not in guest memory.
    #[error("cannot write the PVH start info to guest memory")]
    Write(#[source] vm_memory::GuestMemoryError),
}

/// One E820 entry: start, size, type.
pub type E820Entry = (u64, u64, u32);

/// The E820 map of `mem`: base memory, the reserved MP table area, high
/// memory up to the gap, and RAM above 4 GiB.
pub fn e820_map(mem: &GuestMemoryMmap<()>) -> Result<Vec<E820Entry>, PvhError> {
    let low_end = mem
        .iter()
        .find(|r| r.start_addr().0 == 0)
        .map(|r| r.len().min(MMIO_GAP_START))
        .ok_or(PvhError::NoLowMemory)?;
    let mut map = vec![
        (0, EBDA_START, E820_RAM),
        (EBDA_START, BASE_MEMORY_END - EBDA_START, E820_RESERVED),
    ];
    if low_end > HIMEM_START {
        map.push((HIMEM_START, low_end - HIMEM_START, E820_RAM));
    }
    for region in mem.iter().filter(|r| r.start_addr().0 >= MMIO_GAP_END) {
        map.push((region.start_addr().0, region.len(), E820_RAM));
    }
    Ok(map)
}

/// Writes the start info, module list and memory map; returns the start
/// info's address.
pub fn write_start_info(
    mem: &GuestMemoryMmap<()>,
    cmdline_addr: GuestAddress,
    initramfs: Option<(GuestAddress, usize)>,
) -> Result<GuestAddress, PvhError> {
    let map = e820_map(mem)?;
    let mut memmap = Vec::with_capacity(map.len() * 24);
    for (addr, size, kind) in &map {
        memmap.extend_from_slice(&addr.to_le_bytes());
        memmap.extend_from_slice(&size.to_le_bytes());
        memmap.extend_from_slice(&kind.to_le_bytes());
        memmap.extend_from_slice(&0u32.to_le_bytes());
    }

    let nr_modules: u32 = u32::from(initramfs.is_some());
    if let Some((addr, size)) = initramfs {
        let mut module = Vec::with_capacity(32);
        module.extend_from_slice(&addr.0.to_le_bytes());
        module.extend_from_slice(&(size as u64).to_le_bytes());
        module.extend_from_slice(&0u64.to_le_bytes()); // no module command line
        module.extend_from_slice(&0u64.to_le_bytes());
        mem.write_slice(&module, GuestAddress(MODLIST_START))
            .map_err(PvhError::Write)?;
    }

    let mut info = Vec::with_capacity(START_INFO_LEN as usize);
    info.extend_from_slice(&XEN_HVM_START_MAGIC.to_le_bytes());
    info.extend_from_slice(&1u32.to_le_bytes()); // version
    info.extend_from_slice(&0u32.to_le_bytes()); // flags
    info.extend_from_slice(&nr_modules.to_le_bytes());
    info.extend_from_slice(&MODLIST_START.to_le_bytes());
    info.extend_from_slice(&cmdline_addr.0.to_le_bytes());
    info.extend_from_slice(&0u64.to_le_bytes()); // no ACPI RSDP
    info.extend_from_slice(&MEMMAP_START.to_le_bytes());
    info.extend_from_slice(&(map.len() as u32).to_le_bytes());
    info.extend_from_slice(&0u32.to_le_bytes());
    debug_assert_eq!(info.len() as u64, START_INFO_LEN);

    mem.write_slice(&memmap, GuestAddress(MEMMAP_START))
        .map_err(PvhError::Write)?;
    mem.write_slice(&info, GuestAddress(PVH_INFO_START))
        .map_err(PvhError::Write)?;
    Ok(GuestAddress(PVH_INFO_START))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::arch_memory_regions;

    fn mem(size: u64) -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges(&arch_memory_regions(size)).unwrap()
    }

    #[test]
    fn e820_covers_low_and_high_ram() {
        let small = e820_map(&mem(128 << 20)).unwrap();
        assert_eq!(small[2], (HIMEM_START, (128 << 20) - HIMEM_START, E820_RAM));
        assert_eq!(small.len(), 3);
        let big = e820_map(&mem(4 << 30)).unwrap();
        assert_eq!(
            big[2],
            (HIMEM_START, MMIO_GAP_START - HIMEM_START, E820_RAM)
        );
        assert_eq!(big[3], (MMIO_GAP_END, 1 << 30, E820_RAM));
    }

    #[test]
    fn start_info_points_at_cmdline_module_and_map() {
        let m = mem(64 << 20);
        let at = write_start_info(
            &m,
            GuestAddress(0x20000),
            Some((GuestAddress(0x300_0000), 1234)),
        )
        .unwrap();
        let read32 = |a: u64| m.read_obj::<u32>(GuestAddress(a)).unwrap();
        let read64 = |a: u64| m.read_obj::<u64>(GuestAddress(a)).unwrap();
        assert_eq!(read32(at.0), XEN_HVM_START_MAGIC);
        assert_eq!(read32(at.0 + 4), 1);
        assert_eq!(read32(at.0 + 12), 1);
        let modlist = read64(at.0 + 16);
        assert_eq!(read64(modlist), 0x300_0000);
        assert_eq!(read64(modlist + 8), 1234);
        assert_eq!(read64(at.0 + 24), 0x20000);
        let memmap = read64(at.0 + 40);
        assert_eq!(read32(at.0 + 48), 3);
        assert_eq!(read64(memmap), 0);
        assert_eq!(read32(memmap + 16), E820_RAM);
    }
}
