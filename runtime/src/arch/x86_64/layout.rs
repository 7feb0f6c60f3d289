//! The guest-physical memory map and interrupt lines of a husk microVM.
//!
//! ```text
//! 0x0000_0500  boot GDT (then IDT at 0x520)
//! 0x0000_6000  PVH start_info, module list, memory map
//! 0x0002_0000  kernel command line
//! 0x0009_fc00  MP table (EBDA), reserved up to 0xa0000
//! 0x0010_0000  high memory: the kernel, then free RAM, the initramfs at the top
//! 0xc000_0000  32-bit MMIO gap: virtio-mmio windows from 0xd000_0000,
//!              IOAPIC at 0xfec0_0000, LAPIC at 0xfee0_0000
//! 0x1_0000_0000 RAM beyond the gap, if any
//! ```

/// Start of the 32-bit MMIO gap; RAM beyond it moves above 4 GiB.
pub const MMIO_GAP_START: u64 = 0xC000_0000;
/// End of the 32-bit MMIO gap (4 GiB).
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// First virtio-mmio window.
pub const VIRTIO_MMIO_BASE: u64 = 0xD000_0000;
/// Size of each virtio-mmio window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// The IOAPIC's registers.
pub const IOAPIC_ADDR: u64 = 0xFEC0_0000;
/// The local APICs' registers.
pub const LAPIC_ADDR: u64 = 0xFEE0_0000;
/// Interrupt line of the first virtio device.
pub const FIRST_DEVICE_IRQ: u32 = 5;
/// Last interrupt line devices may use (the IOAPIC has 24 pins).
pub const LAST_DEVICE_IRQ: u32 = 23;
/// Interrupt line of COM1.
pub const SERIAL_IRQ: u32 = 4;
/// Number of IOAPIC pins.
pub const IOAPIC_PINS: u8 = 24;
/// Where the kernel command line is written.
pub const CMDLINE_START: u64 = 0x20000;
/// Room for the command line, NUL included (PVH has no 2 KiB limit).
pub const CMDLINE_MAX_SIZE: usize = 4096;
/// PVH `hvm_start_info`, followed by the module list and the memory map.
pub const PVH_INFO_START: u64 = 0x6000;
/// Start of the extended BIOS data area, where the MP table goes.
pub const EBDA_START: u64 = 0x9fc00;
/// The MP floating pointer and configuration table.
pub const MPTABLE_START: u64 = EBDA_START;
/// End of base memory (start of the legacy VGA/BIOS hole).
pub const BASE_MEMORY_END: u64 = 0xa0000;
/// Start of high memory, where the kernel is loaded.
pub const HIMEM_START: u64 = 0x10_0000;
/// The boot GDT.
pub const BOOT_GDT_START: u64 = 0x500;
/// The (empty) boot IDT.
pub const BOOT_IDT_START: u64 = 0x520;
/// KVM's three-page TSS area (Intel), inside the MMIO gap.
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
/// KVM's identity-map page (Intel, real mode), just below the TSS.
pub const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;
