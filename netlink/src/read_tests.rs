use std::path::Path;

use super::{pod_route, TableRoute};
use crate::fixture::{pod_and_peer, veth_pair, TestNetns, PEER_MAC, POD_MAC};
use crate::types::{Interface, IpNet, Mac, Neighbour, PodNetwork, Route};
use crate::{read_pod_network, ReadNetworkError};

fn net(text: &str) -> IpNet {
    let (addr, prefix_len) = text.split_once('/').unwrap();
    IpNet {
        addr: addr.parse().unwrap(),
        prefix_len: prefix_len.parse().unwrap(),
    }
}

/// What [`pod_and_peer`]'s pod namespace holds, as read.
pub(crate) fn expected_pod_network() -> PodNetwork {
    PodNetwork {
        interfaces: vec![Interface {
            name: "eth0".into(),
            mac: Mac(POD_MAC),
            mtu: 1400,
            addresses: vec![net("10.99.0.2/24"), net("fd00:99::2/64")],
        }],
        routes: vec![
            Route {
                destination: None,
                gateway: Some("10.99.0.1".parse().unwrap()),
                source: None,
                device: "eth0".into(),
                scope: 0,
                metric: 0,
            },
            Route {
                destination: Some(net("10.99.0.0/24")),
                gateway: None,
                source: Some("10.99.0.2".parse().unwrap()),
                device: "eth0".into(),
                scope: 253,
                metric: 0,
            },
            Route {
                destination: Some(net("10.200.0.0/16")),
                gateway: Some("10.99.0.1".parse().unwrap()),
                source: None,
                device: "eth0".into(),
                scope: 0,
                metric: 100,
            },
            Route {
                destination: Some(net("fd00:99::/64")),
                gateway: None,
                source: None,
                device: "eth0".into(),
                scope: 0,
                metric: 256,
            },
            Route {
                destination: None,
                gateway: Some("fd00:99::1".parse().unwrap()),
                source: None,
                device: "eth0".into(),
                scope: 0,
                metric: 1024,
            },
        ],
        neighbours: vec![Neighbour {
            ip: "10.99.0.1".parse().unwrap(),
            mac: Mac(PEER_MAC),
            device: "eth0".into(),
        }],
    }
}

#[test]
fn reads_links_addresses_routes_and_permanent_neighbours() {
    let (pod, _peer) = pod_and_peer();
    // Not read: a reachable (not permanent) neighbour, the kernel's
    // fe80::/64 route and link-local address, loopback.
    pod.ip("neigh add fd00:99::1 lladdr 02:00:00:00:99:01 dev eth0 nud reachable");
    assert_eq!(
        read_pod_network(pod.path()).unwrap(),
        expected_pod_network()
    );
}

#[test]
fn a_link_that_is_down_is_read_and_husk_taps_are_not() {
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
    pod.ip("tuntap add dev husktap7 mode tap");
    pod.ip("addr add 192.168.97.2/24 dev husktap7");

    let network = read_pod_network(pod.path()).unwrap();
    let mut expected = expected_pod_network();
    expected.interfaces.push(Interface {
        name: "eth1".into(),
        mac: Mac([0x02, 0x00, 0x00, 0x00, 0x98, 0x02]),
        mtu: 1500,
        addresses: vec![net("192.168.98.2/24")],
    });
    // A link that is down has no subnet route.
    assert_eq!(network, expected);
}

#[test]
fn a_link_without_an_address_is_an_error_naming_it() {
    let pod = TestNetns::new();
    let peer = TestNetns::new();
    veth_pair(
        &pod,
        "eth0",
        "02:00:00:00:99:02",
        &peer,
        "veth0",
        "02:00:00:00:99:01",
    );
    pod.ip("link set dev eth0 up");
    let error = read_pod_network(pod.path()).unwrap_err();
    assert!(
        matches!(error, ReadNetworkError::NoAddress { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "interface eth0 in {} has no IP address",
            pod.path().display()
        )
    );
}

#[test]
fn a_link_that_is_not_ethernet_is_an_error_naming_it_and_its_kind() {
    let (pod, _peer) = pod_and_peer();
    // A down tun without addresses (like a kernel's fallback tunl0) is
    // skipped; one in use is refused.
    pod.ip("tuntap add dev idle0 mode tun");
    // So is a down Ethernet link without addresses (like gretap0).
    pod.ip("tuntap add dev idle1 mode tap");
    assert_eq!(
        read_pod_network(pod.path()).unwrap(),
        expected_pod_network()
    );

    pod.ip("tuntap add dev vpn0 mode tun");
    pod.ip("addr add 172.31.0.2/24 dev vpn0");
    let error = read_pod_network(pod.path()).unwrap_err();
    assert!(
        matches!(error, ReadNetworkError::NotEthernet { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "interface vpn0 in {} is not an Ethernet interface (it is a tun link without a MAC)",
            pod.path().display()
        )
    );
}

#[test]
fn a_namespace_that_does_not_exist_is_an_error_naming_it() {
    let path = Path::new("/var/run/netns/husk-nl-test-never-made");
    let error = read_pod_network(path).unwrap_err();
    assert_eq!(
        error.to_string(),
        "network namespace /var/run/netns/husk-nl-test-never-made does not exist"
    );
    let error = read_pod_network(Path::new("/etc/hostname")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "/etc/hostname is not a network namespace"
    );
}

#[test]
fn a_default_route_keeps_its_family() {
    let table_route = |destination: &str, gateway: Option<&str>| TableRoute {
        ipv6: destination.contains(':'),
        destination: net(destination),
        gateway: gateway.map(|gateway| gateway.parse().unwrap()),
        source: None,
        link_index: Some(2),
        scope: 0,
        metric: 0,
        kind: netlink_packet_route::route::RouteType::Unicast,
        multipath: false,
    };
    // Told by the gateway, or IPv4 by default: no destination.
    let route = pod_route(&table_route("::/0", Some("fd00::1")), "eth0".into());
    assert_eq!(route.destination, None);
    let route = pod_route(&table_route("0.0.0.0/0", None), "eth0".into());
    assert_eq!(route.destination, None);
    // An IPv6 default route through a device only: ::/0.
    let route = pod_route(&table_route("::/0", None), "eth0".into());
    assert_eq!(route.destination, Some(net("::/0")));
    assert!(crate::route::route_is_ipv6(&route));
}

#[test]
fn a_pod_network_survives_json() {
    let network = expected_pod_network();
    let text = serde_json::to_string(&network).unwrap();
    assert_eq!(serde_json::from_str::<PodNetwork>(&text).unwrap(), network);
}
