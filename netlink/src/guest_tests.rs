use crate::fixture::{veth_pair, TestNetns, POD_MAC};
use crate::read::tests::expected_pod_network;
use crate::types::{Mac, Route};
use crate::{apply_in_guest, in_netns, read_pod_network, ApplyError};

/// A namespace standing in for the guest: its only link (but loopback) is
/// `ens3` with the pod's MAC, down, MTU 1500, no address; the other end
/// of the veth is in a second namespace.
fn guest() -> (TestNetns, TestNetns) {
    let guest = TestNetns::new();
    let host = TestNetns::new();
    veth_pair(
        &guest,
        "ens3",
        "02:00:00:00:99:02",
        &host,
        "vnet0",
        "02:00:00:00:99:01",
    );
    host.ip("link set dev vnet0 up");
    (guest, host)
}

#[test]
fn reproduces_the_pod_network() {
    let (guest, _host) = guest();
    let network = expected_pod_network();
    in_netns(guest.path(), || apply_in_guest(&network))
        .unwrap()
        .unwrap();

    // Link renamed, MTU, addresses, routes, neighbours: what reading the
    // pod gave, read back from the guest.
    assert_eq!(read_pod_network(guest.path()).unwrap(), network);
    assert!(guest.ip("link show dev eth0").contains(",UP,"));
    assert!(guest.ip("link show dev lo").contains(",UP,"));
    assert!(!guest.has_link("ens3"));

    // Again: everything is there already, which is fine.
    in_netns(guest.path(), || apply_in_guest(&network))
        .unwrap()
        .unwrap();
    assert_eq!(read_pod_network(guest.path()).unwrap(), network);
}

#[test]
fn a_mac_that_no_link_has_is_named() {
    let (guest, _host) = guest();
    let mut network = expected_pod_network();
    network.interfaces[0].mac = Mac([0x02, 0, 0, 0, 0x97, 0x02]);
    network.interfaces[0].name = "eth9".into();
    let error = in_netns(guest.path(), || apply_in_guest(&network))
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(error, ApplyError::NoLinkWithMac { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "no link has MAC 02:00:00:00:97:02, which interface eth9 of the pod has"
    );
    // The guest's link was not touched.
    assert!(guest.has_link("ens3"));
    assert_eq!(Mac(POD_MAC).to_string(), "02:00:00:00:99:02");
}

#[test]
fn a_route_that_fails_is_named() {
    let (guest, _host) = guest();
    let mut network = expected_pod_network();
    network.routes.push(Route {
        destination: Some(crate::IpNet {
            addr: "10.250.0.0".parse().unwrap(),
            prefix_len: 16,
        }),
        gateway: Some("10.251.0.1".parse().unwrap()),
        source: None,
        device: "eth0".into(),
        scope: 0,
        metric: 0,
    });
    let error = in_netns(guest.path(), || apply_in_guest(&network))
        .unwrap()
        .unwrap_err();
    assert!(matches!(error, ApplyError::Route { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "adding route 10.250.0.0/16 via 10.251.0.1 dev eth0"
    );
    let cause = std::error::Error::source(&error).unwrap().to_string();
    assert!(
        cause.starts_with("the kernel answered ENETUNREACH"),
        "{cause}"
    );
}
