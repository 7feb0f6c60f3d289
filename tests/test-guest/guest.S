# husk's tiny bare-metal test guest.
#
# Entered like a Linux kernel through PVH: 32-bit protected mode, paging
# off, %ebx = hvm_start_info. It checks what husk's VMM gives a guest and
# reports on COM1, then resets through the i8042. See README.md.

        .set COM1, 0x3f8
        .set COM1_LSR, 0x3fd
        .set LSR_THR_EMPTY, 0x20
        .set VIRTIO_MMIO, 0xd0000000
        .set PVH_MAGIC, 0x336ec578
        .set START_INFO_CMDLINE, 24

# The PVH entry note: name "Xen", type 18 (XEN_ELFNOTE_PHYS32_ENTRY),
# descriptor = the 32-bit entry point.
        .section .note.Xen, "a", @note
        .p2align 2
        .long 4                 # name size
        .long 4                 # descriptor size
        .long 18                # type
        .asciz "Xen"
        .long _start

        .text
        .code32
        .globl _start
_start:
        cli
        movl $stack_top, %esp
        movl %ebx, %esi

        # 1: the start info is there.
        movl $1, %eax
        cmpl $PVH_MAGIC, (%esi)
        jne fail

        # 2: the serial port works (putc fails with code 2 otherwise).
        movl $msg_boot, %edi
        call puts

        # 3-5: the virtio-mmio device, if the command line names its id.
        movl START_INFO_CMDLINE(%esi), %edi
        testl %edi, %edi
        jz passed
        call find_devid
        cmpl $-1, %ecx
        je passed
        movl $VIRTIO_MMIO, %ebx
        movl $3, %eax
        cmpl $0x74726976, 0x0(%ebx)     # "virt"
        jne fail
        movl $4, %eax
        cmpl $2, 0x4(%ebx)              # version 2 (modern)
        jne fail
        movl $5, %eax
        cmpl %ecx, 0x8(%ebx)            # device id
        jne fail

passed:
        movl $msg_passed, %edi
        call puts
reset:
        movb $0xfe, %al                 # i8042: pulse the CPU reset line
        outb %al, $0x64
1:      hlt
        jmp 1b

# Failure with the code in %eax (1-9): report without waiting on the UART.
fail:
        movl %eax, %ebx
        movl $msg_fail, %edi
        call puts_unchecked
        movl %ebx, %eax
        addb $'0', %al
        call putc_unchecked
        movb $'\n', %al
        call putc_unchecked
        jmp reset

# putc: writes %al to COM1 once the transmitter is empty; fails with
# code 2 if it never empties.
putc:
        pushl %ecx
        pushl %edx
        pushl %eax
        movl $100000, %ecx
        movw $COM1_LSR, %dx
1:      inb %dx, %al
        testb $LSR_THR_EMPTY, %al
        jnz 2f
        loop 1b
        movl $2, %eax
        jmp fail
2:      popl %eax
        movw $COM1, %dx
        outb %al, %dx
        popl %edx
        popl %ecx
        ret

putc_unchecked:
        pushl %edx
        movw $COM1, %dx
        outb %al, %dx
        popl %edx
        ret

# puts / puts_unchecked: writes the NUL-terminated string at %edi.
puts:
        movb (%edi), %al
        testb %al, %al
        jz 1f
        call putc
        incl %edi
        jmp puts
1:      ret

puts_unchecked:
        movb (%edi), %al
        testb %al, %al
        jz 1f
        call putc_unchecked
        incl %edi
        jmp puts_unchecked
1:      ret

# find_devid: finds "devid=<decimal>" in the string at %edi; returns the
# number in %ecx, or -1 if there is none.
find_devid:
1:      movb (%edi), %al
        testb %al, %al
        jz 9f
        cmpl $0x69766564, (%edi)        # "devi"
        jne 2f
        cmpw $0x3d64, 4(%edi)           # "d="
        jne 2f
        addl $6, %edi
        xorl %ecx, %ecx
3:      movzbl (%edi), %eax
        subl $'0', %eax
        cmpl $9, %eax
        ja 8f
        imull $10, %ecx
        addl %eax, %ecx
        incl %edi
        jmp 3b
8:      ret
2:      incl %edi
        jmp 1b
9:      movl $-1, %ecx
        ret

        .section .rodata
msg_boot:   .asciz "husk-test-guest: boot ok\n"
msg_passed: .asciz "husk-test-guest: all checks passed\n"
msg_fail:   .asciz "husk-test-guest: FAIL "

        .bss
        .p2align 4
        .skip 4096
stack_top:
