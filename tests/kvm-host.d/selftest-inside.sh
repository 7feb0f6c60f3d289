#!/usr/bin/env bash
# The inside half of selftest.sh: runs in the emulated test host and prints
# what it sees as KEY=VALUE lines.
printf 'no-newline'
printf 'to-stderr' >&2
echo
echo "cwd=$PWD"
echo "odd=$(printf '%s' "$ODD_VALUE" | od -An -c | tr -d ' \n')"
[ -c /dev/kvm ] && echo kvm=yes
grep -q '^kvm_amd ' /proc/modules && echo kvm_amd=yes
/usr/bin/python3 -c 'import fcntl,os; fd=os.open("/dev/kvm",os.O_RDWR); v=fcntl.ioctl(fd,0xAE00); vm=fcntl.ioctl(fd,0xAE01,0); print("kvm_api=%d vm=%s" % (v, vm>=0))'
echo "cgroups=$(awk '$2 ~ "^/sys/fs/cgroup" {print $2, $3}' /proc/self/mounts | sort | tr '\n' ';')"
touch /tmp/x && echo tmp=writable
[ -f "$HOST_TMP_PROBE" ] && echo host-tmp=visible
touch /usr/kvm-host-probe 2>/dev/null || echo root=readonly
ip link add kh0 type veth peer name kh1 && echo veth=yes
exit 3
