use std::fs::File;
use std::io::{Read, Write};
use std::net::UdpSocket;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::fixture::{pod_and_peer, PEER_MAC, POD_MAC};
use crate::fixture::{veth_pair, TestNetns};
use crate::types::{Interface, Mac, PodNetwork};
use crate::{attach_taps, detach_taps, in_netns, read_pod_network, AttachError, AttachStep, Tap};

/// The size of `struct virtio_net_hdr_v1`, set on the tap for the test.
const VNET_HDR_LEN: usize = 12;
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
const UDP: u8 = 17;

/// Sets the tap's vnet header size as a VMM with a modern virtio-net
/// device would.
fn set_vnet_header_len(tap: &Tap) {
    let len: libc::c_int = VNET_HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one int, which `len` is and outlives
    // the call; `tap.fd` is an open tap.
    let result = unsafe { libc::ioctl(tap.fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &len) };
    assert_eq!(
        result,
        0,
        "TUNSETVNETHDRSZ: {}",
        std::io::Error::last_os_error()
    );
}

/// Reads frames from the tap (vnet header stripped) until `wanted` says
/// yes or five seconds pass.
fn read_frame_until(tap: &Tap, wanted: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut file = File::from(tap.fd.try_clone().unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buffer = vec![0; 65536];
    while Instant::now() < deadline {
        let mut fds = [PollFd::new(tap.fd.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(100u16)).unwrap() == 0 {
            continue;
        }
        let len = file.read(&mut buffer).unwrap();
        assert!(len >= VNET_HDR_LEN, "short read from the tap: {len}");
        let frame = &buffer[VNET_HDR_LEN..len];
        if wanted(frame) {
            return frame.to_vec();
        }
    }
    panic!("the frame never came out of the tap");
}

/// The UDP payload of an Ethernet + IPv4 + UDP frame to `port`.
fn udp_payload_to(frame: &[u8], port: u16) -> Option<&[u8]> {
    if frame.len() < 42 || frame[12..14] != ETHERTYPE_IPV4 || frame[23] != UDP {
        return None;
    }
    let header_len = usize::from(frame[14] & 0x0f) * 4;
    let udp = &frame[14 + header_len..];
    (u16::from_be_bytes([udp[2], udp[3]]) == port).then(|| &udp[8..])
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let sum: u32 = header
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], pair[1]])))
        .sum();
    let folded = (sum & 0xffff) + (sum >> 16);
    !((folded & 0xffff) + (folded >> 16)) as u16
}

/// An Ethernet frame carrying a UDP datagram (checksum 0: none, which
/// IPv4 allows), with a zero vnet header in front.
fn udp_frame(
    (src_mac, src_ip, src_port): ([u8; 6], [u8; 4], u16),
    (dst_mac, dst_ip, dst_port): ([u8; 6], [u8; 4], u16),
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total_len = 20 + udp_len;
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, UDP, 0, 0];
    ip[2..4].copy_from_slice(&(total_len as u16).to_be_bytes());
    ip.extend_from_slice(&src_ip);
    ip.extend_from_slice(&dst_ip);
    let checksum = ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());

    let mut frame = vec![0; VNET_HDR_LEN];
    frame.extend_from_slice(&dst_mac);
    frame.extend_from_slice(&src_mac);
    frame.extend_from_slice(&ETHERTYPE_IPV4);
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&src_port.to_be_bytes());
    frame.extend_from_slice(&dst_port.to_be_bytes());
    frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(payload);
    frame
}

#[test]
fn attach_redirects_both_ways_and_detach_undoes_it() {
    let (pod, peer) = pod_and_peer();
    let network = read_pod_network(pod.path()).unwrap();
    let taps = attach_taps(pod.path(), &network).unwrap();
    assert_eq!(taps.len(), 1);
    let tap = &taps[0];
    assert_eq!(
        (tap.name.as_str(), tap.link.as_str(), tap.mac, tap.mtu),
        ("husktap0", "eth0", Mac(POD_MAC), 1400)
    );

    // What tc shows: an ingress qdisc on both, a u32 catch-all redirect on
    // each to the other; the tap up with the link's MTU.
    for (device, other) in [("eth0", "husktap0"), ("husktap0", "eth0")] {
        let qdiscs = pod.tc(&format!("qdisc show dev {device} ingress"));
        assert!(
            qdiscs.contains("qdisc ingress ffff: "),
            "{device}: {qdiscs}"
        );
        let filters = pod.tc(&format!("filter show dev {device} ingress"));
        for expected in [
            "protocol all",
            " u32 ",
            "terminal",
            "match 00000000/00000000 at 0",
            &format!("action order 1: mirred (Egress Redirect to device {other}) stolen"),
        ] {
            assert!(
                filters.contains(expected),
                "{device} lacks {expected:?}: {filters}"
            );
        }
    }
    let tap_link = pod.ip("link show dev husktap0");
    assert!(
        tap_link.contains(",UP,") && tap_link.contains(" mtu 1400 "),
        "{tap_link}"
    );
    // The link keeps its addresses.
    assert!(pod.ip("addr show dev eth0").contains("10.99.0.2/24"));

    // Peer → pod's address: the frame comes out of the tap, not the pod's
    // stack.
    set_vnet_header_len(tap);
    peer.ip("neigh add 10.99.0.2 lladdr 02:00:00:00:99:02 dev veth0 nud permanent");
    in_netns(peer.path(), || {
        let socket = UdpSocket::bind("10.99.0.1:7776").unwrap();
        socket.send_to(b"to the guest", "10.99.0.2:7777").unwrap();
    })
    .unwrap();
    let frame = read_frame_until(tap, |frame| udp_payload_to(frame, 7777).is_some());
    assert_eq!(frame[0..6], POD_MAC);
    assert_eq!(frame[6..12], PEER_MAC);
    assert_eq!(udp_payload_to(&frame, 7777).unwrap(), b"to the guest");

    // Guest → peer: a frame written into the tap leaves through eth0.
    let receiver = in_netns(peer.path(), || UdpSocket::bind("10.99.0.1:7778").unwrap()).unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let frame = udp_frame(
        (POD_MAC, [10, 99, 0, 2], 7777),
        (PEER_MAC, [10, 99, 0, 1], 7778),
        b"from the guest",
    );
    File::from(tap.fd.try_clone().unwrap())
        .write_all(&frame)
        .unwrap();
    let mut buffer = [0; 64];
    let (len, from) = receiver.recv_from(&mut buffer).unwrap();
    assert_eq!(&buffer[..len], b"from the guest");
    assert_eq!(from, "10.99.0.2:7777".parse().unwrap());

    // Detach removes the link's qdisc; twice is fine, so is a link that
    // is gone.
    let links = vec!["eth0".to_string(), "gone0".to_string()];
    detach_taps(pod.path(), &links).unwrap();
    assert!(!pod.tc("qdisc show dev eth0").contains("ingress"));
    detach_taps(pod.path(), &links).unwrap();

    // The tap goes with its last fd.
    drop(taps);
    assert_vanishes(&pod, "husktap0");

    // A namespace that is gone is fine too.
    let path = pod.path().to_path_buf();
    drop(pod);
    detach_taps(&path, &links).unwrap();
}

/// Asserts that link `name` is gone within two seconds. (Not at once: a
/// process that another test forks holds copies of every fd until it
/// execs, so a tap's last close can come a moment after our own.)
fn assert_vanishes(pod: &TestNetns, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while pod.has_link(name) {
        assert!(Instant::now() < deadline, "{name} was left behind");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts that attach left nothing behind on `links`.
fn assert_nothing_left(pod: &TestNetns, links: &[&str]) {
    for tap in ["husktap0", "husktap1"] {
        assert_vanishes(pod, tap);
    }
    for link in links {
        let qdiscs = pod.tc(&format!("qdisc show dev {link}"));
        assert!(
            !qdiscs.contains("ingress"),
            "{link} kept an ingress qdisc: {qdiscs}"
        );
    }
}

#[test]
fn a_failing_step_is_named_and_undone() {
    let (pod, peer) = pod_and_peer();
    veth_pair(
        &pod,
        "eth1",
        "02:00:00:00:98:02",
        &peer,
        "veth1",
        "02:00:00:00:98:01",
    );
    pod.ip("addr add 192.168.98.2/24 dev eth1");
    let network = read_pod_network(pod.path()).unwrap();
    // Someone else's ingress qdisc on eth1: the second link's step fails
    // after the first link was fully joined.
    pod.tc("qdisc add dev eth1 ingress");

    let error = attach_taps(pod.path(), &network).unwrap_err();
    assert!(
        matches!(
            &error,
            AttachError::Netlink { step: AttachStep::LinkIngressQdisc, link, .. } if link == "eth1"
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "attaching husktap1 to eth1 in {}: adding the link's ingress qdisc",
            pod.path().display()
        )
    );
    let cause = std::error::Error::source(&error).unwrap().to_string();
    assert!(cause.starts_with("the kernel answered EEXIST"), "{cause}");
    assert_nothing_left(&pod, &["eth0"]);
    // Not ours: left alone.
    assert!(pod.tc("qdisc show dev eth1").contains("ingress"));
}

#[test]
fn a_link_that_is_not_there_is_named_and_nothing_is_left() {
    let (pod, _peer) = pod_and_peer();
    let mut network = read_pod_network(pod.path()).unwrap();
    network.interfaces.push(Interface {
        name: "eth9".into(),
        mac: Mac([0x02, 0, 0, 0, 0x97, 0x02]),
        mtu: 1500,
        addresses: network.interfaces[0].addresses.clone(),
    });
    let error = attach_taps(pod.path(), &network).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("interface eth9 is not in {}", pod.path().display())
    );
    assert_nothing_left(&pod, &["eth0"]);
}

#[test]
fn a_namespace_that_does_not_exist_is_named() {
    let path = std::path::Path::new("/var/run/netns/husk-nl-test-never-made");
    let error = attach_taps(path, &PodNetwork::default()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "network namespace /var/run/netns/husk-nl-test-never-made does not exist"
    );
}
